"""The delivery worker against real HTTP servers on loopback: signed POSTs, retries after 500s, refused
connections, garbage and timeouts, per-call order, giving up, and delivering what a previous run left.

Back-off is configured in tens of milliseconds; the tests wait for outcomes, never for durations."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog

from gateway.config import WebhookConfig
from gateway.observability.metrics import Metrics
from gateway.util.signing import SECRET_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from gateway.webhooks.delivery import DeliveryWorker
from gateway.webhooks.outbox import Outbox, OutboxEntry
from tests.fakes._server import serve_app
from tests.fakes.webhook_server import Reply, WebhookReceiver, garbage_server
from tests.integration.harness import free_port

FAST = WebhookConfig(timeout_seconds=2.0, initial_backoff_seconds=0.05, max_backoff_seconds=0.2,
                     max_age_seconds=60.0, signing_secret=None)


def body(call_id: str, type_: str, n: int = 0) -> bytes:
    return json.dumps({"message": {"type": type_, "n": n, "call": {"id": call_id}}}).encode()


def entry(url: str, call_id: str, type_: str = "status-update", *, n: int = 0, secret: str | None = "s3cret",
          headers: dict[str, str] | None = None) -> OutboxEntry:
    return OutboxEntry(call_id=call_id, type=type_, url=url, secret=secret, body=body(call_id, type_, n),
                       created_at=time.time(), headers=headers or {})


@asynccontextmanager
async def running(worker: DeliveryWorker) -> AsyncIterator[DeliveryWorker]:
    task = asyncio.get_running_loop().create_task(worker.run())
    try:
        yield worker
    finally:
        async with asyncio.timeout(10):
            await worker.stop(grace=0.5)
            await task


def new_worker(outbox: Outbox, config: WebhookConfig = FAST, **kwargs: Any) -> DeliveryWorker:
    return DeliveryWorker(outbox, config, rng=random.Random(3), metrics=kwargs.pop("metrics", Metrics()), **kwargs)


def counter(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("voicegw_webhook_deliveries_total", {"result": result})
    return value or 0.0


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_posts_are_signed_and_carry_the_server_headers() -> None:
    async def scenario() -> None:
        receiver = WebhookReceiver()
        metrics = Metrics()
        outbox = Outbox(":memory:")
        async with serve_app(receiver.app) as base, running(new_worker(outbox, metrics=metrics)) as worker:
            outbox.add(entry(base + "/hook", "call-1", headers={"X-Tenant": "acme"}))
            worker.wake()
            await receiver.wait_for_async(lambda r: r.received)
            await asyncio.sleep(0)  # let the worker record the delivery
            await _until(lambda: outbox.depth == 0)
        (got,) = receiver.received
        assert got.path == "/hook"
        assert got.headers["content-type"] == "application/json"
        assert got.headers[SECRET_HEADER.lower()] == "s3cret"
        assert got.headers["x-tenant"] == "acme"
        assert verify("s3cret", got.body, got.headers[TIMESTAMP_HEADER.lower()], got.headers[SIGNATURE_HEADER.lower()],
                      time.time())
        assert not verify("other", got.body, got.headers[TIMESTAMP_HEADER.lower()],
                          got.headers[SIGNATURE_HEADER.lower()], time.time())
        assert got.message == {"type": "status-update", "n": 0, "call": {"id": "call-1"}}
        assert counter(metrics, "delivered") == 1
        assert metrics.registry.get_sample_value("voicegw_webhook_outbox_depth") == 0

    run(scenario)


def test_without_a_secret_the_post_is_unsigned() -> None:
    async def scenario() -> None:
        receiver = WebhookReceiver()
        outbox = Outbox(":memory:")
        async with serve_app(receiver.app) as base, running(new_worker(outbox)) as worker:
            outbox.add(entry(base + "/hook", "call-1", secret=None))
            worker.wake()
            await receiver.wait_for_async(lambda r: r.received)
        (got,) = receiver.received
        assert SIGNATURE_HEADER.lower() not in got.headers and SECRET_HEADER.lower() not in got.headers

    run(scenario)


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_a_500_is_retried_and_logged_with_the_call_id() -> None:
    async def scenario() -> None:
        receiver = WebhookReceiver(responses=[500, 502])
        metrics = Metrics()
        outbox = Outbox(":memory:")
        with structlog.testing.capture_logs() as logs:
            async with serve_app(receiver.app) as base, running(new_worker(outbox, metrics=metrics)) as worker:
                outbox.add(entry(base + "/hook", "call-7", "end-of-call-report"))
                worker.wake()
                await receiver.wait_for_async(lambda r: r.of_type("end-of-call-report"))
                await _until(lambda: outbox.depth == 0)
        assert [r.status for r in receiver.received] == [500, 502, 200]
        # the body is the same bytes every time
        assert len({r.body for r in receiver.received}) == 1
        failures = [e for e in logs if e["event"] == "webhook_delivery_failed"]
        assert [(f["call_id"], f["type"], f["status"], f["attempt"]) for f in failures] == [
            ("call-7", "end-of-call-report", 500, 1), ("call-7", "end-of-call-report", 502, 2)]
        assert all(f["error"].startswith("HTTP 50") and f["next_retry_seconds"] > 0 for f in failures)
        assert counter(metrics, "retry") == 2 and counter(metrics, "delivered") == 1

    run(scenario)


def test_refused_connections_garbage_and_timeouts_are_failures() -> None:
    async def scenario() -> None:
        slow = WebhookReceiver(responses=[Reply(200, delay=1.0)])
        config = WebhookConfig(timeout_seconds=0.2, initial_backoff_seconds=30.0, max_backoff_seconds=60.0,
                               max_age_seconds=600.0)
        outbox = Outbox(":memory:")
        refused = f"http://127.0.0.1:{free_port(also_tcp=False)}/hook"
        with structlog.testing.capture_logs() as logs:
            async with garbage_server() as junk, serve_app(slow.app) as slow_base, \
                    running(new_worker(outbox, config)) as worker:
                outbox.add(entry(refused, "refused"))
                outbox.add(entry(junk + "/hook", "garbage"))
                outbox.add(entry(slow_base + "/hook", "slow"))
                worker.wake()
                await _until(lambda: len([e for e in logs if e["event"] == "webhook_delivery_failed"]) == 3)
        errors = {e["call_id"]: e for e in logs if e["event"] == "webhook_delivery_failed"}
        assert errors["refused"]["error"].startswith("ConnectError")
        assert errors["garbage"]["status"] is None and errors["garbage"]["error"]
        assert errors["slow"]["error"] == "timeout after 0.2 s"
        # each stays queued for its retry
        assert sorted((m.call_id, m.attempts) for m in outbox.stored()) == [
            ("garbage", 1), ("refused", 1), ("slow", 1)]

    run(scenario)


def test_a_call_waits_for_its_earlier_message_while_other_calls_proceed() -> None:
    async def scenario() -> None:
        receiver = WebhookReceiver(responses=[500, 500, 500])  # the first three POSTs fail
        outbox = Outbox(":memory:")
        async with serve_app(receiver.app) as base:
            outbox.add(entry(base + "/a", "a", n=1))
            outbox.flush()
            async with running(new_worker(outbox)) as worker:
                await receiver.wait_for_async(lambda r: len(r.received) >= 1)  # a1 failed once
                outbox.add(entry(base + "/a", "a", n=2))
                for n in range(1, 4):
                    outbox.add(entry(base + "/b", "b", n=n))
                worker.wake()
                await _until(lambda: outbox.depth == 0)
        delivered = [(r.path, r.message["n"]) for r in receiver.received if r.status == 200]
        a = [n for path, n in delivered if path == "/a"]
        b = [n for path, n in delivered if path == "/b"]
        assert a == [1, 2] and b == [1, 2, 3]
        # nothing of a's second message reached the server before its first was delivered
        first_ok = next(i for i, r in enumerate(receiver.received) if r.path == "/a" and r.status == 200)
        assert all(r.message["n"] == 1 for r in receiver.received[: first_ok + 1] if r.path == "/a")

    run(scenario)


def test_a_message_is_given_up_after_its_maximum_age() -> None:
    async def scenario() -> None:
        receiver = WebhookReceiver(default=503)
        config = WebhookConfig(timeout_seconds=1.0, initial_backoff_seconds=0.05, max_backoff_seconds=0.1,
                               max_age_seconds=0.3)
        metrics = Metrics()
        outbox = Outbox(":memory:")
        with structlog.testing.capture_logs() as logs:
            async with serve_app(receiver.app) as base, running(new_worker(outbox, config, metrics=metrics)) as w:
                outbox.add(entry(base + "/hook", "call-9", "end-of-call-report"))
                outbox.add(entry(base + "/hook", "call-9", "status-update"))
                w.wake()
                await _until(lambda: any(e["event"] == "webhook_given_up" for e in logs))
        given_up = [e for e in logs if e["event"] == "webhook_given_up"]
        assert given_up[0]["call_id"] == "call-9" and given_up[0]["type"] == "end-of-call-report"
        assert given_up[0]["attempts"] >= 2 and given_up[0]["last_error"] == "HTTP 503"
        assert counter(metrics, "failed") >= 1
        assert outbox.given_up()[0][2] == "end-of-call-report"

    run(scenario)


def test_a_new_worker_delivers_what_the_previous_run_left(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    port = free_port(also_tcp=False)

    async def first_run() -> None:
        # the server is down: the message stays queued with a back-off far in the future
        slow = WebhookConfig(initial_backoff_seconds=3600, max_backoff_seconds=3600, max_age_seconds=86400)
        outbox = Outbox(path)
        with structlog.testing.capture_logs() as logs:
            async with running(new_worker(outbox, slow)) as worker:
                outbox.add(entry(f"http://127.0.0.1:{port}/hook", "call-1", "end-of-call-report"))
                worker.wake()
                await _until(lambda: any(e["event"] == "webhook_delivery_failed" for e in logs))
        outbox.close()

    async def second_run() -> None:
        receiver = WebhookReceiver()
        outbox = Outbox(path)
        assert outbox.depth == 1
        async with serve_app(receiver.app, port=port), running(new_worker(outbox)):
            await receiver.wait_for_async(lambda r: r.of_type("end-of-call-report"))
            await _until(lambda: outbox.depth == 0)
        outbox.close()
        assert receiver.received[0].message["call"] == {"id": "call-1"}

    run(first_run)
    run(second_run)


def test_stop_writes_buffered_messages_to_disk(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"

    async def scenario() -> None:
        outbox = Outbox(path)
        worker = new_worker(outbox)
        outbox.add(entry("http://127.0.0.1:9/hook", "call-1"))
        await worker.stop()  # never started: still flushes
        assert len(Outbox(path).stored()) == 1

    run(scenario)


class FlakyOutbox(Outbox):
    """Its first ``delivered`` fails as a locked database would."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.failures = 1

    def delivered(self, message_id: int) -> None:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        super().delivered(message_id)


def test_a_database_error_is_logged_and_the_message_delivered_again() -> None:
    async def scenario() -> None:
        receiver = WebhookReceiver()
        outbox = FlakyOutbox()
        with structlog.testing.capture_logs() as logs:
            async with serve_app(receiver.app) as base, running(new_worker(outbox)) as worker:
                outbox.add(entry(base + "/hook", "call-1", "end-of-call-report"))
                worker.wake()
                # the depth drops in the outbox's thread, the task leaves in_flight just after, on the loop
                await _until(lambda: outbox.depth == 0 and worker.in_flight == 0)
        errors = [e for e in logs if e["event"] == "webhook_outbox_error"]
        assert errors and errors[0]["call_id"] == "call-1" and "locked" in errors[0]["error"]
        # at least once: the POST whose outcome could not be recorded is made again
        assert [r.type for r in receiver.received] == ["end-of-call-report", "end-of-call-report"]

    run(scenario)
