// Charts with Apache ECharts (vendored prebuilt ES module, see web/vendor.sh). Every chart sits
// beside a table holding the same numbers, and gets ECharts' generated aria-label description.
// Tooltips render on the canvas (richText): no HTML, so nothing needs inline styles (strict CSP).

import { getLocale, t } from "/shared/i18n.js";
import * as echarts from "./vendor/echarts.esm.min.js";
import { h } from "./ui.js";

const live = new Set();

const PALETTE = ["#1a56db", "#b3261e", "#1e6b3a", "#8a4b00", "#6b3fa0", "#0f6e7a", "#4f5660"];

function mount(title, option, className = "chart") {
  const element = h("div", { class: className, role: "img", "aria-label": title });
  // ECharts needs the element in the document with a size; render once it is attached.
  requestAnimationFrame(() => {
    if (!element.isConnected) return;
    const chart = echarts.init(element, null, { renderer: "canvas", locale: getLocale() === "zh-CN" ? "ZH" : "EN" });
    chart.setOption({
      color: PALETTE,
      aria: { enabled: true, label: { description: title } },
      textStyle: { fontFamily: "system-ui, sans-serif" },
      animation: false,
      ...option,
    });
    element.dataset.rendered = "true";
    live.add(chart);
  });
  return element;
}

// Disposes every chart of the previous screen (called on navigation).
export function disposeCharts() {
  for (const chart of live) chart.dispose();
  live.clear();
}

window.addEventListener("resize", () => {
  for (const chart of live) chart.resize();
});

// Issuer (rows) × redeemer (columns): points issued by one merchant and redeemed at another.
export function heatmap(title, lines) {
  const issuers = [...new Set(lines.map((l) => l.issuerCode))].sort();
  const redeemers = [...new Set(lines.map((l) => l.redeemerCode))].sort();
  const cells = lines.map((l) => [redeemers.indexOf(l.redeemerCode), issuers.indexOf(l.issuerCode), l.points]);
  const max = Math.max(1, ...lines.map((l) => Math.abs(l.points)));
  return mount(title, {
    tooltip: {
      renderMode: "richText",
      formatter: (p) => `${issuers[p.value[1]]} → ${redeemers[p.value[0]]}\n${t("console.points")}: ${p.value[2]}`,
    },
    grid: { left: 140, right: 110, top: 32, bottom: 60 },
    xAxis: { type: "category", data: redeemers, name: t("console.settlement.redeemer"), nameLocation: "middle", nameGap: 32, splitArea: { show: true } },
    yAxis: { type: "category", data: issuers, name: t("console.settlement.issuer"), nameLocation: "end", splitArea: { show: true } },
    visualMap: { min: 0, max, calculable: true, orient: "vertical", right: 0, top: "middle", inRange: { color: ["#fbeae9", "#b3261e"] } },
    series: [{ type: "heatmap", data: cells, label: { show: true, color: "#1a1d21" }, emphasis: { itemStyle: { borderColor: "#1a1d21", borderWidth: 1 } } }],
  }, "chart heatmap");
}

// Net position per party (receivable − payable): receivers above zero, payers below.
export function positionsBar(title, positions) {
  return mount(title, {
    tooltip: { renderMode: "richText", formatter: (p) => `${p.name}\n${p.value}` },
    grid: { left: 80, right: 24, top: 24, bottom: 60 },
    xAxis: { type: "category", data: positions.map((p) => p.party), axisLabel: { interval: 0, rotate: 20 } },
    yAxis: { type: "value", name: "CNY" },
    series: [{
      type: "bar",
      data: positions.map((p) => ({
        value: Number(p.netAmount),
        itemStyle: { color: Number(p.netAmount) < 0 ? "#b3261e" : "#1e6b3a" },
      })),
      label: { show: true, position: "top", formatter: (p) => positions[p.dataIndex].netAmount },
    }],
  });
}

// Points flowing from one merchant category to another, per settled period (stacked bars).
export function flowBars(title, flows, periodLabel, categoryLabel) {
  const periods = [...new Set(flows.map((f) => f.periodStart))].sort();
  const pairs = [...new Set(flows.map((f) => `${f.issuerCategory}>${f.redeemerCategory}`))].sort();
  const series = pairs.map((pair) => {
    const [issuer, redeemer] = pair.split(">");
    return {
      name: `${categoryLabel(issuer)} → ${categoryLabel(redeemer)}`,
      type: "bar",
      stack: "flow",
      data: periods.map((period) =>
        flows.filter((f) => f.periodStart === period && f.issuerCategory === issuer && f.redeemerCategory === redeemer)
          .reduce((sum, f) => sum + f.points, 0)),
    };
  });
  return mount(title, {
    tooltip: { renderMode: "richText", trigger: "item", formatter: (p) => `${p.seriesName}\n${p.name}: ${p.value}` },
    legend: { type: "scroll", bottom: 0 },
    grid: { left: 70, right: 24, top: 24, bottom: 70 },
    xAxis: { type: "category", data: periods.map(periodLabel) },
    yAxis: { type: "value", name: t("console.points") },
    series,
  });
}

// Outstanding points and their expected breakage per expiry month (grouped bars).
export function liabilityBars(title, months, monthLabel) {
  return mount(title, {
    tooltip: { renderMode: "richText", trigger: "item", formatter: (p) => `${p.seriesName}\n${p.name}: ${p.value}` },
    legend: { bottom: 0 },
    grid: { left: 80, right: 24, top: 24, bottom: 60 },
    xAxis: { type: "category", data: months.map((m) => monthLabel(m.month)) },
    yAxis: { type: "value", name: t("console.points") },
    series: [
      { name: t("console.insights.outstanding"), type: "bar", data: months.map((m) => Number(m.outstanding.points)) },
      { name: t("console.insights.expectedBreakage"), type: "bar", data: months.map((m) => Number(m.expectedBreakage.points)) },
    ],
  }, "chart liability");
}

// One value per label (breakage per issuer).
export function simpleBar(title, labels, values, axisName) {
  return mount(title, {
    tooltip: { renderMode: "richText", formatter: (p) => `${p.name}\n${p.value}` },
    grid: { left: 70, right: 24, top: 24, bottom: 50 },
    xAxis: { type: "category", data: labels },
    yAxis: { type: "value", name: axisName },
    series: [{ type: "bar", data: values, label: { show: true, position: "top" } }],
  });
}
