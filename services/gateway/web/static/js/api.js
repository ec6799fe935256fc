// The gateway's HTTP API, called with the API key kept in this browser tab's session.
//
// Every error answer is the API's envelope {code, message, hint} (400 `invalid_job` adds
// `problems: [{code, message, hint, path}]`); it is thrown as an `ApiError`. A 401 also fires
// `rondo:unauthorized` on window, which sends the user to the sign-in page.

const KEY_STORAGE = "rondo.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY_STORAGE);
  },
  signIn(key) {
    sessionStorage.setItem(KEY_STORAGE, key);
  },
  signOut() {
    sessionStorage.removeItem(KEY_STORAGE);
  },
};

export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `request failed with status ${status}`);
    this.status = status;
    this.code = body.code || "error";
    this.hint = body.hint || "";
    this.problems = Array.isArray(body.problems) ? body.problems : [];
  }
}

export function authHeaders() {
  return session.key ? { Authorization: `Bearer ${session.key}` } : {};
}

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** Turn a non-2xx response into an ApiError (and announce a 401). */
export async function failure(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    body = { message: `${response.status} ${response.statusText}` };
  }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("rondo:unauthorized"));
  return new ApiError(response.status, body);
}

/** Call the API; returns the parsed JSON answer (null when empty). */
export async function api(path, { method = "GET", body, query, signal, key } = {}) {
  const headers = key ? { Authorization: `Bearer ${key}` } : authHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(withQuery(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, {
      code: "unreachable",
      message: "the Rondo gateway cannot be reached",
      hint: "check your connection; the page retries when you reload",
    });
  }
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}
