// Home: the unified balance per asset in large type, points expiring soon, the offers merchants
// made to the member (targeted offers of the segments they are in), tier and progress.

import { formatDate, formatPoints, setTimeZone, t } from "/shared/i18n.js";
import { loadHome } from "../api.js";
import { h, toast } from "../dom.js";
import { onBalancesChange, setBalances } from "../state.js";

const ASSET_ORDER = ["POINTS", "GREEN"];

export async function render(main) {
  const { timeZone, member, tiers, offers } = await loadHome();
  setTimeZone(timeZone);
  setBalances(member.balances);
  const balances = h("div", { class: "balances" });
  const expiring = h("div", { class: "stack" });
  const paint = (list) => {
    const sorted = [...list].sort((a, b) => ASSET_ORDER.indexOf(a.asset) - ASSET_ORDER.indexOf(b.asset));
    const shown = sorted.filter((balance) => balance.asset === "POINTS" || Number(balance.available) > 0);
    balances.replaceChildren(...shown.map(balanceCard));
    expiring.replaceChildren(...sorted.flatMap(expiringNotices));
  };
  paint(member.balances);
  const stop = onBalancesChange((list) => {
    paint(list);
    toast(t("home.updated"));
  });

  main.replaceChildren(
    h(
      "section",
      { class: "stack", "aria-labelledby": "hello" },
      h("h2", { id: "hello" }, t("home.hello", { name: member.name || member.memberNumber })),
      h("p", { class: "muted" }, t("home.memberNumber", { number: member.memberNumber })),
      balances,
      expiring,
      offersCard(offers),
      tierCard(member, tiers),
    ),
  );
  return stop;
}

function balanceCard(balance) {
  const label = balance.asset === "POINTS" ? t("home.balance") : t("home.balanceOf", { asset: t(`asset.${balance.asset}`) });
  const id = `balance-label-${balance.asset}`;
  return h(
    "section",
    { class: `card balance ${balance.asset === "POINTS" ? "primary" : ""}`, "aria-labelledby": id },
    h("h3", { id, class: "balance-label" }, label),
    h("p", { class: "balance-amount", "data-balance": balance.asset }, formatPoints(balance.available)),
    Number(balance.held) > 0 ? h("p", { class: "muted small" }, t("home.held", { points: formatPoints(balance.held) })) : null,
  );
}

function expiringNotices(balance) {
  return (balance.expiringSoon || []).map((soon) =>
    h(
      "p",
      { class: "notice", "data-expiring": balance.asset },
      t(balance.asset === "GREEN" ? "home.expiringGreen" : "home.expiring", {
        points: formatPoints(soon.points),
        date: formatDate(soon.expiresAt),
      }),
    ),
  );
}

function offersCard(offers) {
  if (!offers || offers.length === 0) return null;
  return h(
    "section",
    { class: "card offers", "aria-labelledby": "offers-title" },
    h("h3", { id: "offers-title" }, t("home.offers")),
    h(
      "ul",
      { class: "offer-list" },
      offers.map((offer) =>
        h(
          "li",
          { class: "offer", "data-offer": offer.id },
          h("p", { class: "offer-title" }, offer.title),
          offer.description ? h("p", { class: "offer-text" }, offer.description) : null,
          h(
            "p",
            { class: "muted small" },
            t("home.offerTerms", {
              // A display of the multiplier ("2.00" -> 2); no arithmetic on it.
              multiplier: String(Number(offer.multiplier)),
              merchant: offer.merchantName,
              date: formatDate(offer.endsAt),
            }),
          ),
        ),
      ),
    ),
  );
}

function tierCard(member, tiers) {
  if (!member.tier) return null;
  const progress = member.tierProgress;
  const next = tiers.find((tier) => tier.code === progress?.nextCode);
  const current = tiers.find((tier) => tier.code === member.tier.code);
  const children = [h("h3", { id: "tier-title" }, t("home.tier")), h("p", { class: "tier-name" }, member.tier.name)];
  if (next && progress) {
    const floor = current ? current.qualifyingPoints : 0;
    const span = Math.max(1, next.qualifyingPoints - floor);
    const done = Math.min(span, Math.max(0, Number(progress.rollingPoints) - floor));
    children.push(
      h("progress", { max: String(span), value: String(done), "aria-label": t("home.tierProgressLabel") }),
      h("p", { class: "muted" }, t("home.tierProgress", { points: formatPoints(progress.pointsToNext), next: next.name })),
    );
  } else {
    children.push(h("p", { class: "muted" }, t("home.tierTop")));
  }
  return h("section", { class: "card tier", "aria-labelledby": "tier-title" }, children);
}
