// A live list of events (WS /api/events/ws, docs/DASHBOARD.md): the recent ones of a
// subject, then each new one as the daemon commits it, newest at the top. Audit events
// (and a desired-state change an operator caused) say who did it: the token's name or
// the client certificate, the transport, the caller's address, and what they got.
import { el, setText, timestamp } from "./dom.js";
import { LiveSocket } from "./live.js";

const KEEP = 200;  // events kept in the list (the oldest go first)

function clock(unix) {
  return timestamp(unix).slice(11) || "";
}

/** One event as a list item (built node by node: nothing is parsed as HTML);
 * `subject`: show what it is about (a list of several subjects). */
export function eventItem(ev, subject = false) {
  const who = ev.actor || ev.transport || ev.peer;
  const failed = ev.result && ev.result !== "ok";
  const parts = [
    el("time", { class: "when num", datetime: new Date(ev.at * 1000).toISOString(),
      title: timestamp(ev.at) }, clock(ev.at)),
    el("span", { class: "kind mono" }, ev.kind),
    subject ? el("span", { class: "subject mono" }, ev.subject) : null,
    el("span", { class: "text" }, ev.message),
  ].filter(Boolean);
  if (who) {
    parts.push(el("span", { class: "who" },
      "by ", el("strong", { class: "actor" }, ev.actor || "anonymous"),
      ev.transport ? ` over ${ev.transport}` : "",
      ev.peer ? ` from ${ev.peer}` : ""));
  }
  if (ev.result) {
    parts.push(el("span", { class: "result", dataset: { result: failed ? "failed" : "ok" } },
      failed ? `→ ${ev.result}` : "→ ok"));
  }
  return el("li", { dataset: { id: ev.id, kind: ev.kind, subject: ev.subject,
    audit: String(ev.kind.startsWith("audit.")) } }, ...parts);
}

export class EventList {
  /** limit: how many recent events to ask for when (re)connecting; subjects: show
   * each event's subject (the list follows more than one). */
  constructor({ limit = 20, id = "events", subjects = false } = {}) {
    this.limit = limit;
    this.subjects = subjects;
    this.list = el("ol", { class: "events", id: `${id}-list`, "aria-live": "polite" });
    this.note = el("p", { class: "muted events-note", id: `${id}-note` }, "");
    this.node = el("div", { class: "events-box", id }, this.note, this.list);
    this.sock = null;
    this.path = "";
  }

  /** Follow the events a query names ({subject, kind, host}); "" stops. */
  follow(query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query || {})) if (v) params.set(k, v);
    params.set("limit", String(this.limit));
    const path = query ? `/api/events/ws?${params}` : "";
    if (path === this.path && this.sock) return;
    this.stop();
    this.path = path;
    this.list.replaceChildren();
    setText(this.note, path ? "Loading…" : "");
    if (!path) return;
    this.sock = new LiveSocket(path, { onMessage: (msg) => this.receive(msg) });
    this.sock.start();
  }

  /** Ask again (a new token). */
  restart() {
    if (!this.path) return;
    if (this.sock) this.sock.stop();
    this.sock = new LiveSocket(this.path, { onMessage: (msg) => this.receive(msg) });
    this.sock.start();
  }

  stop() {
    if (this.sock) this.sock.stop();
    this.sock = null;
    this.path = "";
  }

  receive(msg) {
    if (msg.type === "events") {
      const items = msg.events.map((ev) => eventItem(ev, this.subjects)).reverse();  // newest first
      if (msg.recent) {
        this.list.replaceChildren(...items);
      } else {
        this.list.prepend(...items);
      }
      let extra = this.list.children.length - KEEP;
      while (extra-- > 0) this.list.lastChild.remove();
      setText(this.note, this.list.children.length ? "" : "No events yet.");
      this.note.dataset.kind = "";
    } else if (msg.type === "error") {
      setText(this.note, msg.error);
      this.note.dataset.kind = "error";
    } else if (msg.type === "end") {
      setText(this.note, "The daemon stopped; waiting for it to come back…");
      this.note.dataset.kind = "";
    }
  }
}
