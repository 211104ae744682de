// The one way the apps talk to the API: POST /graphql with the app's bearer token.

export class GraphQLError extends Error {
  constructor(message, code, errors = [], status = 200) {
    super(message);
    this.code = code;
    this.errors = errors;
    this.status = status;
  }
}

export const SIGNED_OUT = "alliance:signed-out";

// Runs `query` with `variables`; returns `data`. Throws GraphQLError on an HTTP or GraphQL error
// (`.code` is the first error's extensions.code). A 401 forgets the token and announces it.
export async function gql(query, variables = {}, { store } = {}) {
  const token = store ? store.get() : null;
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  } catch (error) {
    throw new GraphQLError(error.message || "network error", "NETWORK_ERROR", [], 0);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // shaped below
  }
  if (response.status === 401) {
    if (store) store.clear();
    window.dispatchEvent(new Event(SIGNED_OUT));
    throw new GraphQLError("signed out", "UNAUTHENTICATED", body?.errors ?? [], 401);
  }
  if (body?.errors?.length) {
    const first = body.errors[0];
    throw new GraphQLError(first.message, first.extensions?.code ?? "ERROR", body.errors, response.status);
  }
  if (!response.ok || !body) {
    throw new GraphQLError(`HTTP ${response.status}`, "HTTP_ERROR", [], response.status);
  }
  return body.data;
}
