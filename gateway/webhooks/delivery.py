"""The delivery worker: POSTs what the outbox holds, at least once, in order per call.

Each attempt is one signed POST (``gateway.util.signing.signed_headers``: ``X-Vapi-Secret`` and the HMAC
signature over timestamp and body) bounded by ``webhooks.timeout_seconds`` end to end. A 2xx delivers the
message; anything else (another status, a refused connection, a timeout, an answer that is not HTTP) counts
as a failure and is retried with exponential back-off and jitter (:class:`~gateway.webhooks.outbox.RetryPolicy`)
until ``webhooks.max_age_seconds``, then given up. Every failure logs ``webhook_delivery_failed`` with the call
id; a message given up logs ``webhook_given_up``.

Ordering: a call has at most one message in flight, and the outbox only offers a call's oldest message, so
message n+1 of a call waits for message n; other calls proceed meanwhile (up to ``concurrency`` POSTs at
once). SQLite work runs in one dedicated thread, never on the event loop. On start, what a previous run left
in the outbox is due at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from gateway.observability.logging import get_logger
from gateway.util.signing import signed_headers
from gateway.webhooks.outbox import Outbox, OutboxMessage, RetryPolicy

if TYPE_CHECKING:
    from gateway.config import WebhookConfig
    from gateway.observability.metrics import Metrics

__all__ = ["DEFAULT_CONCURRENCY", "FLUSH_INTERVAL_SECONDS", "DeliveryWorker"]

DEFAULT_CONCURRENCY = 8
FLUSH_INTERVAL_SECONDS = 0.1  # buffered messages reach the disk at least this often
IDLE_POLL_SECONDS = 60.0
OUTBOX_ERROR_PAUSE_SECONDS = 1.0  # after a database error, before trying again  # re-read the outbox at least this often (wall-clock jumps, other writers)

T = TypeVar("T")


def retry_policy(config: WebhookConfig) -> RetryPolicy:
    return RetryPolicy(initial=config.initial_backoff_seconds, maximum=config.max_backoff_seconds,
                       max_age=config.max_age_seconds)


class DeliveryWorker:
    """Runs in the server's TaskGroup (:meth:`run`) until :meth:`stop`. ``clock`` is wall time (Unix
    seconds, as stored in the outbox), injected with ``rng`` for tests."""

    def __init__(
        self,
        outbox: Outbox,
        config: WebhookConfig,
        *,
        rng: random.Random,
        metrics: Metrics | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.outbox = outbox
        self.config = config
        self.policy = retry_policy(config)
        self.rng = rng
        self.metrics = metrics
        self.clock = clock
        self.concurrency = concurrency
        self._http = http
        self._own_http = http is None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-outbox")
        self._wake = asyncio.Event()
        self._stopping = False
        self._running = False
        self._done = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._grace = 0.0
        self.log = get_logger("webhooks")

    # ------------------------------------------------------------------ control

    def wake(self) -> None:
        """Something was queued (or a delivery finished): look at the outbox now."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop taking messages; let deliveries in flight finish for up to ``grace`` seconds (the rest stay in
        the outbox for the next start), and write every buffered message to disk."""
        self._grace = grace
        self._stopping = True
        self._wake.set()
        if self._running:
            await self._done.wait()
        await self._in_thread(self.outbox.flush)
        self._executor.shutdown(wait=True)

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args, **kwargs))

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        if self._stopping:
            return
        self._running = True
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        try:
            async with asyncio.TaskGroup() as tasks:
                left = await self._in_thread(self.outbox.reschedule_all, self.clock())
                if self.outbox.depth:
                    self.log.info("webhook_outbox_resumed", messages=self.outbox.depth, rescheduled=left)
                while not self._stopping:
                    self._wake.clear()
                    try:
                        due, next_at = await self._in_thread(self._poll, self.clock(), list(self._inflight))
                    except Exception as exc:  # a database error must not take the gateway down: retry later
                        self.log.error("webhook_outbox_error", error=repr(exc), exc_info=exc)
                        due, next_at = [], self.clock() + OUTBOX_ERROR_PAUSE_SECONDS
                    for message in due:
                        self._inflight[message.call_id] = tasks.create_task(self._deliver(message))
                    self._set_depth()
                    await self._sleep(next_at)
                await self._finish_inflight()
        finally:
            if self._own_http and self._http is not None:
                await self._http.aclose()
                self._http = None
            self._running = False
            self._done.set()

    def _poll(self, now: float, busy: list[str]) -> tuple[list[OutboxMessage], float | None]:
        """In the outbox thread: write the buffer, take what is due (calls in ``busy`` have a delivery in
        flight), and say when the next one will be."""
        self.outbox.flush()
        due = self.outbox.due(now, limit=self.concurrency - len(busy), busy_calls=busy)
        next_at = self.outbox.next_due_at(busy_calls=busy + [m.call_id for m in due])
        return due, next_at

    async def _sleep(self, next_at: float | None) -> None:
        timeout = IDLE_POLL_SECONDS
        if self.outbox.pending:
            timeout = FLUSH_INTERVAL_SECONDS
        if next_at is not None and len(self._inflight) < self.concurrency:
            timeout = min(timeout, max(0.0, next_at - self.clock()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _finish_inflight(self) -> None:
        tasks = list(self._inflight.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._grace)
        for task in pending:
            task.cancel()  # not delivered: the message stays in the outbox for the next start
        if pending:
            self.log.info("webhook_deliveries_interrupted", messages=len(pending))

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.webhook_outbox_depth.set(self.outbox.depth)

    # ------------------------------------------------------------------ one attempt

    async def _deliver(self, message: OutboxMessage) -> None:
        try:
            await self._attempt(message)
        except Exception as exc:  # the outbox failed us: the message stays queued; never crash the worker
            self.log.error("webhook_outbox_error", call_id=message.call_id, type=message.type, error=repr(exc),
                           exc_info=exc)
            with contextlib.suppress(Exception):
                await self._in_thread(self.outbox.retry, message.id,
                                      next_attempt_at=self.clock() + OUTBOX_ERROR_PAUSE_SECONDS, error=repr(exc))
        finally:
            self._inflight.pop(message.call_id, None)
            self._set_depth()
            self._wake.set()

    async def _attempt(self, message: OutboxMessage) -> None:
        status, error = await self._post(message)
        finished = self.clock()
        if error is None:
            await self._in_thread(self.outbox.delivered, message.id)
            if self.metrics is not None:
                self.metrics.webhook_deliveries.labels("delivered").inc()
                self.metrics.webhook_delivery_seconds.observe(max(0.0, finished - message.created_at))
            self.log.debug("webhook_delivered", call_id=message.call_id, type=message.type, url=message.url,
                           status=status, attempt=message.attempts + 1)
        else:
            await self._failed(message, status, error, finished)

    async def _post(self, message: OutboxMessage) -> tuple[int | None, str | None]:
        """One POST: ``(status, None)`` on a 2xx, else ``(status or None, what went wrong)``."""
        assert self._http is not None
        headers = dict(message.headers)
        headers.update(signed_headers(message.body, message.secret, int(self.clock())))
        timeout = self.config.timeout_seconds
        try:
            # Every wait has a deadline: httpx's timeouts are per phase, this one bounds the whole attempt.
            async with asyncio.timeout(timeout):
                response = await self._http.post(message.url, content=message.body, headers=headers,
                                                  timeout=timeout)
        except (TimeoutError, httpx.TimeoutException):
            return None, f"timeout after {timeout:g} s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except OSError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

    async def _failed(self, message: OutboxMessage, status: int | None, error: str, now: float) -> None:
        attempt = message.attempts + 1
        verdict = self.policy.after_failure(created_at=message.created_at, attempts=attempt, now=now, rng=self.rng)
        next_retry = None if verdict.next_attempt_at is None else round(verdict.next_attempt_at - now, 3)
        self.log.warning("webhook_delivery_failed", call_id=message.call_id, type=message.type, url=message.url,
                         status=status, error=error, attempt=attempt, next_retry_seconds=next_retry)
        if verdict.next_attempt_at is None:
            await self._in_thread(self.outbox.give_up, message.id, now=now, error=error)
            if self.metrics is not None:
                self.metrics.webhook_deliveries.labels("failed").inc()
            self.log.error("webhook_given_up", call_id=message.call_id, type=message.type, url=message.url,
                           attempts=attempt, last_error=error,
                           age_seconds=round(now - message.created_at, 3))
        else:
            await self._in_thread(self.outbox.retry, message.id, next_attempt_at=verdict.next_attempt_at,
                                  error=error)
            if self.metrics is not None:
                self.metrics.webhook_deliveries.labels("retry").inc()
