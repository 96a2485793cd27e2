"""TURN through a real coturn with credentials from roomkeeper.

coturn (Debian's ``turnserver``) runs on 127.0.0.1 with ``use-auth-secret``: the secret
roomkeeper signs its credentials with. Two checks:

- a small TURN client (Allocate over UDP, RFC 5766 with long-term credentials) gets an
  allocation with the credentials of a roomkeeper session's ``session`` event, and a 401
  with a credential under another secret, or one whose expiry has passed;
- two demo pages in headless Chromium, forced to ``iceTransportPolicy: "relay"``, open a
  data channel whose selected candidate pair is relay on both ends.

Without ``turnserver`` the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from roomkeeper.ice import turn_credential

from .conftest import (
    SERVER_FLAGS,
    NetNamespace,
    ServerProcess,
    Tabs,
    _skip_or_fail,
    _tool,
    free_port,
    in_namespace,
)

REALM = "roomkeeper.test"
ANY = re.compile(".+")

# --- coturn ---------------------------------------------------------------------------------


@attrs.define
class Coturn:
    """One ``turnserver`` on 127.0.0.1 (in ``ns`` when given), with a random shared secret."""

    folder: Path
    ns: NetNamespace | None = None
    secret: str = attrs.Factory(lambda: secrets.token_urlsafe(24))
    port: int = 0
    relay_ports: range = range(0)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.folder / "turnserver.log"

    def start(self) -> None:
        binary = _tool("turnserver")
        if binary is None:
            _skip_or_fail("TURN tests need coturn's turnserver (apt-get install coturn)")
            return
        self.port = free_port(self.ns)
        relay_low = 40000 + (self.port % 10000)
        self.relay_ports = range(relay_low, relay_low + 201)
        argv = [
            binary,
            "-n",  # no configuration file: everything is here
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}",
            f"--min-port={relay_low}",
            f"--max-port={relay_low + 200}",
            "--use-auth-secret",
            f"--static-auth-secret={self.secret}",
            f"--realm={REALM}",
            "--allow-loopback-peers",
            "--no-multicast-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            f"--log-file={self.log_path}",
            "--simple-log",
            "--no-stdout-log",
            f"--pidfile={self.folder / 'turnserver.pid'}",
            f"--userdb={self.folder / 'turndb.sqlite'}",
        ]
        if self.ns is not None:
            argv = self.ns.command(argv)
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"turnserver did not start:\n{self.log()}")
            time.sleep(0.1)

    def answers(self) -> bool:
        """Whether a STUN Binding request gets its success answer."""
        try:
            reply = exchange(self, stun_message(BINDING, secrets.token_bytes(12)), wait=0.3)
        except OSError:
            return False
        return reply is not None and reply.kind == BINDING_SUCCESS

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- a small TURN client (RFC 5389, RFC 5766) -----------------------------------------------

MAGIC = 0x2112A442
BINDING, BINDING_SUCCESS = 0x0001, 0x0101
ALLOCATE, ALLOCATE_SUCCESS, ALLOCATE_ERROR = 0x0003, 0x0103, 0x0113
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE = 0x0006, 0x0008, 0x0009
REALM_ATTR, NONCE, REQUESTED_TRANSPORT = 0x0014, 0x0015, 0x0019
UDP = 17


@attrs.frozen
class StunReply:
    kind: int
    attributes: dict[int, bytes]

    @property
    def error(self) -> int | None:
        raw = self.attributes.get(ERROR_CODE)
        return None if raw is None else raw[2] * 100 + raw[3]


def _attribute(kind: int, value: bytes) -> bytes:
    padding = b"\0" * (-len(value) % 4)
    return struct.pack("!HH", kind, len(value)) + value + padding


def stun_message(
    kind: int, txid: bytes, attributes: bytes = b"", key: bytes | None = None
) -> bytes:
    """A STUN message; with ``key``, MESSAGE-INTEGRITY (HMAC-SHA1) last."""
    if key is None:
        return struct.pack("!HHI", kind, len(attributes), MAGIC) + txid + attributes
    length = len(attributes) + 24  # the integrity attribute counts in the length it covers
    head = struct.pack("!HHI", kind, length, MAGIC) + txid + attributes
    return head + _attribute(MESSAGE_INTEGRITY, hmac.new(key, head, hashlib.sha1).digest())


def parse(data: bytes) -> StunReply:
    kind, length, magic = struct.unpack("!HHI", data[:8])
    assert magic == MAGIC
    attributes: dict[int, bytes] = {}
    at = 20
    while at < 20 + length:
        attr, size = struct.unpack("!HH", data[at : at + 4])
        attributes.setdefault(attr, data[at + 4 : at + 4 + size])
        at += 4 + size + (-size % 4)
    return StunReply(kind, attributes)


def udp_socket(turn: Coturn) -> socket.socket:
    """A UDP socket where ``turn`` listens (in its namespace, if any)."""

    def make() -> socket.socket:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    sock: socket.socket = in_namespace(turn.ns, make)
    return sock


def exchange(
    turn: Coturn, message: bytes, wait: float = 3, sock: socket.socket | None = None
) -> StunReply | None:
    """Send ``message`` to ``turn`` and parse its answer (None if none came in ``wait``)."""
    if sock is None:
        with udp_socket(turn) as own:
            return exchange(turn, message, wait, own)
    sock.settimeout(wait)
    sock.sendto(message, ("127.0.0.1", turn.port))
    try:
        data, _ = sock.recvfrom(4096)
    except TimeoutError:
        return None
    return parse(data)


def allocate(turn: Coturn, username: str, password: str) -> StunReply:
    """An Allocate with the long-term credential ``username``/``password``, from one
    socket: the first request learns the realm and nonce (bound to that 5-tuple) from its
    401, the second signs itself."""
    transport = _attribute(REQUESTED_TRANSPORT, bytes([UDP, 0, 0, 0]))
    with udp_socket(turn) as sock:
        unsigned = stun_message(ALLOCATE, secrets.token_bytes(12), transport)
        first = exchange(turn, unsigned, sock=sock)
        assert first is not None and first.error == 401, first
        realm, nonce = first.attributes[REALM_ATTR], first.attributes[NONCE]
        assert realm.decode() == REALM
        key = hashlib.md5(f"{username}:{realm.decode()}:{password}".encode()).digest()
        attributes = (
            transport
            + _attribute(USERNAME, username.encode())
            + _attribute(REALM_ATTR, realm)
            + _attribute(NONCE, nonce)
        )
        signed = stun_message(ALLOCATE, secrets.token_bytes(12), attributes, key)
        reply = exchange(turn, signed, sock=sock)
    assert reply is not None, "no answer to the signed Allocate"
    return reply


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    turn = Coturn(tmp_path)
    turn.start()
    yield turn
    turn.stop()


def roomkeeper_with_turn(
    turn: Coturn, folder: Path, ns: NetNamespace | None, **flags: str
) -> ServerProcess:
    server = ServerProcess(
        {
            **SERVER_FLAGS,
            "--turn-uris": f"turn:127.0.0.1:{turn.port}?transport=udp",
            **flags,
        },
        folder / "server.log",
        ns,
    )
    patch = pytest.MonkeyPatch()
    patch.setenv("ROOMKEEPER_TURN_SECRET", turn.secret)  # the variable, as docs advise
    try:
        server.start()
    finally:
        patch.undo()
    return server


def session_event(server: ServerProcess, room: str) -> dict[str, Any]:
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{server.url}/api/connect", params={"room": room}) as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("data:"):
                data: dict[str, Any] = json.loads(line[5:])
                return data
    raise AssertionError("no session event")


# --- coturn accepts roomkeeper's credentials, and only those --------------------------------


def test_coturn_accepts_roomkeepers_credentials_and_refuses_others(
    coturn: Coturn, tmp_path: Path
) -> None:
    server = roomkeeper_with_turn(coturn, tmp_path, None)
    try:
        session = session_event(server, "turn-check")
    finally:
        server.kill()
    (turn,) = session["ice_servers"]
    assert turn["urls"] == [f"turn:127.0.0.1:{coturn.port}?transport=udp"]
    granted = allocate(coturn, turn["username"], turn["credential"])
    assert granted.kind == ALLOCATE_SUCCESS, (granted, coturn.log())

    sid = session["session_id"]
    later = int(time.time()) + 600
    wrong_secret = turn_credential("not-" + coturn.secret, sid, later)
    assert allocate(coturn, *wrong_secret).error == 401
    expired = turn_credential(coturn.secret, sid, int(time.time()) - 60)
    assert allocate(coturn, *expired).error == 401
    # A username whose expiry was moved forward no longer fits the password.
    forged = (f"{later}:{sid}", turn["credential"])
    assert allocate(coturn, *forged).error == 401
    assert coturn.secret not in server.log()


# --- two browsers through the relay ---------------------------------------------------------


@pytest.fixture
def relayed(
    isolated: NetNamespace | None, tmp_path: Path
) -> Iterator[tuple[Coturn, ServerProcess]]:
    turn = Coturn(tmp_path, isolated)
    turn.start()
    server = roomkeeper_with_turn(turn, tmp_path, isolated)
    yield turn, server
    server.kill()
    turn.stop()


def relay_pair(page: Any, peer: str) -> dict[str, Any]:
    """The selected candidate pair's types, the local (relayed) address, and the policy."""
    result: dict[str, Any] = page.evaluate(
        """async (peer) => {
            const pc = window.roomkeeperDemo.links.get(peer).pc;
            const stats = [...(await pc.getStats()).values()];
            const transport = stats.find((s) => s.type === "transport");
            const pair = stats.find((s) => s.id === transport.selectedCandidatePairId);
            const byId = (id) => stats.find((s) => s.id === id);
            const local = byId(pair.localCandidateId);
            const remote = byId(pair.remoteCandidateId);
            return { local: local.candidateType, remote: remote.candidateType,
                     address: `${local.address}:${local.port}`,
                     policy: pc.getConfiguration().iceTransportPolicy };
        }""",
        peer,
    )
    return result


