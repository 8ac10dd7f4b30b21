// #/hosts: every host, live. One row per host, made once and updated cell by cell (a
// cell's text is set only when it changed); rows keep their order (by name) and are
// hidden, not removed, by the filters, so nothing moves while values change. Fixed
// column widths (hub.css), so a longer value never shifts a column.
import { el, setText } from "./shared/dom.js";
import { badge, setBadge } from "./shared/states.js";
import { ago, go, labelsText, store } from "./page.js";

const STATES = ["RUNNING", "STARTING", "STOPPING", "STOPPED", "BACKOFF", "EXITED", "FATAL"];

export function hostsView() {
  const rows = new Map();   // name -> {row, cells, shown}
  const search = el("input", { type: "search", id: "host-search", placeholder: "Search name, label, version, message",
    "aria-label": "Search hosts", autocomplete: "off", spellcheck: "false" });
  const state = el("select", { id: "host-state", "aria-label": "Service state" },
    el("option", { value: "" }, "Any state"),
    ...STATES.map((s) => el("option", { value: s }, s.charAt(0) + s.slice(1).toLowerCase())));
  const reach = el("select", { id: "host-reachable", "aria-label": "Reachable" },
    el("option", { value: "" }, "Reachable or not"),
    el("option", { value: "true" }, "Reachable"),
    el("option", { value: "false" }, "Unreachable"));
  const label = el("input", { type: "text", id: "host-label", placeholder: "label=value",
    "aria-label": "Label filter (name=value, comma-separated)", autocomplete: "off", spellcheck: "false" });
  const count = el("span", { class: "muted num", id: "hosts-count" });
  const body = el("div", { class: "rows", id: "hosts-body", role: "rowgroup" });
  const empty = el("p", { class: "empty muted", id: "hosts-empty", hidden: true }, "No hosts match.");
  const waiting = el("p", { class: "empty muted", id: "hosts-waiting" }, "Loading the fleet…");
  const head = (cls, text) => el("div", { class: `cell ${cls}`, role: "columnheader" }, text);
  // A grid of divs, not a <table>: each row skips rendering while off screen
  // (content-visibility), so a fleet of thousands lays out only what is in view, and
  // every row stays in the page for search, find and screen readers.
  const table = el("div", { class: "fleet", id: "hosts", role: "table", "aria-label": "Hosts" },
    el("div", { class: "head", role: "rowgroup" }, el("div", { class: "row", role: "row" },
      head("name", "Host"), head("reach", "Manager"), head("role", "Role"),
      head("labels", "Labels"), head("state", "Service"), head("version", "Version"),
      head("seen num", "Last contact"), head("message", "Message"))),
    body);
  const node = el("section", { class: "panel", "aria-labelledby": "hosts-title" },
    el("header", {}, el("h2", { id: "hosts-title" }, "Hosts"), count, el("span", { class: "spacer" })),
    el("div", { class: "filters" }, search, state, reach, label),
    table, waiting, empty);

  function makeRow(name) {
    const cell = (cls, ...children) => el("div", { class: `cell ${cls}`, role: "cell" }, ...children);
    const cells = {
      name: cell("name", el("a", { href: `#/hosts/${encodeURIComponent(name)}` }, name)),
      reach: cell("reach", el("span", { class: "badge" })),
      role: cell("role"),
      labels: cell("labels"),
      state: cell("state", badge("state", "")),
      version: cell("version mono"),
      seen: cell("seen num"),
      message: cell("message"),
    };
    const row = el("div", { class: "row", role: "row", dataset: { host: name }, tabindex: "0" },
      ...Object.values(cells));
    row.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") go(`#/hosts/${encodeURIComponent(name)}`); });
    row.addEventListener("keydown", (ev) => { if (ev.key === "Enter") go(`#/hosts/${encodeURIComponent(name)}`); });
    return { row, cells, shown: true };
  }

  function paint(entry, h) {
    const { cells, row } = entry;
    row.dataset.reachable = String(h.reachable);
    row.dataset.state = h.state;
    const reach = cells.reach.firstChild;
    const tone = h.reachable ? "ok" : "bad";
    if (reach.dataset.tone !== tone) {
      reach.dataset.tone = tone;
      reach.replaceChildren(el("span", { class: "sym", "aria-hidden": "true" }, h.reachable ? "●" : "✕"),
        h.reachable ? "Reachable" : "Unreachable");
    }
    setText(cells.role, h.role);
    const labels = labelsText(h.labels);
    setText(cells.labels, labels);
    cells.labels.title = labels;
    const st = h.state === "UNSPECIFIED" ? "" : h.state;
    setBadge(cells.state.firstChild, "state", st);
    cells.state.title = h.service ? `${h.service}${h.health ? " · " + h.health : ""}` : "";
    setText(cells.version, h.version);
    cells.version.title = h.version;
    setText(cells.seen, ago(h.last_seen));
    const message = h.message || "";
    setText(cells.message, message);
    cells.message.title = message;
  }

  function matches(h) {
    const q = search.value.trim().toLowerCase();
    if (state.value && h.state !== state.value) return false;
    if (reach.value && String(h.reachable) !== reach.value) return false;
    const want = label.value.split(",").map((p) => p.trim()).filter(Boolean);
    for (const pair of want) {
      const [k, ...rest] = pair.split("=");
      const v = rest.join("=");
      if (!h.labels || (rest.length ? h.labels[k] !== v : !(k in h.labels))) return false;
    }
    if (!q) return true;
    const words = [h.name, h.manager_address, h.version, h.message, h.role, h.agent && h.agent.version,
      labelsText(h.labels)];
    return words.some((w) => w && w.toLowerCase().includes(q));
  }

  function filter() {
    let shown = 0;
    for (const [name, entry] of rows) {
      const h = store.hosts.get(name);
      const show = !!h && matches(h);
      if (entry.row.hidden === show) entry.row.hidden = !show;
      if (show) shown += 1;
    }
    const total = store.hosts.size;
    const reachable = [...store.hosts.values()].filter((h) => h.reachable).length;
    setText(count, shown === total ? `${total} hosts · ${reachable} reachable`
      : `${shown} of ${total} hosts · ${reachable} reachable`);
    empty.hidden = shown > 0 || !store.ready;
  }

  function insertSorted(entry, name) {
    // rows are in name order; a new host goes where it belongs (rare: a registration)
    let before = null;
    for (const [other, e] of rows) {
      if (other > name && (!before || other < before.name)) before = { name: other, row: e.row };
    }
    body.insertBefore(entry.row, before ? before.row : null);
  }

  return {
    node,
    update(changed) {
      if (!store.ready) return;
      waiting.hidden = true;
      if (changed.snapshot) {
        for (const [name, entry] of rows) if (!store.hosts.has(name)) { entry.row.remove(); rows.delete(name); }
        const names = [...store.hosts.keys()].sort();
        const fresh = [];
        for (const name of names) {
          let entry = rows.get(name);
          if (!entry) { entry = makeRow(name); rows.set(name, entry); }
          paint(entry, store.hosts.get(name));
          fresh.push(entry.row);
        }
        body.replaceChildren(...fresh);
      } else {
        for (const name of changed.removed || []) {
          const entry = rows.get(name);
          if (entry) { entry.row.remove(); rows.delete(name); }
        }
        for (const name of changed.hosts) {
          let entry = rows.get(name);
          if (!entry) { entry = makeRow(name); rows.set(name, entry); insertSorted(entry, name); }
          paint(entry, store.hosts.get(name));
        }
      }
      filter();
    },
    tick() {
      for (const [name, entry] of rows) {
        if (entry.row.hidden) continue;
        const h = store.hosts.get(name);
        if (h) setText(entry.cells.seen, ago(h.last_seen));
      }
    },
    mounted() {
      for (const input of [search, label]) input.addEventListener("input", filter);
      for (const select of [state, reach]) select.addEventListener("change", filter);
    },
  };
}
