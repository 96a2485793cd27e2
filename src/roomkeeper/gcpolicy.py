"""The cyclic garbage collector's policy in a process of roomkeeper's own.

CPython's collector runs a full (generation 2) collection whenever the objects promoted
to its oldest generation since the last one exceed a quarter of it, and a full
collection scans every tracked object. A server's heap grows with its streams and rooms,
so while it grows it pays a scan of the whole heap at every 25 % of growth: 6 s of the
20 s of CPU that opening 10,000 streams took, for 4,684 objects collected
(docs/benchmarks.md, "The collector's full scans").

`FrozenGenerations` keeps CPython's collector, and freezes what survives each full
collection (`gc.freeze`), so that the next one scans only what came since. A frozen
object in a garbage cycle is not collected while frozen (roomkeeper's own connections
and rooms leave no cycles: bench/connection_garbage.py), so once the heap has grown by
``regrowth`` times since the last scan of everything, the next full collection
unfreezes first: it scans everything, collects the cycles among the frozen objects, and
freezes the survivors again. Garbage held frozen is so bounded by ``regrowth - 1`` times
the heap at that scan, and the scans of everything come at geometric steps of the
heap's size. The youngest generation is collected every ``young`` allocations instead
of CPython's 700, so that the oldest is reached ten times less often.

The heap's size is pymalloc's count of allocated blocks (`sys.getallocatedblocks`, read
from its arenas), not `gc.get_freeze_count`, which walks every frozen object. Only for
a process of roomkeeper's own (``roomkeeper serve``): the policy changes the whole
interpreter's collector, and an embedded server leaves its host's alone.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import attrs

OLDEST = 2
"""CPython's oldest generation, the one a full collection collects."""

REGROWTH = 1.5
"""The default ``regrowth``: the heap grown by half."""

YOUNG = 10_000
"""The default ``young`` threshold (CPython's own: 700)."""


@attrs.define(eq=False)
class FrozenGenerations:
    regrowth: float = attrs.field(default=REGROWTH)
    """Growth of the heap (allocated blocks) since the last scan of everything that makes
    the next full collection scan everything again."""

    young: int = attrs.field(default=YOUNG, validator=attrs.validators.ge(1))
    """Allocations (net of deallocations) between collections of the youngest generation."""

    full_scans: int = 0
    """Full collections that unfroze and scanned every object."""
    frozen_scans: int = 0
    """Full collections that scanned only what came since the last freeze."""

    _blocks_at_scan: int = 0
    _scanning_all: bool = False
    _thresholds: tuple[int, ...] = ()

    @regrowth.validator
    def _check(self, _: Any, value: float) -> None:
        if not value > 1.0:
            raise ValueError("regrowth must be above 1")

    @property
    def installed(self) -> bool:
        return self._on_collect in gc.callbacks

    def install(self) -> None:
        """Freeze what lives now and start the policy (once per process)."""
        if self.installed:
            return
        gc.collect()
        gc.freeze()
        self._blocks_at_scan = sys.getallocatedblocks()
        self._thresholds = gc.get_threshold()
        gc.set_threshold(self.young, *self._thresholds[1:])
        gc.callbacks.append(self._on_collect)

    def uninstall(self) -> None:
        """Stop the policy, restore the thresholds and unfreeze everything: the collector
        is CPython's again."""
        if self.installed:
            gc.callbacks.remove(self._on_collect)
            gc.set_threshold(*self._thresholds)
            gc.unfreeze()

    def _on_collect(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != OLDEST:
            return
        if phase == "start":
            blocks = sys.getallocatedblocks()
            self._scanning_all = blocks > self.regrowth * self._blocks_at_scan
            if self._scanning_all:
                gc.unfreeze()  # into the oldest generation: this collection scans them too
            return
        gc.freeze()
        if self._scanning_all:
            self.full_scans += 1
            self._blocks_at_scan = sys.getallocatedblocks()
        else:
            self.frozen_scans += 1
