// Small DOM helpers for the console: elements, tables over connections, forms, dialogs, notices.
// Everything user-visible is set with textContent, never parsed as HTML, so API data cannot inject markup.

import { t } from "/shared/i18n.js";

// h("button", {class: "secondary", onclick}, "Save") — attributes, event handlers (on*), children.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let uniqueCounter = 0;
export function uid(prefix = "c") {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

// A page: its heading (focused after navigation, for keyboard and screen-reader users) and body.
export function page(title, ...children) {
  return h("section", { class: "page", "aria-labelledby": "page-title" },
    h("h1", { id: "page-title", tabindex: "-1" }, title), ...children);
}

export function card(title, ...children) {
  const id = uid("card");
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

// A labelled form control. `control` is an input/select/textarea element; its id links the label.
export function field(label, control, hint) {
  control.id ||= uid("field");
  const children = [h("label", { for: control.id }, label), control];
  if (hint) {
    const hintId = uid("hint");
    control.setAttribute("aria-describedby", hintId);
    children.push(h("p", { id: hintId, class: "hint muted" }, hint));
  }
  return h("div", { class: "field" }, ...children);
}

export function select(name, options, value) {
  return h("select", { name },
    options.map(([optionValue, label]) => h("option", { value: optionValue, selected: optionValue === value }, label)));
}

// A status area: errors are announced (role=alert), successes politely (role=status).
export function notice(kind, message) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
}

export function showError(container, error) {
  container.replaceChildren(notice("error", describeError(error)));
}

export function describeError(error) {
  if (!error) return "";
  if (error.code === "FORBIDDEN") return t("console.error.forbidden");
  if (error.code === "NETWORK_ERROR") return t("console.error.network");
  return error.message || String(error);
}

// userErrors of a mutation payload as a list the user can act on; empty when there are none.
export function userErrorList(userErrors) {
  return h("ul", { class: "user-errors", role: "alert" },
    userErrors.map((e) => h("li", {}, e.field ? `${e.field}: ${e.message} (${e.code})` : `${e.message} (${e.code})`)));
}

// A modal <dialog> (focus trapped by the browser, Esc closes). Resolves with the clicked button's value.
export function dialog(title, body, buttons) {
  return new Promise((resolve) => {
    const titleId = uid("dialog");
    let settled = false;
    // Leaves the document at once (a shown-once secret must not linger), whether a button or Esc closed it.
    const finish = (value) => {
      if (settled) return;
      settled = true;
      element.remove();
      resolve(value);
    };
    const element = h("dialog", { class: "dialog", "aria-labelledby": titleId },
      h("h2", { id: titleId }, title),
      body,
      h("div", { class: "row dialog-actions" },
        buttons.map(([value, label, kind]) =>
          h("button", { type: "button", class: kind || "", value, onclick: () => {
            element.close(value);
            finish(value);
          } }, label))));
    element.addEventListener("close", () => finish(element.returnValue || "cancel"));
    document.body.append(element);
    element.showModal();
  });
}

export async function confirm(title, message, confirmLabel) {
  const answer = await dialog(title, h("p", {}, message), [
    ["cancel", t("console.cancel"), "secondary"],
    ["ok", confirmLabel],
  ]);
  return answer === "ok";
}

// A secret shown once: readable, selectable, copyable, and gone when the dialog closes.
export function showSecretOnce(clientId, secret) {
  const secretId = uid("secret");
  const body = h("div", { class: "stack" },
    h("p", { class: "notice warn" }, t("console.clients.secretOnce")),
    h("dl", { class: "facts" },
      h("dt", {}, t("console.clients.clientId")), h("dd", {}, h("code", { class: "client-id" }, clientId)),
      h("dt", {}, t("console.clients.secret")), h("dd", {}, h("code", { id: secretId, class: "secret" }, secret))),
    h("button", {
      type: "button",
      class: "secondary",
      onclick: async (event) => {
        try {
          await navigator.clipboard.writeText(secret);
          event.target.textContent = t("console.clients.copied");
        } catch {
          window.getSelection().selectAllChildren(document.getElementById(secretId));
        }
      },
    }, t("console.clients.copy")));
  return dialog(t("console.clients.secretTitle"), body, [["ok", t("console.clients.secretSaved")]]);
}

// A sortable, paginated table over a GraphQL connection (or a plain list).
//   columns: [{key, label, value?: row => sortable value, render?: row => Node|string, numeric?: bool}]
//   load(after) → {rows, pageInfo} for connections; or rows: [...] for a list.
// Sorting orders the rows on screen (a page of a connection, or the whole list); paging follows
// the connection's keyset cursors (a stack of them gives "previous").
export function dataTable({ caption, columns, load, rows, empty, pageSize }) {
  const state = { sortKey: null, ascending: true, cursors: [null], index: 0, rows: rows || [], pageInfo: null };
  const status = h("p", { class: "table-status muted", role: "status" });
  const body = h("tbody");
  const headerCells = columns.map((column) => {
    if (column.sortable === false) return h("th", { scope: "col", class: column.numeric ? "numeric" : "" }, column.label);
    const button = h("button", { type: "button", class: "sort", onclick: () => sortBy(column.key) }, column.label,
      h("span", { class: "sort-indicator", "aria-hidden": "true" }));
    return h("th", { scope: "col", "aria-sort": "none", class: column.numeric ? "numeric" : "", dataset: { key: column.key } }, button);
  });
  const previous = h("button", { type: "button", class: "secondary", onclick: () => turn(-1) }, t("console.table.previous"));
  const next = h("button", { type: "button", class: "secondary", onclick: () => turn(1) }, t("console.table.next"));
  previous.disabled = next.disabled = true; // until the first page is in
  const pager = load ? h("div", { class: "row pager" }, previous, next) : null;
  const table = h("table", {},
    caption ? h("caption", { class: "visually-hidden" }, caption) : null,
    h("thead", {}, h("tr", {}, headerCells)),
    body);
  const root = h("div", { class: "data-table" }, h("div", { class: "table-scroll", tabindex: "0", role: "region", "aria-label": caption || "" }, table), status, pager);

  function valueOf(column, row) {
    return column.value ? column.value(row) : row[column.key];
  }

  function render() {
    let visible = [...state.rows];
    if (state.sortKey) {
      const column = columns.find((c) => c.key === state.sortKey);
      visible.sort((a, b) => compare(valueOf(column, a), valueOf(column, b)) * (state.ascending ? 1 : -1));
    }
    body.replaceChildren(...visible.map((row) =>
      h("tr", {}, columns.map((column) => h("td", { class: column.numeric ? "numeric" : "" },
        column.render ? column.render(row) : display(valueOf(column, row)))))));
    if (!visible.length) body.append(h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty || t("console.table.empty"))));
    for (const cell of headerCells) {
      const key = cell.dataset.key;
      if (!key) continue;
      const sorted = key === state.sortKey;
      cell.setAttribute("aria-sort", sorted ? (state.ascending ? "ascending" : "descending") : "none");
      cell.querySelector(".sort-indicator").textContent = sorted ? (state.ascending ? " ▲" : " ▼") : "";
    }
    if (load) {
      previous.disabled = state.index === 0;
      next.disabled = !state.pageInfo?.hasNextPage;
      status.textContent = t("console.table.page", { page: state.index + 1, rows: state.rows.length });
    }
  }

  function sortBy(key) {
    state.ascending = state.sortKey === key ? !state.ascending : true;
    state.sortKey = key;
    render();
  }

  async function fetchPage() {
    previous.disabled = next.disabled = true;
    status.textContent = t("console.loading");
    try {
      const result = await load(state.cursors[state.index], pageSize);
      state.rows = result.rows;
      state.pageInfo = result.pageInfo;
      if (state.pageInfo?.hasNextPage) state.cursors[state.index + 1] = state.pageInfo.endCursor;
      render();
    } catch (error) {
      status.textContent = "";
      showError(status, error);
      status.removeAttribute("role");
    }
  }

  async function turn(step) {
    state.index = Math.max(0, state.index + step);
    await fetchPage();
  }

  root.reload = async () => {
    state.cursors = [null];
    state.index = 0;
    if (load) await fetchPage();
    else render();
  };
  root.setRows = (newRows) => {
    state.rows = newRows;
    render();
  };
  if (load) fetchPage();
  else render();
  return root;
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  const numberA = typeof a === "number" ? a : Number(a);
  const numberB = typeof b === "number" ? b : Number(b);
  if (!Number.isNaN(numberA) && !Number.isNaN(numberB) && a !== "" && b !== "") return numberA - numberB;
  return String(a).localeCompare(String(b));
}

function display(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (Array.isArray(value)) return value.join(", ");
  return String(value);
}

// Connection edges → rows, with the connection's pageInfo.
export function fromConnection(connection) {
  return { rows: connection.edges.map((edge) => edge.node), pageInfo: connection.pageInfo };
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}` }, text);
}

export function link(href, text) {
  return h("a", { href }, text);
}

// Each mutation's idempotency key: unique per user action, so a retry of the same click is safe.
export function idempotencyKey() {
  return `console-${crypto.randomUUID()}`;
}

// A CSV string as a file download (no server round trip; the statement came from /graphql).
export function download(filename, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  const anchor = h("a", { href: url, download: filename, class: "visually-hidden" }, filename);
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
