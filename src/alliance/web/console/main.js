// The Alliance console: one app for the operator and for merchants; the signed-in client's role
// (the token's claims, confirmed by the `viewer` query) decides which screens exist.
// Talks only to /graphql and /oauth/*. Routes live in the URL hash (#/settlement/…).

import { OAuthError, clientCredentials, demoPersonas } from "/shared/auth.js";
import { SIGNED_OUT } from "/shared/graphql.js";
import { getLocale, mountLanguageSwitch, onLocaleChange, register, setTimeZone, t, translatePage } from "/shared/i18n.js";
import * as api from "./api.js";
import { disposeCharts } from "./charts.js";
import { messages } from "./messages.js";
import { h, field, notice, page, describeError } from "./ui.js";
import { clientsView } from "./views/clients.js";
import { insightsView } from "./views/insights.js";
import { catalogView, memberView, membersView, rulesView } from "./views/merchant.js";
import { auditView, flowsView, reportsView, tenantsView } from "./views/operator.js";
import { batchView, batchesView } from "./views/settlement.js";

register(messages);

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const signOutButton = document.getElementById("sign-out");
const announcer = document.getElementById("announcer");

const SCREENS = {
  operator: [
    ["settlement", "console.nav.settlement"],
    ["tenants", "console.nav.tenants"],
    ["flows", "console.nav.flows"],
    ["insights", "console.nav.insights"],
    ["reports", "console.nav.reports"],
    ["audit", "console.nav.audit"],
    ["clients", "console.nav.clients"],
  ],
  merchant: [
    ["members", "console.nav.members"],
    ["rules", "console.nav.rules"],
    ["catalog", "console.nav.catalog"],
    ["settlement", "console.nav.settlement"],
    ["audit", "console.nav.audit"],
    ["clients", "console.nav.clients"],
  ],
};

const ROUTES = {
  operator: {
    settlement: (ctx, id) => (id ? batchView(ctx, id) : batchesView(ctx)),
    tenants: (ctx, code) => tenantsView(ctx, code),
    flows: () => flowsView(),
    insights: () => insightsView(),
    reports: () => reportsView(),
    audit: () => auditView(),
    clients: (ctx) => clientsView(ctx),
  },
  merchant: {
    members: (ctx, number) => (number ? memberView(ctx, number) : membersView(ctx)),
    rules: (ctx) => rulesView(ctx),
    catalog: (ctx) => catalogView(ctx),
    settlement: (ctx, id) => (id ? batchView(ctx, id) : batchesView(ctx)),
    audit: () => auditView(),
    clients: (ctx) => clientsView(ctx),
  },
};

let context = null;
let renderCounter = 0;

function announce(message) {
  announcer.textContent = "";
  requestAnimationFrame(() => {
    announcer.textContent = message;
  });
}

