"""Event-loop health probe: how late a periodic wake-up runs (``voicegw_event_loop_lag_seconds``) and how
many asyncio tasks exist (``voicegw_asyncio_tasks``, a leak shows as growth over a soak run)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.observability.metrics import Metrics

PROBE_INTERVAL_SECONDS = 0.25


async def monitor_event_loop(
    metrics: Metrics,
    *,
    interval: float = PROBE_INTERVAL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Sleep ``interval``, observe how much later than asked the loop woke us, count the tasks; until cancelled."""
    while True:
        asked = clock() + interval
        await asyncio.sleep(interval)
        metrics.event_loop_lag_seconds.observe(max(0.0, clock() - asked))
        metrics.asyncio_tasks.set(len(asyncio.all_tasks()))
