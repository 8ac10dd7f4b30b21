// How a rollout's states look: the same badges as shared/states.js (a tone from the
// Okabe–Ito palette in shared/base.css, a symbol and a word, never colour alone), for
// the states of a rollout and of one host in it; and the segmented progress bars.
import { el } from "./shared/dom.js";

const ROLLOUT = {
  PLANNED: ["idle", "○", "Planned"],
  UPDATING_HUB: ["busy", "◔", "Updating hub"],
  RUNNING: ["busy", "▶", "Running"],
  WAITING: ["warn", "⏸", "Waiting"],
  PAUSED: ["warn", "⏸", "Paused"],
  HALTING: ["bad", "■", "Halting"],
  ROLLING_BACK: ["warn", "↶", "Rolling back"],
  ABORTING: ["warn", "■", "Aborting"],
  SUCCEEDED: ["ok", "✓", "Succeeded"],
  FAILED: ["bad", "✕", "Failed"],
  ROLLED_BACK: ["bad", "↶", "Rolled back"],
  ABORTED: ["idle", "■", "Aborted"],
};

const HOST = {
  PENDING: ["idle", "○", "Pending"],
  UPDATING: ["busy", "◔", "Updating"],
  VERIFYING: ["busy", "◑", "Verifying"],
  SUCCEEDED: ["ok", "✓", "Succeeded"],
  FAILED: ["bad", "✕", "Failed"],
  UNREACHABLE: ["bad", "⚠", "Unreachable"],
  ROLLING_BACK: ["warn", "↶", "Rolling back"],
  ROLLED_BACK: ["warn", "↶", "Rolled back"],
  ROLLBACK_FAILED: ["bad", "✕", "Rollback failed"],
  SKIPPED: ["idle", "–", "Skipped"],
};

// Host states that need the operator's eye: each shows the failed step and the reason.
export const PROBLEM = new Set(["FAILED", "UNREACHABLE", "ROLLED_BACK", "ROLLBACK_FAILED"]);
export const IN_FLIGHT = new Set(["UPDATING", "VERIFYING", "ROLLING_BACK"]);
export const ACTIVE = new Set(["UPDATING_HUB", "RUNNING", "WAITING", "PAUSED", "HALTING",
  "ROLLING_BACK", "ABORTING"]);

function look(kind, value) {
  const table = kind === "rollout" ? ROLLOUT : HOST;
  return table[value] || ["idle", "·", String(value || "—")];
}

export function rbadge(kind, value) {
  const node = el("span", { class: "badge" });
  setRBadge(node, kind, value);
  return node;
}

/** Update a badge in place (the node stays: nothing moves). */
export function setRBadge(node, kind, value) {
  if (node.dataset.value === String(value)) return;
  const [tone, sym, word] = look(kind, value);
  node.dataset.tone = tone;
  node.dataset.value = String(value);
  node.replaceChildren(el("span", { class: "sym", "aria-hidden": "true" }, sym), word);
}

// The segments of a progress bar, in order, with the counts key each one sums.
export const SEGMENTS = [
  ["ok", "succeeded", ["succeeded"]],
  ["bad", "failed", ["failed", "unreachable", "rollback_failed"]],
  ["warn", "rolled back", ["rolled_back"]],
  ["busy", "in progress", ["in_progress"]],
  ["skip", "skipped", ["skipped"]],
  ["idle", "pending", ["pending"]],
];

/** A progress bar: fixed height, one segment per group of states, with a text
 * equivalent for screen readers and narrow screens. Every segment spans the whole bar
 * and is clipped to its share (clip-path: paint only), so a changing count moves no
 * element: no layout shift however often the bar updates. */
export function progressBar() {
  const bar = el("div", { class: "progress", role: "img" });
  for (const [tone] of SEGMENTS) bar.append(el("span", { class: "seg", dataset: { tone } }));
  return bar;
}

export function setProgress(bar, counts) {
  const total = counts.total || 0;
  const words = [];
  let start = 0;  // percent of the bar before this segment
  SEGMENTS.forEach(([, label, keys], i) => {
    const n = keys.reduce((sum, k) => sum + (counts[k] || 0), 0);
    const share = total ? (100 * n) / total : 0;
    const end = Math.min(100, start + share);
    const clip = `inset(0px ${+(100 - end).toFixed(3)}% 0px ${+start.toFixed(3)}%)`;
    const seg = bar.children[i];
    if (seg.dataset.clip !== clip) {
      seg.dataset.clip = clip;
      seg.style.clipPath = clip;
    }
    start = end;
    if (n) words.push(`${n} ${label}`);
  });
  const text = `${total} hosts: ${words.join(", ") || "none"}`;
  if (bar.getAttribute("aria-label") !== text) {
    bar.setAttribute("aria-label", text);
    bar.title = text;
  }
}

/** "3 succeeded · 1 failed · 2 in progress" with a swatch per group (the legend). */
export function countsLegend(counts) {
  const out = el("span", { class: "legend" });
  for (const [tone, label, keys] of SEGMENTS) {
    const n = keys.reduce((sum, k) => sum + (counts[k] || 0), 0);
    if (!n) continue;
    out.append(el("span", { class: "item", dataset: { tone } },
      el("span", { class: "swatch", "aria-hidden": "true" }), `${n} ${label}`));
  }
  return out;
}