function parseHash() {
  const [screen, ...rest] = window.location.hash.replace(/^#\/?/, "").split("/");
  return { screen, argument: rest.length ? decodeURIComponent(rest.join("/")) : null };
}

function renderNav() {
  const { screen } = parseHash();
  nav.replaceChildren(h("ul", {}, SCREENS[context.role].map(([name, label]) =>
    h("li", {}, h("a", { href: `#/${name}`, "aria-current": name === screen ? "page" : false }, t(label))))));
  nav.hidden = false;
  const tenant = context.viewer.tenant;
  who.textContent = tenant
    ? t("console.signedInMerchant", { name: tenant.name, client: context.viewer.clientId })
    : t("console.signedInOperator", { client: context.viewer.clientId });
  signOutButton.hidden = false;
}

async function render({ focus = true } = {}) {
  if (!context) return;
  const { screen, argument } = parseHash();
  const routes = ROUTES[context.role];
  if (!routes[screen]) {
    window.location.replace(`#/${SCREENS[context.role][0][0]}`);
    return;
  }
  const mine = ++renderCounter;
  renderNav();
  disposeCharts();
  main.setAttribute("aria-busy", "true");
  let view;
  try {
    view = await routes[screen](context, argument);
  } catch (error) {
    if (error.code === "UNAUTHENTICATED") return;
    view = page(t("console.error.title"), notice("error", describeError(error)));
  }
  if (mine !== renderCounter) return; // a later navigation won
  main.replaceChildren(view);
  main.removeAttribute("aria-busy");
  document.title = `${main.querySelector("h1")?.textContent || ""} · ${t("console.brand")}`;
  if (focus) main.querySelector("h1")?.focus();
}

async function startSession() {
  const data = await api.query(api.VIEWER);
  const viewer = data.viewer;
  if (viewer.kind !== "OPERATOR" && viewer.kind !== "MERCHANT") {
    api.store.clear();
    throw new Error(t("console.signIn.notConsole"));
  }
  setTimeZone(viewer.timeZone);
  context = {
    role: viewer.kind.toLowerCase(),
    viewer,
    rerender: () => render({ focus: false }),
    announce,
  };
  if (!ROUTES[context.role][parseHash().screen]) {
    window.location.replace(`#/${SCREENS[context.role][0][0]}`); // its hashchange renders
    return;
  }
  await render();
}

async function signInWith(clientId, secret, status) {
  status.replaceChildren(notice("info", t("console.signIn.working")));
  try {
    api.store.set(await clientCredentials(clientId, secret));
    await startSession();
  } catch (error) {
    api.store.clear();
    const message = error instanceof OAuthError
      ? (error.error === "invalid_client" ? t("console.signIn.invalid") : error.description || error.error)
      : describeError(error);
    status.replaceChildren(notice("error", message));
  }
}

async function showSignIn(reason) {
  context = null;
  disposeCharts();
  nav.hidden = true;
  nav.replaceChildren();
  who.textContent = "";
  signOutButton.hidden = true;
  const status = h("div", { "aria-live": "polite" }, reason ? notice("info", reason) : null);
  const clientId = h("input", { type: "text", name: "client_id", required: true, autocomplete: "username", spellcheck: "false" });
  const secret = h("input", { type: "password", name: "client_secret", required: true, autocomplete: "current-password" });
  const form = h("form", { class: "stack", id: "sign-in" },
    field(t("console.signIn.clientId"), clientId),
    field(t("console.signIn.secret"), secret),
    h("button", { type: "submit" }, t("console.signIn.submit")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    signInWith(clientId.value.trim(), secret.value, status);
  });
  const demo = h("div");
  main.replaceChildren(page(t("console.signIn.title"),
    h("p", { class: "muted" }, t("console.signIn.intro")),
    status,
    h("div", { class: "grid-2" }, h("div", { class: "card" }, form), demo)));
  main.querySelector("h1").focus();
  document.title = `${t("console.signIn.title")} · ${t("console.brand")}`;
  const personas = await demoPersonas().catch(() => null);
  if (personas?.clients?.length) {
    demo.className = "card";
    demo.append(
      h("h2", {}, t("console.signIn.demo")),
      h("p", { class: "muted" }, t("console.signIn.demoHint")),
      h("ul", { class: "demo-list" }, personas.clients.map((client) => h("li", {},
        h("button", { type: "button", class: "secondary", onclick: () => signInWith(client.clientId, client.clientSecret, status) },
          client.role === "operator" ? t("console.signIn.asOperator") : t("console.signIn.asMerchant", { name: client.tenantName || client.tenant }))))));
  }
}

function signOut(reason) {
  api.store.clear();
  window.location.hash = "";
  showSignIn(reason);
}

// -- boot -----------------------------------------------------------------------------------------

mountLanguageSwitch(document.getElementById("language"));
translatePage();
onLocaleChange(() => {
  translatePage();
  if (context) render({ focus: false });
  else showSignIn();
});
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector("h1") || main).focus();
});
signOutButton.addEventListener("click", () => signOut(t("console.signIn.signedOut")));
window.addEventListener(SIGNED_OUT, () => {
  if (context) showSignIn(t("console.signIn.expired"));
});
window.addEventListener("hashchange", () => {
  if (context && window.location.hash.startsWith("#/")) render();
});

if (api.store.get()) {
  startSession().catch((error) => showSignIn(describeError(error)));
} else {
  showSignIn();
}
document.documentElement.lang = getLocale();
