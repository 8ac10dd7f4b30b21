// #/hosts/NAME: one host. What the hub knows (from the fleet socket), its services as
// its manager says now (GET /api/hosts/NAME, asked again when the host changes), start
// / stop / restart through the hub with a confirmation, its recent events, live, with
// who asked for what (WS /api/events/ws?host=NAME: its manager's history, relayed; or
// the hub's own record of the host, subject=host/NAME), and a live log tail
// (WS /api/hosts/NAME/logs/ws).
import { ApiError, api } from "./shared/auth.js";
import { confirmAction } from "./shared/confirm.js";
import { clear, duration, el, setText, timestamp } from "./shared/dom.js";
import { EventList } from "./shared/events.js";
import { LiveSocket } from "./shared/live.js";
import { paintServiceRow, serviceRow, uptimeOf } from "./shared/service_row.js";
import { badge } from "./shared/states.js";
import { ago, canAct, labelsText, notice, store } from "./page.js";

const MAX_LOG_LINES = 2000;
const REFRESH_EVERY = 1000;  // ms between two asks for the services, at most

function bytes(n) {
  if (!n) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function hostView(name) {
  const path = `/api/hosts/${encodeURIComponent(name)}`;
  const title = el("h2", { id: "host-title" }, name);
  const reach = el("span", { class: "badge", id: "host-reach" });
  const facts = el("dl", { class: "kv", id: "host-facts" });
  const servicesBody = el("tbody", { id: "services-body" });
  const servicesNote = el("p", { class: "empty muted", id: "services-note" }, "Asking the manager…");
  const logPre = el("pre", { class: "log", id: "log", tabindex: "0", "aria-live": "off" });
  const follow = el("input", { type: "checkbox", id: "logs-follow", checked: true });
  const serviceSelect = el("select", { id: "logs-service", "aria-label": "Service whose log to follow" });
  const services = new Map();  // name -> {row, cells, buttons, data, receivedAt}
  const busy = new Set();
  let logSocket = null;
  let logService = null;
  let lastFetch = 0;
  let fetchTimer = null;
  let gone = false;
  const eventList = new EventList({ limit: 30, id: "host-events", subjects: true });
  const eventsSource = el("select", { id: "events-source", "aria-label": "Whose events" },
    el("option", { value: "manager" }, "on its manager"),
    el("option", { value: "hub" }, "in the hub (reachability, rollouts, registrations)"));

  const node = el("div", { class: "host-page" },
    el("p", { class: "crumbs" }, el("a", { href: "#/hosts" }, "Hosts"), " / ", name),
    el("section", { class: "panel", "aria-labelledby": "host-title" },
      el("header", {}, title, reach, el("span", { class: "spacer" })),
      el("div", { class: "body" }, facts)),
    el("section", { class: "panel", "aria-labelledby": "services-title" },
      el("header", {}, el("h2", { id: "services-title" }, "Services"),
        el("span", { class: "muted" }, "as the host's manager reports them"), el("span", { class: "spacer" })),
      el("div", { class: "table-wrap" },
        el("table", { class: "grid host-services", id: "services" },
          el("colgroup", {}, ...["name", "state", "health", "pid", "uptime", "version", "restarts", "message", "actions"]
            .map((c) => el("col", { class: `c-${c}` }))),
          el("thead", {}, el("tr", {},
            el("th", { scope: "col", class: "name" }, "Service"),
            el("th", { scope: "col", class: "state" }, "State"),
            el("th", { scope: "col", class: "health" }, "Health"),
            el("th", { scope: "col", class: "pid num" }, "PID"),
            el("th", { scope: "col", class: "uptime num" }, "Uptime"),
            el("th", { scope: "col", class: "version" }, "Version"),
            el("th", { scope: "col", class: "restarts num" }, "Restarts"),
            el("th", { scope: "col", class: "message" }, "Message"),
            el("th", { scope: "col", class: "actions-cell" }, el("span", { class: "visually-hidden" }, "Actions")))),
          servicesBody)),
      servicesNote),
    el("section", { class: "panel", "aria-labelledby": "events-title" },
      el("header", {}, el("h2", { id: "events-title" }, "Events"), eventsSource,
        el("span", { class: "spacer" }),
        el("span", { class: "muted wide-only" }, "newest first · operator actions say who asked")),
      eventList.node),
    el("section", { class: "panel logs", "aria-labelledby": "logs-title" },
      el("header", {}, el("h2", { id: "logs-title" }, "Log"), serviceSelect,
        el("span", { class: "spacer" }),
        el("label", { class: "follow" }, follow, " Follow"),
        el("button", { type: "button", id: "logs-clear", onclick: () => clear(logPre) }, "Clear")),
      logPre));

  // ---- what the hub knows ----------------------------------------------------------------

  function paintHost() {
    const h = store.hosts.get(name);
    if (!h) {
      if (store.ready) {
        setText(reach, "Not in the inventory");
        reach.dataset.tone = "bad";
      }
      return;
    }
    const tone = h.reachable ? "ok" : "bad";
    if (reach.dataset.tone !== tone) {
      reach.dataset.tone = tone;
      reach.replaceChildren(el("span", { class: "sym", "aria-hidden": "true" }, h.reachable ? "●" : "✕"),
        h.reachable ? "Manager reachable" : "Manager unreachable");
    }
    const a = h.agent || {};
    const rows = [
      ["Role", h.role],
      ["Labels", labelsText(h.labels) || "—"],
      ["Manager", h.manager_address],
      ["Service", h.service ? el("span", {}, h.service, " ", badge("state", h.state === "UNSPECIFIED" ? "" : h.state)) : "—"],
      ["Version", h.version || "—"],
      ["Last contact", el("span", { id: "host-seen" }, `${ago(h.last_seen)}${h.last_seen ? ` (${timestamp(h.last_seen)})` : ""}`)],
      ["Message", h.message || ""],
      ["Update", h.update && h.update.running_operation_id
        ? `updating to ${h.update.running_version || "?"}${h.update.running_step ? ` — ${h.update.running_step}` : ""}`
        : h.update && h.update.last_outcome
          ? `last: ${h.update.last_outcome} (${h.update.last_version})${h.update.last_message ? ` — ${h.update.last_message}` : ""}` : ""],
      ["Agent", a.address ? `${a.address} · ${a.version || "?"} · ${a.connected ? "connected" : "not connected"}` : ""],
      ["Source", h.source],
    ];
    const dl = clear(facts);
    for (const [k, v] of rows) {
      if (v === "" || v === undefined || v === null) continue;
      dl.append(el("dt", {}, k), el("dd", { dataset: { key: k.toLowerCase().replace(" ", "-") } }, v));
    }
    if (hostFacts) {
      const f = hostFacts;
      const more = [
        ["Hostname", f.hostname], ["Platform", f.platform],
        ["CPU", f.cpu_count ? `${f.cpu_count} CPUs · load ${f.load1.toFixed(2)} · ${f.cpu_percent}%` : ""],
        ["Memory", f.memory_total_bytes ? `${bytes(f.memory_available_bytes)} free of ${bytes(f.memory_total_bytes)}` : ""],
        ["Disk", f.disk_total_bytes ? `${bytes(f.disk_free_bytes)} free of ${bytes(f.disk_total_bytes)} (${f.disk_path})` : ""],
      ];
      for (const [k, v] of more) if (v) dl.append(el("dt", {}, k), el("dd", {}, v));
    }
  }

  // ---- its services, asked live ------------------------------------------------------------

  let hostFacts = null;

  function paintService(entry) {
    paintServiceRow(entry, { readOnly: !canAct(), busy: busy.has(entry.data.name) });
  }

  async function refresh() {
    clearTimeout(fetchTimer);
    fetchTimer = null;
    lastFetch = performance.now();
    let doc;
    try {
      doc = await api("GET", path);
    } catch (err) {
      if (gone) return;
      servicesNote.hidden = false;
      setText(servicesNote, err instanceof ApiError && err.status === 404
        ? `${name} is not in the hub's inventory.` : `Cannot ask the hub: ${err.message}`);
      return;
    }
    if (gone) return;
    hostFacts = doc.facts;
    paintHost();
    const now = performance.now();
    const seen = new Set();
    for (const s of doc.services) {
      seen.add(s.name);
      let entry = services.get(s.name);
      if (!entry) { entry = serviceRow(s.name, act); services.set(s.name, entry); }
      entry.data = s;
      entry.receivedAt = now;
    }
    for (const svc of [...services.keys()]) if (!seen.has(svc)) services.delete(svc);
    servicesBody.replaceChildren(...doc.services.map((s) => services.get(s.name).row));
    for (const entry of services.values()) paintService(entry);
    servicesNote.hidden = doc.services.length > 0;
    setText(servicesNote, doc.services_error ? `The manager did not answer: ${doc.services_error}` : "No services.");
    const names = doc.services.map((s) => s.name);
    const options = [...serviceSelect.options].map((o) => o.value);
    if (names.join("\n") !== options.join("\n")) {
      serviceSelect.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
      if (logService && names.includes(logService)) serviceSelect.value = logService;
    }
    if (logService === null && names.length) openLog(serviceSelect.value || names[0]);
  }

  function refreshSoon() {
    if (fetchTimer) return;
    const wait = Math.max(0, REFRESH_EVERY - (performance.now() - lastFetch));
    fetchTimer = setTimeout(refresh, wait);
  }

  async function act(svc, action) {
    const words = { start: "Start", stop: "Stop", restart: "Restart" };
    const fields = action === "stop" ? [
      { name: "timeout", label: "Timeout in seconds (empty: the service's stop_timeout)", type: "number", min: 1, max: 3600, placeholder: "default" },
      { name: "force", label: "Force: kill at once, and cancel an update in progress", type: "checkbox" },
    ] : [{ name: "force", label: "Force: cancel an update in progress first", type: "checkbox" }];
    const text = {
      start: `Start ${svc} on ${name}?`,
      stop: `Stop ${svc} on ${name}? It stays stopped until started again.`,
      restart: `Restart ${svc} on ${name}? It stops, then starts again.`,
    }[action];
    const answer = await confirmAction({ title: `${words[action]} ${svc} on ${name}`, text,
      ok: words[action], danger: action !== "start", fields });
    if (!answer) return;
    const query = {};
    if (answer.timeout) query.timeout = answer.timeout;
    if (answer.force) query.force = "true";
    busy.add(svc);
    const entry = services.get(svc);
    if (entry) paintService(entry);
    notice(`${words[action]}ing ${svc} on ${name}…`, "info");
    try {
      const result = await api("POST", `${path}/services/${encodeURIComponent(svc)}/${action}`, { query });
      notice(`${words[action]} ${svc} on ${name}: now ${result.service.state.toLowerCase()}`, "ok");
    } catch (err) {
      notice(`${words[action]} ${svc} on ${name} failed: ${err.message}`, "error");
    } finally {
      busy.delete(svc);
      if (!gone) refresh();
    }
  }

  // ---- the log tail ----------------------------------------------------------------------

  function openLog(svc) {
    if (logSocket) logSocket.stop();
    logSocket = null;
    logService = svc;
    clear(logPre);
    if (!svc) return;
    const sock = new LiveSocket(`${path}/logs/ws?service=${encodeURIComponent(svc)}&tail=200`, {
      onMessage: (msg) => {
        if (msg.type === "lines") appendLines(msg.lines);
        else if (msg.type === "error") appendLines([`— ${msg.error} —`], "note");
        else if (msg.type === "end") appendLines(["— end of log —"], "note");
      },
      onStatus: (state) => {
        if (state === "connecting") clear(logPre);  // a (re)connection sends the tail again
      },
    });
    logSocket = sock;
    sock.start();
  }

  function appendLines(lines, cls = "") {
    if (!lines.length) return;
    const frag = document.createDocumentFragment();
    for (const line of lines) frag.append(cls ? el("span", { class: cls }, line + "\n") : line + "\n");
    logPre.append(frag);
    let extra = logPre.childNodes.length - MAX_LOG_LINES;
    while (extra-- > 0) logPre.firstChild.remove();
    if (follow.checked) logPre.scrollTop = logPre.scrollHeight;
  }

  serviceSelect.addEventListener("change", () => openLog(serviceSelect.value));

  function followEvents() {
    eventList.follow(eventsSource.value === "hub" ? { subject: `host/${name}` } : { host: name });
  }
  eventsSource.addEventListener("change", followEvents);

  return {
    node,
    update(changed) {
      paintHost();
      if (changed.snapshot || changed.hosts.includes(name)) refreshSoon();
    },
    tick() {
      for (const entry of services.values()) if (entry.data) setText(entry.cells.uptime, duration(uptimeOf(entry)));
      const seen = document.getElementById("host-seen");
      const h = store.hosts.get(name);
      if (seen && h) setText(seen, `${ago(h.last_seen)}${h.last_seen ? ` (${timestamp(h.last_seen)})` : ""}`);
    },
    mounted() {
      paintHost();
      refresh();
      followEvents();
    },
    tokenChanged() {
      refresh();
      if (logService) openLog(logService);
      eventList.restart();
    },
    unmount() {
      gone = true;
      clearTimeout(fetchTimer);
      if (logSocket) logSocket.stop();
      eventList.stop();
    },
  };
}
