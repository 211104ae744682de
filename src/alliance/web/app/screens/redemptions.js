// The member's redemptions and their fulfilment status, newest first.

import { formatDateTime, formatPoints, t } from "/shared/i18n.js";
import { loadRedemptions } from "../api.js";
import { h } from "../dom.js";

export async function render(main) {
  const list = h("ul", { class: "plain redemptions", "aria-labelledby": "redemptions-title" });
  const more = h("button", { type: "button", class: "secondary wide", hidden: true }, t("redemptions.more"));
  let cursor = null;
  const load = async () => {
    const page = await loadRedemptions(cursor);
    list.append(...page.edges.map((edge) => item(edge.node)));
    cursor = page.pageInfo.endCursor;
    more.hidden = !page.pageInfo.hasNextPage;
  };
  more.addEventListener("click", load);
  await load();
  main.replaceChildren(
    h(
      "section",
      { class: "stack" },
      h("h2", { id: "redemptions-title" }, t("redemptions.title")),
      list.children.length ? list : h("p", { class: "muted" }, t("redemptions.empty")),
      more,
    ),
  );
}

function item(redemption) {
  return h(
    "li",
    { class: "card redemption" },
    h(
      "div",
      { class: "row" },
      h("strong", {}, redemption.reward.name),
      h("span", { class: "spacer" }),
      h("span", { class: `badge ${redemption.status.toLowerCase()}` }, t(`status.${redemption.status}`)),
    ),
    h(
      "p",
      { class: "muted small" },
      `${redemption.reward.tenantName} · ${formatPoints(redemption.points)} ${t(`asset.${redemption.asset}`)} · ${formatDateTime(redemption.createdAt)}`,
    ),
    redemption.cancelReason ? h("p", { class: "small" }, redemption.cancelReason) : null,
  );
}
