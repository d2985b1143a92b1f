"""The ``voicegw serve`` process settles the garbage collector once the gateway has started (gateway/app.py):
start-up objects frozen out of every collection, young collections every GC_YOUNG_THRESHOLD allocations; a
gateway that failed to start changes nothing."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections.abc import Iterator

import pytest
import structlog

from gateway.app import (
    GC_PAUSE_LOG,
    GC_YOUNG_THRESHOLD,
    PACER_SWITCH_INTERVAL,
    GcTimer,
    _settle_garbage_collector,
    _settle_switch_interval,
)
from gateway.observability.metrics import Metrics


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def _future(result: object = None, error: BaseException | None = None, cancel: bool = False) -> asyncio.Future[object]:
    loop = asyncio.new_event_loop()
    try:
        future: asyncio.Future[object] = loop.create_future()
        if cancel:
            future.cancel()
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
        return future
    finally:
        loop.close()


@pytest.mark.usefixtures("restored_gc")
def test_a_started_gateway_freezes_start_up_objects_and_collects_young_ones_less_often() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    _settle_garbage_collector(_future(object()))  # type: ignore[arg-type]
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.mark.usefixtures("restored_gc")
def test_after_the_freeze_cyclic_garbage_is_collected_without_waiting_for_start_up_sized_growth() -> None:
    """What ended calls leave in reference cycles is freed by the automatic collector after a bounded amount of
    allocation, not after a quarter of the start-up objects' count has been promoted (minutes under load)."""
    gc.unfreeze()
    while len(gc.get_objects()) < 200_000:  # a start-up's worth of long-lived objects, whatever ran before
        _BALLAST.append([[] for _ in range(10_000)])
    _settle_garbage_collector(_future(object()))  # type: ignore[arg-type]
    gc.set_threshold(100, 10, 10)  # the oldest generation is considered every 10,000 net allocations
    full: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(info["collected"])

    gc.callbacks.append(count)
    try:
        garbage = []
        for _ in range(30_000):  # well under a quarter of 200,000: never a full collection before the fix
            cycle = _Cycle()
            garbage.append(weakref.ref(cycle))
            del cycle
    finally:
        gc.callbacks.remove(count)
        _BALLAST.clear()
    assert full and sum(full) > 0
    assert sum(ref() is None for ref in garbage) > 20_000


_BALLAST: list[object] = []


@pytest.mark.usefixtures("restored_gc")
def test_a_gateway_that_did_not_start_leaves_the_collector_alone() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    for failed in (_future(error=OSError("address in use")), _future(cancel=True)):
        _settle_garbage_collector(failed)  # type: ignore[arg-type]
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


class _Started:
    """The part of a started Gateway the switch-interval setting reads."""

    def __init__(self, pacer: object | None) -> None:
        self.calls = type("Calls", (), {"playout": type("Playout", (), {"pacer": pacer})()})()


def test_with_the_rtp_pacer_a_busy_loop_yields_the_gil_within_a_millisecond() -> None:
    interval = sys.getswitchinterval()
    try:
        _settle_switch_interval(_future(_Started(pacer=None)))  # type: ignore[arg-type]
        assert sys.getswitchinterval() == interval  # no pacer (the Python media path): CPython's default stays
        _settle_switch_interval(_future(error=OSError("address in use")))  # type: ignore[arg-type]
        assert sys.getswitchinterval() == interval
        _settle_switch_interval(_future(_Started(pacer=object())))  # type: ignore[arg-type]
        assert sys.getswitchinterval() == pytest.approx(PACER_SWITCH_INTERVAL)
        assert interval > PACER_SWITCH_INTERVAL
    finally:
        sys.setswitchinterval(interval)


def test_every_collection_is_timed_and_a_long_one_is_logged() -> None:
    """A collection stops the loop and the media: its time is in voicegw_gc_pause_seconds by generation, and
    one of a playout tick or more is a gc_pause line (the cause of a lateness spike no loop profile shows)."""
    metrics = Metrics()
    now = [100.0]
    timer = GcTimer(metrics, clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        timer("start", {"generation": 0, "collected": 0, "uncollectable": 0})
        now[0] += 0.002
        timer("stop", {"generation": 0, "collected": 10, "uncollectable": 0})
        timer("start", {"generation": 2, "collected": 0, "uncollectable": 0})
        now[0] += GC_PAUSE_LOG + 0.03
        timer("stop", {"generation": 2, "collected": 5000, "uncollectable": 0})
    pauses = metrics.gc_pause_seconds.collect()[0].samples
    count = {s.labels["generation"]: s.value for s in pauses if s.name.endswith("_count")}
    total = {s.labels["generation"]: s.value for s in pauses if s.name.endswith("_sum")}
    assert count == {"0": 1.0, "1": 0.0, "2": 1.0}
    assert total["0"] == pytest.approx(0.002) and total["2"] == pytest.approx(GC_PAUSE_LOG + 0.03)
    assert [(e["event"], e["generation"], e["collected"]) for e in logs] == [("gc_pause", 2, 5000)]
