// #/rollouts/ID: one rollout, live (WS /api/fleet/ws?rollout=ID). Its state and why,
// progress per wave, the hosts that need attention with the step that failed and the
// reason in the manager's words, every host's row (state, step, elapsed), the
// controls (pause / resume / promote / abort / retry failed), each confirmed first, and
// the rollout's events, live, with who paused, promoted or aborted it (WS
// /api/events/ws?subject=rollout/ID, the hub's history).
import { api } from "./shared/auth.js";
import { confirmAction } from "./shared/confirm.js";
import { el, setText, timestamp } from "./shared/dom.js";
import { EventList } from "./shared/events.js";
import { IN_FLIGHT, PROBLEM, countsLegend, progressBar, rbadge, setProgress, setRBadge } from "./rollout_states.js";
import { canAct, elapsed, notice, sentence, store, took } from "./page.js";

const CONTROLS = [
  // [command, label, danger, allowed(rollout), question]
  ["pause", "Pause", false, (r) => ["RUNNING", "WAITING", "UPDATING_HUB"].includes(r.state),
    "Hosts being updated finish; no new host starts until you resume."],
  ["resume", "Resume", false, (r) => r.state === "PAUSED", "The rollout carries on where it paused."],
  ["promote", "Promote", false, (r) => r.state === "WAITING",
    "The next wave starts now."],
  ["abort", "Abort", true, (r) => r.active && !["ROLLING_BACK", "ABORTING"].includes(r.state),
    "Hosts being updated finish; every host not started yet is skipped. Hosts already updated stay on the new version."],
  ["retry-failed", "Retry failed", false,
    (r) => ["RUNNING", "WAITING", "PAUSED", "FAILED"].includes(r.state)
      && (r.counts.failed + r.counts.unreachable + r.counts.rolled_back + r.counts.rollback_failed) > 0,
    "Hosts that failed or were unreachable are updated again."],
];

const FILTERS = [
  ["all", "All hosts", () => true],
  ["problems", "Problems", (h) => PROBLEM.has(h.state)],
  ["active", "In progress", (h) => IN_FLIGHT.has(h.state)],
  ["pending", "Pending", (h) => h.state === "PENDING"],
  ["succeeded", "Succeeded", (h) => h.state === "SUCCEEDED"],
  ["skipped", "Skipped", (h) => h.state === "SKIPPED"],
];

function stepText(h) {
  if (PROBLEM.has(h.state) && h.failed_step) return h.failed_step;
  return h.step || "";
}

function why(h) {
  if (PROBLEM.has(h.state)) return h.reason || h.message || "";
  if (h.state === "SKIPPED" && h.stopped) return h.reason || h.message || "";
  return h.message || "";
}

/** A short tag before the reason: whose operation the host waits for (one this rollout
 * did not start: its origin, or an operator's request), or that the release was
 * installed but left stopped. */
function tagOf(h) {
  if (h.waiting) {
    return { kind: "foreign", text: h.waiting.origin ? `not ours: ${h.waiting.origin}`
      : "not ours: an operator's request" };
  }
  if (h.state === "SKIPPED" && h.stopped) return { kind: "stopped", text: "left stopped" };
  return null;
}

