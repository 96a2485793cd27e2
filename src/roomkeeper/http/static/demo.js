// The roomkeeper demo: join a room, meet the other tabs in it, connect a WebRTC data
// channel to each through the signaling server, chat, and add a camera if there is one.
//
// Who offers: a newcomer sends an offer to everyone already in the room when it joins;
// the others wait for it. Later changes (a camera) use "perfect negotiation", the
// newcomer being the impolite side. Signals are {description} or {candidate}.
//
// client.js is imported relative to this file, and the server's URL is where client.js
// came from: to host the page elsewhere, load this script from the server
// (<script type="module" src="https://signaling.example/demo.js">).

import { defaultBaseUrl, join } from "./client.js";

const params = new URLSearchParams(location.search);
// ICE servers: the signaling server's (its --stun-uris, and --turn-uris with credentials
// it refreshes), unless the page gives its own: ?stun=stun:host:3478 (repeatable) replaces
// them. Without either, tabs on one machine or one LAN connect with host candidates.
// ?relay=1 forces every connection through TURN (iceTransportPolicy "relay").
const OWN_ICE_SERVERS = params.getAll("stun").map((urls) => ({ urls }));
const RTC_EXTRA = params.get("relay") === "1" ? { iceTransportPolicy: "relay" } : {};

const $ = (id) => document.getElementById(id);
const short = (id) => (id ? id.slice(0, 8) : "—");

let room = null;
let localStream = null;
let joinedWith = new Set(); // peers present when our session began: we offer to them
const links = new Map(); // peer session id -> Link

// --- the page's parts -----------------------------------------------------------------------

function log(text, cls = "") {
  const li = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString([], { hour12: false });
  li.append(time, text);
  if (cls) li.className = cls;
  const list = $("log");
  list.append(li);
  while (list.children.length > 300) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
}

function setStep(el, state, text, note) {
  el.dataset.state = state;
  if (text !== undefined) el.querySelector(".text").textContent = text;
  if (note !== undefined) el.querySelector("small").textContent = note;
}

function setSignaling(state, text) {
  const el = $("signaling");
  el.dataset.state = state;
  $("signaling-text").textContent = text;
}

function renderRoster() {
  const box = $("roster");
  box.replaceChildren();
  const peers = room ? room.roster : [];
  for (const id of peers) {
    const chip = document.createElement("span");
    chip.className = id === room.sessionId ? "chip me" : "chip";
    chip.textContent = id === room.sessionId ? `${short(id)} (you)` : short(id);
    chip.title = id;
    chip.dataset.session = id;
    box.append(chip);
  }
  const step = $("roster-step");
  step.dataset.state = peers.length > 1 ? "done" : peers.length ? "active" : "idle";
  step.dataset.count = String(peers.length);
  $("roster-text").textContent = !room
    ? "Roster: —"
    : peers.length > 1
      ? `Roster: ${peers.length} in the room`
      : "Roster: only you so far; open this page in another tab";
}

function updateChat() {
  const open = [...links.values()].some((l) => l.channel?.readyState === "open");
  $("chat-input").disabled = !open;
  $("chat-send").disabled = !open;
}

function addChat(from, text, mine) {
  const li = document.createElement("li");
  li.className = mine ? "mine" : "";
  li.dataset.from = from;
  const who = document.createElement("b");
  who.textContent = mine ? "you" : short(from);
  li.append(who, text);
  $("chat-log").append(li);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
}

// --- one WebRTC connection per peer -------------------------------------------------------

const STEPS = [
  ["offer", "Offer"],
  ["answer", "Answer"],
  ["candidates", "ICE candidates"],
  ["ice", "ICE"],
  ["connection", "Connection"],
  ["channel", "Data channel"],
];

class Link {
  constructor(peerId, initiator) {
    this.peerId = peerId;
    this.initiator = initiator; // we make the first offer
    this.polite = !initiator; // on an offer collision the polite side gives way
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.inbox = Promise.resolve(); // signals are handled one after the other
    this.sent = 0;
    this.received = 0;
    this.exchanges = 0; // offer/answer exchanges completed (the first, then renegotiations)
    this.channel = null;
    this.#makeCard();
    this.pc = room.manage(new RTCPeerConnection(room.rtcConfiguration(RTC_EXTRA)));
    this.#wire();
    if (localStream) for (const track of localStream.getTracks()) this.pc.addTrack(track, localStream);
    if (initiator) this.#setChannel(this.pc.createDataChannel("chat"));
  }

