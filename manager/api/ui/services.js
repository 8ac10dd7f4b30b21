// The manager's services page: the table, live over WS /api/services/ws; start / stop /
// restart with confirmation (POST /api/services/{name}/...); the selected service's
// details, its update (live steps over WS /api/updates/{id}/ws), its log tail (WS
// /api/services/{name}/logs/ws) and its recent events, live, with who asked for what
// (WS /api/events/ws?subject=service/NAME). Message shapes: docs/DASHBOARD.md.
import { api, askToken, onToken, token } from "./shared/auth.js";
import { confirmAction } from "./shared/confirm.js";
import { clear, duration, el, setText, timestamp } from "./shared/dom.js";
import { EventList } from "./shared/events.js";
import { LiveSocket, showStatus } from "./shared/live.js";
import { paintServiceRow, serviceRow, uptimeOf } from "./shared/service_row.js";
import { badge } from "./shared/states.js";

const MAX_LOG_LINES = 2000;
const UPDATE_STEPS = ["download", "verify", "stage", "stop", "switch", "start", "health", "commit"];

const $ = (id) => document.getElementById(id);

const page = {
  services: new Map(),   // name -> {data, receivedAt, row, cells}
  order: [],
  selected: "",
  caller: null,
  busy: new Set(),       // service names with an action in flight
  logSocket: null,
  updateSocket: null,
  updateOp: "",
  updateEvents: [],
  authNotice: false,
};

let noticeTimer = null;

/** A toast (it floats: nothing on the page moves). Errors stay until clicked. */
function notice(text, kind = "info") {
  const node = $("notice");
  clearTimeout(noticeTimer);
  if (!text) { node.hidden = true; return; }
  node.dataset.kind = kind;
  setText(node, text);
  node.hidden = false;
  if (kind !== "error") noticeTimer = setTimeout(() => { node.hidden = true; }, 6000);
}

// ---- the table -------------------------------------------------------------------------

function makeRow(name) {
  const entry = serviceRow(name, act);
  const { row } = entry;
  row.tabIndex = 0;
  row.setAttribute("aria-selected", "false");
  row.addEventListener("click", () => select(name));
  row.addEventListener("keydown", (ev) => { if (ev.key === "Enter") select(name); });
  return entry;
}

function paintRow(entry) {
  paintServiceRow(entry, { readOnly: page.caller && page.caller.role !== "admin",
    busy: page.busy.has(entry.data.name) });
}

function applySnapshot(msg) {
  page.caller = msg.caller;
  const m = msg.manager || {};
  setText($("manager-info"), `${m.host || ""} · ${m.role || ""} manager ${m.version || ""}`);
  setText($("caller"), msg.caller && msg.caller.name !== "anonymous"
    ? `${msg.caller.name} (${msg.caller.role})` : "");
  const body = $("services-body");
  const seen = new Set();
  const now = performance.now();
  for (const s of msg.services) {
    seen.add(s.name);
    let entry = page.services.get(s.name);
    if (!entry) {
      entry = makeRow(s.name);
      page.services.set(s.name, entry);
    }
    entry.data = s;
    entry.receivedAt = now;
  }
  for (const name of [...page.services.keys()]) {
    if (!seen.has(name)) page.services.delete(name);
  }
  page.order = msg.services.map((s) => s.name);
  body.replaceChildren(...page.order.map((n) => page.services.get(n).row));
  for (const entry of page.services.values()) paintRow(entry);
  countRows();
  if (!page.selected || !page.services.has(page.selected)) {
    select(page.order[0] || "");
  } else {
    paintDetail();
  }
  stamp(msg.at);
}

function applyStatus(msg) {
  const s = msg.service;
  let entry = page.services.get(s.name);
  if (!entry) {
    // a service a config reload added: its row goes last (the manager's order, too)
    entry = makeRow(s.name);
    page.services.set(s.name, entry);
    page.order.push(s.name);
    $("services-body").append(entry.row);
    countRows();
  }
  entry.data = s;
  entry.receivedAt = performance.now();
  paintRow(entry);
  if (s.name === page.selected) paintDetail();
  stamp(msg.at);
}

/** A config reload removed the service: its row goes (and its details, if selected). */
function applyRemoved(msg) {
  const entry = page.services.get(msg.service);
  if (!entry) return;
  entry.row.remove();
  page.services.delete(msg.service);
  page.order = page.order.filter((n) => n !== msg.service);
  page.busy.delete(msg.service);
  countRows();
  if (page.selected === msg.service) select(page.order[0] || "");
  stamp(msg.at);
}

