"""client.js's API in real Chromium, imported by a page on another origin than the API's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import NetNamespace, ServerProcess, StaticServer, Tabs

pytestmark = pytest.mark.e2e

# Runs in the page: two sessions of one room, signals with injected faults, errors, leave.
SCRIPT = """
async ([api, room]) => {
  const { join, RoomError, VERSION } = await import(`${api}/client.js`);
  const until = async (check, what) => {
    for (let i = 0; i < 200; i += 1) {
      if (check()) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`timed out: ${what}`);
  };
  const out = { version: VERSION };

  const a = await join(api, room);
  const rosterEvents = [];
  a.addEventListener("roster", (e) => rosterEvents.push(e.detail));
  const got = [];
  a.addEventListener("signal", (e) => got.push(e.detail));
  const b = await join(api, room);
  await until(() => a.roster.length === 2, "A sees B");
  out.rosterA = a.roster;
  out.rosterB = b.roster;
  out.peersB = b.peers;
  out.joinedEvent = rosterEvents[0];
  out.ids = [a.sessionId, b.sessionId];
  out.states = [a.state, b.state];

  // The first POST reaches the server but its answer is lost; the second meets a 429
  // (Retry-After: 0); the third goes through. The same id each time: delivered once.
  const realFetch = window.fetch;
  const posted = [];
  window.fetch = async (url, init) => {
    if (init?.method === "POST" && String(url).includes("/api/signal")) {
      posted.push(JSON.parse(init.body));
      if (posted.length === 1) {
        await realFetch(url, init);
        throw new TypeError("Failed to fetch (injected)");
      }
      if (posted.length === 2) {
        return new Response('{"error":"rate limit exceeded"}', {
          status: 429, headers: { "Retry-After": "0", "Content-Type": "application/json" },
        });
      }
    }
    return realFetch(url, init);
  };
  await b.send(a.sessionId, { n: 1 });
  window.fetch = realFetch;
  out.postedIds = posted.map((p) => p.id);
  out.postedFields = Object.keys(posted[0]).sort();

  // Many sends fired at once go in one batch POST (the server announced max_batch) and
  // arrive in the order of the calls. That POST is cut short, as by a server whose rate
  // budget ran out after 2 (a 429 saying accepted: 2): the rest is resent, from the third.
  const batches = [];
  window.fetch = async (url, init) => {
    if (init?.method === "POST" && String(url).includes("/api/signal")) {
      const body = JSON.parse(init.body);
      batches.push(body.signals ? body.signals.length : 1);
      if (batches.length === 1 && body.signals) {
        const cut = { ...body, signals: body.signals.slice(0, 2) };
        const taken = await (await realFetch(url, { ...init, body: JSON.stringify(cut) })).json();
        const refusal = { error: "rate limit exceeded", accepted: taken.accepted };
        return new Response(JSON.stringify(refusal), {
          status: 429, headers: { "Retry-After": "0", "Content-Type": "application/json" },
        });
      }
    }
    return realFetch(url, init);
  };
  await Promise.all(Array.from({ length: 20 }, (_, i) => b.send(a.sessionId, { n: i + 2 })));
  window.fetch = realFetch;
  out.batches = batches;
  await until(() => got.length >= 21, "21 signals");
  await new Promise((r) => setTimeout(r, 100)); // and no duplicate after them
  out.received = got.map((s) => s.signal.n);
  out.from = [...new Set(got.map((s) => s.from))];
  out.eventIdsGrow = got.every((s, i) => i === 0 || BigInt(s.id) > BigInt(got[i - 1].id));

  // Errors that retrying will not heal.
  try {
    await b.send("00000000-0000-4000-8000-000000000000", { x: 1 });
    out.unknownPeer = "sent";
  } catch (e) {
    out.unknownPeer = [e instanceof RoomError, e.status];
  }
  try {
    await join(api, "x".repeat(300));
    out.badRoom = "joined";
  } catch (e) {
    out.badRoom = [e instanceof RoomError, e.status];
  }

  // Leaving: peers see the new roster at once; the room is closed for good.
  const closed = new Promise((r) => b.addEventListener("closed", (e) => r(e.detail.reason)));
  await b.leave();
  out.closedReason = await closed;
  await until(() => a.roster.length === 1, "B gone from A's roster");
  out.leftEvent = rosterEvents.at(-1);
  out.stateAfterLeave = b.state;
  try {
    await b.send(a.sessionId, { late: true });
    out.sendAfterLeave = "sent";
  } catch (e) {
    out.sendAfterLeave = [e instanceof RoomError, e.message];
  }
  await a.leave();

  // Resuming a session the server does not know (an expired one): a new session; the
  // stream is reopened on the new credentials, which resumes it (no second session).
  const gone = "11111111-1111-4111-8111-111111111111";
  const c = await join(api, `${room}-resume`, { resume: { sessionId: gone, token: gone } });
  await new Promise((r) => setTimeout(r, 300));
  const d = await join(api, `${room}-resume`);
  await until(() => c.roster.length === 2, "C sees D");
  out.resume = { changed: c.sessionId !== gone, roster: d.roster, ids: [c.sessionId, d.sessionId] };
  await c.leave();
  await d.leave();
  return out;
}
"""


@pytest.fixture
def blank_site(netns: NetNamespace | None, tmp_path: Path) -> Iterator[StaticServer]:
    (tmp_path / "index.html").write_text("<!doctype html><title>elsewhere</title>\n")
    site = StaticServer(netns, tmp_path)
    yield site
    site.close()


def test_client_api(server: ServerProcess, blank_site: StaticServer, tabs: Tabs, room: str) -> None:
    tab = tabs.open(f"{blank_site.url}/")
    out: dict[str, Any] = tab.page.evaluate(SCRIPT, [server.url, room])
    id_a, id_b = out["ids"]
    assert out["version"] == "1"
    assert out["rosterA"] == out["rosterB"] == [id_a, id_b]
    assert out["peersB"] == [id_a]
    assert out["joinedEvent"] == {"peers": [id_a, id_b], "joined": [id_b], "left": []}
    assert out["states"] == ["open", "open"]

    # Retried three times with one id; delivered once, then the rest in order.
    assert len(out["postedIds"]) == 3 and len(set(out["postedIds"])) == 1
    assert out["postedFields"] == ["id", "sender", "signal", "to", "token"]
    assert out["batches"] == [20, 18]  # one POST of 20, then the 18 not taken
    assert out["received"] == list(range(1, 22))  # each once, in order
    assert out["from"] == [id_b]
    assert out["eventIdsGrow"]

    assert out["unknownPeer"] == [True, 404]
    assert out["badRoom"] == [True, 400]

    assert out["closedReason"] == "left"
    assert out["leftEvent"] == {"peers": [id_a], "joined": [], "left": [id_b]}
    assert out["stateAfterLeave"] == "closed"
    assert out["sendAfterLeave"] == [True, "the room is closed"]

    assert out["resume"]["changed"]
    assert out["resume"]["roster"] == out["resume"]["ids"]  # one session for C, not two
    # C's stream was reopened on the new session's credentials: the first URL, with the gone
    # session's, would make yet another session at each of the browser's own reconnections.
    new_c = out["resume"]["ids"][0]
    connects = [url for method, url in tab.requests if "/api/connect?" in url]
    assert any(f"session_id={new_c}&" in url and "last_event_id=" in url for url in connects)
    errors = [line for line in tab.console if line.startswith("pageerror")]
    assert not errors, errors
