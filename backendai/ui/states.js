// How a state looks: a tone (the colour, from the Okabe–Ito palette in base.css), a
// symbol and a word, so no state is told by colour alone.
import { el } from "./dom.js";

const SERVICE = {
  RUNNING: ["ok", "●", "Running"],
  STARTING: ["busy", "◔", "Starting"],
  STOPPING: ["busy", "◕", "Stopping"],
  STOPPED: ["idle", "○", "Stopped"],
  EXITED: ["idle", "◌", "Exited"],
  BACKOFF: ["warn", "↻", "Backoff"],
  FATAL: ["bad", "✕", "Fatal"],
};

const HEALTH = {
  healthy: ["ok", "✓", "Healthy"],
  unhealthy: ["bad", "✕", "Unhealthy"],
  unknown: ["idle", "?", "Unknown"],
};

const OUTCOME = {
  succeeded: ["ok", "✓", "Succeeded"],
  committed: ["ok", "✓", "Committed"],
  failed: ["bad", "✕", "Failed"],
  rolled_back: ["warn", "↶", "Rolled back"],
  cancelled: ["idle", "■", "Cancelled"],
  running: ["busy", "◔", "Running"],
};

function lookup(table, key) {
  if (!key) return ["none", "", "—"];  // not known (e.g. no health check configured)
  return table[key] || ["idle", "·", String(key)];
}

/** A badge node for a value of one of the tables above. */
export function badge(kind, value) {
  const [tone, sym, word] = lookup(kind === "health" ? HEALTH : kind === "outcome" ? OUTCOME : SERVICE, value);
  return el("span", { class: "badge", dataset: { tone } },
    el("span", { class: "sym", "aria-hidden": "true" }, sym), word);
}

/** Update a badge in place (keeps the node: nothing moves). */
export function setBadge(node, kind, value) {
  const [tone, sym, word] = lookup(kind === "health" ? HEALTH : kind === "outcome" ? OUTCOME : SERVICE, value);
  if (node.dataset.tone === tone && node.dataset.value === String(value)) return;
  node.dataset.tone = tone;
  node.dataset.value = String(value ?? "");
  node.replaceChildren(el("span", { class: "sym", "aria-hidden": "true" }, sym), word);
}