@pytest.mark.e2e
def test_two_demo_tabs_connect_through_coturn_when_relay_is_forced(
    relayed: tuple[Coturn, ServerProcess], tabs: Tabs, room: str
) -> None:
    from playwright.sync_api import expect

    turn, server = relayed
    url = f"{server.url}/?room={room}&autojoin=1&relay=1"
    a = tabs.open(url)
    expect(a.page.locator("#me")).to_have_attribute("data-session-id", ANY)
    b = tabs.open(url)
    ids = {}
    for tab in (a, b):
        expect(tab.page.locator("#me")).to_have_attribute("data-session-id", ANY)
        ids[id(tab)] = tab.page.locator("#me").get_attribute("data-session-id")
    for tab, other in ((a, b), (b, a)):
        peer = ids[id(other)]
        assert peer
        card = tab.page.locator(f'.peer[data-peer="{peer}"]')
        expect(card).to_have_attribute("data-channel", "open")
        pair = relay_pair(tab.page, peer)
        address = pair.pop("address")
        assert pair == {"local": "relay", "remote": "relay", "policy": "relay"}, pair
        host, port = address.rsplit(":", 1)  # an address our coturn relays from
        assert host == "127.0.0.1" and int(port) in turn.relay_ports, address
    b.page.fill("#chat-input", "through the relay")
    b.page.click("#chat-send")
    expect(a.page.locator("#chat-log li:not(.mine)", has_text="through the relay")).to_have_count(1)