  #makeCard() {
    const card = document.createElement("div");
    card.className = "peer";
    card.dataset.peer = this.peerId;
    const title = document.createElement("h3");
    const name = document.createElement("code");
    name.textContent = short(this.peerId);
    name.title = this.peerId;
    const role = document.createElement("small");
    role.textContent = this.initiator ? "you offer (you joined after them)" : "they offer (they joined after you)";
    title.append("Peer ", name, role);
    const list = document.createElement("ul");
    list.className = "steps";
    this.steps = {};
    for (const [key, label] of STEPS) {
      const li = document.createElement("li");
      li.dataset.step = key;
      li.dataset.state = "idle";
      const dot = document.createElement("span");
      dot.className = "dot";
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = label;
      li.append(dot, text, document.createElement("small"));
      list.append(li);
      this.steps[key] = li;
    }
    this.list = list;
    this.video = document.createElement("video");
    Object.assign(this.video, { autoplay: true, playsInline: true, muted: true });
    this.videoBox = document.createElement("figure");
    this.videoBox.hidden = true;
    const caption = document.createElement("figcaption");
    caption.textContent = "Their camera";
    this.videoBox.append(this.video, caption);
    card.append(title, list, this.videoBox);
    $("peers").append(card);
    this.card = card;
    setStep(this.steps.offer, "idle", this.initiator ? "Offer: to send" : "Offer: waiting for theirs");
    setStep(this.steps.answer, "idle", this.initiator ? "Answer: waiting for theirs" : "Answer: to send");
    this.#showCandidates();
  }

  #wire() {
    const pc = this.pc;
    pc.onnegotiationneeded = async () => {
      const first = this.exchanges === 0;
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        this.#mark(first, "offer", "active", "Offer: sending…");
        await this.#send({ description: pc.localDescription.toJSON() });
        // Their answer may be here already: it can overtake our POST's own reply. A
        // renegotiation has one step, which then says "done" and must not go back.
        const answered = pc.signalingState !== "have-local-offer";
        if (first || !answered) {
          this.#mark(first, "offer", "done", "Offer sent");
        }
        if (!answered) {
          this.#mark(first, "answer", "active", "Answer: waiting for theirs");
        }
        log(`offer sent to ${short(this.peerId)}`);
      } catch (error) {
        this.#mark(first, "offer", "failed", `Offer failed: ${error.message}`);
        log(`offer to ${short(this.peerId)} failed: ${error.message}`, "error");
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (!candidate) return; // gathering is complete; the state change shows it
      this.#send({ candidate: candidate.toJSON() }).then(
        () => {
          this.sent += 1;
          this.#showCandidates();
        },
        (error) => log(`candidate to ${short(this.peerId)} failed: ${error.message}`, "error"),
      );
    };
    pc.onicegatheringstatechange = () => this.#showCandidates();
    pc.oniceconnectionstatechange = () => {
      const s = pc.iceConnectionState;
      const state = s === "connected" || s === "completed" ? "done" : s === "failed" ? "failed" : "active";
      setStep(this.steps.ice, state, `ICE: ${s}`);
      log(`ICE with ${short(this.peerId)}: ${s}`);
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      const state = s === "connected" ? "done" : s === "failed" || s === "closed" ? "failed" : "active";
      setStep(this.steps.connection, state, `Connection: ${s}`);
      log(`connection with ${short(this.peerId)}: ${s}`);
    };
    pc.ondatachannel = ({ channel }) => this.#setChannel(channel);
    pc.ontrack = ({ streams, track }) => {
      this.video.srcObject = streams[0] ?? new MediaStream([track]);
      this.videoBox.hidden = false;
      this.card.dataset.video = "receiving";
      log(`receiving ${track.kind} from ${short(this.peerId)}`);
    };
  }

  // The first exchange shows in the Offer and Answer steps; later ones (a camera) in a
  // Renegotiation step of their own.
  #mark(first, kind, state, text) {
    if (first) {
      setStep(this.steps[kind], state, text);
      return;
    }
    let step = this.steps.renegotiation;
    if (!step) {
      step = this.steps.renegotiation = document.createElement("li");
      step.dataset.step = "renegotiation";
      const dot = document.createElement("span");
      dot.className = "dot";
      const label = document.createElement("span");
      label.className = "text";
      step.append(dot, label, document.createElement("small"));
      this.list.append(step);
    }
    const done = kind === "answer" && state === "done";
    setStep(step, done ? "done" : "active", `Renegotiation: ${text.toLowerCase()}`,
      `${this.exchanges - 1} so far`);
    step.dataset.count = String(this.exchanges - 1);
  }

  #showCandidates() {
    const gathering = this.pc?.iceGatheringState ?? "new";
    const state = this.sent > 0 && this.received > 0 ? "done" : this.sent || this.received ? "active" : "idle";
    setStep(this.steps.candidates, state, `ICE candidates: ${this.sent} sent, ${this.received} received`,
      `gathering ${gathering}`);
    this.card.dataset.candidatesSent = String(this.sent);
    this.card.dataset.candidatesReceived = String(this.received);
    this.card.dataset.gathering = gathering;
  }

  #setChannel(channel) {
    this.channel = channel;
    setStep(this.steps.channel, "active", `Data channel: ${channel.readyState}`);
    channel.onopen = () => {
      setStep(this.steps.channel, "done", "Data channel: open");
      this.card.dataset.channel = "open";
      log(`data channel with ${short(this.peerId)} open: say hello`);
      updateChat();
    };
    channel.onclose = () => {
      setStep(this.steps.channel, "failed", "Data channel: closed");
      this.card.dataset.channel = "closed";
      updateChat();
    };
    channel.onmessage = ({ data }) => {
      let message;
      try {
        message = JSON.parse(data);
      } catch {
        return;
      }
      if (typeof message.text === "string") addChat(this.peerId, message.text, false);
    };
  }

  #send(signal) {
    return room.send(this.peerId, signal);
  }

  /** A signal from this peer; handled in order, one at a time. */
  receive(signal) {
    this.inbox = this.inbox.then(() => this.#handle(signal)).catch((error) => {
      log(`signal from ${short(this.peerId)}: ${error.message}`, "error");
    });
  }

  async #handle({ description, candidate }) {
    const pc = this.pc;
    if (description) {
      const collision = description.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) {
        log(`ignored a colliding offer from ${short(this.peerId)}`);
        return;
      }
      const first = this.exchanges === 0;
      await pc.setRemoteDescription(description);
      if (description.type === "offer") {
        this.#mark(first, "offer", "done", "Offer received");
        log(`offer received from ${short(this.peerId)}`);
        await pc.setLocalDescription();
        this.#mark(first, "answer", "active", "Answer: sending…");
        this.exchanges += 1;
        await this.#send({ description: pc.localDescription.toJSON() });
        this.#mark(first, "answer", "done", "Answer sent");
        log(`answer sent to ${short(this.peerId)}`);
      } else {
        this.exchanges += 1;
        this.#mark(first, "answer", "done", "Answer received");
        log(`answer received from ${short(this.peerId)}`);
      }
    } else if (candidate !== undefined) {
      this.received += 1;
      this.#showCandidates();
      try {
        await pc.addIceCandidate(candidate ?? undefined);
      } catch (error) {
        if (!this.ignoreOffer) throw error;
      }
    }
  }

  addStream(stream) {
    for (const track of stream.getTracks()) this.pc.addTrack(track, stream);
  }

  close(reason) {
    this.pc.close();
    this.card.dataset.left = reason;
    this.card.querySelector("h3 small").textContent = reason;
    setStep(this.steps.connection, "failed", "Connection: closed");
    updateChat();
  }
}

