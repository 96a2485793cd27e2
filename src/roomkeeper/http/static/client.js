// roomkeeper browser client: join a signaling room, follow its roster, exchange signals.
//
//   import { join } from "https://signaling.example/client.js";
//   const room = await join("https://signaling.example", "my-room");
//   room.addEventListener("signal", (e) => console.log(e.detail.from, e.detail.signal));
//   await room.send(peerId, { hello: "world" });
//   const pc = room.manage(new RTCPeerConnection(room.rtcConfiguration()));
//   await room.leave();
//
// Dependency-free ES module, no build step. The event stream is a browser EventSource,
// which reconnects by itself (sending Last-Event-ID) after a network error or a clean end
// of the stream; when it gives up (any non-200 answer closes it for good) the client
// reconnects itself with its session id, token and last event id. Either way the session
// resumes and every signal queued meanwhile arrives. The server's ICE servers (STUN, and
// TURN with short-lived credentials) come with the session and are refreshed before they
// expire, on the peer connections given to `manage`. See docs/browser-client.md.

export const VERSION = "1";

/** Where this module was loaded from, without a trailing slash: the server's base URL when
 * the page imports client.js from the server itself (the default of `join`). */
export const defaultBaseUrl = new URL(".", import.meta.url).href.replace(/\/+$/, "");

const DEFAULTS = Object.freeze({
  timeout: 15000, // join: give up when no session arrived by then (ms)
  sendAttempts: 6, // tries per signal (the first included) on network errors, 429 and 503
  coalesce: 5, // ms: signals to one peer sent this close together go in one POST (0: never)
  retryDelay: 250, // first pause between tries when the server names none (ms), doubling
  maxRetryDelay: 8000,
  requestTimeout: 10000, // one POST that takes longer counts as a network error (ms)
  reconnectDelay: 500, // first pause of our own reconnection, doubling (ms)
  maxReconnectDelay: 10000,
  staleAfter: 35000, // no event, heartbeats included, for this long: reconnect (ms)
  leaveOnPagehide: true,
  resume: null, // {sessionId, token, lastEventId?}: continue an earlier session
  iceServers: null, // the page's own RTCIceServer list: used instead of the server's
  iceRefresh: 0.8, // ask for fresh TURN credentials at this share of their lifetime
});
const MIN_ICE_REFRESH = 1000; // ms: the soonest a refresh is asked for
const ICE_RETRY = 5000; // ms: after a refresh that failed on the network

const STREAM_EVENTS = ["session", "roster", "signal", "heartbeat", "bye"];

/** An answer of the server that retrying will not change, or a room that is closed. */
export class RoomError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = "RoomError";
    this.status = status; // the HTTP status, 0 when there was none
  }
}

/**
 * Join `room` on the server at `baseUrl` (e.g. "https://signaling.example"; default: where
 * this module came from). Resolves with a `Room` once the server has sent the session and
 * the roster; rejects with a `RoomError` when the server refuses (a bad room name, say) or
 * nothing came within `options.timeout`.
 */
export function join(baseUrl, room, options = {}) {
  return new Room(baseUrl ?? defaultBaseUrl, room, options)._start();
}

export class Room extends EventTarget {
  #base;
  #opts;
  #es = null; // the current EventSource
  #esSession = null; // the session id in its URL, if it was opened with credentials
  #quietResume = false; // the next session event only confirms a reopened stream
  #state = "connecting"; // connecting | open | reconnecting | closed
  #lastId = null; // BigInt: the last event id seen on the current session's streams
  #lastIdText = "";
  #attempt = 0; // own reconnection attempts since the last open stream
  #timer = null;
  #watchdog = null;
  #lastActivity = 0;
  #opened = false; // a session was ever open
  #chains = new Map(); // recipient -> the promise of its last send: signals keep their order
  #pending = new Map(); // recipient -> the batch still taking signals (see #enqueue)
  #maxBatch = 0; // signals one POST may carry: the session event's max_batch (0: no batches)
  #joining = null; // {resolve, reject, timer} until the first roster
  #pagehide = null;
  #online = null;
  #iceTimer = null;
  #managed = new Set(); // RTCPeerConnections whose ICE servers follow this.iceServers