function countRows() {
  setText($("services-count"), `${page.order.length}`);
  $("services-empty").hidden = page.order.length > 0;
}

function stamp(at) {
  setText($("updated-at"), at ? `updated ${timestamp(at).slice(11)}` : "");
}

function tick() {
  for (const entry of page.services.values()) {
    if (entry.data) setText(entry.cells.uptime, duration(uptimeOf(entry)));
  }
}

// ---- actions ---------------------------------------------------------------------------

async function act(name, action) {
  const words = { start: "Start", stop: "Stop", restart: "Restart" };
  const fields = action === "stop" ? [
    { name: "timeout", label: "Timeout in seconds (1–300; empty: the service's stop_timeout)", type: "number", min: 1, max: 300, placeholder: "default" },
    { name: "force", label: "Force: kill at once (SIGKILL), no graceful stop", type: "checkbox" },
  ] : [];
  const text = {
    start: `Start ${name}?`,
    stop: `Stop ${name}? It stays stopped until started again.`,
    restart: `Restart ${name}? It stops, then starts again.`,
  }[action];
  const answer = await confirmAction({ title: `${words[action]} ${name}`, text, ok: words[action],
    danger: action !== "start", fields });
  if (!answer) return;
  const query = {};
  if (action === "stop") {
    if (answer.timeout) query.timeout = answer.timeout;
    if (answer.force) query.force = "true";
  }
  page.busy.add(name);
  const entry = page.services.get(name);
  if (entry) paintRow(entry);
  notice(`${words[action]}ing ${name}…`, "info");
  try {
    const result = await api("POST", `/api/services/${encodeURIComponent(name)}/${action}`, { query });
    notice(result.message || `${words[action]} ${name}: done`, "ok");
  } catch (err) {
    notice(`${words[action]} ${name} failed: ${err.message}`, "error");
  } finally {
    page.busy.delete(name);
    const again = page.services.get(name);
    if (again) paintRow(again);
  }
}

// ---- details, update, logs --------------------------------------------------------------

function select(name) {
  const changed = name !== page.selected;
  page.selected = name;
  for (const [n, entry] of page.services) {
    entry.row.setAttribute("aria-selected", n === name ? "true" : "false");
  }
  paintDetail();
  if (changed) {
    openLog(name);
    setText($("events-name"), name);
    eventList.follow(name ? { subject: `service/${name}` } : null);
  }
}

function paintDetail() {
  const entry = page.services.get(page.selected);
  setText($("detail-name"), page.selected);
  const dl = clear($("detail"));
  if (!entry) {  // nothing selected (no services, or the selected one was removed)
    if (page.updateOp) watchUpdate("");
    $("update").replaceChildren(el("p", { class: "muted" }, "No update yet."));
    return;
  }
  const s = entry.data;
  const up = ["RUNNING", "STARTING", "STOPPING"].includes(s.state);
  const rows = [
    ["State", badge("state", s.state)],
    ["Since", timestamp(s.state_since)],
    ["Wanted", s.desired],
    ["Health", s.health ? badge("health", s.health) : "not checked"],
    ["Health detail", s.health_message || ""],
    ["PID", s.pid || "—"],
    ["Started", timestamp(s.started_at)],
    ["Version", s.version],
    ["Package", s.package],
    ["Backend", s.backend + (s.adopted ? " (re-adopted)" : "")],
    ["Restarts", s.restarts],
    ["Last exit", up ? "" : s.exit_code !== null && s.exit_code !== undefined
      ? `code ${s.exit_code}` : s.exit_signal ? `signal ${s.exit_signal}` : ""],
    ["Message", s.message],
  ];
  for (const [k, v] of rows) {
    if (v === "" || v === undefined || v === null) continue;
    dl.append(el("dt", {}, k), el("dd", { dataset: { key: k.toLowerCase() } }, v));
  }
  paintUpdate(s);
}

function paintUpdate(s) {
  const u = s.update || {};
  const box = $("update");
  const op = u.running_operation_id || u.last_operation_id;
  if (op !== page.updateOp) watchUpdate(op);
  const parts = [];
  if (u.running_operation_id) {
    parts.push(el("p", {}, `Updating to ${u.running_version || "?"}`,
      u.running_step ? ` — step: ${u.running_step}` : "",
      u.running_origin ? ` (by ${u.running_origin})` : ""));
  } else if (u.last_operation_id) {
    parts.push(el("p", {}, badge("outcome", u.last_outcome || "running"), " ",
      `${u.last_version || ""}`, u.last_origin ? ` (by ${u.last_origin})` : ""));
    if (u.last_message) parts.push(el("p", { class: "muted" }, u.last_message));
  } else {
    parts.push(el("p", { class: "muted" }, "No update yet."));
  }
  if (op) parts.push(stepsList(u));
  box.replaceChildren(...parts);
}

