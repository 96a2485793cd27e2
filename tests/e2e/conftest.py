"""End-to-end: the demo page and client.js in a real headless Chromium, against a real server.

What it needs: Debian's ``chromium`` (no browser download is possible, so Playwright drives
``/usr/bin/chromium``) and the ``playwright`` package (in the ``test`` extra). Without them
the tests skip, except under ``CI=true``, where they fail.

Determinism: peers in one Chromium connect over loopback. Left on the host, Chromium also
gathers its other addresses and may pair them with the peer's 127.0.0.1 and stall. So,
when we can (root, ``unshare`` and ``nsenter``), everything runs in a network namespace of
its own that has only ``lo``: one ``unshare -n`` holder process keeps it, the server and
Chromium start in it through ``nsenter``, and the test's own little servers (a static
file server for another origin, a TCP proxy that can cut connections) run in threads that
enter it with ``setns(2)``. Playwright talks to Chromium over a pipe, which crosses
namespaces. Where no namespace can be made, the tests whose peers connect skip (fail under
``CI=true``); ``ROOMKEEPER_E2E_NETNS=0`` runs them on the host's network instead (there the
connection may pair 127.0.0.1 with the machine's other addresses).

Screenshots go to the test's tmp folder; set ``ROOMKEEPER_E2E_SCREENSHOTS=DIR`` to keep them.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright

CHROMIUM = (
    os.environ.get("ROOMKEEPER_E2E_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
# Playwright 1.65's own --disable-features list (chromiumSwitches in its driver).
PLAYWRIGHT_DISABLED = [
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "LensOverlay",
    "MediaRouter",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect",
    "OptimizationHints",
    "NetworkTimeServiceQuerying",
    "AimEnabled",
    "PreconnectToSearch",
]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Real addresses in ICE candidates (not .local names), loopback allowed. Chromium takes
    # the last --disable-features only, and Playwright puts its own first: repeat its list.
    "--disable-features=" + ",".join(["WebRtcHideLocalIpsWithMdns", *PLAYWRIGHT_DISABLED]),
    "--allow-loopback-in-peer-connection",
    # A fake camera and no permission prompt.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
SERVER_FLAGS = {
    "--storage": "memory",
    "--retry-ms": "300",  # EventSource reconnects quickly after a drop
    "--heartbeat": "5",
    "--grace": "30",
}
TIMEOUT_MS = 10_000  # any single wait in a page
SCREENSHOTS_ENV = "ROOMKEEPER_E2E_SCREENSHOTS"


# --- what the tests need ---------------------------------------------------------------------


def _missing() -> list[str]:
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -e '.[test]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"chromium at {CHROMIUM} (apt-get install chromium)")
    return missing


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(reason + " (CI=true: not skipping)", pytrace=False)
    pytest.skip(reason)


def require_browser() -> None:
    """Skip when Chromium or Playwright is missing; under ``CI=true``, fail instead."""
    missing = _missing()
    if missing:
        _skip_or_fail("e2e needs " + " and ".join(missing))


def require_isolated_network(ns: NetNamespace | None) -> None:
    """Peer-to-peer tests need the namespace (see the module's doc): skip without it (fail
    under ``CI=true``), unless ROOMKEEPER_E2E_NETNS=0 asked for the host's network."""
    if ns is None and os.environ.get("ROOMKEEPER_E2E_NETNS") != "0":
        _skip_or_fail(
            "WebRTC e2e tests need a network namespace with only lo (root, unshare, nsenter, "
            "ip); ROOMKEEPER_E2E_NETNS=0 runs them on the host's network instead"
        )


# --- the network namespace -------------------------------------------------------------------

CLONE_NEWNET = 0x40000000


