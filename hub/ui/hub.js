// The hub's dashboard: one page, four views chosen by the URL's hash
//   #/hosts            the fleet table (filter, search)
//   #/hosts/NAME       one host: its services (start / stop / restart) and a live log
//   #/rollouts         rollouts, and starting one (the dry-run plan first)
//   #/rollouts/ID      one rollout: waves, every host with its step and why it failed
// fed by one fleet WebSocket (WS /api/fleet/ws, with ?rollout=ID on a rollout's page):
// a snapshot, then merged changes a few times a second (docs/DASHBOARD.md).
import { api, askToken, onToken, token } from "./shared/auth.js";
import { setText } from "./shared/dom.js";
import { LiveSocket, showStatus } from "./shared/live.js";
import { hostsView } from "./hosts_view.js";
import { hostView } from "./host_view.js";
import { rolloutsView } from "./rollouts_view.js";
import { rolloutView } from "./rollout_view.js";
import { dismissibleNotice, go, notice, store } from "./page.js";

const $ = (id) => document.getElementById(id);

// ---- the socket and the store ------------------------------------------------------------

function applySnapshot(msg) {
  store.offset = msg.server_time - Date.now() / 1000;
  store.caller = msg.caller || null;
  store.hosts = new Map((msg.hosts || []).map((h) => [h.name, h]));  // none on a rollout's page
  store.rollouts = new Map(msg.rollouts.map((r) => [r.id, r]));
  store.detail = msg.rollout || null;
  store.rows = new Map((msg.rollout ? msg.rollout.hosts : []).map((h) => [h.name, h]));
  store.ready = true;
  setText($("caller"), store.caller && store.caller.name !== "anonymous"
    ? `${store.caller.name} (${store.caller.role})` : "");
  return { snapshot: true, hosts: [...store.hosts.keys()], rollouts: [...store.rollouts.keys()],
    rows: [...store.rows.keys()], detail: !!store.detail };
}

function applyChanges(msg) {
  store.offset = msg.server_time - Date.now() / 1000;
  const changed = { snapshot: false, hosts: [], rollouts: [], rows: [], detail: false,
    removed: msg.removed_hosts || [] };
  for (const h of msg.hosts || []) { store.hosts.set(h.name, h); changed.hosts.push(h.name); }
  for (const name of changed.removed) store.hosts.delete(name);
  for (const [name, [seen, beat]] of Object.entries(msg.contact || {})) {
    const h = store.hosts.get(name);
    if (h) {
      h.last_seen = seen;
      if (h.agent) h.agent.last_heartbeat = beat;
    }
  }
  for (const r of msg.rollouts || []) { store.rollouts.set(r.id, r); changed.rollouts.push(r.id); }
  if (msg.rollout) {
    const { hosts, ...summary } = msg.rollout;
    store.detail = { ...store.detail, ...summary };
    for (const row of hosts) { store.rows.set(row.name, row); changed.rows.push(row.name); }
    changed.detail = true;
  }
  return changed;
}

function paintTopbar() {
  const active = [...store.rollouts.values()].find((r) => r.active);
  const link = $("active-rollout");
  link.hidden = !active;
  if (active) {
    link.href = `#/rollouts/${encodeURIComponent(active.id)}`;
    const c = active.counts;
    setText(link, `Rollout ${active.version}: ${c.succeeded}/${c.total} · ${active.state.toLowerCase().replace("_", " ")}`);
    link.dataset.state = active.state;
  }
}

let live = null;
let livePath = "";
let current = null;   // {name, view}

function connect(path) {
  if (live && livePath === path) return;
  if (live) live.stop();
  livePath = path;
  store.ready = false;
  performance.mark("hub:connect");
  live = new LiveSocket(path, {
    onMessage: (msg) => {
      let changed = null;
      if (msg.type === "snapshot") {
        performance.mark("hub:snapshot");  // bench/hub_dashboard.py reads these marks
        changed = applySnapshot(msg);
        if (authNotice) { authNotice = false; notice(""); }
        if (!infoShown) hubInfo();
      } else if (msg.type === "changes") {
        changed = applyChanges(msg);
      } else if (msg.type === "error") {
        notice(msg.error, "error");
        return;
      }
      if (!changed) return;
      paintTopbar();
      if (current && current.view.update) current.view.update(changed);
      if (changed.snapshot) performance.mark("hub:painted");
    },
    onStatus: (state, detail) => {
      showStatus($("conn"), state, detail);
      if (state === "denied") {
        notice(token() ? "The hub did not accept this token." : "This hub needs a token.", "error");
        authNotice = true;
        askToken(token() ? "That token was not accepted. Enter another one." : "This hub needs a bearer token.");
      }
    },
  });
  live.start();
}

let authNotice = false;

// ---- the router --------------------------------------------------------------------------

const VIEWS = [
  [/^#\/hosts\/([^/]+)$/, "host", hostView],
  [/^#\/hosts\/?$/, "hosts", hostsView],
  [/^#\/rollouts\/([^/]+)$/, "rollout", rolloutView],
  [/^#\/rollouts\/?$/, "rollouts", rolloutsView],
];

function route() {
  const hash = location.hash || "#/hosts";
  let found = null;
  for (const [re, name, make] of VIEWS) {
    const m = hash.match(re);
    if (m) { found = { name, make, arg: m[1] ? decodeURIComponent(m[1]) : "" }; break; }
  }
  if (!found) { go("#/hosts"); return; }
  if (current && current.view.unmount) current.view.unmount();
  notice("");
  const box = $("view");
  const view = found.make(found.arg);
  current = { name: found.name, view };
  document.body.dataset.view = found.name;
  $("nav-hosts").setAttribute("aria-current", found.name.startsWith("host") ? "page" : "false");
  $("nav-rollouts").setAttribute("aria-current", found.name.startsWith("rollout") ? "page" : "false");
  box.replaceChildren(view.node);
  const path = found.name === "rollout"
    ? `/api/fleet/ws?rollout=${encodeURIComponent(found.arg)}` : "/api/fleet/ws";
  if (store.ready && path === livePath && view.update) {
    view.update({ snapshot: true, hosts: [...store.hosts.keys()],
      rollouts: [...store.rollouts.keys()], rows: [...store.rows.keys()], detail: !!store.detail });
  }
  connect(path);
  if (view.mounted) view.mounted();
}

let infoShown = false;

async function hubInfo() {
  try {
    const info = await api("GET", "/api/info");
    infoShown = true;
    setText($("hub-info"), `${info.hostname} · hub ${info.version}`);
    document.title = `${info.hostname} · Backend AI hub`;
  } catch { /* the socket shows the connection state */ }
}

onToken(() => {
  if (live) live.start();
  if (current && current.view.tokenChanged) current.view.tokenChanged();
});
$("token-button").addEventListener("click", () => {
  askToken(token() ? "Enter a new token for this tab (Cancel keeps the current one)." : "");
});
dismissibleNotice();
window.addEventListener("hashchange", route);
setInterval(() => { if (current && current.view.tick) current.view.tick(); }, 1000);
route();
