// Settlement: batches, running a period (operator), one batch with its bilateral matrix as a
// heatmap, net positions as a bar chart, payment instructions, disputes, lines and the CSV statement.
// The operator approves, marks paid and resolves; a merchant sees its own lines and disputes them.

import { formatDate, formatDateTime, formatMoney, formatPoints, getTimeZone, t } from "/shared/i18n.js";
import * as api from "../api.js";
import { heatmap, positionsBar } from "../charts.js";
import {
  badge, card, confirm, dataTable, dialog, download, field, fromConnection, h, link, notice, page, select,
  showError, userErrorList,
} from "../ui.js";

const MAX_LINES = 1000; // the heatmap reads every line of a batch, page by page, up to this many

export function statusBadge(status) {
  return badge(t(`console.status.${status}`), `status-${status.toLowerCase()}`);
}

function period(batch) {
  // periodEnd is exclusive: show the last day inside the period.
  const lastDay = new Date(new Date(batch.periodEnd).getTime() - 1).toISOString();
  return `${formatDate(batch.periodStart)} – ${formatDate(lastDay)}`;
}

// The month before this one in the alliance's time zone, as YYYY-MM (the default period to settle).
export function previousMonth(now = new Date()) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en", { timeZone: getTimeZone(), year: "numeric", month: "numeric" })
      .formatToParts(now).map((part) => [part.type, part.value]));
  const year = Number(parts.month) === 1 ? Number(parts.year) - 1 : Number(parts.year);
  const month = Number(parts.month) === 1 ? 12 : Number(parts.month) - 1;
  return `${year}-${String(month).padStart(2, "0")}`;
}

export function batchesView(context) {
  const status = h("div", { "aria-live": "polite" });
  const table = dataTable({
    caption: t("console.settlement.batches"),
    columns: [
      { key: "periodStart", label: t("console.settlement.period"), render: (b) => link(`#/settlement/${encodeURIComponent(b.id)}`, period(b)) },
      { key: "asset", label: t("console.asset") },
      { key: "status", label: t("console.status"), render: (b) => statusBadge(b.status) },
      { key: "linePoints", label: t("console.settlement.linePoints"), numeric: true, render: (b) => formatPoints(b.linePoints) },
      { key: "grossAmount", label: t("console.settlement.gross"), numeric: true, render: (b) => formatMoney(b.grossAmount) },
      { key: "feeAmount", label: t("console.settlement.fee"), numeric: true, render: (b) => formatMoney(b.feeAmount) },
      { key: "computedAt", label: t("console.settlement.computedAt"), render: (b) => formatDateTime(b.computedAt) },
    ],
    load: async (after) => fromConnection((await api.query(api.BATCHES, { first: 20, after })).settlementBatches),
  });
  const children = [];
  if (context.role === "operator") children.push(runForm(status));
  children.push(status, card(t("console.settlement.batches"), table));
  return page(t("console.nav.settlement"), ...children);
}

function runForm(status) {
  const month = h("input", { type: "month", name: "period", required: true, value: previousMonth() });
  const asset = select("asset", [["POINTS", "POINTS"], ["GREEN", "GREEN"]], "POINTS");
  const form = h("form", { class: "row align-end", "aria-describedby": "run-hint" },
    field(t("console.settlement.month"), month),
    field(t("console.asset"), asset),
    h("button", { type: "submit" }, t("console.settlement.run")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.replaceChildren(notice("info", t("console.working")));
    try {
      const data = await api.query(api.RUN_SETTLEMENT, { i: { asset: asset.value, periodStart: `${month.value}-01` } });
      const payload = data.runSettlement;
      if (payload.userErrors.length) {
        status.replaceChildren(userErrorList(payload.userErrors));
        return;
      }
      window.location.hash = `#/settlement/${encodeURIComponent(payload.batch.id)}`;
    } catch (error) {
      showError(status, error);
    }
  });
  return card(t("console.settlement.runTitle"), h("p", { id: "run-hint", class: "muted" }, t("console.settlement.runHint")), form);
}

async function allLines(id) {
  const lines = [];
  let after = null;
  do {
    const data = await api.query(api.BATCH_LINES, { id, first: 100, after });
    const connection = data.settlementBatch.lines;
    lines.push(...connection.edges.map((e) => e.node));
    after = connection.pageInfo.hasNextPage ? connection.pageInfo.endCursor : null;
  } while (after && lines.length < MAX_LINES);
  return lines;
}

