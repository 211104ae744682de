// Tokens and the /oauth/* calls the apps make. Tokens live in sessionStorage, one key per app,
// so the member app and the console never share a token and a closed tab forgets it.

export class OAuthError extends Error {
  constructor(error, description, status, retryAfter = null) {
    super(description || error);
    this.error = error;
    this.description = description;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export class TokenStore {
  constructor(app) {
    this.key = `alliance.token.${app}`;
  }

  get() {
    const raw = sessionStorage.getItem(this.key);
    if (!raw) return null;
    try {
      const saved = JSON.parse(raw);
      if (Date.now() >= saved.expiresAt) {
        this.clear();
        return null;
      }
      return saved.accessToken;
    } catch {
      this.clear();
      return null;
    }
  }

  set(tokenResponse) {
    const expiresAt = Date.now() + Math.max(0, (tokenResponse.expires_in ?? 3600) - 30) * 1000;
    sessionStorage.setItem(this.key, JSON.stringify({ accessToken: tokenResponse.access_token, expiresAt }));
  }

  clear() {
    sessionStorage.removeItem(this.key);
  }

  // The token's claims, read without verification (the server verifies; this is for display).
  claims() {
    const token = this.get();
    if (!token) return null;
    try {
      const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(payload));
    } catch {
      return null;
    }
  }
}

async function postForm(url, fields, headers = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json", ...headers },
    body: new URLSearchParams(fields).toString(),
  });
  let body = {};
  try {
    body = await response.json();
  } catch {
    // an empty or non-JSON answer is shaped below
  }
  if (!response.ok) {
    const retryAfter = Number(response.headers.get("Retry-After")) || body.retry_after || null;
    throw new OAuthError(body.error || "server_error", body.error_description || "", response.status, retryAfter);
  }
  return body;
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new OAuthError("not_found", url, response.status);
  return response.json();
}

export const PHONE_OTP_GRANT = "urn:alliance:params:oauth:grant-type:phone-otp";
export const DEMO_MEMBER_GRANT = "urn:alliance:params:oauth:grant-type:demo-member";

export function clientCredentials(clientId, clientSecret) {
  return postForm("/oauth/token", {
    grant_type: "client_credentials",
    client_id: clientId,
    client_secret: clientSecret,
  });
}

export function requestOtp(phone) {
  return postForm("/oauth/otp", { phone });
}

export function otpToken(phone, code) {
  return postForm("/oauth/token", { grant_type: PHONE_OTP_GRANT, phone, code });
}

export function demoMemberToken(memberNumber) {
  return postForm("/oauth/token", { grant_type: DEMO_MEMBER_GRANT, member_number: memberNumber });
}

// Demo mode only: {members: [...], clients: [...]}; null when the server is not in demo mode.
export async function demoPersonas() {
  try {
    return await getJson("/oauth/demo");
  } catch (error) {
    if (error instanceof OAuthError && error.status === 404) return null;
    throw error;
  }
}

// How members may sign in here: {phoneOtp, demo, providers: [...]}.
export function signInOptions() {
  return getJson("/oauth/providers");
}

// --- OpenID Connect authorization code + PKCE (S256) against an external member issuer -------

const PKCE_KEY = "alliance.oidc.pending";

function base64url(bytes) {
  let binary = "";
  for (const byte of new Uint8Array(bytes)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(size = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(size)));
}

export async function pkceChallenge(verifier) {
  return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
}

// Sends the browser to the issuer; `redirectUri` is this page (it must be registered there).
export async function startOidcSignIn(provider, redirectUri) {
  const verifier = randomString(48);
  const state = randomString(16);
  const nonce = randomString(16);
  sessionStorage.setItem(
    PKCE_KEY,
    JSON.stringify({ verifier, state, nonce, redirectUri, tokenEndpoint: provider.tokenEndpoint, clientId: provider.clientId }),
  );
  const url = new URL(provider.authorizationEndpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: provider.clientId,
    redirect_uri: redirectUri,
    scope: provider.scope,
    state,
    nonce,
    code_challenge: await pkceChallenge(verifier),
    code_challenge_method: "S256",
  }).toString();
  window.location.assign(url.toString());
}

// On the redirect back: exchanges the code (if this URL carries one for a flow we started) and
// returns the token response, whose id_token is the bearer token; null when there is no flow.
export async function finishOidcSignIn(location = window.location) {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return null;
  const pending = JSON.parse(sessionStorage.getItem(PKCE_KEY) || "null");
  sessionStorage.removeItem(PKCE_KEY);
  window.history.replaceState(null, "", location.pathname);
  if (!pending || params.get("state") !== pending.state) {
    throw new OAuthError("invalid_state", "the sign-in answer does not match a sign-in we started", 400);
  }
  if (params.has("error")) {
    throw new OAuthError(params.get("error"), params.get("error_description") || "", 400);
  }
  const tokens = await postForm(pending.tokenEndpoint, {
    grant_type: "authorization_code",
    code: params.get("code"),
    redirect_uri: pending.redirectUri,
    client_id: pending.clientId,
    code_verifier: pending.verifier,
  });
  const bearer = tokens.id_token || tokens.access_token;
  const claims = JSON.parse(atob(bearer.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  if (tokens.id_token && claims.nonce !== pending.nonce) {
    throw new OAuthError("invalid_nonce", "the ID token was not issued for this sign-in", 400);
  }
  return { access_token: bearer, expires_in: tokens.expires_in ?? Math.max(60, claims.exp - Date.now() / 1000) };
}
