// Merchant screens: its members (search by phone, member number or its own reference), one
// member's balance and the merchant's own history with them, its earning rules and its catalog.

import { formatDate, formatDateTime, formatPoints, t } from "/shared/i18n.js";
import * as api from "../api.js";
import {
  badge, card, confirm, dataTable, field, fromConnection, h, idempotencyKey, link, notice, page, select, showError,
  userErrorList,
} from "../ui.js";

export function membersView(context, search = "") {
  const input = h("input", { type: "search", name: "search", value: search, autocomplete: "off" });
  const holder = h("div");
  function load() {
    holder.replaceChildren(dataTable({
      caption: t("console.members.title"),
      columns: [
        { key: "memberNumber", label: t("console.members.number"), render: (m) => link(`#/members/${encodeURIComponent(m.memberNumber)}`, m.memberNumber) },
        { key: "name", label: t("console.members.name") },
        { key: "phone", label: t("console.members.phone") },
        { key: "externalRef", label: t("console.members.ref") },
        { key: "createdAt", label: t("console.members.since"), render: (m) => formatDate(m.createdAt) },
      ],
      load: async (after) => fromConnection((await api.query(api.MEMBERS, { search: input.value.trim() || null, first: 25, after })).members),
      empty: t("console.members.none"),
    }));
  }
  const form = h("form", { class: "row align-end", role: "search" },
    field(t("console.members.search"), input, t("console.members.searchHint")),
    h("button", { type: "submit" }, t("console.members.find")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  load();
  return page(t("console.nav.members"), card(t("console.members.title"), form, holder));
}

export async function memberView(context, memberNumber) {
  const member = (await api.query(api.MEMBER, { n: memberNumber })).member;
  if (!member) {
    // Unlinked and nonexistent members look the same: nothing about them is shown.
    return page(t("console.members.notFoundTitle"),
      notice("error", t("console.members.notFound")),
      h("p", {}, link("#/members", t("console.members.back"))));
  }
  const balances = dataTable({
    caption: t("console.members.balances"),
    rows: member.balances,
    columns: [
      { key: "asset", label: t("console.asset") },
      { key: "available", label: t("console.members.available"), numeric: true, render: (b) => formatPoints(b.available) },
      { key: "held", label: t("console.members.held"), numeric: true, render: (b) => formatPoints(b.held) },
      { key: "expiring", label: t("console.members.expiring"), numeric: true, value: (b) => b.expiringSoon.reduce((s, e) => s + e.points, 0),
        render: (b) => formatPoints(b.expiringSoon.reduce((s, e) => s + e.points, 0)) },
    ],
  });
  const history = dataTable({
    caption: t("console.members.history"),
    columns: [
      { key: "effectiveAt", label: t("console.members.when"), render: (x) => formatDateTime(x.effectiveAt) },
      { key: "kind", label: t("console.members.kind"), render: (x) => t(`console.kind.${x.kind}`) },
      { key: "points", label: t("console.points"), numeric: true, render: (x) => formatPoints(x.points) },
      { key: "asset", label: t("console.asset") },
      { key: "orderRef", label: t("console.members.order") },
    ],
    load: async (after) => fromConnection((await api.query(api.MEMBER_HISTORY, { n: memberNumber, first: 20, after })).member.transactions),
    empty: t("console.members.noHistory"),
  });
  return page(t("console.members.memberTitle", { name: member.name || member.memberNumber }),
    h("p", {}, link("#/members", t("console.members.back"))),
    card(t("console.members.profile"), h("dl", { class: "facts" },
      h("dt", {}, t("console.members.number")), h("dd", {}, member.memberNumber),
      h("dt", {}, t("console.members.phone")), h("dd", {}, member.phone),
      h("dt", {}, t("console.members.ref")), h("dd", {}, member.externalRef || "—"),
      h("dt", {}, t("console.members.tier")), h("dd", {}, member.tier ? member.tier.name : "—"),
      h("dt", {}, t("console.members.since")), h("dd", {}, formatDate(member.createdAt)))),
    card(t("console.members.balances"), balances),
    card(t("console.members.history"), h("p", { class: "muted" }, t("console.members.historyHint")), history));
}

// -- earning rules --------------------------------------------------------------------------------

const RULE_KINDS = ["BASE", "CATEGORY_RATE", "TAG_RATE", "MULTIPLIER", "EVENT_BONUS"];
const RULE_EXAMPLES = {
  BASE: { rate: "1", rounding: "floor" },
  CATEGORY_RATE: { category: "baby_formula", multiplier: "2" },
  TAG_RATE: { tag: "organic", multiplier: "1.5" },
  MULTIPLIER: { multiplier: "2", schedule: { weekdays: [6, 7] } },
  EVENT_BONUS: { event: "SURVEY", points: 50, limit: { count: 1, per: "month" } },
};

export async function rulesView(context) {
  const rules = (await api.query(api.RULES)).earningRules;
  const status = h("div", { "aria-live": "polite" });
  const code = h("input", { type: "text", name: "code", required: true, pattern: "[a-z0-9][a-z0-9_\\-]{1,62}" });
  const kind = select("kind", RULE_KINDS.map((k) => [k, t(`console.ruleKind.${k}`)]), "BASE");
  const config = h("textarea", { name: "config", rows: "5", required: true, spellcheck: "false" });
  config.value = JSON.stringify(RULE_EXAMPLES.BASE, null, 2);
  kind.addEventListener("change", () => {
    config.value = JSON.stringify(RULE_EXAMPLES[kind.value], null, 2);
  });
  const formTitle = h("h3", {}, t("console.rules.new"));
  const form = h("form", { class: "stack", id: "rule-form" },
    formTitle,
    h("div", { class: "grid-2" }, field(t("console.rules.code"), code, t("console.rules.codeHint")), field(t("console.rules.kind"), kind)),
    field(t("console.rules.config"), config, t("console.rules.configHint")),
    h("button", { type: "submit" }, t("console.rules.save")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let parsed;
    try {
      parsed = JSON.parse(config.value);
    } catch {
      status.replaceChildren(notice("error", t("console.rules.badJson")));
      config.focus();
      return;
    }
    try {
      const payload = (await api.query(api.DEFINE_RULE, { i: { code: code.value.trim(), kind: kind.value, config: parsed } })).defineEarningRule;
      if (payload.userErrors.length) return status.replaceChildren(userErrorList(payload.userErrors));
      context.announce(t("console.saved"));
      context.rerender();
    } catch (error) {
      showError(status, error);
    }
  });

  function edit(rule) {
    code.value = rule.code;
    kind.value = rule.kind;
    config.value = JSON.stringify(rule.config, null, 2);
    formTitle.textContent = t("console.rules.editing", { code: rule.code });
    code.focus();
  }

  async function retire(rule) {
    if (!(await confirm(t("console.rules.retire"), t("console.rules.retireText", { code: rule.code }), t("console.rules.retire")))) return;
    try {
      const payload = (await api.query(api.RETIRE_RULE, { i: { code: rule.code } })).retireEarningRule;
      if (payload.userErrors.length) return status.replaceChildren(userErrorList(payload.userErrors));
      context.announce(t("console.saved"));
      context.rerender();
    } catch (error) {
      showError(status, error);
    }
  }

  const own = (rule) => !rule.campaign && !rule.effectiveUntil;
  const table = dataTable({
    caption: t("console.rules.title"),
    rows: rules,
    columns: [
      { key: "code", label: t("console.rules.code") },
      { key: "kind", label: t("console.rules.kind"), value: (r) => t(`console.ruleKind.${r.kind}`) },
      { key: "config", label: t("console.rules.config"), sortable: false, render: (r) => h("code", { class: "json" }, JSON.stringify(r.config)) },
      { key: "campaign", label: t("console.rules.scope"), value: (r) => (r.campaign ? t("console.rules.campaign") : t("console.rules.own")) },
      { key: "effectiveFrom", label: t("console.rules.from"), render: (r) => formatDate(r.effectiveFrom) },
      { key: "effectiveUntil", label: t("console.rules.until"), render: (r) => (r.effectiveUntil ? formatDate(r.effectiveUntil) : "—") },
      { key: "actions", label: t("console.actions"), sortable: false, render: (r) => own(r) ? h("div", { class: "row" },
        h("button", { type: "button", class: "secondary small", "aria-label": t("console.rules.edit", { code: r.code }), onclick: () => edit(r) }, t("console.edit")),
        h("button", { type: "button", class: "secondary small", "aria-label": t("console.rules.retireCode", { code: r.code }), onclick: () => retire(r) }, t("console.rules.retire"))) : "" },
    ],
  });
  return page(t("console.nav.rules"), status, card(t("console.rules.title"), table), card(t("console.rules.define"), form));
}

// -- catalog --------------------------------------------------------------------------------------

const REWARD_KINDS = ["GOODS", "SERVICE", "UPGRADE", "COUPON"];

export function catalogView(context) {
  const status = h("div", { "aria-live": "polite" });
  const inputs = {
    name: h("input", { type: "text", name: "name", required: true, maxlength: "200" }),
    kind: select("kind", REWARD_KINDS.map((k) => [k, t(`console.rewardKind.${k}`)]), "GOODS"),
    points: h("input", { type: "number", name: "points", min: "1", required: true }),
    asset: select("asset", [["POINTS", "POINTS"], ["GREEN", "GREEN"]], "POINTS"),
    stock: h("input", { type: "number", name: "stock", min: "0" }),
    perMemberLimit: h("input", { type: "number", name: "perMemberLimit", min: "1" }),
    description: h("input", { type: "text", name: "description", maxlength: "1000" }),
  };
  let editing = null;
  const formTitle = h("h3", {}, t("console.catalog.new"));
  const cancelEdit = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => resetForm() }, t("console.cancel"));
  const form = h("form", { class: "stack", id: "reward-form" },
    formTitle,
    h("div", { class: "grid-2" },
      field(t("console.catalog.name"), inputs.name),
      field(t("console.catalog.kind"), inputs.kind),
      field(t("console.catalog.points"), inputs.points),
      field(t("console.asset"), inputs.asset),
      field(t("console.catalog.stock"), inputs.stock, t("console.catalog.stockHint")),
      field(t("console.catalog.limit"), inputs.perMemberLimit)),
    field(t("console.catalog.description"), inputs.description),
    h("div", { class: "row" }, h("button", { type: "submit" }, t("console.catalog.save")), cancelEdit));

  function resetForm() {
    editing = null;
    form.reset();
    inputs.asset.disabled = false;
    formTitle.textContent = t("console.catalog.new");
    cancelEdit.hidden = true;
  }

  function optionalNumber(input) {
    return input.value === "" ? null : Number(input.value);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const common = {
      kind: inputs.kind.value,
      name: inputs.name.value.trim(),
      points: Number(inputs.points.value),
      description: inputs.description.value,
      stock: optionalNumber(inputs.stock),
      perMemberLimit: optionalNumber(inputs.perMemberLimit),
    };
    try {
      const payload = editing
        ? (await api.query(api.UPDATE_REWARD, { i: { rewardId: editing.id, ...common } })).updateReward
        : (await api.query(api.CREATE_REWARD, { i: { ...common, asset: inputs.asset.value } })).createReward;
      if (payload.userErrors.length) return status.replaceChildren(userErrorList(payload.userErrors));
      status.replaceChildren(notice("ok", t("console.catalog.saved", { name: payload.reward.name })));
      resetForm();
      table.reload();
    } catch (error) {
      showError(status, error);
    }
  });

  function edit(reward) {
    editing = reward;
    inputs.name.value = reward.name;
    inputs.kind.value = reward.kind;
    inputs.points.value = reward.points;
    inputs.asset.value = reward.asset;
    inputs.asset.disabled = true;
    inputs.stock.value = reward.stock ?? "";
    inputs.perMemberLimit.value = reward.perMemberLimit ?? "";
    inputs.description.value = reward.description;
    formTitle.textContent = t("console.catalog.editing", { name: reward.name });
    cancelEdit.hidden = false;
    inputs.name.focus();
  }

  async function withdraw(reward) {
    if (!(await confirm(t("console.catalog.withdraw"), t("console.catalog.withdrawText", { name: reward.name }), t("console.catalog.withdraw")))) return;
    try {
      const payload = (await api.query(api.WITHDRAW_REWARD, { i: { rewardId: reward.id, idempotencyKey: idempotencyKey() } })).withdrawReward;
      if (payload.userErrors.length) return status.replaceChildren(userErrorList(payload.userErrors));
      status.replaceChildren(notice("ok", t("console.catalog.withdrawn", { name: reward.name, count: payload.cancelledRedemptions })));
      table.reload();
    } catch (error) {
      showError(status, error);
    }
  }

  const tenantCode = context.viewer.tenant?.code;
  const table = dataTable({
    caption: t("console.catalog.title"),
    columns: [
      { key: "name", label: t("console.catalog.name") },
      { key: "kind", label: t("console.catalog.kind"), value: (r) => t(`console.rewardKind.${r.kind}`) },
      { key: "currentPoints", label: t("console.catalog.points"), numeric: true, render: (r) => `${formatPoints(r.currentPoints)} ${r.asset}` },
      { key: "stock", label: t("console.catalog.stock"), numeric: true, render: (r) => (r.stock === null ? t("console.catalog.unlimited") : formatPoints(r.stock)) },
      { key: "status", label: t("console.status"), render: (r) => badge(t(`console.rewardStatus.${r.status}`), r.status === "ACTIVE" ? "status-approved" : "") },
      { key: "actions", label: t("console.actions"), sortable: false, render: (r) => r.status === "ACTIVE" ? h("div", { class: "row" },
        h("button", { type: "button", class: "secondary small", "aria-label": t("console.catalog.edit", { name: r.name }), onclick: () => edit(r) }, t("console.edit")),
        h("button", { type: "button", class: "secondary small", "aria-label": t("console.catalog.withdrawName", { name: r.name }), onclick: () => withdraw(r) }, t("console.catalog.withdraw"))) : "" },
    ],
    load: async (after) => fromConnection((await api.query(api.REWARDS, { filter: { tenantCode }, first: 25, after })).rewards),
  });
  return page(t("console.nav.catalog"), status, card(t("console.catalog.title"), table), card(t("console.catalog.define"), form));
}
