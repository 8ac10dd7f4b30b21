// The token: asked once, kept in sessionStorage (this tab only, gone when it closes),
// sent as `Authorization: Bearer` on fetch and as `?token=` on WebSockets (a browser
// cannot set headers there). No cookies: nothing for another site to ride on.
import { el } from "./dom.js";

const KEY = "backendai.token";
const listeners = new Set();

export function token() {
  try { return sessionStorage.getItem(KEY) || ""; } catch { return ""; }
}

export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  } catch { /* storage disabled: the token lives as long as the page */ }
  for (const fn of listeners) fn(value);
}

/** Call fn(token) whenever the token changes. */
export function onToken(fn) { listeners.add(fn); }

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** fetch() a JSON endpoint of this server. Throws ApiError with the server's message. */
export async function api(method, path, { query = {}, body } = {}) {
  const url = new URL(path, location.href);
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message})`);
  }
  let data = null;
  try { data = await resp.json(); } catch { /* not JSON */ }
  if (!resp.ok) {
    const message = (data && data.error) || `${resp.status} ${resp.statusText}`;
    if (resp.status === 401) askToken("The server did not accept the token: " + message);
    throw new ApiError(resp.status, message);
  }
  return data;
}

let dialog = null;
let pending = null;

function build() {
  const input = el("input", { type: "password", id: "token-input", autocomplete: "off",
    spellcheck: "false", required: true, placeholder: "bearer token" });
  const message = el("p", { id: "token-message", class: "muted" });
  const form = el("form", { method: "dialog" },
    el("h3", { id: "token-title" }, "Token"),
    message,
    el("label", {}, "Token", input),
    el("p", { class: "muted" }, "Kept in this tab only (sessionStorage) until it closes."),
    el("div", { class: "buttons" },
      el("button", { type: "button", id: "token-cancel", value: "cancel" }, "Cancel"),
      el("button", { type: "submit", id: "token-save", class: "primary", value: "save" }, "Use token")));
  dialog = el("dialog", { id: "token-dialog", "aria-labelledby": "token-title" }, form);
  form.querySelector("#token-cancel").addEventListener("click", () => dialog.close("cancel"));
  dialog.addEventListener("close", () => {
    const value = input.value.trim();
    input.value = "";
    const resolve = pending;
    pending = null;
    if (dialog.returnValue === "save" && value) {
      setToken(value);
      if (resolve) resolve(value);
    } else if (resolve) {
      resolve(null);
    }
  });
  document.body.append(dialog);
}

/** Show the token prompt (once, however many callers ask); resolves with the token
 * entered, or null when cancelled. */
export function askToken(why = "") {
  if (!dialog) build();
  dialog.querySelector("#token-message").textContent =
    why || "This server needs a bearer token (auth_token_file or [[auth_tokens]]).";
  if (!pending) {
    const promise = new Promise((resolve) => { pending = resolve; });
    dialog.promise = promise;
    if (!dialog.open) dialog.showModal();
  }
  dialog.querySelector("#token-input").focus();
  return dialog.promise;
}
