"""Event-loop health probe: how late a periodic wake-up runs (``voicegw_event_loop_lag_seconds``) and how
many asyncio tasks exist (``voicegw_asyncio_tasks``, a leak shows as growth over a soak run)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.observability.metrics import Metrics

PROBE_INTERVAL_SECONDS = 0.1


async def monitor_event_loop(
    metrics: Metrics,
    *,
    interval: float = PROBE_INTERVAL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    on_lag: Callable[[float, float], None] | None = None,
) -> None:
    """Sleep ``interval``, observe how much later than asked the loop woke us, count the tasks; until cancelled.
    ``on_lag(lag, now)`` gets every sample too (the UA's load shedding)."""
    while True:
        asked = clock() + interval
        await asyncio.sleep(interval)
        now = clock()
        lag = max(0.0, now - asked)
        metrics.event_loop_lag_seconds.observe(lag)
        metrics.asyncio_tasks.set(len(asyncio.all_tasks()))
        if on_lag is not None:
            on_lag(lag, now)
