"""The demo page in real headless Chromium: two tabs meet through the server and connect a
real RTCPeerConnection over loopback; a stream dropped mid-negotiation resumes its session;
so do both after a server restart; the page works from another origin than the API's."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .conftest import (
    SERVER_FLAGS,
    CutProxy,
    NetNamespace,
    ServerProcess,
    StaticServer,
    Tab,
    Tabs,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.e2e

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

Screenshot = Callable[["Page", str], Path]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def expect(target: Locator | Page):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect as pw_expect

    return pw_expect(target)


@pytest.fixture(autouse=True)
def _isolated(isolated: NetNamespace | None) -> None:
    """Every test here connects real peers: in the namespace with only lo."""


def join(tab: Tab, room: str | None = None) -> str:
    """Join through the form (the room name as typed, or as ``?room=`` filled it in); the
    session id the page shows."""
    page = tab.page
    if room is not None:
        page.fill("#room", room)
    page.click("#join")
    # (Not the signaling state: a test may already be cutting the stream again.)
    expect(page.locator("#me")).to_have_attribute("data-session-id", UUID)
    session_id = page.locator("#me").get_attribute("data-session-id")
    assert session_id
    return session_id


def card(tab: Tab, peer_id: str) -> Locator:
    return tab.page.locator(f'.peer[data-peer="{peer_id}"]')


def step(tab: Tab, peer_id: str, name: str) -> Locator:
    return card(tab, peer_id).locator(f'[data-step="{name}"]')


def wait_connected(tab: Tab, peer_id: str) -> None:
    """Every step of the peer's card is done: offer, answer, candidates both ways, ICE,
    the connection and the data channel."""
    for name in ("offer", "answer", "candidates", "ice", "connection", "channel"):
        expect(step(tab, peer_id, name)).to_have_attribute("data-state", "done")
    expect(card(tab, peer_id)).to_have_attribute("data-channel", "open")


def chat(sender: Tab, receiver: Tab, text: str) -> None:
    sender.page.fill("#chat-input", text)
    sender.page.click("#chat-send")
    expect(sender.page.locator("#chat-log li.mine", has_text=text)).to_have_count(1)
    expect(receiver.page.locator("#chat-log li:not(.mine)", has_text=text)).to_have_count(1)


def selected_pair(tab: Tab, peer_id: str) -> dict[str, str]:
    """The addresses of the candidate pair that carries the connection."""
    result: dict[str, str] = tab.page.evaluate(
        """async (peer) => {
            const pc = window.roomkeeperDemo.links.get(peer).pc;
            const stats = [...(await pc.getStats()).values()];
            const transport = stats.find((s) => s.type === "transport");
            const pair = stats.find((s) => s.id === transport.selectedCandidatePairId);
            const byId = (id) => stats.find((s) => s.id === id);
            return { local: byId(pair.localCandidateId).address,
                     remote: byId(pair.remoteCandidateId).address };
        }""",
        peer_id,
    )
    return result


def offers_received(tab: Tab) -> int:
    return tab.page.locator("#log li", has_text="offer received from").count()


def no_page_errors(*opened: Tab, expected: tuple[str, ...] = ()) -> None:
    """No uncaught exception and no console error in the tabs, but the ``expected`` ones."""
    for tab in opened:
        errors = [
            line
            for line in tab.console
            if line.startswith(("pageerror", "error")) and not any(e in line for e in expected)
        ]
        assert not errors, errors


def test_two_tabs_connect_chat_and_video(
    server: ServerProcess,
    netns: NetNamespace | None,
    tabs: Tabs,
    room: str,
    screenshot: Screenshot,
) -> None:
    a = tabs.open(f"{server.url}/?room={room}")
    b = tabs.open(f"{server.url}/?room={room}")
    expect(a.page.locator("#room")).to_have_value(room)  # from ?room=
    id_a = join(a)
    expect(a.page.locator("#roster-step")).to_have_attribute("data-count", "1")
    id_b = join(b)

    # Each tab sees the other in the roster (A through a roster event, B from its first).
    for tab, other in ((a, id_b), (b, id_a)):
        expect(tab.page.locator(f'#roster .chip[data-session="{other}"]')).to_be_visible()
        expect(tab.page.locator("#roster-step")).to_have_attribute("data-count", "2")

    # B joined last, so B offers; both walk every step to an open data channel.
    expect(step(b, id_a, "offer")).to_contain_text("Offer sent")
    wait_connected(a, id_b)
    wait_connected(b, id_a)
    expect(step(a, id_b, "offer")).to_contain_text("Offer received")
    expect(step(a, id_b, "answer")).to_contain_text("Answer sent")
    expect(step(b, id_a, "answer")).to_contain_text("Answer received")
    # ... over loopback: a real peer-to-peer path on 127.0.0.1 (in the namespace, there is
    # no other address).
    if netns is not None:
        assert selected_pair(a, id_b) == {"local": "127.0.0.1", "remote": "127.0.0.1"}

    chat(a, b, "hello from A")
    chat(b, a, "hello from B")

    # A camera (Chromium's fake device) renegotiates, from either side: each receives the
    # other's video.
    for sender, receiver, sender_id in ((b, a, id_b), (a, b, id_a)):
        sender.page.click("#camera")
        expect(sender.page.locator("#local-video")).to_be_visible()
        expect(card(receiver, sender_id)).to_have_attribute("data-video", "receiving")
        receiver.page.wait_for_function(
            "(peer) => document.querySelector(`.peer[data-peer='${peer}'] video`).videoWidth > 0",
            arg=sender_id,
        )
    assert offers_received(a) == 2 and offers_received(b) == 1  # B's first, then each camera
    for tab, peer in ((a, id_b), (b, id_a)):
        expect(step(tab, peer, "renegotiation")).to_have_attribute("data-count", "2")
        expect(step(tab, peer, "renegotiation")).to_have_attribute("data-state", "done")
    expect(step(a, id_b, "offer")).to_contain_text("Offer received")  # the first exchange
    chat(b, a, "nice camera")
    a.page.wait_for_function("document.querySelector('#local-video').videoWidth > 0")
    screenshot(a.page, "demo")
    no_page_errors(a, b)

    # Closing a tab leaves at once (sendBeacon on pagehide): no 30 s grace period.
    b.page.close()
    expect(a.page.locator("#roster-step")).to_have_attribute("data-count", "1", timeout=5000)
    expect(card(a, id_b)).to_have_attribute("data-left", "left the room")


def wait_down_until_reconnect_seen(tab: Tab, proxy: CutProxy, drop: str) -> None:
    """Hold the cut until the tab has tried (and failed) to come back at least once more."""
    if drop == "network-error":
        before = proxy.counts["refuse"]
        wait_until(lambda: proxy.counts["refuse"] > before, what="a refused reconnection")
    else:
        wait_until(lambda: proxy.connect_requests["503"] >= 1, what="a 503 to the stream")
        # After a 503 the browser's EventSource is closed for good; client.js retries.
        wait_until(
            lambda: "attempt" in (tab.page.locator("#signaling-text").text_content() or ""),
            what="client.js's own reconnection",
        )


@pytest.mark.parametrize("drop", ["network-error", "http-503"])
@pytest.mark.parametrize("moment", ["answerer-before-offer", "offerer-after-offer"])
def test_stream_dropped_mid_negotiation_resumes(
    server: ServerProcess,
    netns: NetNamespace | None,
    tabs: Tabs,
    room: str,
    screenshot: Screenshot,
    moment: str,
    drop: str,
) -> None:
    """One tab's connections (its event stream included) are cut in the middle of the
    negotiation, and stay down while the other side sends what it has to say.

    ``answerer-before-offer``: A's stream is cut after A joined; B joins and sends its offer
    and ICE candidates, which wait in A's queue on the server (A is in its grace period).
    ``offerer-after-offer``: B's offer reaches the server but its answer never reaches B,
    and B's stream is cut at that instant; A answers and sends candidates to a B that is
    gone or going (queued, or written to the dying stream and replayed after Last-Event-ID),
    and B's client retries the offer POST with the same ``id``, which the server must not
    deliver twice.

    ``network-error``: reconnections meet resets and the browser's EventSource keeps
    retrying; back, it resumes with nothing but Last-Event-ID. ``http-503``: the
    EventSource gives up for good and client.js reconnects by itself with session_id,
    token and last_event_id. Either way: the same session, and the connection completes.
    """
    then = "refuse" if drop == "network-error" else "503"
    proxy = CutProxy(netns, server.port)  # the dropped tab's every request goes through it
    try:
        if moment == "answerer-before-offer":
            dropped = a = tabs.open(f"{proxy.url}/?room={room}")
            b = tabs.open(f"{server.url}/?room={room}")
            id_a = join(a)
            assert proxy.cut(then) >= 2  # at least the event stream, both ends
            expect(a.page.locator("#signaling")).to_have_attribute("data-state", "active")
            id_b = join(b)
            # A is still in the roster (grace period), so B offers to A at once...
            expect(b.page.locator(f'#roster .chip[data-session="{id_a}"]')).to_be_visible()
            expect(step(b, id_a, "offer")).to_contain_text("Offer sent")
            talker, talker_id, listener_id = b, id_b, id_a
        else:
            a = tabs.open(f"{server.url}/?room={room}")
            dropped = b = tabs.open(f"{proxy.url}/?room={room}")
            id_a = join(a)
            proxy.cut_after_next_signal(then)  # B's first signal is its offer
            id_b = join(b)
            wait_until(lambda: proxy.lost_responses == 1, what="the offer's lost answer")
            expect(b.page.locator("#signaling")).to_have_attribute("data-state", "active")
            # A got the offer and answers into the void.
            expect(step(a, id_b, "answer")).to_contain_text("Answer sent")
            talker, talker_id, listener_id = a, id_a, id_b
        # Everything the talking side has to say is said (and accepted by the server).
        expect(card(talker, listener_id)).to_have_attribute("data-gathering", "complete")
        wait_until(
            lambda: int(card(talker, listener_id).get_attribute("data-candidates-sent") or 0) >= 1,
            what="candidates sent",
        )
        wait_down_until_reconnect_seen(dropped, proxy, drop)
        proxy.mode = "open"

        # The dropped tab resumes its session; what it missed arrives; the connection
        # completes.
        expect(dropped.page.locator("#signaling-text")).to_have_text(
            "Signaling connected (session resumed)"
        )
        assert dropped.page.locator("#me").get_attribute("data-session-id") == listener_id
        wait_connected(a, id_b)
        wait_connected(b, id_a)
        sent = int(card(talker, listener_id).get_attribute("data-candidates-sent") or 0)
        received = int(card(dropped, talker_id).get_attribute("data-candidates-received") or 0)
        assert received == sent
        assert offers_received(a) == 1  # a retried offer POST is not delivered twice
        if moment == "offerer-after-offer":
            assert proxy.signal_posts >= 2  # the offer went out again after the cut
        chat(a, b, f"hello after the cut ({moment}, {drop})")
        chat(b, a, "welcome back")
        # How the dropped tab came back: the browser's own retry (Last-Event-ID alone) or
        # client.js's (credentials in the query).
        resume = proxy.connect_heads[-1].decode("latin-1").lower()
        if drop == "network-error":
            assert "last-event-id:" in resume and "session_id=" not in resume
        else:
            assert "session_id=" in resume and "token=" in resume and "last_event_id=" in resume
        screenshot(dropped.page, f"resumed-{moment}-{drop}")
        # The cut shows in the console as failed loads (resets, the 503), nothing else.
        no_page_errors(a, b, expected=("Failed to load resource: ",))
    finally:
        proxy.close()


def test_demo_from_another_origin(
    server: ServerProcess,
    netns: NetNamespace | None,
    tabs: Tabs,
    room: str,
    screenshot: Screenshot,
    tmp_path: Path,
) -> None:
    """The page comes from a second origin (a plain static server); its script, and so
    client.js, from the API's origin. EventSource, POSTs (with preflights) and the module
    imports all cross origins."""
    site = tmp_path / "site"
    site.mkdir()
    page_html = resources.files("roomkeeper.http").joinpath("static", "index.html").read_text()
    assert 'src="demo.js"' in page_html
    (site / "index.html").write_text(
        page_html.replace('src="demo.js"', f'src="{server.url}/demo.js"')
    )
    static = StaticServer(netns, site)
    try:
        assert static.url != server.url
        a = tabs.open(f"{static.url}/?room={room}")
        b = tabs.open(f"{static.url}/?room={room}")
        id_a = join(a)
        id_b = join(b)
        wait_connected(a, id_b)
        wait_connected(b, id_a)
        chat(a, b, "hello across origins")
        chat(b, a, "hello back")
        assert a.page.evaluate("location.origin") == static.url
        requests = set(a.requests)
        assert ("GET", f"{static.url}/?room={room}") in requests
        assert ("GET", f"{server.url}/client.js") in requests
        assert ("GET", f"{server.url}/api/connect?room={room}") in requests
        assert ("POST", f"{server.url}/api/signal?room={room}") in requests
        screenshot(a.page, "cross-origin")
        no_page_errors(a, b)
    finally:
        static.close()


def test_server_restart_resumes_both_tabs(
    netns: NetNamespace | None,
    tabs: Tabs,
    room: str,
    screenshot: Screenshot,
    tmp_path: Path,
) -> None:
    """A graceful restart (SIGTERM: every stream gets ``bye shutdown``; SQLite keeps the
    sessions): both tabs' EventSources reconnect by themselves to the server that comes back
    on the same port, resume their sessions, and signaling goes on (a camera renegotiates
    through the new process). The peer connection never noticed."""
    port = free_port(netns)
    flags = {**SERVER_FLAGS, "--storage": str(tmp_path / "rooms.sqlite3"), "--port": str(port)}
    server = ServerProcess(flags, tmp_path / "server.log", netns)
    server.start()
    try:
        a = tabs.open(f"{server.url}/?room={room}")
        b = tabs.open(f"{server.url}/?room={room}")
        id_a = join(a)
        id_b = join(b)
        wait_connected(a, id_b)
        wait_connected(b, id_a)

        assert server.stop() == 0
        for tab in (a, b):
            expect(tab.page.locator("#log li", has_text="server said bye: shutdown")).to_have_count(
                1
            )
            expect(tab.page.locator("#signaling")).to_have_attribute("data-state", "active")
        server.start()
        for tab, me in ((a, id_a), (b, id_b)):
            expect(tab.page.locator("#signaling-text")).to_have_text(
                "Signaling connected (session resumed)"
            )
            assert tab.page.locator("#me").get_attribute("data-session-id") == me
        chat(a, b, "still here after the restart")
        a.page.click("#camera")
        expect(card(b, id_a)).to_have_attribute("data-video", "receiving")
        expect(step(b, id_a, "renegotiation")).to_have_attribute("data-state", "done")
        b.page.wait_for_function(
            "(peer) => document.querySelector(`.peer[data-peer='${peer}'] video`).videoWidth > 0",
            arg=id_a,
        )
        screenshot(b.page, "after-restart")
        no_page_errors(a, b, expected=("Failed to load resource: ",))
    finally:
        server.kill()
