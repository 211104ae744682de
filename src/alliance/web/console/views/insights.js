// Operator insights: what the alliance owes its members (liability by expiry month and issuer,
// with the expected breakage) and each merchant's health. Read from the insight summaries, which
// `alliance insights refresh` keeps current ("refreshed at" says how current).

import { formatDateTime, formatMoney, formatPoints, getLocale, t } from "/shared/i18n.js";
import * as api from "../api.js";
import { liabilityBars } from "../charts.js";
import { card, dataTable, h, notice, page } from "../ui.js";
import { categoryLabel } from "./operator.js";

// An expiry month (a plain date, first of the month) as "Jan 2027" / "2027年1月"; null: never.
function monthLabel(iso) {
  if (!iso) return t("console.insights.never");
  return new Intl.DateTimeFormat(getLocale(), { timeZone: "UTC", year: "numeric", month: "short" })
    .format(new Date(`${iso}T00:00:00Z`));
}

function percent(rate) {
  return rate === null || rate === undefined ? "—" : `${(Number(rate) * 100).toFixed(1)}%`;
}

function days(value) {
  return value === null || value === undefined ? "—" : t("console.insights.days", { days: value });
}

function pointsAndValue(amount) {
  return `${formatPoints(amount.points)} (${formatMoney(amount.value)})`;
}

function isoDate(date) {
  return date.toISOString().slice(0, 10);
}

export async function insightsView() {
  const today = new Date();
  const from = isoDate(new Date(today.getTime() - 365 * 86400000));
  const to = isoDate(new Date(today.getTime() + 86400000));
  const data = await api.query(api.INSIGHTS, { from, to });
  const liability = data.pointsLiability;
  const months = liability.byExpiryMonth;
  return page(t("console.nav.insights"),
    h("p", { class: "muted" }, liability.refreshedAt
      ? t("console.insights.refreshed", { at: formatDateTime(liability.refreshedAt) })
      : t("console.insights.notRefreshed")),
    card(t("console.insights.liability"),
      h("p", { class: "muted" }, t("console.insights.liabilityHint")),
      h("dl", { class: "facts" },
        h("dt", {}, t("console.insights.outstanding")), h("dd", {}, pointsAndValue(liability.outstanding)),
        h("dt", {}, t("console.insights.expectedBreakage")), h("dd", {}, pointsAndValue(liability.expectedBreakage)),
        h("dt", {}, t("console.insights.allianceRate")), h("dd", {}, percent(liability.allianceBreakageRate))),
      months.length
        ? liabilityBars(t("console.insights.liabilityChart"), months, monthLabel)
        : notice("info", t("console.insights.noLiability")),
      dataTable({
        caption: t("console.insights.byMonth"),
        rows: months,
        columns: [
          { key: "month", label: t("console.insights.expiryMonth"), value: (m) => monthLabel(m.month) },
          { key: "outstanding", label: t("console.insights.outstanding"), numeric: true, value: (m) => m.outstanding.points, render: (m) => pointsAndValue(m.outstanding) },
          { key: "expectedBreakage", label: t("console.insights.expectedBreakage"), numeric: true, value: (m) => m.expectedBreakage.points, render: (m) => pointsAndValue(m.expectedBreakage) },
        ],
      }),
      dataTable({
        caption: t("console.insights.byIssuer"),
        rows: liability.byIssuer,
        columns: [
          { key: "issuerCode", label: t("console.settlement.issuer") },
          { key: "outstanding", label: t("console.insights.outstanding"), numeric: true, value: (i) => i.outstanding.points, render: (i) => pointsAndValue(i.outstanding) },
          { key: "breakageRate", label: t("console.insights.rate"), numeric: true, value: (i) => Number(i.breakageRate), render: (i) => `${percent(i.breakageRate)} (${t(`console.insights.basis.${i.rateBasis}`)})` },
          { key: "expectedBreakage", label: t("console.insights.expectedBreakage"), numeric: true, value: (i) => i.expectedBreakage.points, render: (i) => pointsAndValue(i.expectedBreakage) },
        ],
      })),
    card(t("console.insights.health"),
      h("p", { class: "muted" }, t("console.insights.healthHint")),
      dataTable({
        caption: t("console.insights.health"),
        rows: data.merchantHealth,
        empty: t("console.insights.noHealth"),
        columns: [
          { key: "tenantCode", label: t("console.tenants.code") },
          { key: "category", label: t("console.tenants.category"), value: (m) => categoryLabel(m.category) },
          { key: "issued", label: t("console.insights.issued"), numeric: true, render: (m) => formatPoints(m.issued) },
          { key: "redeemed", label: t("console.insights.redeemed"), numeric: true, render: (m) => formatPoints(m.redeemed) },
          { key: "redemptionRatio", label: t("console.insights.ratio"), numeric: true, value: (m) => Number(m.redemptionRatio), render: (m) => percent(m.redemptionRatio) },
          { key: "disputeRate", label: t("console.insights.disputeRate"), numeric: true, value: (m) => Number(m.disputeRate), render: (m) => `${percent(m.disputeRate)} (${m.disputes}/${m.settlementLines})` },
          { key: "median", label: t("console.insights.median"), numeric: true, value: (m) => m.latencyAsIssuer.medianDays, render: (m) => days(m.latencyAsIssuer.medianDays) },
          { key: "p90", label: t("console.insights.p90"), numeric: true, value: (m) => m.latencyAsIssuer.p90Days, render: (m) => days(m.latencyAsIssuer.p90Days) },
        ],
      })));
}