@attrs.define
class NetNamespace:
    """A network namespace with only ``lo`` (up), kept alive by a holder process."""

    holder: subprocess.Popen[str]
    nsenter: str

    @property
    def path(self) -> str:
        return f"/proc/{self.holder.pid}/ns/net"

    @classmethod
    def create(cls) -> NetNamespace | None:
        """A new namespace, or None where we may not make one (not root, no tools)."""
        if os.environ.get("ROOMKEEPER_E2E_NETNS", "1") == "0":
            return None
        unshare, nsenter, ip = (_tool(name) for name in ("unshare", "nsenter", "ip"))
        if os.geteuid() != 0 or not (unshare and nsenter and ip):
            return None
        # The holder waits for the end of its stdin: it goes when pytest does, however.
        script = f"{ip} link set lo up && echo ready && read _"
        holder = subprocess.Popen(
            [unshare, "-n", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.PIPE,
            text=True,
        )
        if _read_line(holder, 10).strip() != "ready":
            holder.kill()
            holder.wait()
            return None
        return cls(holder, nsenter)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return [self.nsenter, f"--net={self.path}", "--", *argv]

    def enter(self) -> None:
        """Move the calling thread (only it) into the namespace; sockets it makes from now
        on live there, whichever thread uses them later."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns: {os.strerror(err)}")
        finally:
            os.close(fd)

    def close(self) -> None:
        assert self.holder.stdin is not None
        self.holder.stdin.close()
        try:
            self.holder.wait(5)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.wait()


def _tool(name: str) -> str | None:
    """A system tool's path, also where root's tools live when they are not on PATH."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return None


def _read_line(proc: subprocess.Popen[str], wait: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(wait):
            return ""
    return proc.stdout.readline()


def in_namespace(ns: NetNamespace | None, make: Callable[[], Any]) -> Any:
    """``make()`` run in a fresh thread inside ``ns`` (or here, without one): for making
    listening sockets that must live in the namespace."""
    if ns is None:
        return make()
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ns.enter()
            result.append(make())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="netns-setup")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def free_port(ns: NetNamespace | None) -> int:
    """A TCP port free on 127.0.0.1 (in the namespace, where only the tests bind any)."""

    def probe() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port

    port: int = in_namespace(ns, probe)
    return port


# --- the server process ----------------------------------------------------------------------


@attrs.define
class ServerProcess:
    """One ``roomkeeper serve`` process (the pattern of tests/integration/conftest.py), in
    the namespace when there is one. Its stderr goes to ``log_path``."""

    flags: dict[str, str]
    log_path: Path
    ns: NetNamespace | None = None
    proc: subprocess.Popen[str] | None = None
    url: str = ""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self, wait: float = 20) -> None:
        args = [sys.executable, "-m", "roomkeeper", "serve", "--port", "0"]
        for flag, value in self.flags.items():
            args += [flag, value]
        if self.ns is not None:
            args = self.ns.command(args)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
            )
        line = _read_line(self.proc, wait)
        if "serving on" not in line:
            self.kill()
            raise RuntimeError(f"server did not start: {line!r}\n{self.log()}")
        self.url = line.split("serving on ", 1)[1].strip()

    def stop(self, sig: int = signal.SIGTERM, wait: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(wait)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- the test's own servers (threads, inside the namespace) ----------------------------------


class StaticServer:
    """Serves a folder over HTTP on 127.0.0.1 (another origin than the API's)."""

    def __init__(self, ns: NetNamespace | None, folder: Path) -> None:
        handler = partial(_QuietHandler, directory=str(folder))
        self.httpd: ThreadingHTTPServer = in_namespace(
            ns, lambda: ThreadingHTTPServer(("127.0.0.1", 0), handler)
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class CutProxy:
    """A TCP proxy to ``upstream_port`` that can drop every connection it carries.

    ``mode`` decides what new connections get: ``"open"`` (proxied), ``"refuse"`` (closed
    at once: a network error to the browser) or ``"503"`` (an HTTP 503, which makes an
    EventSource give up for good). ``counts`` tells how many connections met each mode.
    """

    def __init__(self, ns: NetNamespace | None, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.mode = "open"
        self.counts: dict[str, int] = {"open": 0, "refuse": 0, "503": 0}
        self.connect_requests: dict[str, int] = {"open": 0, "refuse": 0, "503": 0}
        self.connect_heads: list[bytes] = []  # request heads of proxied GET /api/connect
        self.signal_posts = 0  # proxied POST /api/signal requests
        self.lost_responses = 0
        self._trap: str | None = None  # see cut_after_next_signal
        self._trap_then = "refuse"
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._closed = False

        def listen() -> socket.socket:
            sock = socket.create_server(("127.0.0.1", 0))
            sock.settimeout(0.2)
            return sock

        self.listener: socket.socket = in_namespace(ns, listen)
        self.ns = ns
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self) -> None:
        if self.ns is not None:
            self.ns.enter()  # upstream sockets are made here
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                mode = self.mode
                self.counts[mode] += 1
            if mode == "refuse":
                _abort(client)
                continue
            if mode == "503":
                threading.Thread(target=self._answer_503, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _abort(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._live.update((client, upstream))
            pair: dict[str, bool] = {}
            for src, dst, upward in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(src, dst, upward, pair), daemon=True
                ).start()

    def _sniff(self, chunk: bytes, pair: dict[str, bool]) -> None:
        with self._lock:
            if chunk.startswith(b"GET /api/connect"):
                self.connect_requests["open"] += 1
                self.connect_heads.append(chunk.split(b"\r\n\r\n", 1)[0])
            elif chunk.startswith(b"POST /api/signal"):
                self.signal_posts += 1
                if self._trap is not None:
                    pair["lose_response"] = True
                    self._trap_then, self._trap = self._trap, None

    def cut_after_next_signal(self, then: str = "refuse") -> None:
        """Pass the next ``POST /api/signal`` to the server, but when its answer comes back,
        drop it and every connection (as ``cut(then)``): the server took the signal, the
        client saw a network error, and its event stream is gone too."""
        with self._lock:
            self._trap = then

    def _answer_503(self, client: socket.socket) -> None:
        client.settimeout(5)
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(4096)
                if not chunk:
                    break
                head += chunk
            if b"/api/connect" in head.split(b"\r\n", 1)[0]:
                with self._lock:
                    self.connect_requests["503"] += 1
            body = b'{"error":"Service Unavailable: cut by the test proxy"}'
            client.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Retry-After: 1\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        except OSError:
            pass
        finally:
            client.close()

    def _pump(
        self, src: socket.socket, dst: socket.socket, upward: bool, pair: dict[str, bool]
    ) -> None:
        try:
            while chunk := src.recv(65536):
                if upward:
                    self._sniff(chunk, pair)
                elif pair.pop("lose_response", False):
                    # The server has answered the trapped POST: the client never hears it.
                    with self._lock:
                        self.lost_responses += 1
                        then = self._trap_then
                    self.cut(then)
                    return
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with self._lock:
                    self._live.discard(sock)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self, then: str = "refuse") -> int:
        """Drop every connection now, and set ``mode`` to ``then`` first, so that
        reconnections meet it. How many sockets were dropped.

        A ``shutdown`` (not a ``close``: that would not wake the pump threads blocked in
        ``recv``, and the connection would live on): the browser sees its response end in
        the middle (an incomplete chunked body), a network error."""
        with self._lock:
            self.mode = then
            live = list(self._live)
            self._live.clear()
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(live)

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()


def _abort(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): no graceful end for either side."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    except OSError:
        pass


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def netns() -> Iterator[NetNamespace | None]:
    require_browser()
    ns = NetNamespace.create()
    yield ns
    if ns is not None:
        ns.close()


@pytest.fixture
def isolated(netns: NetNamespace | None) -> NetNamespace | None:
    """The namespace, for tests whose peers connect to each other (see
    ``require_isolated_network``)."""
    require_isolated_network(netns)
    return netns


@pytest.fixture(scope="module")
def server(
    netns: NetNamespace | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One in-memory server per module; tests use rooms of their own."""
    proc = ServerProcess(
        dict(SERVER_FLAGS), tmp_path_factory.mktemp("server") / "server.log", netns
    )
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def browser(
    netns: NetNamespace | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # (its default is 5 s; CI machines can be busy)
    executable = CHROMIUM
    if netns is not None:
        wrapper = tmp_path_factory.mktemp("chromium") / "chromium-in-netns"
        wrapper.write_text(
            f'#!/bin/sh\nexec {netns.nsenter} --net={netns.path} -- {CHROMIUM} "$@"\n',
            encoding="utf-8",
        )
        wrapper.chmod(0o755)
        executable = str(wrapper)
    with sync_playwright() as pw:
        launched = _launch(pw, executable)
        yield launched
        launched.close()


def _launch(pw: Playwright, executable: str) -> Browser:
    return pw.chromium.launch(
        executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=30_000
    )


@attrs.define
class Tab:
    """A page in a browser context of its own (its own 'user'), and what its console said."""

    page: Page
    context: BrowserContext
    console: list[str]
    requests: list[tuple[str, str]]  # (method, url) of every request the page made


class Tabs:
    """Opens pages; closes every context at the end of the test."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.opened: list[Tab] = []

    def open(self, url: str) -> Tab:
        origin = "/".join(url.split("/", 3)[:3])
        context = self.browser.new_context(viewport={"width": 1180, "height": 820})
        context.grant_permissions(["camera", "microphone"], origin=origin)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
        requests: list[tuple[str, str]] = []
        page.on("request", lambda req: requests.append((req.method, req.url)))
        tab = Tab(page, context, console, requests)
        self.opened.append(tab)
        page.goto(url)
        return tab

    def close(self) -> None:
        for tab in self.opened:
            with contextlib.suppress(Exception):
                tab.context.close()


@pytest.fixture
def tabs(browser: Browser) -> Iterator[Tabs]:
    opened = Tabs(browser)
    yield opened
    opened.close()


@pytest.fixture
def room() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Page, str], Path]:
    """Save a screenshot of ``page`` as ``NAME.png``; also in $ROOMKEEPER_E2E_SCREENSHOTS."""

    def take(page: Page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        keep = os.environ.get(SCREENSHOTS_ENV)
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(keep) / path.name)
        return path

    return take


def wait_until(
    check: Callable[[], bool], timeout: float = TIMEOUT_MS / 1000, what: str = ""
) -> None:
    """Poll ``check`` (from the test's thread) until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)
