// Operator screens: tenants and their terms, points flow between categories, breakage and
// expiring-points reports, the audit log.

import { formatDate, formatDateTime, formatPoints, getLocale, getTimeZone, t } from "/shared/i18n.js";
import * as api from "../api.js";
import { flowBars, simpleBar } from "../charts.js";
import { badge, card, dataTable, field, fromConnection, h, link, notice, page, select, showError } from "../ui.js";

export function categoryLabel(category) {
  return t(`console.category.${category}`);
}

function termsList(terms) {
  return h("dl", { class: "facts" },
    h("dt", {}, t("console.terms.model")), h("dd", {}, t(`console.terms.${terms.model}`)),
    h("dt", {}, t("console.terms.value")), h("dd", {}, `${terms.settlementValue} ${terms.currency}`),
    h("dt", {}, t("console.terms.fee")), h("dd", {}, t("console.terms.feeValue", { bps: terms.feeBps, percent: terms.feeBps / 100 })),
    h("dt", {}, t("console.terms.period")), h("dd", {}, t(`console.terms.${terms.periodLength}`)),
    h("dt", {}, t("console.terms.since")), h("dd", {}, formatDate(terms.effectiveFrom)));
}

export async function tenantsView(context, code) {
  const terms = await api.query(api.TERMS);
  const detail = h("div", { "aria-live": "polite" });
  const table = dataTable({
    caption: t("console.tenants.title"),
    columns: [
      { key: "code", label: t("console.tenants.code"), render: (x) => link(`#/tenants/${encodeURIComponent(x.code)}`, x.code) },
      { key: "name", label: t("console.tenants.name") },
      { key: "category", label: t("console.tenants.category"), value: (x) => categoryLabel(x.category) },
      { key: "status", label: t("console.status"), render: (x) => badge(t(`console.tenantStatus.${x.status}`)) },
      { key: "greenPoints", label: t("console.tenants.green"), numeric: true, render: (x) => formatPoints(x.greenPoints) },
      { key: "createdAt", label: t("console.createdAt"), render: (x) => formatDate(x.createdAt) },
    ],
    load: async (after) => fromConnection((await api.query(api.TENANTS, { first: 25, after })).tenants),
  });
  if (code) detail.append(await tenantDetail(code));
  const codeInput = h("input", { type: "text", name: "code", required: true, autocomplete: "off", value: code || "" });
  const open = h("form", { class: "row align-end", role: "search" },
    field(t("console.tenants.open"), codeInput), h("button", { type: "submit" }, t("console.tenants.openButton")));
  open.addEventListener("submit", (event) => {
    event.preventDefault();
    window.location.hash = `#/tenants/${encodeURIComponent(codeInput.value.trim())}`;
  });
  return page(t("console.nav.tenants"),
    h("div", { class: "grid-2" },
      card(t("console.terms.titlePoints"), termsList(terms.points)),
      card(t("console.terms.titleGreen"), termsList(terms.green))),
    detail,
    card(t("console.tenants.title"), open, table));
}

async function tenantDetail(code) {
  try {
    const data = await api.query(api.TENANT, { code });
    const tenant = data.tenant;
    if (!tenant) return notice("error", t("console.tenants.notFound"));
    const payment = data.pointsPayment;
    return card(t("console.tenants.detail", { name: tenant.name }),
      h("dl", { class: "facts" },
        h("dt", {}, t("console.tenants.category")), h("dd", {}, categoryLabel(tenant.category)),
        h("dt", {}, t("console.tenants.pointsPayment")),
        h("dd", {}, payment && payment.enabled
          ? t("console.tenants.paymentTerms", { points: payment.pointsPerUnit, share: Number(payment.maxShare) * 100 })
          : t("console.tenants.noPayment"))),
      dataTable({
        caption: t("console.tenants.stores"),
        rows: tenant.stores.edges.map((e) => e.node),
        columns: [
          { key: "code", label: t("console.tenants.storeCode") },
          { key: "name", label: t("console.tenants.name") },
          { key: "city", label: t("console.tenants.city") },
        ],
      }));
  } catch (error) {
    const container = h("div");
    showError(container, error);
    return container;
  }
}

function isoDate(date) {
  return date.toISOString().slice(0, 10);
}

export async function flowsView() {
  const to = new Date();
  const from = new Date(Date.UTC(to.getUTCFullYear() - 1, to.getUTCMonth(), 1));
  const flows = (await api.query(api.FLOWS, { from: isoDate(from), to: isoDate(new Date(to.getTime() + 86400000)) })).pointsFlow;
  return page(t("console.nav.flows"),
    h("p", { class: "muted" }, t("console.flows.hint")),
    card(t("console.flows.chart"),
      flows.length ? flowBars(t("console.flows.chart"), flows, periodLabel, categoryLabel) : notice("info", t("console.flows.none"))),
    card(t("console.flows.table"), dataTable({
      caption: t("console.flows.table"),
      rows: flows,
      columns: [
        { key: "periodStart", label: t("console.settlement.period"), render: (f) => periodLabel(f.periodStart) },
        { key: "issuerCategory", label: t("console.flows.from"), value: (f) => categoryLabel(f.issuerCategory) },
        { key: "redeemerCategory", label: t("console.flows.to"), value: (f) => categoryLabel(f.redeemerCategory) },
        { key: "points", label: t("console.points"), numeric: true, render: (f) => formatPoints(f.points) },
      ],
    })));
}

