// A WebSocket to this server that stays connected: JSON messages in, reconnect with
// exponential backoff and jitter (0.5 s doubling to 15 s) after a drop, and a stop on
// 1008 (policy: no or a wrong token) until a token is given.
import { token } from "./auth.js";
import { setText } from "./dom.js";

export class LiveSocket {
  /**
   * path: e.g. "/api/services/ws"; onMessage(obj); onStatus(state, detail) with state
   * "connecting" | "live" | "reconnecting" | "denied" | "closed".
   */
  constructor(path, { onMessage, onStatus = () => {} }) {
    this.path = path;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    clearTimeout(this.timer);
    if (this.ws) {
      const old = this.ws;
      this.ws = null;
      old.close(1000);
    }
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const old = this.ws;
      this.ws = null;
      old.close(1000);
    }
    this.onStatus("closed");
  }

  open() {
    const url = new URL(this.path, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const t = token();
    if (t) url.searchParams.set("token", t);
    const ws = new WebSocket(url);
    this.ws = ws;
    this.onStatus("connecting");
    ws.addEventListener("open", () => {
      if (this.ws === ws) this.onStatus("live");
    });
    ws.addEventListener("message", (ev) => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this.onMessage(msg);
    });
    ws.addEventListener("close", (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (ev.code === 1008 && /token/.test(ev.reason)) {
        this.onStatus("denied", ev.reason);
        return;  // start() again once there is a token
      }
      const delay = Math.round(Math.min(15000, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2));
      this.attempt = Math.min(this.attempt + 1, 10);
      this.onStatus("reconnecting", { delay, code: ev.code, reason: ev.reason });
      this.timer = setTimeout(() => { if (!this.stopped) this.open(); }, delay);
    });
  }
}

/** Show a LiveSocket's status (onStatus's state and detail) in `node`, the top bar's
 * connection indicator: its data-state for the look, and words. */
export function showStatus(node, state, detail) {
  node.dataset.state = state;
  const words = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: detail ? `Reconnecting in ${Math.ceil(detail.delay / 1000)} s…` : "Reconnecting…",
    denied: "Token needed",
    closed: "Closed",
  };
  setText(node, words[state] || state);
}