  /** Use `join()`. */
  constructor(baseUrl, room, options = {}) {
    super();
    if (typeof room !== "string" || room === "") throw new TypeError("room must be a non-empty string");
    this.#base = String(baseUrl).replace(/\/+$/, "");
    this.#opts = { ...DEFAULTS, ...options };
    /** The room's name. */
    this.room = room;
    /** This client's session id (public: it is in the roster and in `from` of signals). */
    this.sessionId = null;
    /** The session's secret token; sent only to the server. */
    this.token = null;
    /** Every session of the room in join order, this one included; kept current. */
    this.roster = [];
    /** The ICE servers for RTCPeerConnections: the page's own (options.iceServers), else
     * the server's (STUN, TURN with credentials of this session), kept fresh. */
    this.iceServers = Array.isArray(this.#opts.iceServers) ? [...this.#opts.iceServers] : [];
    const resume = this.#opts.resume;
    if (resume && resume.sessionId && resume.token) {
      this.sessionId = resume.sessionId;
      this.token = resume.token;
      this.#lastIdText = resume.lastEventId ? String(resume.lastEventId) : "";
      this.#lastId = toBigInt(this.#lastIdText);
    }
  }

  /** The server's base URL. */
  get baseUrl() {
    return this.#base;
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  get state() {
    return this.#state;
  }

  /** The roster without this session. */
  get peers() {
    return this.roster.filter((id) => id !== this.sessionId);
  }

  /** The id of the last event received (a decimal string, possibly beyond 2**53). */
  get lastEventId() {
    return this.#lastIdText;
  }

  _start() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#fail(new RoomError(`no session from ${this.#base} within ${this.#opts.timeout} ms`));
      }, this.#opts.timeout);
      this.#joining = { resolve, reject, timer };
      if (this.#opts.leaveOnPagehide && typeof window !== "undefined") {
        this.#pagehide = () => this.#leaveWithBeacon();
        window.addEventListener("pagehide", this.#pagehide);
      }
      if (typeof window !== "undefined") {
        this.#online = () => {
          if (this.#state === "reconnecting" && this.#es === null) this.#reconnectNow();
        };
        window.addEventListener("online", this.#online);
      }
      this.#watchdog = setInterval(() => this.#checkStale(), Math.max(1000, this.#opts.staleAfter / 4));
      this.#open(this.sessionId !== null);
    });
  }

