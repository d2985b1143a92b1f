"""Event-loop health probe: how late a periodic wake-up runs (``voicegw_event_loop_lag_seconds``) and how
many asyncio tasks exist (``voicegw_asyncio_tasks``, sampled once a second; a leak shows as growth over a soak
run)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.observability.metrics import Metrics

PROBE_INTERVAL_SECONDS = 0.1
TASKS_EVERY = 10  # probes between task counts: counting walks every task (O(calls)), a gauge needs it once a second


async def monitor_event_loop(
    metrics: Metrics,
    *,
    interval: float = PROBE_INTERVAL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    on_lag: Callable[[float, float], None] | None = None,
) -> None:
    """Sleep ``interval``, observe how much later than asked the loop woke us, count the tasks; until cancelled.
    ``on_lag(lag, now)`` gets every sample too (the UA's load shedding). The tasks are counted every
    ``TASKS_EVERY`` probes, from the first."""
    probes = 0
    while True:
        asked = clock() + interval
        await asyncio.sleep(interval)
        now = clock()
        lag = max(0.0, now - asked)
        metrics.event_loop_lag_seconds.observe(lag)
        if probes % TASKS_EVERY == 0:
            metrics.asyncio_tasks.set(len(asyncio.all_tasks()))
        probes += 1
        if on_lag is not None:
            on_lag(lag, now)
