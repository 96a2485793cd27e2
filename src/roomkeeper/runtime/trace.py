"""Lifecycle events of the runtime, for traces, metrics and researchers.

Observers are plain callables; with none registered the runtime builds no events at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs


@attrs.frozen
class TraceEvent:
    """One thing that happened to one actor.

    ``t`` is trio's monotonic clock (mock time under ``MockClock``); ``kind`` is one of
    ``activated`` (``cause``: first, message, alarm, stream), ``hibernated``,
    ``handled`` (``what``, ``wait`` in the mailbox, ``took`` handling and commit, ``ok``,
    ``wrote``), ``alarm_set`` (``at``), ``stream_opened``, ``stream_closed`` (``reason``).
    """

    t: float
    kind: str
    namespace: str
    actor: str
    fields: dict[str, Any] = attrs.Factory(dict)


Observer = Callable[[TraceEvent], None]
