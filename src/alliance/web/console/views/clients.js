// API clients: the operator's (all) or a merchant's (its own). Create, rotate the secret, revoke.
// A new secret is shown once, in a dialog; it is never kept in the page or the browser's storage.

import { formatDate, t } from "/shared/i18n.js";
import * as api from "../api.js";
import {
  badge, card, confirm, dataTable, field, fromConnection, h, page, select, showError, showSecretOnce, userErrorList,
} from "../ui.js";

export function clientsView(context) {
  const operator = context.role === "operator";
  const status = h("div", { "aria-live": "polite" });
  const name = h("input", { type: "text", name: "name", required: true, maxlength: "200" });
  const role = select("role", [["MERCHANT", t("console.role.merchant")], ["OPERATOR", t("console.role.operator")]], "MERCHANT");
  const tenantCode = h("input", { type: "text", name: "tenantCode", autocomplete: "off" });
  role.addEventListener("change", () => {
    tenantCode.disabled = role.value === "OPERATOR";
  });

  async function run(text, input, fieldName) {
    try {
      const payload = (await api.query(text, { i: input }))[fieldName];
      if (payload.userErrors.length) {
        status.replaceChildren(userErrorList(payload.userErrors));
        return null;
      }
      status.replaceChildren();
      return payload;
    } catch (error) {
      showError(status, error);
      return null;
    }
  }

  const form = h("form", { class: "row align-end", id: "client-form" },
    field(t("console.clients.name"), name),
    operator ? field(t("console.clients.role"), role) : null,
    operator ? field(t("console.clients.tenant"), tenantCode, t("console.clients.tenantHint")) : null,
    h("button", { type: "submit" }, t("console.clients.create")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = { name: name.value };
    if (operator) {
      input.role = role.value;
      if (role.value === "MERCHANT" && tenantCode.value.trim()) input.tenantCode = tenantCode.value.trim();
    }
    const payload = await run(api.CREATE_CLIENT, input, "createApiClient");
    if (!payload) return;
    form.reset();
    await showSecretOnce(payload.client.clientId, payload.clientSecret);
    context.announce(t("console.clients.created", { id: payload.client.clientId }));
    table.reload();
  });

  async function rotate(client) {
    if (!(await confirm(t("console.clients.rotate"), t("console.clients.rotateText", { id: client.clientId }), t("console.clients.rotate")))) return;
    const payload = await run(api.ROTATE_CLIENT, { clientId: client.clientId }, "rotateApiClientSecret");
    if (!payload) return;
    await showSecretOnce(payload.client.clientId, payload.clientSecret);
    table.reload();
  }

  async function revoke(client) {
    if (!(await confirm(t("console.clients.revoke"), t("console.clients.revokeText", { id: client.clientId }), t("console.clients.revoke")))) return;
    const payload = await run(api.REVOKE_CLIENT, { clientId: client.clientId }, "revokeApiClient");
    if (!payload) return;
    context.announce(t("console.clients.revoked", { id: client.clientId }));
    table.reload();
  }

  const own = context.viewer.clientId;
  const table = dataTable({
    caption: t("console.clients.title"),
    columns: [
      { key: "clientId", label: t("console.clients.clientId"), render: (c) => h("code", {}, c.clientId) },
      { key: "name", label: t("console.clients.name") },
      { key: "role", label: t("console.clients.role"), value: (c) => t(`console.role.${c.role.toLowerCase()}`) },
      { key: "tenantCode", label: t("console.clients.tenant") },
      { key: "scopes", label: t("console.clients.scopes"), numeric: true, value: (c) => c.scopes.length, render: (c) => h("span", { title: c.scopes.join(" ") }, String(c.scopes.length)) },
      { key: "status", label: t("console.status"), render: (c) => badge(t(`console.clientStatus.${c.status}`), c.status === "ACTIVE" ? "status-approved" : "status-revoked") },
      { key: "createdAt", label: t("console.createdAt"), render: (c) => formatDate(c.createdAt) },
      { key: "actions", label: t("console.actions"), sortable: false, render: (c) => c.status !== "ACTIVE" ? "" : c.clientId === own ? t("console.clients.thisClient")
        : h("div", { class: "row" },
          h("button", { type: "button", class: "secondary small", "aria-label": t("console.clients.rotateId", { id: c.clientId }), onclick: () => rotate(c) }, t("console.clients.rotate")),
          h("button", { type: "button", class: "secondary small", "aria-label": t("console.clients.revokeId", { id: c.clientId }), onclick: () => revoke(c) }, t("console.clients.revoke"))) },
    ],
    load: async (after) => fromConnection((await api.query(api.CLIENTS, { first: 25, after })).apiClients),
  });
  return page(t("console.nav.clients"),
    h("p", { class: "muted" }, t("console.clients.hint")),
    status,
    card(t("console.clients.new"), form),
    card(t("console.clients.title"), table));
}
