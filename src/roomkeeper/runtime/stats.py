"""Counters the runtime keeps per namespace, for metrics and for researchers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from .mailbox import Envelope


@attrs.define
class NamespaceStats:
    """Running totals for one namespace. ``snapshot`` adds the gauges."""

    activations: int = 0
    hibernations: int = 0
    wakes: dict[str, int] = attrs.Factory(lambda: {"message": 0, "alarm": 0, "stream": 0})
    messages: int = 0
    errors: int = 0
    mailbox_wait_total: float = 0.0
    handling_total: float = 0.0

    def on_dequeue(self, envelope: Envelope) -> None:
        envelope.waited = trio.current_time() - envelope.enqueued_at
        self.mailbox_wait_total += envelope.waited

    def on_handled(self, seconds: float) -> None:
        self.messages += 1
        self.handling_total += seconds


@attrs.frozen
class NamespaceSnapshot:
    """A point-in-time view of one namespace."""

    namespace: str
    live: int
    hibernated: int
    activations: int
    hibernations: int
    wakes: dict[str, int]
    messages: int
    errors: int
    mailbox_depth: int
    mailbox_max: int
    streams: int
