"""The collector's policy for a process of roomkeeper's own, on this interpreter's real
collector (each test leaves it as CPython's own)."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from roomkeeper.gcpolicy import FrozenGenerations


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> Node:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


@pytest.fixture
def policy() -> Iterator[FrozenGenerations]:
    # Only the tests' own collections: none set off by their allocations.
    made = FrozenGenerations(regrowth=1.1)
    enabled = gc.isenabled()
    gc.disable()
    made.install()
    try:
        yield made
    finally:
        made.uninstall()
        if enabled:
            gc.enable()


def test_a_full_collection_freezes_what_survives(policy: FrozenGenerations) -> None:
    frozen = gc.get_freeze_count()
    kept = [cycle() for _ in range(1000)]
    gc.collect()
    assert policy.frozen_scans == 1 and policy.full_scans == 0
    assert gc.get_freeze_count() >= frozen + 2000
    assert gc.get_count()[0] < 100  # nothing left in the young generations
    del kept


def test_frozen_garbage_is_collected_once_the_heap_regrows(policy: FrozenGenerations) -> None:
    garbage = cycle()
    gone = weakref.ref(garbage)
    gc.collect()  # the cycle survives, and is frozen
    del garbage
    gc.collect()
    assert gone() is not None, "a frozen cycle outlives a scan of what came since"
    growth = [[i] for i in range(sys.getallocatedblocks() // 5)]  # past regrowth
    gc.collect()
    assert gone() is None
    assert policy.full_scans == 1 and policy.frozen_scans == 2
    del growth


def test_a_young_cycle_is_collected_without_a_scan_of_everything(
    policy: FrozenGenerations,
) -> None:
    gone = weakref.ref(cycle())
    gc.collect()
    assert gone() is None and policy.full_scans == 0


def test_uninstall_gives_cpython_its_collector_back() -> None:
    thresholds = gc.get_threshold()
    made = FrozenGenerations(young=5000)
    made.install()
    made.install()  # once per process
    assert gc.callbacks.count(made._on_collect) == 1
    assert gc.get_threshold() == (5000, *thresholds[1:])
    made.uninstall()
    assert not made.installed and gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
    gone = weakref.ref(cycle())
    gc.collect()
    assert gone() is None and made.frozen_scans == 0


@pytest.mark.parametrize("regrowth", [1.0, 0.5, -2.0])
def test_regrowth_must_be_growth(regrowth: float) -> None:
    with pytest.raises(ValueError, match="above 1"):
        FrozenGenerations(regrowth=regrowth)


def test_the_youngest_generation_needs_a_threshold() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        FrozenGenerations(young=0)
