// History across every merchant, newest first, loaded page by page as the list scrolls.

import { formatDateTime, formatMoney, formatPoints, t } from "/shared/i18n.js";
import { loadHistory } from "../api.js";
import { h } from "../dom.js";

export async function render(main) {
  const list = h("ol", { class: "plain history", "aria-labelledby": "history-title" });
  const more = h("button", { type: "button", class: "secondary wide", id: "history-more" }, t("history.more"));
  const end = h("p", { class: "muted center", hidden: true }, t("history.end"));
  let cursor = null;
  let loading = false;

  const loadPage = async () => {
    if (loading) return;
    loading = true;
    more.disabled = true;
    try {
      const page = await loadHistory(cursor);
      list.append(...page.edges.map((edge) => entry(edge.node)));
      cursor = page.pageInfo.endCursor;
      more.hidden = !page.pageInfo.hasNextPage;
      end.hidden = page.pageInfo.hasNextPage || list.children.length === 0;
    } finally {
      loading = false;
      more.disabled = false;
    }
  };
  more.addEventListener("click", loadPage);
  await loadPage();

  main.replaceChildren(
    h(
      "section",
      { class: "stack" },
      h("h2", { id: "history-title" }, t("history.title")),
      list.children.length ? list : h("p", { class: "muted" }, t("history.empty")),
      more,
      end,
    ),
  );
  // Infinite scroll: the "Load more" button loads by itself when it scrolls into view (and stays a
  // button for keyboards and screen readers).
  const observer = new IntersectionObserver((seen) => {
    if (seen.some((item) => item.isIntersecting) && !more.hidden) loadPage();
  });
  observer.observe(more);
  return () => observer.disconnect();
}

function entry(tx) {
  const change = Number(tx.balanceChange);
  const where = [tx.tenantName || t("history.alliance"), tx.storeName].filter(Boolean).join(" · ");
  const detailsId = `tx-${tx.id.replace(/[^A-Za-z0-9_-]/g, "")}`;
  const details = [
    ...(tx.breakdown.length
      ? [
          h("p", { class: "small strong" }, t("history.breakdown")),
          h(
            "ul",
            { class: "plain breakdown" },
            tx.breakdown.map((line) =>
              h(
                "li",
                { class: "row" },
                h("span", {}, line.note || line.rule),
                h("span", { class: "spacer" }),
                h("span", {}, `${line.points >= 0 ? "+" : ""}${formatPoints(line.points)} ${t(`asset.${line.asset}`)}`),
              ),
            ),
          ),
        ]
      : []),
    tx.orderRef ? h("p", { class: "muted small" }, t("history.order", { ref: tx.orderRef })) : null,
    tx.reason ? h("p", { class: "muted small" }, tx.reason) : null,
  ].filter(Boolean);
  const summary = [
    h(
      "span",
      { class: "tx-main" },
      h("span", { class: "tx-where" }, where),
      h(
        "span",
        { class: "muted small" },
        [
          t(`kind.${tx.kind}`),
          tx.amount !== null && tx.currency === "CNY" ? t("history.spent", { amount: formatMoney(tx.amount) }) : null,
          formatDateTime(tx.effectiveAt),
        ]
          .filter(Boolean)
          .join(" · "),
      ),
    ),
    h(
      "span",
      { class: `tx-points ${change < 0 ? "debit" : "credit"}` },
      `${change > 0 ? "+" : ""}${formatPoints(change)}`,
      tx.asset === "POINTS" ? null : h("span", { class: "small" }, ` ${t(`asset.${tx.asset}`)}`),
    ),
  ];
  if (!details.length) return h("li", { class: "tx" }, h("div", { class: "tx-row" }, summary));
  const panel = h("div", { id: detailsId, class: "tx-details", hidden: true }, details);
  const toggle = h(
    "button",
    {
      type: "button",
      class: "tx-row",
      "aria-expanded": "false",
      "aria-controls": detailsId,
      onclick: () => {
        const open = toggle.getAttribute("aria-expanded") !== "true";
        toggle.setAttribute("aria-expanded", String(open));
        panel.hidden = !open;
      },
    },
    summary,
  );
  return h("li", { class: "tx" }, toggle, panel);
}