// A settlement period by its month, e.g. "Oct 2026" / "2026年10月".
function periodLabel(iso) {
  return new Intl.DateTimeFormat(getLocale(), { timeZone: getTimeZone(), year: "numeric", month: "short" }).format(new Date(iso));
}

export async function reportsView() {
  const today = new Date();
  const yearAgo = new Date(today.getTime() - 365 * 86400000);
  const from = h("input", { type: "date", name: "from", value: isoDate(yearAgo), required: true });
  const to = h("input", { type: "date", name: "to", value: isoDate(new Date(today.getTime() + 86400000)), required: true });
  const asset = select("asset", [["POINTS", "POINTS"], ["GREEN", "GREEN"]], "POINTS");
  const breakageResult = h("div", { "aria-live": "polite" });
  const days = h("input", { type: "number", name: "days", min: "1", max: "366", value: "90", required: true });

  async function loadBreakage() {
    try {
      const lines = (await api.query(api.BREAKAGE, { from: from.value, to: to.value, asset: asset.value })).breakage;
      breakageResult.replaceChildren(
        lines.length ? simpleBar(t("console.reports.breakageChart"), lines.map((l) => l.issuerCode), lines.map((l) => l.points), t("console.points")) : notice("info", t("console.reports.noBreakage")),
        dataTable({
          caption: t("console.reports.breakage"),
          rows: lines,
          columns: [
            { key: "issuerCode", label: t("console.settlement.issuer") },
            { key: "points", label: t("console.points"), numeric: true, render: (l) => formatPoints(l.points) },
          ],
        }));
    } catch (error) {
      showError(breakageResult, error);
    }
  }

  const breakageForm = h("form", { class: "row align-end" }, field(t("console.reports.from"), from), field(t("console.reports.to"), to),
    field(t("console.asset"), asset), h("button", { type: "submit" }, t("console.reports.show")));
  breakageForm.addEventListener("submit", (event) => {
    event.preventDefault();
    loadBreakage();
  });

  const expiringHolder = h("div");
  function loadExpiring() {
    expiringHolder.replaceChildren(dataTable({
      caption: t("console.reports.expiring"),
      columns: [
        { key: "memberNumber", label: t("console.members.number") },
        { key: "asset", label: t("console.asset") },
        { key: "points", label: t("console.points"), numeric: true, render: (m) => formatPoints(m.points) },
        { key: "firstExpiry", label: t("console.reports.firstExpiry"), render: (m) => formatDate(m.firstExpiry) },
      ],
      load: async (after) => fromConnection((await api.query(api.EXPIRING, { days: Number(days.value), asset: "POINTS", first: 25, after })).expiringPoints),
      empty: t("console.reports.noExpiring"),
    }));
  }
  const expiringForm = h("form", { class: "row align-end" }, field(t("console.reports.days"), days), h("button", { type: "submit" }, t("console.reports.show")));
  expiringForm.addEventListener("submit", (event) => {
    event.preventDefault();
    loadExpiring();
  });
  loadBreakage();
  loadExpiring();
  return page(t("console.nav.reports"),
    card(t("console.reports.breakage"), h("p", { class: "muted" }, t("console.reports.breakageHint")), breakageForm, breakageResult),
    card(t("console.reports.expiring"), expiringForm, expiringHolder));
}

export function auditView() {
  const operation = h("input", { type: "text", name: "operation", placeholder: "mutation:approveSettlement" });
  const holder = h("div");
  function load() {
    holder.replaceChildren(dataTable({
      caption: t("console.nav.audit"),
      columns: [
        { key: "createdAt", label: t("console.audit.when"), render: (r) => formatDateTime(r.createdAt) },
        { key: "operation", label: t("console.audit.operation") },
        { key: "outcome", label: t("console.audit.outcome"), render: (r) => badge(t(`console.audit.${r.outcome}`), r.outcome === "ok" ? "status-approved" : "status-draft") },
        { key: "codes", label: t("console.audit.codes") },
        { key: "principal", label: t("console.audit.principal") },
        { key: "clientId", label: t("console.clients.clientId") },
        { key: "tenantCode", label: t("console.audit.tenant") },
      ],
      load: async (after) => fromConnection((await api.query(api.AUDIT, { first: 25, after, operation: operation.value.trim() || null })).auditLog),
    }));
  }
  const form = h("form", { class: "row align-end", role: "search" }, field(t("console.audit.filter"), operation), h("button", { type: "submit" }, t("console.reports.show")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  load();
  return page(t("console.nav.audit"), card(t("console.nav.audit"), form, holder));
}
