// The member app: sign-in, then four screens behind hash routes (#/home, #/history, #/rewards,
// #/redemptions). Everything it knows comes from /graphql and /oauth/*.

import { finishOidcSignIn } from "/shared/auth.js";
import { SIGNED_OUT } from "/shared/graphql.js";
import { mountLanguageSwitch, onLocaleChange, register, t, translatePage } from "/shared/i18n.js";
import { store } from "./api.js";
import { h } from "./dom.js";
import { balanceFeed } from "./live.js";
import { MESSAGES } from "./messages.js";
import * as history from "./screens/history.js";
import * as home from "./screens/home.js";
import * as redemptions from "./screens/redemptions.js";
import * as rewards from "./screens/rewards.js";
import * as signIn from "./screens/sign-in.js";
import { resetState, setBalances } from "./state.js";

const SCREENS = { home, history, rewards, redemptions };
const main = document.getElementById("main");
const tabs = document.getElementById("tabs");
const signOutButton = document.getElementById("sign-out");
let feed = null;
let cleanup = null;
let oidcError = null;

register(MESSAGES);

function routeName() {
  const name = location.hash.replace(/^#\//, "");
  return name in SCREENS ? name : "home";
}

async function show() {
  if (cleanup) cleanup();
  cleanup = null;
  const signedIn = Boolean(store.get());
  tabs.hidden = !signedIn;
  signOutButton.hidden = !signedIn;
  main.setAttribute("aria-busy", "true");
  main.replaceChildren(h("p", { class: "muted" }, t("app.loading")));
  try {
    if (!signedIn) {
      stopFeed();
      document.title = `${t("signin.title")} · ${t("app.title")}`;
      cleanup = await signIn.render(main, { onSignedIn: afterSignIn, error: oidcError });
      oidcError = null;
      return;
    }
    startFeed();
    const name = routeName();
    for (const link of tabs.querySelectorAll("a")) {
      if (link.dataset.route === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${t(`nav.${name}`)} · ${t("app.title")}`;
    cleanup = await SCREENS[name].render(main);
  } catch (error) {
    if (error.code === "UNAUTHENTICATED") return; // SIGNED_OUT re-renders the sign-in screen
    main.replaceChildren(
      h("p", { class: "error", role: "alert" }, error.code === "NETWORK_ERROR" ? t("app.offline") : t("app.error")),
    );
  } finally {
    main.setAttribute("aria-busy", "false");
  }
}

function startFeed() {
  if (feed) return;
  feed = balanceFeed(setBalances);
  feed.start();
}

function stopFeed() {
  if (feed) feed.stop();
  feed = null;
  resetState();
}

function afterSignIn() {
  if (location.hash !== "#/home") location.hash = "#/home";
  else show();
  main.focus();
}

signOutButton.addEventListener("click", () => {
  store.clear();
  stopFeed();
  show();
});
window.addEventListener(SIGNED_OUT, () => {
  stopFeed();
  show();
});
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#/") || location.hash === "") show();
});
onLocaleChange(() => {
  translatePage();
  show();
});

translatePage();
mountLanguageSwitch(document.getElementById("language"));
try {
  const tokens = await finishOidcSignIn();
  if (tokens) store.set(tokens);
} catch (error) {
  oidcError = error.description || error.message;
}
show();
