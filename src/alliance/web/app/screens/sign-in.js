// Sign-in: phone + one-time code, an external OpenID provider, or (demo mode) a demo member.

import {
  demoMemberToken,
  demoPersonas,
  OAuthError,
  otpToken,
  requestOtp,
  signInOptions,
  startOidcSignIn,
} from "/shared/auth.js";
import { t } from "/shared/i18n.js";
import { store } from "../api.js";
import { h } from "../dom.js";

const PHONE = /^(\+[1-9]\d{6,14}|1[3-9]\d{9})$/;

export async function render(main, { onSignedIn, error }) {
  const options = await signInOptions();
  const personas = options.demo ? await demoPersonas() : null;
  const alert = h("p", { class: "error", role: "alert", id: "signin-error" });
  if (error) alert.textContent = t("signin.oidcFailed", { reason: error });

  const signedIn = (tokens) => {
    store.set(tokens);
    onSignedIn();
  };
  const fail = (caught) => {
    alert.textContent = messageFor(caught);
  };

  const sections = [h("h2", {}, t("signin.title")), h("p", { class: "muted" }, t("signin.intro")), alert];
  if (options.phoneOtp) sections.push(phoneForm(signedIn, fail, alert));
  if (options.providers.length) {
    sections.push(
      h(
        "div",
        { class: "stack providers" },
        options.providers.map((provider) =>
          h(
            "button",
            {
              type: "button",
              class: "secondary wide",
              onclick: () => startOidcSignIn(provider, `${location.origin}/app/`).catch(fail),
            },
            t("signin.with", { name: provider.name }),
          ),
        ),
      ),
    );
  }
  if (personas?.members.length) {
    sections.push(
      h(
        "section",
        { class: "card demo", "aria-labelledby": "demo-title" },
        h("h3", { id: "demo-title" }, t("signin.demo")),
        h(
          "ul",
          { class: "plain stack" },
          personas.members.map((member) =>
            h(
              "li",
              {},
              h(
                "button",
                {
                  type: "button",
                  class: "secondary wide",
                  onclick: () => demoMemberToken(member.memberNumber).then(signedIn, fail),
                },
                t("signin.demoAs", { name: member.name }),
                h("span", { class: "muted small" }, ` · ${member.phone}`),
              ),
            ),
          ),
        ),
      ),
    );
  }
  main.replaceChildren(h("section", { class: "card signin" }, sections));
  const first = main.querySelector("input, button");
  if (first) first.focus();
}

function phoneForm(signedIn, fail, alert) {
  const phone = h("input", {
    id: "phone",
    name: "phone",
    type: "tel",
    inputmode: "tel",
    autocomplete: "tel",
    required: true,
    "aria-describedby": "phone-hint",
  });
  const code = h("input", {
    id: "code",
    name: "code",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    pattern: "[0-9]{6}",
    maxlength: "6",
    required: true,
  });
  const codeField = h(
    "div",
    { class: "field", hidden: true },
    h("label", { for: "code" }, t("signin.code")),
    code,
  );
  const sent = h("p", { class: "muted", id: "code-sent", role: "status" });
  const send = h("button", { type: "button", class: "secondary", id: "send-code" }, t("signin.sendCode"));
  const submit = h("button", { type: "submit", hidden: true }, t("signin.submit"));
  let timer = null;

  const countdown = (seconds) => {
    clearInterval(timer);
    let left = seconds;
    const tick = () => {
      send.disabled = left > 0;
      send.textContent = left > 0 ? t("signin.resendIn", { seconds: left }) : t("signin.sendCode");
      left -= 1;
      if (left < 0) clearInterval(timer);
    };
    tick();
    if (seconds > 0) timer = setInterval(tick, 1000);
  };

  send.addEventListener("click", async () => {
    alert.textContent = "";
    const number = phone.value.replace(/[\s-]/g, "");
    if (!PHONE.test(number)) {
      alert.textContent = t("signin.invalidPhone");
      phone.focus();
      return;
    }
    try {
      const answer = await requestOtp(number);
      sent.textContent = t("signin.codeSent", { phone: number, minutes: Math.round(answer.expires_in / 60) });
      codeField.hidden = false;
      submit.hidden = false;
      code.focus();
      countdown(answer.resend_in);
    } catch (caught) {
      fail(caught);
      if (caught.retryAfter) countdown(caught.retryAfter);
    }
  });

  return h(
    "form",
    {
      class: "stack",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        alert.textContent = "";
        try {
          signedIn(await otpToken(phone.value.replace(/[\s-]/g, ""), code.value.trim()));
        } catch (caught) {
          fail(caught);
          code.select();
        }
      },
    },
    h(
      "div",
      { class: "field" },
      h("label", { for: "phone" }, t("signin.phone")),
      h("div", { class: "row nowrap" }, phone, send),
      h("p", { class: "muted small", id: "phone-hint" }, t("signin.phoneHint")),
    ),
    sent,
    codeField,
    submit,
  );
}

function messageFor(error) {
  if (!(error instanceof OAuthError)) return t("app.offline");
  if (error.status === 429) return t("signin.slowDown", { seconds: error.retryAfter ?? 60 });
  if (error.error === "invalid_grant") {
    return /too many/.test(error.description) ? t("signin.locked") : t("signin.invalidCode");
  }
  if (error.error === "invalid_request") return t("signin.invalidPhone");
  return error.description || t("app.error");
}