  /**
   * Send `signal` (a JSON object) to the session `to`. Resolves once the server has it
   * (on the peer's stream, or queued while the peer reconnects). Signals to one peer go out
   * in the order of the calls. Each carries a fresh `id`, so retries after a network error,
   * a 429 or a 503 (after the server's Retry-After) can never deliver it twice. Rejects with
   * a `RoomError` on any other answer (404: no such peer; 403: this session is gone) or
   * when the tries are spent. Signals to one peer sent within `coalesce` ms of each other
   * (a burst of ICE candidates) go in one POST when the server takes batches.
   */
  send(to, signal) {
    if (this.#state === "closed") return Promise.reject(new RoomError("the room is closed"));
    if (signal === null || typeof signal !== "object" || Array.isArray(signal)) {
      return Promise.reject(new TypeError("signal must be a JSON object"));
    }
    const item = { signal, id: randomId() };
    const done = new Promise((resolve, reject) => Object.assign(item, { resolve, reject }));
    const open = this.#pending.get(to);
    if (open && open.length < this.#maxBatch) {
      open.push(item); // goes with the batch that waits for its turn
      return done;
    }
    const batch = [item];
    const coalesce = this.#maxBatch > 1 ? this.#opts.coalesce : 0;
    if (coalesce > 0) this.#pending.set(to, batch);
    const previous = this.#chains.get(to) ?? Promise.resolve();
    const sent = previous
      .catch(() => {})
      .then(() => (coalesce > 0 ? sleep(coalesce) : undefined))
      .then(() => {
        if (this.#pending.get(to) === batch) this.#pending.delete(to);
        return this.#sendBatch(to, batch);
      });
    this.#chains.set(to, sent);
    const forget = () => {
      if (this.#chains.get(to) === sent) this.#chains.delete(to);
    };
    sent.then(forget, forget);
    return done;
  }

  // Signals to `to` in order: one as a single POST, several as one batch POST, taken up
  // to the first the server refuses (its answer says how many: `accepted`); the rest are
  // retried after 429 and 503 (with their ids, so nothing is delivered twice), or fail.
  async #sendBatch(to, items) {
    let rest = items;
    let error = null;
    for (let attempt = 1; rest.length > 0 && attempt <= this.#opts.sendAttempts; attempt += 1) {
      if (this.#state === "closed") {
        error = new RoomError("the room is closed");
        break;
      }
      const fields =
        rest.length === 1
          ? { to, signal: rest[0].signal, id: rest[0].id }
          : { signals: rest.map(({ signal, id }) => ({ to, signal, id })) };
      const answer = await this.#postOnce("signal", fields);
      if (answer.ok) {
        for (const item of rest) item.resolve();
        return;
      }
      const taken = Number.isInteger(answer.info?.accepted) ? answer.info.accepted : 0;
      for (const item of rest.slice(0, taken)) item.resolve();
      rest = rest.slice(taken);
      error = answer.error;
      if (answer.status !== 0 && answer.status !== 429 && answer.status !== 503) break;
      if (attempt < this.#opts.sendAttempts) await sleep(this.#retryDelay(answer, attempt));
    }
    for (const item of rest) item.reject(error);
  }

  /**
   * An RTCConfiguration with this room's `iceServers`; `extra` adds to it (e.g.
   * `{iceTransportPolicy: "relay"}`), and its own `iceServers`, if any, win.
   */
  rtcConfiguration(extra = {}) {
    return { iceServers: this.iceServers, ...extra };
  }

  /**
   * Keep `pc`'s ICE servers current: when the server's TURN credentials are refreshed,
   * `pc.setConfiguration` gets the new ones (a connection that is up stays up; the new
   * credentials serve its next ICE restart or relay refresh). Returns `pc`.
   */
  manage(pc) {
    this.#managed.add(pc);
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "closed") this.#managed.delete(pc);
    });
    return pc;
  }