// --- signaling --------------------------------------------------------------------------------

function linkFor(peerId) {
  let link = links.get(peerId);
  if (!link) {
    link = new Link(peerId, joinedWith.has(peerId));
    links.set(peerId, link);
  }
  return link;
}

function onRoster({ detail }) {
  renderRoster();
  for (const id of detail.joined) if (id !== room.sessionId) log(`${short(id)} joined the room`);
  for (const id of detail.left) {
    log(`${short(id)} left the room`);
    links.get(id)?.close("left the room");
    links.delete(id);
  }
  for (const id of room.peers) linkFor(id);
}

function freshSession() {
  for (const link of links.values()) link.close("reset");
  links.clear();
  $("peers").replaceChildren();
  joinedWith = new Set(room.peers); // a newcomer offers to everyone already there
  const me = $("me");
  me.textContent = `you: ${short(room.sessionId)}`;
  me.title = room.sessionId;
  me.dataset.sessionId = room.sessionId;
}

function describeIce(servers) {
  const turn = servers.filter((s) => s.credential !== undefined).length;
  const policy = RTC_EXTRA.iceTransportPolicy === "relay" ? ", relay only" : "";
  if (!servers.length) return `no STUN or TURN servers: host candidates only${policy}`;
  return `${servers.length - turn} STUN and ${turn} TURN server entries${policy}`;
}

