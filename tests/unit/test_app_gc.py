"""The ``voicegw serve`` process settles the garbage collector once the gateway has started (gateway/app.py):
start-up objects frozen out of every collection, young collections every GC_YOUNG_THRESHOLD allocations; a
gateway that failed to start changes nothing."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator

import pytest

from gateway.app import (
    GC_YOUNG_THRESHOLD,
    PACER_SWITCH_INTERVAL,
    _settle_garbage_collector,
    _settle_switch_interval,
)


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
