"""Observability for operators: Prometheus metrics, structured logs with request ids,
the lifecycle trace file and the token-protected admin view.

``install(app, system)`` adds it all to the HTTP app; ``server.py`` sets up logging,
times the storage backend and writes the trace. See docs/operations.md#observability.
"""

from .admin import ActivityTracker, AdminError, AdminView
from .hooks import Observability, install, observability
from .logs import JsonFormatter, TextFormatter, request_id_var, sane_request_id, setup_logging
from .metrics import Metrics, RuntimeCollector
from .storage import StorageMetrics, TimedBackend
from .tracing import Guarded, trace_to_file

__all__ = [
    "ActivityTracker",
    "AdminError",
    "AdminView",
    "Guarded",
    "JsonFormatter",
    "Metrics",
    "Observability",
    "RuntimeCollector",
    "StorageMetrics",
    "TextFormatter",
    "TimedBackend",
    "install",
    "observability",
    "request_id_var",
    "sane_request_id",
    "setup_logging",
    "trace_to_file",
]
