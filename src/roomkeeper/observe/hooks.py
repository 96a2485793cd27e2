"""Wiring into the Quart app: request ids, the access log, HTTP metrics, ``/metrics`` and
the admin routes, all through before/after-request hooks and added routes.

The API's routes are served outside Quart; their layer calls ``record`` with the room the
handler checked: this module never reads a request's query string."""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

import attrs
from quart import Quart, Request, Response, request
from werkzeug.exceptions import NotFound

from ..runtime import ActorSystem
from ..runtime.ids import ActorId
from .admin import AdminView
from .logs import new_request_id, request_id_var, sane_request_id
from .metrics import HTTP_METHODS, Metrics
from .storage import TimedBackend

__all__ = ["EXTENSION", "SIGNAL_ROUTE", "Observability", "install", "observability"]

EXTENSION = "roomkeeper.observe"
OTHER = "other"
SIGNAL_ROUTE = "/api/signal"

access_log = logging.getLogger("roomkeeper.access")


@attrs.define
class _Served:
    """What ``before`` notes about the request its task serves, for ``after``."""

    request: Request
    started: float
    request_id: str
    route: str | None = None


_served: ContextVar[_Served | None] = ContextVar("roomkeeper_served", default=None)


class Observability:
    """What ``install`` added to one app: its metrics, and the admin view (off until
    ``enable_admin`` is given a token)."""

    def __init__(self, app: Quart, system: ActorSystem, namespace: str) -> None:
        self.app = app
        self.system = system
        self.namespace = namespace
        self.metrics = Metrics(system)
        if isinstance(system.backend, TimedBackend):
            storage = system.backend.metrics
            self.metrics.registry.register(storage.duration)
            self.metrics.registry.register(storage.errors)
        self.admin = AdminView(system, namespace)
        self._static_routes: frozenset[str] | None = None
        # Labelled children, looked up once per label set (``labels()`` checks and locks).
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[str, Any] = {}

    def enable_admin(self, token: str) -> None:
        """Serve ``/admin/`` to holders of ``token``; an empty token turns it off."""
        self.admin.enable(token)

    # -- labels --------------------------------------------------------------------------
    def route(self, req: Request) -> str:
        """The matched route's template; for a path that matched no rule (a 405, say),
        the path itself if it is the template of a rule without variables, else ``other``."""
        rule = req.url_rule
        if rule is not None:
            return rule.rule
        if self._static_routes is None:
            rules = self.app.url_map.iter_rules()
            self._static_routes = frozenset(r.rule for r in rules if not r.arguments)
        path = req.path
        return path if path in self._static_routes else OTHER

    # -- hooks ---------------------------------------------------------------------------
    async def before(self) -> None:
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        rid = sane_request_id(req.headers.get("X-Request-Id")) or new_request_id()
        served = _Served(req, time.perf_counter(), rid)
        _served.set(served)
        request_id_var.set(rid)
        if not self.admin.enabled and req.path.startswith("/admin/"):
            served.route = OTHER
            raise NotFound()  # as if the routes did not exist (no 405 either)

    async def after(self, response: Response) -> Response:
        now = time.perf_counter()
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        served = _served.get()
        if served is None or served.request is not req:  # an earlier hook answered first
            served = _Served(req, now, new_request_id())
        route = served.route or self.route(req)
        self.record(route, req.method, response.status_code, now - served.started, None)
        response.headers["X-Request-Id"] = served.request_id
        return response

    def record(
        self, route: str, method: str, status: int, elapsed: float, room: str | None
    ) -> None:
        """Count and time one answered request, log it, and note the activity of the room
        it named (None: none, or none that passed the handler's checks)."""
        if method not in HTTP_METHODS:
            method = OTHER
        metrics = self.metrics
        key = (route, method, status)
        counter = self._counted.get(key)
        if counter is None:
            counter = self._counted[key] = metrics.http_requests.labels(route, method, str(status))
        counter.inc()
        timer = self._timed.get(route)
        if timer is None:
            timer = self._timed[route] = metrics.http_duration.labels(route)
        timer.observe(elapsed)
        if route == SIGNAL_ROUTE and method == "POST" and status == 200:
            metrics.signals_relayed.inc()
            metrics.signal_delivery.observe(elapsed)
        level = logging.WARNING if status >= 500 else logging.DEBUG
        logged = access_log.isEnabledFor(level)
        tracker = self.admin.tracker
        touched = tracker is not None and status < 400 and method in ("GET", "POST")
        actor = ActorId(self.namespace, room) if room is not None and (logged or touched) else None
        if logged:
            fields: dict[str, object] = {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
            }
            if actor is not None:
                fields["actor"] = actor.short
            access_log.log(
                level, "%s %s %d %.1f ms", method, route, status, elapsed * 1000, extra=fields
            )
        if touched and tracker is not None and actor is not None:
            tracker.touch(actor)

    # -- routes --------------------------------------------------------------------------
    async def metrics_view(self) -> Response:
        body, content_type = self.metrics.render(request.headers.get("Accept"))
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def install(app: Quart, system: ActorSystem, *, namespace: str = "rooms") -> Observability:
    """Add metrics (``GET /metrics``), request ids (``X-Request-Id``), the access log and
    the admin routes (answering 404 until ``enable_admin``) to ``app``."""
    obs = Observability(app, system, namespace)
    app.extensions[EXTENSION] = obs
    app.before_request(obs.before)
    app.after_request(obs.after)
    app.add_url_rule("/metrics", "metrics", obs.metrics_view, methods=["GET"])
    app.add_url_rule("/admin/rooms", "admin_rooms", obs.admin.rooms, methods=["GET"])
    app.add_url_rule("/admin/rooms/<path:name>", "admin_room", obs.admin.room, methods=["GET"])
    return obs


def observability(app: Quart) -> Observability:
    """The ``Observability`` that ``install`` added to ``app``."""
    obs = app.extensions[EXTENSION]
    assert isinstance(obs, Observability)
    return obs