function stepsList(u) {
  const events = page.updateEvents;
  const last = new Map();
  for (const ev of events) last.set(ev.step, ev);
  const names = [...UPDATE_STEPS];
  for (const ev of events) {
    if (!names.includes(ev.step) && !["validate", "done"].includes(ev.step)) names.push(ev.step);
  }
  const list = el("ol", { class: "steps", id: "update-steps" });
  for (const step of names) {
    const ev = last.get(step);
    const current = !ev && u.running_step === step;
    const status = ev ? ev.status : current ? "started" : "";
    list.append(el("li", { dataset: { step, status } },
      step, status ? ` — ${status}` : "",
      ev && ev.elapsed_seconds ? el("span", { class: "elapsed" }, ` ${ev.elapsed_seconds.toFixed(1)} s`) : "",
      ev && ev.message ? el("span", { class: "muted" }, ` · ${ev.message}`) : ""));
  }
  return list;
}

function watchUpdate(op) {
  if (page.updateSocket) page.updateSocket.stop();
  page.updateSocket = null;
  page.updateOp = op || "";
  page.updateEvents = [];
  if (!op) return;
  const sock = new LiveSocket(`/api/updates/${encodeURIComponent(op)}/ws`, {
    onMessage: (msg) => {
      if (msg.type === "step") {
        page.updateEvents.push(msg);
        const entry = page.services.get(page.selected);
        if (entry) paintUpdate(entry.data);
        if (msg.final) sock.stop();
      }
    },
  });
  page.updateSocket = sock;
  sock.start();
}

function openLog(name) {
  if (page.logSocket) page.logSocket.stop();
  page.logSocket = null;
  const pre = clear($("log"));
  setText($("logs-name"), name);
  if (!name) return;
  const sock = new LiveSocket(`/api/services/${encodeURIComponent(name)}/logs/ws?tail=200`, {
    onMessage: (msg) => {
      if (msg.type === "logs") {
        if (msg.tail) clear(pre);  // a (re)connection starts with the tail again
        appendLines(pre, msg.lines);
      } else if (msg.type === "end") {
        appendLines(pre, ["— end of log —"], "note");
      }
    },
  });
  page.logSocket = sock;
  sock.start();
}

function appendLines(pre, lines, cls = "") {
  if (!lines.length) return;
  const stick = $("logs-follow").checked;
  const frag = document.createDocumentFragment();
  for (const line of lines) frag.append(cls ? el("span", { class: cls }, line + "\n") : line + "\n");
  pre.append(frag);
  // keep the last MAX_LOG_LINES lines (each line is one text node or span)
  let extra = pre.childNodes.length - MAX_LOG_LINES;
  while (extra-- > 0) pre.firstChild.remove();
  if (stick) pre.scrollTop = pre.scrollHeight;
}

// ---- start ------------------------------------------------------------------------------

const eventList = new EventList({ limit: 20, id: "events" });
$("events-slot").append(eventList.node);

const live = new LiveSocket("/api/services/ws", {
  onMessage: (msg) => {
    if (msg.type === "snapshot") {
      applySnapshot(msg);
      if (page.authNotice) { page.authNotice = false; notice(""); }
    } else if (msg.type === "status") {
      applyStatus(msg);
    } else if (msg.type === "removed") {
      applyRemoved(msg);
    }
  },
  onStatus: (state, detail) => {
    showStatus($("conn"), state, detail);
    if (state === "denied") {
      notice(token() ? "The manager did not accept this token." : "This manager needs a token.", "error");
      page.authNotice = true;
      askToken(token() ? "That token was not accepted. Enter another one." : "This manager needs a bearer token.");
    }
  },
});

onToken(() => {
  live.start();
  eventList.restart();
  if (page.selected) { const name = page.selected; page.selected = ""; select(name); }
});

$("token-button").addEventListener("click", () => {
  askToken(token() ? "Enter a new token for this tab (Cancel keeps the current one)." : "");
});
$("logs-clear").addEventListener("click", () => clear($("log")));
$("notice").addEventListener("click", () => notice(""));

live.start();
setInterval(tick, 1000);
