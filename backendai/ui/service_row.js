// One service's row in a table of services, as the manager's services page and the hub's
// host page both show it: name, state, health, pid, uptime, version, restarts, message,
// and start / stop / restart buttons (disabled for a read-only token or while an action
// on the service is in flight).
import { duration, el, setText } from "./dom.js";
import { badge, setBadge } from "./states.js";

const UP = ["RUNNING", "STARTING", "STOPPING"];

/** A row for service `name`: {row, cells, buttons, data, receivedAt}; a button calls
 * onAction(name, action) with action "start" | "stop" | "restart". */
export function serviceRow(name, onAction) {
  const cells = {
    name: el("td", { class: "name", title: name }, name),
    state: el("td", { class: "state" }, badge("state", "")),
    health: el("td", { class: "health" }, badge("health", "")),
    pid: el("td", { class: "pid num" }),
    uptime: el("td", { class: "uptime num" }),
    version: el("td", { class: "version mono" }),
    restarts: el("td", { class: "restarts num" }),
    message: el("td", { class: "message" }),
    actions: el("td", { class: "actions-cell" }),
  };
  const buttons = {};
  const box = el("div", { class: "actions" });
  for (const [action, label] of [["start", "Start"], ["stop", "Stop"], ["restart", "Restart"]]) {
    buttons[action] = el("button", { type: "button", dataset: { action }, class: action === "stop" ? "danger" : "" }, label);
    buttons[action].addEventListener("click", (ev) => { ev.stopPropagation(); onAction(name, action); });
    box.append(buttons[action]);
  }
  cells.actions.append(box);
  const row = el("tr", { dataset: { service: name } }, ...Object.values(cells));
  return { row, cells, buttons, data: null, receivedAt: 0 };
}

/** Seconds the service has been up: what its status said, counted on since it arrived. */
export function uptimeOf(entry) {
  const s = entry.data;
  if (!UP.includes(s.state) || !s.uptime_seconds) return 0;
  return s.uptime_seconds + (performance.now() - entry.receivedAt) / 1000;
}

/** Paint entry.data (a service's status, GET /api/services shape) into its row. */
export function paintServiceRow(entry, { readOnly, busy }) {
  const s = entry.data;
  const { cells, buttons, row } = entry;
  row.dataset.state = s.state;
  setBadge(cells.state.firstChild, "state", s.state);
  cells.state.dataset.state = s.state;
  setBadge(cells.health.firstChild, "health", s.health || "");
  cells.health.dataset.health = s.health || "";
  cells.health.title = s.health_message || "";
  setText(cells.pid, s.pid || "");
  setText(cells.uptime, duration(uptimeOf(entry)));
  setText(cells.version, s.version);
  cells.version.title = s.version;
  setText(cells.restarts, s.restarts);
  // the last exit's code, while the service is down (not once it runs again)
  const message = s.message || (!UP.includes(s.state) && s.exit_code !== null && s.exit_code !== undefined
    ? `exit code ${s.exit_code}` : "");
  setText(cells.message, message);
  cells.message.title = message;
  buttons.start.disabled = readOnly || busy || ["RUNNING", "STARTING"].includes(s.state);
  buttons.stop.disabled = readOnly || busy || ["STOPPED", "EXITED", "FATAL"].includes(s.state);
  buttons.restart.disabled = readOnly || busy;
  for (const b of Object.values(buttons)) b.title = readOnly ? "This token is read-only" : "";
}
