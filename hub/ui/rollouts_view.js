// #/rollouts: every rollout the hub keeps (newest first, live), and starting a new one:
// the form asks the hub for the plan first (POST /api/rollouts with dry_run: the waves,
// their hosts, and whether the store has the release when the hub checks it); only that
// plan can be started, after a confirmation.
import { api } from "./shared/auth.js";
import { confirmAction } from "./shared/confirm.js";
import { el, setText, timestamp } from "./shared/dom.js";
import { progressBar, rbadge, setProgress, setRBadge } from "./rollout_states.js";
import { canAct, elapsed, go, notice, sentence, store, took } from "./page.js";

const SHOW_HOSTS = 24;  // hosts listed per wave in the plan before "and N more"

function field(label, input, hint = "") {
  return el("label", { class: "field" }, el("span", { class: "label" }, label), input,
    hint ? el("span", { class: "hint muted" }, hint) : null);
}

function parseLabels(text) {
  const out = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const i = part.indexOf("=");
    if (i <= 0) throw new Error(`labels: "${part}" is not name=value`);
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

function list(text) {
  return text.split(/[\s,]+/).map((p) => p.trim()).filter(Boolean);
}

/** One package of the plan's store check: available, missing (with the URL looked at
 * and the manager's words), or not checked (no manager of its hosts could be asked). */
function packageItem(pk) {
  const [tone, sym, word, status] = !pk.checked ? ["warn", "?", "Not checked", "unchecked"]
    : pk.available ? ["ok", "✓", "In the store", "available"] : ["bad", "✕", "Missing", "missing"];
  const hosts = pk.hosts || [];
  return el("li", { dataset: { status, package: pk.package || pk.service || "" } },
    el("span", { class: "badge", dataset: { tone } }, el("span", { class: "sym", "aria-hidden": "true" }, sym), word),
    " ", el("strong", {}, pk.package || pk.service || "package"),
    pk.url ? el("span", { class: "mono url" }, ` ${pk.url}`) : "",
    pk.message ? el("span", { class: "muted why" }, ` — ${pk.message}`) : "",
    el("span", { class: "muted" }, ` (${hosts.length} host${hosts.length === 1 ? "" : "s"}`
      + (pk.asked ? `; asked ${pk.asked}'s manager)` : ")")));
}

export function rolloutsView() {
  const rows = new Map();  // id -> {row, cells}
  const body = el("tbody", { id: "rollouts-body" });
  const empty = el("p", { class: "empty muted", id: "rollouts-empty", hidden: true }, "No rollouts yet.");

  // ---- the form ------------------------------------------------------------------------
  const f = {
    version: el("input", { type: "text", id: "ro-version", required: true, placeholder: "2.1.44", autocomplete: "off", spellcheck: "false" }),
    labels: el("input", { type: "text", id: "ro-labels", placeholder: "site=berlin, group=edge", autocomplete: "off", spellcheck: "false" }),
    hosts: el("input", { type: "text", id: "ro-hosts", placeholder: "every agent host", autocomplete: "off", spellcheck: "false" }),
    waves: el("input", { type: "text", id: "ro-waves", value: "1, 10%, 50%, 100%", autocomplete: "off", spellcheck: "false" }),
    parallel: el("input", { type: "number", id: "ro-parallel", min: 0, placeholder: "whole wave" }),
    perWave: el("input", { type: "text", id: "ro-per-wave", placeholder: "0" }),
    total: el("input", { type: "text", id: "ro-total", placeholder: "0" }),
    healthy: el("input", { type: "number", id: "ro-healthy", min: 0, step: "any", placeholder: "0" }),
    deadline: el("input", { type: "number", id: "ro-deadline", min: 0, step: "any", placeholder: "60" }),
    pause: el("input", { type: "number", id: "ro-pause", min: 0, step: "any", placeholder: "0" }),
    promote: el("input", { type: "checkbox", id: "ro-promote" }),
    rollback: el("input", { type: "checkbox", id: "ro-rollback", checked: true }),
    hub: el("input", { type: "checkbox", id: "ro-include-hub" }),
    startStopped: el("input", { type: "checkbox", id: "ro-start-stopped" }),
    service: el("input", { type: "text", id: "ro-service", placeholder: "primary", autocomplete: "off", spellcheck: "false" }),
    description: el("input", { type: "text", id: "ro-description", placeholder: "why", autocomplete: "off" }),
  };
  const preview = el("button", { type: "submit", class: "primary", id: "ro-preview" }, "Preview plan");
  const start = el("button", { type: "button", id: "ro-start", disabled: true }, "Start rollout…");
  const formError = el("p", { class: "error", id: "ro-error", role: "alert" });
  const plan = el("div", { class: "plan", id: "ro-plan", hidden: true });
  let planned = null;  // {body, plan} of the last preview, while the form is unchanged

  const form = el("form", { class: "rollout-form", id: "ro-form", novalidate: true },
    el("div", { class: "form-grid" },
      field("Version", f.version, "the release to roll out"),
      field("Target labels", f.labels, "every label must match"),
      field("Target hosts", f.hosts, "names, comma-separated"),
      field("Waves", f.waves, "cumulative: counts or percentages; the first is the canary"),
      field("Hosts at once", f.parallel, "within a wave"),
      field("Failures per wave", f.perWave, "tolerated: a count or a %"),
      field("Failures in total", f.total, "tolerated: a count or a %"),
      field("Healthy for (s)", f.healthy, "on the new version before a host counts"),
      field("Healthy within (s)", f.deadline, "after its update, else it failed"),
      field("Pause between waves (s)", f.pause),
      field("Service", f.service, "on each manager"),
      field("Description", f.description)),
    el("div", { class: "checks" },
      el("label", { class: "check" }, f.promote, " Wait for promote between waves"),
      el("label", { class: "check" }, f.rollback, " Roll back moved hosts when it halts"),
      el("label", { class: "check" }, f.hub, " Update the hub first"),
      el("label", { class: "check", title: "Without it, a service an operator stopped gets the release installed but stays stopped (the host is skipped)" },
        f.startStopped, " Start services an operator had stopped")),
    el("div", { class: "buttons" }, preview, start),
    formError, plan);

  function request(dryRun) {
    const strategy = {};
    const waves = list(f.waves.value);
    if (waves.length) strategy.waves = waves;
    const numbers = [["max_parallel", f.parallel, true], ["min_healthy_seconds", f.healthy],
      ["healthy_deadline_seconds", f.deadline], ["pause_seconds", f.pause]];
    for (const [key, input, integer] of numbers) {
      if (input.value.trim() === "") continue;
      const n = Number(input.value);
      if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
        throw new Error(`${input.id.replace("ro-", "")}: not a ${integer ? "whole " : ""}number`);
      }
      strategy[key] = n;
    }
    if (f.perWave.value.trim()) strategy.max_failures_per_wave = f.perWave.value.trim();
    if (f.total.value.trim()) strategy.max_failures_total = f.total.value.trim();
    if (f.promote.checked) strategy.pause_until_promote = true;
    strategy.auto_rollback = f.rollback.checked;
    const target = {};
    const labels = parseLabels(f.labels.value);
    if (Object.keys(labels).length) target.labels = labels;
    const hosts = list(f.hosts.value);
    if (hosts.length) target.hosts = hosts;
    const body = { version: f.version.value.trim(), target, strategy, dry_run: dryRun };
    if (f.hub.checked) body.include_hub = true;
    if (f.startStopped.checked) body.start_stopped = true;
    if (f.service.value.trim()) body.service = f.service.value.trim();
    if (f.description.value.trim()) body.description = f.description.value.trim();
    return body;
  }

  function showPlan(p) {
    const waves = p.waves.map((w) => {
      const names = w.hosts.slice(0, SHOW_HOSTS);
      return el("li", { class: "wave-plan", dataset: { wave: w.index } },
        el("strong", {}, w.index === 0 && w.spec !== "hub" ? `Wave ${w.index} · canary` : w.spec === "hub" ? "The hub first" : `Wave ${w.index}`),
        ` · ${w.spec} · ${w.size} host${w.size === 1 ? "" : "s"}: `,
        el("span", { class: "mono hosts-list" }, names.join(", "),
          w.hosts.length > names.length ? ` and ${w.hosts.length - names.length} more` : ""));
    });
    const s = p.strategy;
    const rules = [
      s.max_parallel ? `${s.max_parallel} at once` : "whole waves at once",
      `failures tolerated: ${s.max_failures_per_wave} per wave, ${s.max_failures_total} in total`,
      `healthy ${s.min_healthy_seconds}s within ${s.healthy_deadline_seconds}s`,
      s.pause_until_promote ? "waits for promote between waves" : s.pause_seconds ? `pauses ${s.pause_seconds}s between waves` : "no pause between waves",
      s.auto_rollback ? "rolls back moved hosts when it halts" : "no automatic rollback",
      p.start_stopped ? "starts services an operator had stopped"
        : "a service an operator stopped is installed, left stopped and skipped",
    ];
    const packages = p.packages || [];
    const store_ = packages.length
      ? el("ul", { class: "packages", id: "ro-packages" }, ...packages.map(packageItem))
      : el("p", { class: "muted", id: "ro-packages" }, "The hub did not check the package store for this plan.");
    const missing = packages.filter((pk) => pk.checked && !pk.available);
    const unchecked = packages.filter((pk) => !pk.checked);
    const warning = missing.length
      ? el("p", { class: "error", id: "ro-store-warning", role: "alert" },
        `The store does not have ${p.version} for ${missing.length} package${missing.length === 1 ? "" : "s"}: `
        + "the hub refuses to start this rollout until it does.")
      : unchecked.length
        ? el("p", { class: "warning", id: "ro-store-warning" },
          `The store was not checked for ${unchecked.length} package${unchecked.length === 1 ? "" : "s"} `
          + "(no manager of those hosts could be asked): the hub checks again when it starts.")
        : null;
    plan.replaceChildren(
      el("h3", {}, `Plan: ${p.version} to ${p.counts.total} host${p.counts.total === 1 ? "" : "s"} in ${p.waves.length} wave${p.waves.length === 1 ? "" : "s"}`,
        el("span", { class: "muted" }, ` (seed ${p.seed})`)),
      el("ol", { class: "plan-waves", id: "ro-plan-waves" }, ...waves),
      el("p", { class: "muted" }, rules.join(" · ")),
      el("h4", {}, "Package store"),
      store_, warning);
    plan.classList.remove("stale");
    plan.hidden = false;
  }

  async function onPreview(ev) {
    ev.preventDefault();
    setText(formError, "");
    let body;
    try {
      body = request(true);
      if (!body.version) throw new Error("version: required");
    } catch (err) {
      setText(formError, err.message);
      return;
    }
    preview.disabled = true;
    try {
      const p = await api("POST", "/api/rollouts", { body });
      planned = { body, plan: p };
      showPlan(p);
      start.disabled = !canAct();
      start.className = "primary";
      preview.className = "";
    } catch (err) {
      planned = null;
      plan.hidden = true;
      start.disabled = true;
      setText(formError, err.message);
    } finally {
      preview.disabled = false;
    }
  }

  async function onStart() {
    if (!planned) return;
    const p = planned.plan;
    const answer = await confirmAction({
      title: `Start the rollout of ${p.version}`,
      text: `${p.counts.total} hosts in ${p.waves.length} waves, starting with ${p.waves[0].hosts.join(", ")}.`,
      ok: "Start rollout", danger: true });
    if (!answer) return;
    start.disabled = true;
    try {
      const r = await api("POST", "/api/rollouts", { body: { ...planned.body, dry_run: false,
        strategy: { ...planned.body.strategy, seed: p.seed } } });
      notice(`Rollout ${r.id} of ${r.version} started.`, "ok");
      go(`#/rollouts/${encodeURIComponent(r.id)}`);
    } catch (err) {
      setText(formError, err.message);
      start.disabled = false;
    }
  }

  function formChanged() {
    if (!planned) return;
    planned = null;  // the plan shown no longer matches the form: preview again
    start.disabled = true;
    start.className = "";
    preview.className = "primary";
    plan.classList.add("stale");
    setText(formError, "The form changed: preview the plan again before starting.");
  }

  form.addEventListener("submit", onPreview);
  form.addEventListener("input", formChanged);
  form.addEventListener("change", formChanged);
  start.addEventListener("click", onStart);

  const newPanel = el("details", { class: "panel new-rollout", id: "new-rollout" },
    el("summary", {}, el("h2", {}, "New rollout")),
    el("div", { class: "body" }, form));

  // ---- the list ------------------------------------------------------------------------
  const node = el("div", { class: "rollouts-page" },
    newPanel,
    el("section", { class: "panel", "aria-labelledby": "rollouts-title" },
      el("header", {}, el("h2", { id: "rollouts-title" }, "Rollouts"),
        el("span", { class: "muted", id: "rollouts-count" }), el("span", { class: "spacer" })),
      el("div", { class: "table-wrap" },
        el("table", { class: "grid rollouts", id: "rollouts" },
          el("colgroup", {}, ...["id", "version", "state", "progress", "started", "took", "what"]
            .map((c) => el("col", { class: `c-${c}` }))),
          el("thead", {}, el("tr", {},
            el("th", { scope: "col", class: "id" }, "Rollout"),
            el("th", { scope: "col", class: "version" }, "Version"),
            el("th", { scope: "col", class: "state" }, "State"),
            el("th", { scope: "col", class: "progress-cell" }, "Hosts"),
            el("th", { scope: "col", class: "started" }, "Started"),
            el("th", { scope: "col", class: "took num" }, "Took"),
            el("th", { scope: "col", class: "what" }, "Description / outcome"))),
          body)),
      empty));

  function makeRow(id) {
    const bar = progressBar();
    const cells = {
      id: el("td", { class: "id mono" }, el("a", { href: `#/rollouts/${encodeURIComponent(id)}` }, id)),
      version: el("td", { class: "version mono" }),
      state: el("td", { class: "state" }, rbadge("rollout", "")),
      progress: el("td", { class: "progress-cell" }, bar, el("span", { class: "progress-text num" })),
      started: el("td", { class: "started num" }),
      took: el("td", { class: "took num" }),
      what: el("td", { class: "what" }),
    };
    const row = el("tr", { dataset: { rollout: id }, tabindex: "0" }, ...Object.values(cells));
    row.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") go(`#/rollouts/${encodeURIComponent(id)}`); });
    row.addEventListener("keydown", (ev) => { if (ev.key === "Enter") go(`#/rollouts/${encodeURIComponent(id)}`); });
    return { row, cells, bar };
  }

  function paint(entry, r) {
    const { cells, row, bar } = entry;
    row.dataset.state = r.state;
    setText(cells.version, r.version);
    setRBadge(cells.state.firstChild, "rollout", r.state);
    setProgress(bar, r.counts);
    setText(cells.progress.lastChild, `${r.counts.succeeded}/${r.counts.total}`);
    setText(cells.started, timestamp(r.created));
    setText(cells.took, took(elapsed(r.created, r.finished)));
    const what = [r.description, sentence(r.message)].filter(Boolean).join(" — ");
    setText(cells.what, what);
    cells.what.title = what;
  }

  function render() {
    const ids = [...store.rollouts.values()].sort((a, b) => b.created - a.created).map((r) => r.id);
    for (const [id, entry] of rows) if (!store.rollouts.has(id)) { entry.row.remove(); rows.delete(id); }
    const ordered = [];
    for (const id of ids) {
      let entry = rows.get(id);
      if (!entry) { entry = makeRow(id); rows.set(id, entry); }
      paint(entry, store.rollouts.get(id));
      ordered.push(entry.row);
    }
    const same = ordered.length === body.children.length && ordered.every((r, i) => body.children[i] === r);
    if (!same) body.replaceChildren(...ordered);
    empty.hidden = ids.length > 0 || !store.ready;
    setText(document.getElementById("rollouts-count"), ids.length ? `${ids.length}` : "");
    newPanel.open = newPanel.open || (store.ready && ids.length === 0);
  }

  return {
    node,
    update(changed) {
      if (!store.ready) return;
      if (changed.snapshot || changed.rollouts.length) render();
      if (!canAct()) {
        preview.title = start.title = "This token is read-only: it can preview, not start";
        start.disabled = true;
      }
    },
    tick() {
      for (const [id, entry] of rows) {
        const r = store.rollouts.get(id);
        if (r && !r.finished) setText(entry.cells.took, took(elapsed(r.created, r.finished)));
      }
    },
    mounted() { if (store.ready) render(); },
  };
}
