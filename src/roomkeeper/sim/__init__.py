"""A deterministic simulator of signaling workloads on the real runtime and Room actor.

``roomkeeper simulate WORKLOAD --seed N --trace FILE`` runs one (see docs/research.md);
``roomkeeper trace-report TRACE`` summarises and plots a lifecycle trace.
"""

from .engine import EPOCH, simulate
from .report import TraceError, TraceStats, format_summary
from .workload import DEFAULTS, Workload, WorkloadError, load_workload

__all__ = [
    "DEFAULTS",
    "EPOCH",
    "TraceError",
    "TraceStats",
    "Workload",
    "WorkloadError",
    "format_summary",
    "load_workload",
    "simulate",
]
