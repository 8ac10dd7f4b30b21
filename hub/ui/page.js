// What every view of the hub's page shares: the fleet as the socket last said it (kept
// current by hub.js), the server's clock, the caller's role, the notice line.
import { duration, setText } from "./shared/dom.js";

// What the fleet socket told us, kept current; views read it and are told what changed.
export const store = {
  hosts: new Map(),      // name -> host (GET /api/hosts shape)
  rollouts: new Map(),   // id -> rollout summary
  detail: null,          // the watched rollout: summary + waves
  rows: new Map(),       // ... and its host rows, name -> row
  offset: 0,             // server clock minus ours, in seconds
  caller: null,          // {name, role}
  ready: false,          // a snapshot arrived
};

/** Seconds on the server's clock now (for elapsed times and "ago"). */
export function serverNow() {
  return Date.now() / 1000 + store.offset;
}

export function canAct() {
  return !store.caller || store.caller.role === "admin";
}

/** "just now", "12s ago", "5m ago", "3h ago", "2d ago" ("never" for 0). Coarse on
 * purpose: the text changes rarely, so the table does not flicker. */
export function ago(unix) {
  if (!unix) return "never";
  const s = Math.max(0, serverNow() - unix);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.floor(s / 5) * 5}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

let noticeTimer = null;

/** The notice: a toast floating over the page's corner, so its coming and going moves
 * nothing under the reader's eyes. An error stays until dismissed (a click, or Escape)
 * or replaced; other notices go by themselves after a while. "" hides it. */
export function notice(text, kind = "info") {
  const node = document.getElementById("notice");
  clearTimeout(noticeTimer);
  if (!text) { node.hidden = true; return; }
  node.dataset.kind = kind;
  setText(node, text);
  node.hidden = false;
  if (kind !== "error") noticeTimer = setTimeout(() => { node.hidden = true; }, 8000);
}

/** Dismissing the notice: a click on it, or Escape when no dialog is open (a dialog's
 * Escape is its own). */
export function dismissibleNotice() {
  document.getElementById("notice").addEventListener("click", () => notice(""));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !document.querySelector("dialog[open]")) notice("");
  });
}

export function go(hash) {
  if (location.hash !== hash) location.hash = hash;
}

/** Seconds from `started` to `finished` (or to now while running); 0 before it started. */
export function elapsed(started, finished) {
  if (!started) return 0;
  return Math.max(0, (finished || serverNow()) - started);
}

/** "name=value name=value" of a labels object. */
export function labelsText(labels) {
  return Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join(" ");
}

/** A duration for a table cell: "0.4s" and "7.2s" under ten seconds, then "12s",
 * "3m 05s", "1h 02m" (shared/dom.js duration). */
export function took(seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return "";
  if (seconds < 10) return `${seconds.toFixed(1)}s`;
  return duration(seconds);
}

/** The first letter in upper case (messages from the engine start in lower case). */
export function sentence(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : "";
}