# --- client.js refreshes the credentials before they expire ---------------------------------

REFRESH = """
async ([api, room]) => {
  const { join } = await import(`${api}/client.js`);
  const r = await join(api, room);
  const pc = r.manage(new RTCPeerConnection(r.rtcConfiguration({ iceTransportPolicy: "relay" })));
  const first = r.iceServers[0].username;
  const refreshed = new Promise((resolve) => r.addEventListener("iceservers", resolve));
  await refreshed;  // at 80 % of the 3 s lifetime
  const out = {
    first,
    fresh: r.iceServers[0].username,
    applied: pc.getConfiguration().iceServers[0].username,
    policy: pc.getConfiguration().iceTransportPolicy,
    session: r.sessionId,
  };
  const own = await join(api, room, { iceServers: [{ urls: "stun:127.0.0.1:9" }] });
  out.own = own.rtcConfiguration().iceServers;
  await r.leave();
  await own.leave();
  pc.close();
  return out;
}
"""


@pytest.mark.e2e
def test_client_js_refreshes_turn_credentials_on_managed_connections(
    netns: NetNamespace | None, tabs: Tabs, room: str, tmp_path: Path
) -> None:
    server = ServerProcess(
        {
            **SERVER_FLAGS,
            "--turn-uris": "turn:127.0.0.1:3478",
            "--turn-secret": "a-turn-secret-for-refresh-tests",
            "--turn-ttl": "3",
        },
        tmp_path / "server.log",
        netns,
    )
    server.start()
    try:
        tab = tabs.open(f"{server.url}/")
        out = tab.page.evaluate(REFRESH, [server.url, room])
    finally:
        server.kill()
    first, fresh = int(out["first"].split(":")[0]), int(out["fresh"].split(":")[0])
    assert out["first"].endswith(f":{out['session']}") and fresh > first
    assert out["applied"] == out["fresh"] and out["policy"] == "relay"
    assert out["own"] == [{"urls": "stun:127.0.0.1:9"}]
