// The whole alliance's rewards in one list, filterable; redeem with a confirmation step.

import { formatPoints, t } from "/shared/i18n.js";
import { loadBalances, loadMerchants, loadRewards, redeemReward } from "../api.js";
import { h, toast } from "../dom.js";
import { currentBalance, setBalances } from "../state.js";

const KINDS = ["GOODS", "SERVICE", "UPGRADE", "COUPON"];

export async function render(main) {
  const [merchants, balances] = await Promise.all([loadMerchants(), loadBalances()]);
  setBalances(balances);
  const merchant = h(
    "select",
    { id: "filter-merchant" },
    h("option", { value: "" }, t("rewards.allMerchants")),
    merchants.map((m) => h("option", { value: m.code }, m.name)),
  );
  const kind = h(
    "select",
    { id: "filter-kind" },
    h("option", { value: "" }, t("rewards.allKinds")),
    KINDS.map((k) => h("option", { value: k }, t(`rewardKind.${k}`))),
  );
  const affordable = h("input", { id: "filter-affordable", type: "checkbox" });
  const list = h("ul", { class: "plain rewards", "aria-labelledby": "rewards-title" });
  const empty = h("p", { class: "muted", hidden: true }, t("rewards.empty"));
  const more = h("button", { type: "button", class: "secondary wide", hidden: true }, t("rewards.more"));
  const dialog = confirmDialog();
  let cursor = null;

  const filter = () => ({
    tenantCode: merchant.value || null,
    kind: kind.value || null,
    affordable: affordable.checked ? true : null,
  });
  let generation = 0;
  const load = async (reset) => {
    if (reset) cursor = null;
    const mine = ++generation; // a newer filter's answer wins over a slower older one
    list.setAttribute("aria-busy", "true");
    const page = await loadRewards(filter(), cursor);
    if (mine !== generation) return;
    list.setAttribute("aria-busy", "false");
    const items = page.edges.map((edge) => card(edge.node, (reward) => dialog.open(reward, () => load(true))));
    if (reset) list.replaceChildren(...items);
    else list.append(...items);
    cursor = page.pageInfo.endCursor;
    more.hidden = !page.pageInfo.hasNextPage;
    empty.hidden = list.children.length > 0;
  };
  for (const control of [merchant, kind, affordable]) control.addEventListener("change", () => load(true));
  more.addEventListener("click", () => load(false));
  await load(true);

  main.replaceChildren(
    h(
      "section",
      { class: "stack" },
      h("h2", { id: "rewards-title" }, t("rewards.title")),
      h(
        "div",
        { class: "filters card" },
        h("div", { class: "field" }, h("label", { for: "filter-merchant" }, t("rewards.merchant")), merchant),
        h("div", { class: "field" }, h("label", { for: "filter-kind" }, t("rewards.kind")), kind),
        h("div", { class: "check" }, affordable, h("label", { for: "filter-affordable" }, t("rewards.affordable"))),
      ),
      list,
      empty,
      more,
      dialog.element,
    ),
  );
}

function price(reward, points) {
  return t(reward.asset === "GREEN" ? "rewards.greenPoints" : "rewards.points", { points: formatPoints(points) });
}

function card(reward, onRedeem) {
  const titleId = `reward-${reward.id.replace(/[^A-Za-z0-9_-]/g, "")}`;
  return h(
    "li",
    { class: "card reward", "aria-labelledby": titleId },
    h("h3", { id: titleId }, reward.name),
    h("p", { class: "muted small" }, `${reward.tenantName} · ${t(`rewardKind.${reward.kind}`)}`),
    reward.description ? h("p", {}, reward.description) : null,
    h(
      "p",
      { class: "price" },
      h("strong", {}, price(reward, reward.currentPoints)),
      reward.onSale ? h("s", { class: "muted small" }, ` ${t("rewards.wasPoints", { points: formatPoints(reward.points) })}`) : null,
    ),
    h(
      "p",
      { class: "muted small" },
      [
        reward.stock !== null ? t("rewards.stock", { stock: reward.stock }) : null,
        reward.minTier ? t("rewards.minTier", { tier: reward.minTier }) : null,
      ]
        .filter(Boolean)
        .join(" · "),
    ),
    h(
      "button",
      { type: "button", "aria-label": t("rewards.redeemName", { name: reward.name }), onclick: () => onRedeem(reward) },
      t("rewards.redeem"),
    ),
  );
}

// One <dialog> for every confirmation: modal (focus stays inside), Escape or Cancel closes it.
function confirmDialog() {
  const text = h("p", { id: "confirm-text" });
  const error = h("p", { class: "error", role: "alert" });
  const confirm = h("button", { type: "button", id: "confirm-redeem" }, t("rewards.confirm"));
  const cancel = h("button", { type: "button", class: "secondary" }, t("rewards.cancel"));
  const element = h(
    "dialog",
    { class: "confirm", "aria-labelledby": "confirm-title", "aria-describedby": "confirm-text" },
    h("h2", { id: "confirm-title" }, t("rewards.confirmTitle")),
    text,
    error,
    h("div", { class: "row end" }, cancel, confirm),
  );
  let pending = null;
  cancel.addEventListener("click", () => element.close());
  element.addEventListener("close", () => {
    pending = null;
  });
  confirm.addEventListener("click", async () => {
    if (!pending) return;
    const { reward, key, done } = pending;
    confirm.disabled = true;
    error.textContent = "";
    try {
      const answer = await redeemReward(reward.id, key);
      if (answer.userErrors.length) {
        const code = answer.userErrors[0].code;
        const message = t(`refusal.${code}`);
        error.textContent = message === `refusal.${code}` ? answer.userErrors[0].message : message;
        return;
      }
      if (answer.balance) setBalances([answer.balance]);
      element.close();
      toast(t("rewards.done", { name: reward.name }));
      done();
    } catch {
      error.textContent = t("app.error");
    } finally {
      confirm.disabled = false;
    }
  });
  return {
    element,
    open(reward, done) {
      // One idempotency key per confirmation: a double click or a retry redeems once.
      pending = { reward, key: crypto.randomUUID(), done };
      const after = Number(currentBalance(reward.asset).available) - reward.currentPoints;
      text.textContent = t("rewards.confirmText", {
        name: reward.name,
        merchant: reward.tenantName,
        points: formatPoints(reward.currentPoints),
        after: formatPoints(after),
      });
      error.textContent = "";
      element.showModal();
      confirm.focus();
    },
  };
}
