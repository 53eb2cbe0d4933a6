// The agent's API as the dashboard reads it: the same endpoints and the same token rules as every other client.
// The token lives in this tab's session storage only, and travels in a header, never in a URL.

const tokenKey = "switchboard.token";

/** The ACL token the operator entered ("" for none). */
export function token() {
  return sessionStorage.getItem(tokenKey) ?? "";
}

/** Keeps `value` for this tab, or forgets it when empty. */
export function setToken(value) {
  if (value) sessionStorage.setItem(tokenKey, value);
  else sessionStorage.removeItem(tokenKey);
}

/** The request headers every call carries. */
export function headers(extra = {}) {
  const result = { ...extra };
  const secret = token();
  if (secret) result["X-Switchboard-Token"] = secret;
  return result;
}

/** An answer that was not a success: its status and the agent's message (which names the rule or permission). */
export class APIError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The error an unsuccessful `response` carries. */
export async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`;
  let code;
  try {
    const body = await response.json();
    if (body.message) message = body.message;
    code = body.error;
  } catch {
    // Not the API's error body: the status says enough.
  }
  return new APIError(response.status, message, code);
}

async function call(method, path, body, signal) {
  const init = { method, headers: headers({ Accept: "application/json" }), signal, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorFrom(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, signal) => call("GET", path, undefined, signal);
export const put = (path, body) => call("PUT", path, body);

/** `/v1/services/{service}/instances/{id}`, with the id escaped (it may hold ':'). */
export function instancePath(service, id) {
  return `/v1/services/${service}/instances/${encodeURIComponent(id)}`;
}

/** What the token may do on the agent's areas and on `services`; with ACLs off, everything. */
export async function rights(services = []) {
  const query = services.map((name) => `service=${encodeURIComponent(name)}`).join("&");
  return get(`/v1/acl/rights${query ? `?${query}` : ""}`);
}
