"""GCPolicy: young garbage is still collected, frozen garbage is reclaimed once the heap grows.

Each test leaves the process's collector as it found it (``release()`` in a
``finally``): gc.freeze() is process-wide.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from peregrine_rt import _gc
from peregrine_rt._gc import GCPolicy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[weakref.ref[Node], Node]:
    """Two nodes referring to each other; a weak reference to one, and a strong one."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a), a


@pytest.fixture
def policy() -> Iterator[GCPolicy]:
    assert gc.get_freeze_count() == 0
    p = GCPolicy(lambda: 10, engage_above=5)
    try:
        yield p
    finally:
        p.release()
        gc.unfreeze()
        gc.collect()


def test_it_stays_out_of_the_way_below_the_threshold() -> None:
    p = GCPolicy(lambda: 4, engage_above=5)
    p.step()
    assert not p.engaged and gc.get_freeze_count() == 0
    never = GCPolicy(lambda: 10**6, engage_above=None)
    never.step()
    assert not never.engaged and gc.get_freeze_count() == 0


def test_engaging_freezes_what_is_alive_and_release_thaws_it(policy: GCPolicy) -> None:
    policy.step()
    assert policy.engaged and policy.full == 1
    assert gc.get_freeze_count() > 0
    policy.release()
    assert gc.get_freeze_count() == 0


def test_a_cycle_that_dies_young_is_collected_by_the_next_step(policy: GCPolicy) -> None:
    policy.step()  # engaged
    ref, strong = cycle()
    del strong  # garbage before any step froze it
    policy.step()
    assert ref() is None
    assert policy.full == 1  # no full collection was needed for it


def test_a_frozen_cycle_is_reclaimed_once_the_heap_grows(
    policy: GCPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gc, "GC_CHECK_EVERY", 1)
    policy.step()  # engaged
    ref, strong = cycle()
    policy.step()  # alive: frozen
    del strong
    policy.step()
    assert ref() is not None  # frozen garbage: out of the steps' reach
    grown = [[i] for i in range(policy.baseline)]  # the heap grows by more than half
    policy.step()
    assert policy.full == 2
    assert ref() is None
    del grown


def test_a_steady_heap_needs_no_full_collection(
    policy: GCPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gc, "GC_CHECK_EVERY", 1)
    policy.step()
    for _ in range(20):
        churn = [Node() for _ in range(1000)]  # made and freed, as woken sockets' waits are
        policy.step()
        del churn
    assert policy.full == 1 and policy.steps == 20


def test_engaged_the_automatic_young_collections_wait_and_release_restores_them(
    policy: GCPolicy,
) -> None:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # Python's defaults (another test may have moved them)
    try:
        policy.step()
        assert policy.engaged
        assert gc.get_threshold() == (_gc.ENGAGED_THRESHOLD, 10, 10)
        policy.release()
        assert gc.get_threshold() == (700, 10, 10)
        gc.set_threshold(10 * _gc.ENGAGED_THRESHOLD, 10, 10)  # an application's higher one stays
        policy.step()
        assert policy.engaged
        assert gc.get_threshold()[0] == 10 * _gc.ENGAGED_THRESHOLD
    finally:
        policy.release()
        gc.set_threshold(*saved)


def test_collections_the_application_turned_off_stay_off(policy: GCPolicy) -> None:
    before = gc.get_threshold()
    gc.set_threshold(0, *before[1:])
    try:
        policy.step()
        assert policy.engaged
        assert gc.get_threshold()[0] == 0
        policy.release()
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)


def test_two_engaged_policies_put_the_thresholds_back_once_both_are_released() -> None:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    first = GCPolicy(lambda: 10, engage_above=5)
    second = GCPolicy(lambda: 10, engage_above=5)
    try:
        first.step()
        second.step()
        first.release()
        assert gc.get_threshold()[0] == _gc.ENGAGED_THRESHOLD  # the second is still engaged
        assert gc.get_freeze_count() > 0  # and what it froze stays frozen
        second.release()
        assert gc.get_threshold() == (700, 10, 10)
        assert gc.get_freeze_count() == 0
    finally:
        first.release()
        second.release()
        gc.unfreeze()
        gc.set_threshold(*saved)