async function doJoin(name) {
  $("join").disabled = true;
  $("room").disabled = true;
  setSignaling("active", "Connecting to the signaling server…");
  log(`joining room "${name}" at ${defaultBaseUrl}`);
  try {
    const options = OWN_ICE_SERVERS.length ? { iceServers: OWN_ICE_SERVERS } : {};
    room = await join(defaultBaseUrl, name, options);
  } catch (error) {
    setSignaling("failed", `Could not join: ${error.message}`);
    log(`join failed: ${error.message}`, "error");
    $("join").disabled = false;
    $("room").disabled = false;
    return;
  }
  window.roomkeeperDemo = { room, links }; // for the curious, in the console
  $("leave").disabled = false;
  $("camera").disabled = !navigator.mediaDevices?.getUserMedia;
  setSignaling("done", "Signaling connected (event stream open)");
  $("signaling").dataset.resumed = "0";
  log(`signaling connected: you are ${short(room.sessionId)}`);
  log(describeIce(room.iceServers));
  const url = new URL(location.href);
  url.searchParams.set("room", name);
  history.replaceState(null, "", url);
  $("share").textContent = `Open ${url.href} in another tab to join.`;
  freshSession();
  room.addEventListener("roster", onRoster);
  room.addEventListener("signal", ({ detail }) => linkFor(detail.from).receive(detail.signal));
  room.addEventListener("reconnecting", ({ detail }) => {
    const attempt = detail.attempt ? ` (attempt ${detail.attempt})` : "";
    setSignaling("active", `Reconnecting the event stream…${attempt}`);
    log(`event stream lost (${detail.reason}): reconnecting${attempt}`);
  });
  room.addEventListener("resumed", ({ detail }) => {
    const el = $("signaling");
    el.dataset.resumed = String(Number(el.dataset.resumed ?? 0) + 1);
    if (detail.resumed) {
      setSignaling("done", "Signaling connected (session resumed)");
      log("event stream back: same session, nothing lost");
    } else {
      setSignaling("done", "Signaling connected (new session)");
      log(`the old session had expired: you are now ${short(room.sessionId)}`);
      freshSession();
      for (const id of room.peers) linkFor(id);
    }
  });
  room.addEventListener("bye", ({ detail }) => log(`server said bye: ${detail.reason}`));
  room.addEventListener("iceservers", ({ detail }) => {
    const el = $("signaling");
    el.dataset.iceRefreshes = String(Number(el.dataset.iceRefreshes ?? 0) + 1);
    log(`ICE servers refreshed: ${describeIce(detail.iceServers)}`);
  });
  room.addEventListener("closed", ({ detail }) => {
    setSignaling("idle", `Not connected (${detail.error?.message ?? detail.reason})`);
    log(`left the room (${detail.error?.message ?? detail.reason})`);
    for (const link of links.values()) link.close("closed");
    links.clear();
    $("leave").disabled = true;
    $("join").disabled = false;
    $("room").disabled = false;
    $("camera").disabled = true;
    room = null;
    renderRoster();
  });
  renderRoster();
  for (const id of room.peers) linkFor(id);
}

$("room").value = params.get("room") || `room-${Math.random().toString(36).slice(2, 8)}`;

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("room").value.trim();
  if (name && !room) doJoin(name);
});

$("leave").addEventListener("click", () => room?.leave());

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text) return;
  let sent = 0;
  for (const link of links.values()) {
    if (link.channel?.readyState === "open") {
      link.channel.send(JSON.stringify({ text }));
      sent += 1;
    }
  }
  if (sent) addChat(room.sessionId, text, true);
  $("chat-input").value = "";
});

$("camera").addEventListener("click", async () => {
  $("camera").disabled = true;
  try {
    localStream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
  } catch (error) {
    log(`no camera: ${error.message}`, "error");
    $("camera").disabled = false;
    return;
  }
  const preview = $("local-video");
  preview.srcObject = localStream;
  $("local-camera").hidden = false;
  $("camera").textContent = "Camera on";
  log("camera on: renegotiating with every peer");
  for (const link of links.values()) link.addStream(localStream);
});

if (params.has("autojoin") && params.get("room")) doJoin($("room").value.trim());
