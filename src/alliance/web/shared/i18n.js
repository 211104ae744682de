// A tiny dictionary-based i18n: zh-CN and English, chosen from the browser, switchable, remembered.
// Apps register flat message tables ({en: {...}, "zh-CN": {...}}); keys are namespaced by convention.

export const LOCALES = ["zh-CN", "en"];
const STORAGE_KEY = "alliance.locale";
const tables = { en: {}, "zh-CN": {} };
const listeners = new Set();
let timeZone = "Asia/Shanghai";

function detect() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (LOCALES.includes(saved)) return saved;
  for (const language of navigator.languages || [navigator.language || "en"]) {
    if (language.toLowerCase().startsWith("zh")) return "zh-CN";
    if (language.toLowerCase().startsWith("en")) return "en";
  }
  return "en";
}

let current = detect();
document.documentElement.lang = current;

export function register(messages) {
  for (const locale of LOCALES) Object.assign(tables[locale], messages[locale] || {});
}

export function getLocale() {
  return current;
}

export function setLocale(locale) {
  if (!LOCALES.includes(locale) || locale === current) return;
  current = locale;
  localStorage.setItem(STORAGE_KEY, locale);
  document.documentElement.lang = locale;
  for (const listener of listeners) listener(locale);
}

export function onLocaleChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

// The message for `key` in the current locale ({name} placeholders filled from `params`);
// falls back to English, then to the key itself so a missing message is visible, not blank.
export function t(key, params = {}) {
  const template = tables[current][key] ?? tables.en[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (match, name) => (name in params ? String(params[name]) : match));
}

// Fills elements marked with data-i18n (text), data-i18n-placeholder, -aria-label and -title.
export function translatePage(root = document) {
  for (const element of root.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  for (const [attribute, data] of [
    ["placeholder", "i18nPlaceholder"],
    ["aria-label", "i18nAriaLabel"],
    ["title", "i18nTitle"],
  ]) {
    for (const element of root.querySelectorAll(`[data-i18n-${attribute}]`)) {
      element.setAttribute(attribute, t(element.dataset[data]));
    }
  }
}

// A <select> that switches the language; kept in sync when the locale changes elsewhere.
export function mountLanguageSwitch(select) {
  select.replaceChildren(
    ...LOCALES.map((locale) => new Option(locale === "zh-CN" ? "中文" : "English", locale, false, locale === current)),
  );
  select.addEventListener("change", () => setLocale(select.value));
  onLocaleChange((locale) => {
    select.value = locale;
  });
}

export function setTimeZone(zone) {
  if (zone) timeZone = zone;
}

export function getTimeZone() {
  return timeZone;
}

export function formatPoints(points) {
  return new Intl.NumberFormat(current).format(Number(points));
}

// A decimal string (the API's Decimal) as yuan: "¥1,234.50". Exact: formatted from the string.
export function formatMoney(amount) {
  const [whole, fraction = ""] = String(amount).split(".");
  const negative = whole.startsWith("-");
  const digits = new Intl.NumberFormat(current).format(BigInt(negative ? whole.slice(1) : whole));
  return `${negative ? "-" : ""}¥${digits}.${(fraction + "00").slice(0, 2)}`;
}

export function formatDate(iso) {
  return new Intl.DateTimeFormat(current, { timeZone, year: "numeric", month: "short", day: "numeric" }).format(
    new Date(iso),
  );
}

export function formatDateTime(iso) {
  return new Intl.DateTimeFormat(current, {
    timeZone,
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  }).format(new Date(iso));
}