export function rolloutView(id) {
  const title = el("h2", { id: "rollout-title" }, `Rollout ${id}`);
  const state = rbadge("rollout", "");
  state.id = "rollout-state";
  const summary = el("p", { class: "rollout-message", id: "rollout-message" });
  const facts = el("dl", { class: "kv facts", id: "rollout-facts" });
  const overall = progressBar();
  overall.id = "rollout-progress";
  const legend = el("div", { class: "legend-row", id: "rollout-legend" });
  const buttons = {};
  const controls = el("div", { class: "actions controls", id: "rollout-controls" });
  for (const [command, label, danger] of CONTROLS) {
    buttons[command] = el("button", { type: "button", id: `rollout-${command}`, class: danger ? "danger" : "",
      dataset: { command } }, label);
    buttons[command].addEventListener("click", () => control(command));
    controls.append(buttons[command]);
  }
  const wavesList = el("ol", { class: "waves", id: "rollout-waves" });
  // Shown from the start with room for one host (and scrolling past a few), so the
  // first problem, or the last one fixed, moves nothing below it.
  const noProblems = el("p", { class: "empty muted", id: "no-problems" }, "No host needs attention.");
  const problemsPanel = el("section", { class: "panel problems", id: "rollout-problems",
    "aria-labelledby": "problems-title", dataset: { count: "0" } },
  el("header", {}, el("h2", { id: "problems-title" }, "Needs attention"),
    el("span", { class: "muted", id: "problems-count" })),
  el("div", { class: "problem-box" }, noProblems, el("ul", { class: "problem-list", id: "problem-list" })));
  const filter = el("select", { id: "rollout-filter", "aria-label": "Show hosts" },
    ...FILTERS.map(([key, label]) => el("option", { value: key }, label)));
  const body = el("div", { class: "rows", id: "rollout-hosts-body", role: "rowgroup" });
  const waiting = el("p", { class: "empty muted", id: "rollout-waiting" }, "Loading the rollout…");
  // The panels stay hidden until the rollout's first snapshot, then appear at once with
  // their content: filled in place, they would push each other down as it arrives.
  const content = el("div", { class: "rollout-content", hidden: true });
  const rows = new Map();  // name -> {row, cells}
  const problemItems = new Map();  // name -> li
  const eventList = new EventList({ limit: 50, id: "rollout-events" });

  const node = el("div", { class: "rollout-page" },
    el("p", { class: "crumbs" }, el("a", { href: "#/rollouts" }, "Rollouts"), " / ", el("span", { class: "mono" }, id)),
    waiting,
    content);
  content.append(
    el("section", { class: "panel", "aria-labelledby": "rollout-title" },
      el("header", {}, title, state, el("span", { class: "spacer" }), controls),
      el("div", { class: "body" }, summary, overall, legend, facts)),
    problemsPanel,
    el("section", { class: "panel", "aria-labelledby": "waves-title" },
      el("header", {}, el("h2", { id: "waves-title" }, "Waves")),
      el("div", { class: "body" }, wavesList)),
    el("section", { class: "panel", "aria-labelledby": "rhosts-title" },
      el("header", {}, el("h2", { id: "rhosts-title" }, "Hosts"), el("span", { class: "muted", id: "rhosts-count" }),
        el("span", { class: "spacer" }), filter),
      el("div", { class: "fleet rollout-hosts", id: "rollout-hosts", role: "table",
        "aria-label": "Hosts of this rollout" },
      el("div", { class: "head", role: "rowgroup" }, el("div", { class: "row", role: "row" },
        ...[["name", "Host"], ["wave num", "Wave"], ["state", "State"], ["step", "Step"],
          ["elapsed num", "Elapsed"], ["attempts num", "Tries"], ["why", "Reason / message"]]
          .map(([cls, text]) => el("div", { class: `cell ${cls}`, role: "columnheader" }, text)))),
      body)),
    el("section", { class: "panel", "aria-labelledby": "revents-title" },
      el("header", {}, el("h2", { id: "revents-title" }, "Events"), el("span", { class: "spacer" }),
        el("span", { class: "muted wide-only" }, "newest first · commands say who gave them")),
      eventList.node));

  // ---- the rollout -----------------------------------------------------------------------

  function paintSummary() {
    const r = store.detail;
    if (!r) return;
    setText(title, `Rollout of ${r.version}`);
    setRBadge(state, "rollout", r.state);
    const lines = [];
    if (r.message) lines.push(sentence(r.message));
    else if (r.state === "WAITING" && r.awaiting_promote) lines.push("Waiting for promote to start the next wave.");
    else if (r.state === "WAITING" && r.resume_at) lines.push(`Next wave at ${timestamp(r.resume_at).slice(11)}.`);
    else if (r.active && r.current_wave >= 0) {
      const w = r.waves && r.waves[r.current_wave];
      const n = r.counts.in_progress;
      lines.push(`Wave ${r.current_wave}${w ? ` (${w.spec})` : ""}` +
        (n ? `: ${n} host${n === 1 ? "" : "s"} in progress` : ""));
    }
    setText(summary, lines.join(" "));
    summary.dataset.state = r.state;
    setProgress(overall, r.counts);
    legend.replaceChildren(countsLegend(r.counts));
    const s = r.strategy;
    const target = [
      Object.entries(r.target.labels || {}).map(([k, v]) => `${k}=${v}`).join(", "),
      (r.target.hosts || []).join(", "),
    ].filter(Boolean).join(" · ") || "every agent host";
    const items = [
      ["Id", el("span", { class: "mono" }, r.id)],
      ["Description", r.description],
      ["Target", target + (r.include_hub ? " (hub first)" : "")],
      ["Service", r.service || "primary"],
      ["Started", timestamp(r.created)],
      [r.finished ? "Took" : "Running for", el("span", { id: "rollout-elapsed", class: "num" }, took(elapsed(r.created, r.finished)))],
      ["Finished", r.finished ? timestamp(r.finished) : "—"],  // always a row: nothing moves when it ends
      ["Waves", s.waves.join(" → ")],
      ["Rules", [
        s.max_parallel ? `${s.max_parallel} at once` : "whole waves at once",
        `failures tolerated ${s.max_failures_per_wave} per wave / ${s.max_failures_total} in total`,
        s.auto_rollback ? "auto rollback" : "no auto rollback",
        s.pause_until_promote ? "promote between waves" : s.pause_seconds ? `${s.pause_seconds}s pause` : "",
        r.start_stopped ? "starts services an operator had stopped" : "",
      ].filter(Boolean).join(" · ")],
    ];
    facts.replaceChildren(...items.filter(([, v]) => v !== "" && v !== undefined)
      .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const acting = canAct();
    for (const [command, , , allowed] of CONTROLS) {
      const ok = acting && allowed(r) && !busy;
      if (buttons[command].disabled === ok) buttons[command].disabled = !ok;
      buttons[command].title = acting ? "" : "This token is read-only";
    }
  }

  function paintWaves() {
    const r = store.detail;
    if (!r || !r.waves) return;
    while (wavesList.children.length > r.waves.length) wavesList.lastChild.remove();
    r.waves.forEach((w, i) => {
      let li = wavesList.children[i];
      if (!li) {
        li = el("li", { class: "wave", dataset: { wave: i } },
          el("span", { class: "wave-name" }), progressBar(), el("span", { class: "wave-status num" }));
        wavesList.append(li);
      }
      const name = w.spec === "hub" ? "The hub" : i === 0 || (i === 1 && r.waves[0].spec === "hub")
        ? `Wave ${i} · canary` : `Wave ${i} · ${w.spec}`;
      setText(li.children[0], `${name} · ${w.size} host${w.size === 1 ? "" : "s"}`);
      const counts = { total: w.size, succeeded: 0, failed: 0, unreachable: 0, rolled_back: 0,
        rollback_failed: 0, in_progress: 0, skipped: 0, pending: 0 };
      for (const [st, n] of Object.entries(w.states)) {
        const key = IN_FLIGHT.has(st) ? "in_progress" : st.toLowerCase();
        counts[key] = (counts[key] || 0) + n;
      }
      setProgress(li.children[1], counts);
      const status = w.done ? (w.failures ? `done · ${w.failures} failed` : "done")
        : w.started ? `${counts.succeeded}/${w.size} · ${counts.in_progress} in progress` : "not started";
      setText(li.children[2], status);
      li.dataset.status = w.done ? (w.failures ? "failed" : "done") : w.started ? "running" : "pending";
    });
  }

  // ---- the hosts -------------------------------------------------------------------------

  function makeRow(name) {
    const cell = (cls, ...children) => el("div", { class: `cell ${cls}`, role: "cell" }, ...children);
    const cells = {
      name: cell("name", el("a", { href: `#/hosts/${encodeURIComponent(name)}` }, name)),
      wave: cell("wave num"),
      state: cell("state", rbadge("host", "")),
      step: cell("step mono"),
      elapsed: cell("elapsed num"),
      attempts: cell("attempts num"),
      why: cell("why"),
    };
    const row = el("div", { class: "row", role: "row", dataset: { host: name } }, ...Object.values(cells));
    return { row, cells };
  }

  function paintRow(entry, h) {
    const { cells, row } = entry;
    row.dataset.state = h.state;
    setText(cells.wave, h.wave);
    setRBadge(cells.state.firstChild, "host", h.state);
    setText(cells.step, stepText(h));
    setText(cells.elapsed, took(elapsed(h.started, h.finished)));
    setText(cells.attempts, h.attempts || "");
    const text = why(h);
    const tag = tagOf(h);
    const key = `${tag ? `${tag.kind}:${tag.text}` : ""}\n${text}`;
    if (cells.why.dataset.key !== key) {
      cells.why.dataset.key = key;
      cells.why.replaceChildren(...(tag ? [el("span", { class: "tag", dataset: { tag: tag.kind } }, tag.text), " "] : []), text);
    }
    cells.why.title = tag ? `${tag.text} — ${text}` : text;
    cells.why.dataset.problem = String(PROBLEM.has(h.state));
    row.dataset.waiting = h.waiting ? "true" : "false";
    row.dataset.stopped = String(!!h.stopped);
  }

  function paintProblem(h) {
    let li = problemItems.get(h.name);
    if (!PROBLEM.has(h.state)) {
      if (li) { li.remove(); problemItems.delete(h.name); }
      return;
    }
    if (!li) {
      li = el("li", { dataset: { host: h.name } },
        el("div", { class: "problem-head" },
          el("a", { href: `#/hosts/${encodeURIComponent(h.name)}`, class: "host" }, h.name),
          rbadge("host", h.state), el("span", { class: "where" })),
        el("p", { class: "reason" }));
      const list = problemsPanel.querySelector("ul");
      list.append(li);
      problemItems.set(h.name, li);
    }
    setRBadge(li.querySelector(".badge"), "host", h.state);
    setText(li.querySelector(".where"), `wave ${h.wave}${h.failed_step ? ` · failed at ${h.failed_step}` : ""}`);
    setText(li.querySelector(".reason"), h.reason || h.message || "no reason reported");
  }

  function applyFilter() {
    const keep = FILTERS.find(([key]) => key === filter.value)[2];
    let shown = 0;
    for (const [name, entry] of rows) {
      const h = store.rows.get(name);
      const show = !!h && keep(h);
      if (entry.row.hidden === show) entry.row.hidden = !show;
      if (show) shown += 1;
    }
    setText(document.getElementById("rhosts-count"),
      shown === rows.size ? `${rows.size}` : `${shown} of ${rows.size}`);
    const n = problemItems.size;
    problemsPanel.dataset.count = String(n);
    noProblems.hidden = n > 0;
    setText(document.getElementById("problems-count"), n ? `${n} host${n === 1 ? "" : "s"}` : "");
  }

  // ---- controls --------------------------------------------------------------------------

  let busy = false;

  async function control(command) {
    const r = store.detail;
    if (!r) return;
    const [, label, danger, , question] = CONTROLS.find(([c]) => c === command);
    const answer = await confirmAction({ title: `${label}: rollout of ${r.version}`, text: question,
      ok: label, danger, fields: [{ name: "reason", label: "Reason (recorded in the events)", type: "text", placeholder: "optional" }] });
    if (!answer) return;
    busy = true;
    paintSummary();
    try {
      const body = answer.reason ? { reason: answer.reason } : undefined;
      const result = await api("POST", `/api/rollouts/${encodeURIComponent(id)}/${command}`, { body });
      notice(`${label}: the rollout is now ${result.state.toLowerCase().replace("_", " ")}.`, "ok");
    } catch (err) {
      notice(`${label} failed: ${err.message}`, "error");
    } finally {
      busy = false;
      paintSummary();
    }
  }

  return {
    node,
    update(changed) {
      if (!store.ready) return;
      if (!store.detail) {
        setText(waiting, `No rollout ${id} on this hub.`);
        return;
      }
      waiting.hidden = true;
      content.hidden = false;
      paintSummary();
      paintWaves();
      if (changed.snapshot) {
        for (const entry of rows.values()) entry.row.remove();
        rows.clear();
        for (const li of problemItems.values()) li.remove();
        problemItems.clear();
        const fresh = [];
        for (const h of store.rows.values()) {
          const entry = makeRow(h.name);
          rows.set(h.name, entry);
          paintRow(entry, h);
          paintProblem(h);
          fresh.push(entry.row);
        }
        body.replaceChildren(...fresh);
      } else {
        for (const name of changed.rows) {
          const h = store.rows.get(name);
          let entry = rows.get(name);
          if (!entry) { entry = makeRow(name); rows.set(name, entry); body.append(entry.row); }
          paintRow(entry, h);
          paintProblem(h);
        }
      }
      applyFilter();
    },
    tick() {
      const r = store.detail;
      if (!r) return;
      const node_ = document.getElementById("rollout-elapsed");
      if (node_) setText(node_, took(elapsed(r.created, r.finished)));
      for (const [name, entry] of rows) {
        const h = store.rows.get(name);
        if (h && h.started && !h.finished) setText(entry.cells.elapsed, took(elapsed(h.started, h.finished)));
      }
    },
    mounted() {
      filter.addEventListener("change", applyFilter);
      eventList.follow({ subject: `rollout/${id}` });
    },
    tokenChanged() { eventList.restart(); },
    unmount() { eventList.stop(); },
  };
}