export async function batchView(context, id) {
  const data = await api.query(api.BATCH, { id });
  const batch = data.settlementBatch;
  if (!batch) return page(t("console.notFound"), notice("error", t("console.settlement.notFound")));
  const lines = await allLines(id);
  const operator = context.role === "operator";
  const status = h("div", { "aria-live": "polite" });
  const refresh = () => context.rerender();

  async function mutate(text, input, name) {
    status.replaceChildren(notice("info", t("console.working")));
    try {
      const payload = (await api.query(text, { i: input }))[name];
      if (payload.userErrors.length) {
        status.replaceChildren(userErrorList(payload.userErrors));
        return false;
      }
      context.announce(t("console.saved"));
      refresh();
      return true;
    } catch (error) {
      showError(status, error);
      return false;
    }
  }

  const actions = h("div", { class: "row" });
  if (operator && batch.status === "DRAFT") {
    actions.append(h("button", {
      type: "button",
      id: "approve",
      onclick: async () => {
        if (await confirm(t("console.settlement.approveTitle"), t("console.settlement.approveText", { period: period(batch) }), t("console.settlement.approve"))) {
          await mutate(api.APPROVE, { batchId: batch.id }, "approveSettlement");
        }
      },
    }, t("console.settlement.approve")));
  }
  actions.append(h("button", {
    type: "button",
    class: "secondary",
    onclick: async () => {
      try {
        const statement = (await api.query(api.BATCH_CSV, { id })).settlementBatch;
        download(`settlement-${statement.asset}-${statement.periodStart.slice(0, 10)}.csv`, statement.statementCsv);
      } catch (error) {
        showError(status, error);
      }
    },
  }, t("console.settlement.exportCsv")));
  if (operator) {
    actions.append(h("button", {
      type: "button",
      class: "secondary",
      onclick: async () => {
        try {
          const result = (await api.query(api.RECONCILE, { id })).settlementReconciliation;
          status.replaceChildren(notice(result.matches ? "ok" : "error",
            result.matches ? t("console.settlement.matches") : t("console.settlement.differs", { count: result.differences.length })));
        } catch (error) {
          showError(status, error);
        }
      },
    }, t("console.settlement.reconcile")));
  }

  const summary = h("dl", { class: "facts" },
    h("dt", {}, t("console.status")), h("dd", {}, statusBadge(batch.status)),
    h("dt", {}, t("console.asset")), h("dd", {}, batch.asset),
    h("dt", {}, t("console.settlement.period")), h("dd", {}, period(batch)),
    h("dt", {}, t("console.settlement.linePoints")), h("dd", {}, formatPoints(batch.linePoints)),
    h("dt", {}, t("console.settlement.gross")), h("dd", {}, formatMoney(batch.grossAmount)),
    h("dt", {}, t("console.settlement.fee")), h("dd", {}, formatMoney(batch.feeAmount)),
    batch.approvedAt ? [h("dt", {}, t("console.settlement.approvedAt")), h("dd", {}, formatDateTime(batch.approvedAt))] : null,
    batch.paidAt ? [h("dt", {}, t("console.settlement.paidAt")), h("dd", {}, formatDateTime(batch.paidAt))] : null);

  const lineColumns = [
    { key: "issuerCode", label: t("console.settlement.issuer") },
    { key: "redeemerCode", label: t("console.settlement.redeemer") },
    { key: "points", label: t("console.points"), numeric: true, render: (l) => formatPoints(l.points) },
    { key: "grossAmount", label: t("console.settlement.gross"), numeric: true, render: (l) => formatMoney(l.grossAmount) },
    { key: "feeAmount", label: t("console.settlement.fee"), numeric: true, render: (l) => formatMoney(l.feeAmount) },
    { key: "netAmount", label: t("console.settlement.net"), numeric: true, render: (l) => formatMoney(l.netAmount) },
  ];
  if (!operator && batch.status !== "PAID") {
    lineColumns.push({ key: "dispute", label: t("console.settlement.dispute"), sortable: false, render: (l) =>
      h("button", { type: "button", class: "secondary small", "aria-label": t("console.settlement.disputeLine", { issuer: l.issuerCode, redeemer: l.redeemerCode }),
        onclick: () => disputeLine(batch, l, mutate) }, t("console.settlement.dispute")) });
  }

  const heatTitle = t("console.settlement.heatmapTitle", { period: period(batch) });
  return page(t("console.settlement.batchTitle", { period: period(batch), asset: batch.asset }),
    h("p", {}, link("#/settlement", t("console.settlement.back"))),
    status,
    card(t("console.settlement.summary"), summary, actions),
    card(t("console.settlement.heatmap"),
      h("p", { class: "muted" }, t("console.settlement.heatmapHint")),
      lines.length ? heatmap(heatTitle, lines) : notice("info", t("console.settlement.noLines"))),
    card(t("console.settlement.positions"),
      batch.positions.length ? positionsBar(t("console.settlement.positionsTitle"), batch.positions) : null,
      dataTable({
        caption: t("console.settlement.positions"),
        rows: batch.positions,
        columns: [
          { key: "party", label: t("console.settlement.party") },
          { key: "receivable", label: t("console.settlement.receivable"), numeric: true, render: (p) => formatMoney(p.receivable) },
          { key: "payable", label: t("console.settlement.payable"), numeric: true, render: (p) => formatMoney(p.payable) },
          { key: "netAmount", label: t("console.settlement.net"), numeric: true, render: (p) => formatMoney(p.netAmount) },
        ],
      })),
    card(t("console.settlement.instructions"), instructionsTable(batch, operator, mutate)),
    card(t("console.settlement.disputes"), disputesTable(batch, operator, mutate)),
    card(t("console.settlement.lines"), dataTable({ caption: t("console.settlement.lines"), rows: lines, columns: lineColumns })));
}