  /**
   * Ask the server for fresh ICE servers now (new TURN credentials), apply them to the
   * managed peer connections and emit `iceservers`. Resolves with `{iceServers, ttl}`.
   * Done by itself at `iceRefresh` of the credentials' lifetime.
   */
  async refreshIceServers() {
    if (this.#state === "closed") throw new RoomError("the room is closed");
    const answer = await this.#post("ice-servers", {}, 3);
    const ttl = Number(answer.ttl);
    this.#setIceServers(answer.ice_servers ?? [], Number.isFinite(ttl) ? ttl * 1000 : null);
    return { iceServers: this.iceServers, ttl };
  }

  /** End the session at once: peers see it leave the roster. Safe to call twice. */
  async leave() {
    if (this.#state === "closed") return;
    const creds = this.#credentials();
    this.#close("left");
    if (creds.sender === null) return;
    try {
      await this.#post("leave", {}, 3, creds, true);
    } catch {
      // the session expires by itself after the server's grace period
    }
  }

  // --- the event stream -------------------------------------------------------------------

  #connectUrl(withCredentials) {
    const query = new URLSearchParams({ room: this.room });
    if (withCredentials && this.sessionId !== null) {
      query.set("session_id", this.sessionId);
      query.set("token", this.token);
      if (this.#lastIdText) query.set("last_event_id", this.#lastIdText);
    }
    return `${this.#base}/api/connect?${query}`;
  }

  #open(withCredentials) {
    const es = new EventSource(this.#connectUrl(withCredentials));
    this.#es = es;
    this.#esSession = withCredentials ? this.sessionId : null;
    this.#lastActivity = Date.now();
    for (const name of STREAM_EVENTS) {
      es.addEventListener(name, (event) => this.#onEvent(es, name, event));
    }
    es.onerror = () => this.#onError(es);
  }

  #onEvent(es, name, event) {
    if (es !== this.#es || this.#state === "closed") return;
    this.#lastActivity = Date.now();
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    const idText = event.lastEventId;
    if (name === "session") {
      this.#onSession(data, idText);
      return;
    }
    // Ids grow strictly on the wire across reconnections: anything not newer was seen.
    if (!this.#isNewer(idText)) return;
    this.#setLastId(idText);
    if (name === "roster") {
      this.#onRoster(data.peers ?? []);
    } else if (name === "signal") {
      this.#emit("signal", { from: data.from, signal: data.signal, id: idText });
    } else if (name === "bye") {
      this.#onBye(es, data.reason);
    }
  }

  #onSession(data, idText) {
    const sameSession = data.session_id === this.sessionId;
    if (sameSession && this.#opened && !this.#isNewer(idText)) return;
    const previous = this.sessionId;
    const wasReconnect = this.#opened;
    this.sessionId = data.session_id;
    this.token = data.token;
    if (!sameSession) this.#lastId = null; // a new session numbers its events afresh
    this.#setLastId(idText);
    this.#state = "open";
    this.#attempt = 0;
    this.#opened = true;
    if (Array.isArray(data.ice_servers)) this.#setIceServers(data.ice_servers, null);
    const maxBatch = Number(data.max_batch);
    this.#maxBatch = Number.isInteger(maxBatch) && maxBatch > 1 ? maxBatch : 0;
    const quiet = this.#quietResume && sameSession;
    this.#quietResume = false;
    if ((wasReconnect || previous !== null) && !quiet) {
      this.#emit("resumed", {
        resumed: Boolean(data.resumed) && sameSession,
        sessionId: this.sessionId,
        previousSessionId: previous,
      });
    }
    if (this.#esSession !== null && this.#esSession !== this.sessionId) {
      // The stream was opened with the credentials of a session that had expired: the
      // server made a new one. Every automatic reconnection of this EventSource would make
      // yet another, so reopen it with the new session's credentials (no event is lost:
      // the new stream starts with session and roster, and replays from the last id).
      this.#es.close();
      this.#quietResume = true;
      this.#open(true);
    }
  }

  #onRoster(peers) {
    const before = new Set(this.roster);
    const after = new Set(peers);
    this.roster = [...peers];
    this.#emit("roster", {
      peers: [...peers],
      joined: peers.filter((id) => !before.has(id)),
      left: [...before].filter((id) => !after.has(id)),
    });
    if (this.#joining !== null) {
      const { resolve, timer } = this.#joining;
      clearTimeout(timer);
      this.#joining = null;
      resolve(this);
    }
  }

  #onBye(es, reason) {
    this.#emit("bye", { reason });
    if (reason === "shutdown") {
      // The server restarts: the EventSource reconnects by itself when the stream ends.
      this.#markReconnecting("shutdown");
      return;
    }
    // "left" (the session was ended) or "replaced" (another connection took the session):
    // reconnecting would take it back and start a tug of war.
    es.close();
    this.#close(reason);
  }

  #onError(es) {
    if (es !== this.#es || this.#state === "closed") return;
    if (es.readyState === EventSource.CONNECTING) {
      // A network error or a clean end: the browser retries after the server's retry:
      // delay, with Last-Event-ID, and the server resumes the session from that id.
      this.#markReconnecting("network");
      return;
    }
    // CLOSED: the browser gave up for good (a non-200 answer). Reconnect ourselves.
    es.close();
    this.#es = null;
    this.#scheduleReconnect("refused");
  }

  #markReconnecting(reason) {
    if (this.#state !== "open") return;
    this.#state = "reconnecting";
    this.#emit("reconnecting", { reason, attempt: 0, delay: null });
  }

  #scheduleReconnect(reason) {
    clearTimeout(this.#timer);
    this.#attempt += 1;
    const base = Math.min(
      this.#opts.maxReconnectDelay,
      this.#opts.reconnectDelay * 2 ** Math.min(this.#attempt - 1, 16),
    );
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    if (this.#state !== "connecting") this.#state = "reconnecting";
    this.#emit("reconnecting", { reason, attempt: this.#attempt, delay });
    this.#timer = setTimeout(() => this.#reconnectNow(), delay);
  }

  async #reconnectNow() {
    clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#state === "closed") return;
    // EventSource does not tell why it was refused: ask with a HEAD (it makes no session).
    // A 4xx other than 408/429 will not heal by retrying (a bad room name, say).
    const url = this.#connectUrl(true);
    let status = 0;
    try {
      status = (await fetch(url, { method: "HEAD", cache: "no-store" })).status;
    } catch {
      status = 0;
    }
    if (this.#state === "closed" || this.#es !== null) return;
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
      this.#fail(new RoomError(`the server refused the event stream (HTTP ${status})`, status));
      return;
    }
    this.#open(true);
  }

  #checkStale() {
    if (this.#state !== "open" || this.#es === null) return;
    if (Date.now() - this.#lastActivity < this.#opts.staleAfter) return;
    // Not even a heartbeat for too long: the connection is dead without knowing it.
    this.#es.close();
    this.#es = null;
    this.#state = "reconnecting";
    this.#scheduleReconnect("stale");
  }

  // --- ICE servers ------------------------------------------------------------------------

  /** Take the server's list (unless the page gave its own) and plan the next refresh:
   * at `iceRefresh` of `lifetime` ms, or, from a session event, of the time left until the
   * expiry its TURN username names (`<unix time>:<session id>`). */
  #setIceServers(servers, lifetime) {
    if (this.#opts.iceServers) return;
    this.iceServers = servers;
    for (const pc of this.#managed) {
      try {
        pc.setConfiguration({ ...pc.getConfiguration(), iceServers: servers });
      } catch {
        this.#managed.delete(pc); // closed, or a configuration the browser refuses
      }
    }
    this.#emit("iceservers", { iceServers: servers });
    clearTimeout(this.#iceTimer);
    this.#iceTimer = null;
    let left = lifetime;
    if (left === null) {
      const expiries = servers
        .map((s) => /^([0-9]{1,12}):/.exec(s.username ?? "")?.[1])
        .filter(Boolean)
        .map(Number);
      if (!expiries.length) return; // no TURN credentials: nothing expires
      left = Math.min(...expiries) * 1000 - Date.now();
    }
    const delay = Math.max(MIN_ICE_REFRESH, Math.min(left * this.#opts.iceRefresh, 2 ** 31 - 1));
    this.#iceTimer = setTimeout(() => this.#refreshLater(), delay);
  }

  async #refreshLater() {
    this.#iceTimer = null;
    try {
      await this.refreshIceServers();
    } catch (error) {
      // The session is gone (403) or the room closed: its next session brings new ones.
      const status = error instanceof RoomError ? error.status : 0;
      if (this.#state === "closed" || (status >= 400 && status < 500 && status !== 429)) return;
      this.#iceTimer = setTimeout(() => this.#refreshLater(), ICE_RETRY);
    }
  }

  // --- upstream ---------------------------------------------------------------------------

  #credentials() {
    return { sender: this.sessionId, token: this.token };
  }

  async #post(path, fields, attempts, creds = null, keepalive = false) {
    let error = null;
    for (let attempt = 1; attempt <= attempts; attempt += 1) {
      const answer = await this.#postOnce(path, fields, creds, keepalive);
      if (answer.ok) return answer.info ?? { success: true };
      error = answer.error;
      if (answer.status !== 0 && answer.status !== 429 && answer.status !== 503) throw error;
      if (attempt === attempts) break;
      await sleep(this.#retryDelay(answer, attempt));
      if (creds === null && this.#state === "closed") throw new RoomError("the room is closed");
    }
    throw error;
  }

  // One POST: {ok, status, info (the JSON answer), error, retryAfter}; status 0 is a
  // network error (or a timeout).
  async #postOnce(path, fields, creds = null, keepalive = false) {
    const url = `${this.#base}/api/${path}?${new URLSearchParams({ room: this.room })}`;
    const { sender, token } = creds ?? this.#credentials();
    const body = JSON.stringify({ sender, token, ...fields });
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.#opts.requestTimeout);
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body,
        cache: "no-store",
        keepalive,
        signal: abort.signal,
      });
      const info = await response.json().catch(() => null);
      const error = response.ok
        ? null
        : new RoomError(info?.error ?? `HTTP ${response.status}`, response.status);
      const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
      return { ok: response.ok, status: response.status, info, error, retryAfter };
    } catch (error) {
      const failed = new RoomError(`network error: ${error?.message ?? error}`, 0);
      return { ok: false, status: 0, info: null, error: failed, retryAfter: null };
    } finally {
      clearTimeout(timer);
    }
  }

  #retryDelay(answer, attempt) {
    if (answer.retryAfter !== null) return answer.retryAfter * 1000;
    return Math.min(this.#opts.maxRetryDelay, this.#opts.retryDelay * 2 ** (attempt - 1));
  }

  #leaveWithBeacon() {
    if (this.#state === "closed") return;
    const { sender, token } = this.#credentials();
    this.#close("left");
    if (sender === null) return;
    const url = `${this.#base}/api/leave?${new URLSearchParams({ room: this.room })}`;
    const body = JSON.stringify({ sender, token }); // a string: sent as text/plain, no preflight
    if (!navigator.sendBeacon?.(url, body)) {
      fetch(url, { method: "POST", body, keepalive: true }).catch(() => {});
    }
  }

  // --- the end ----------------------------------------------------------------------------

  #fail(error) {
    if (this.#state === "closed") return;
    this.#close("error", error);
  }

  #close(reason, error = null) {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#es?.close();
    this.#es = null;
    clearTimeout(this.#timer);
    clearTimeout(this.#iceTimer);
    clearInterval(this.#watchdog);
    if (typeof window !== "undefined") {
      if (this.#pagehide) window.removeEventListener("pagehide", this.#pagehide);
      if (this.#online) window.removeEventListener("online", this.#online);
    }
    if (this.#joining !== null) {
      const { reject, timer } = this.#joining;
      clearTimeout(timer);
      this.#joining = null;
      reject(error ?? new RoomError(`the room closed before joining (${reason})`));
    }
    this.#emit("closed", { reason, error });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #isNewer(idText) {
    const id = toBigInt(idText);
    return id === null || this.#lastId === null || id > this.#lastId;
  }

  #setLastId(idText) {
    const id = toBigInt(idText);
    if (id === null) return;
    this.#lastId = id;
    this.#lastIdText = idText;
  }
}

// --- helpers --------------------------------------------------------------------------------

function toBigInt(text) {
  if (typeof text !== "string" || !/^[0-9]{1,80}$/.test(text)) return null;
  return BigInt(text);
}

function parseRetryAfter(value) {
  if (value === null) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds, 60);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.min(Math.max(0, (date - Date.now()) / 1000), 60);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A random UUIDv4 (crypto.getRandomValues works on plain http: pages too). */
function randomId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