function instructionsTable(batch, operator, mutate) {
  const columns = [
    { key: "party", label: t("console.settlement.party") },
    { key: "direction", label: t("console.settlement.direction"), render: (i) => t(`console.direction.${i.direction}`) },
    { key: "amount", label: t("console.settlement.amount"), numeric: true, render: (i) => formatMoney(i.amount) },
    { key: "paymentReference", label: t("console.settlement.reference") },
  ];
  if (operator && batch.status === "APPROVED") {
    columns.push({ key: "markPaid", label: t("console.settlement.markPaid"), sortable: false, render: (i) => i.paymentReference ? badge(t("console.status.PAID"), "status-paid")
      : h("button", { type: "button", class: "secondary small", "aria-label": t("console.settlement.markPaidFor", { party: i.party }), onclick: () => markPaid(batch, i, mutate) }, t("console.settlement.markPaid")) });
  }
  return dataTable({ caption: t("console.settlement.instructions"), rows: batch.instructions, columns });
}

function disputesTable(batch, operator, mutate) {
  const columns = [
    { key: "issuerCode", label: t("console.settlement.issuer") },
    { key: "redeemerCode", label: t("console.settlement.redeemer") },
    { key: "raisedBy", label: t("console.settlement.raisedBy") },
    { key: "reason", label: t("console.settlement.reason") },
    { key: "status", label: t("console.status"), render: (d) => badge(t(`console.dispute.${d.status}`)) },
    { key: "resolution", label: t("console.settlement.resolution") },
  ];
  if (operator) {
    columns.push({ key: "resolve", label: t("console.settlement.resolve"), sortable: false, render: (d) => d.status === "OPEN"
      ? h("button", { type: "button", class: "secondary small", "aria-label": t("console.settlement.resolveFor", { issuer: d.issuerCode, redeemer: d.redeemerCode }), onclick: () => resolveDispute(d, mutate) }, t("console.settlement.resolve"))
      : "" });
  }
  return dataTable({ caption: t("console.settlement.disputes"), rows: batch.disputes, columns, empty: t("console.settlement.noDisputes") });
}

async function askText(title, label, confirmLabel) {
  const input = h("input", { type: "text", name: "text", required: true, maxlength: "500" });
  const answer = await dialog(title, field(label, input), [["cancel", t("console.cancel"), "secondary"], ["ok", confirmLabel]]);
  return answer === "ok" && input.value.trim() ? input.value.trim() : null;
}

async function markPaid(batch, instruction, mutate) {
  const reference = await askText(t("console.settlement.markPaidFor", { party: instruction.party }), t("console.settlement.reference"), t("console.settlement.markPaid"));
  if (reference) await mutate(api.MARK_PAID, { batchId: batch.id, party: instruction.party, paymentReference: reference }, "markSettlementPaid");
}

async function resolveDispute(dispute, mutate) {
  const resolution = await askText(t("console.settlement.resolve"), t("console.settlement.resolution"), t("console.settlement.resolve"));
  if (resolution) await mutate(api.RESOLVE, { disputeId: dispute.id, resolution }, "resolveDispute");
}

async function disputeLine(batch, line, mutate) {
  const reason = await askText(t("console.settlement.disputeLine", { issuer: line.issuerCode, redeemer: line.redeemerCode }), t("console.settlement.reason"), t("console.settlement.dispute"));
  if (reason) {
    await mutate(api.DISPUTE, { batchId: batch.id, issuerCode: line.issuerCode, redeemerCode: line.redeemerCode, reason }, "disputeSettlementLine");
  }
}

export function showBatchError(error) {
  const container = h("div");
  showError(container, error);
  return page(t("console.nav.settlement"), container);
}
