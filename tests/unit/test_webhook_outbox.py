"""The webhook outbox on its own: what is due when, per-call order, back-off, giving up, and what survives a
restart. Time is a parameter: nothing sleeps."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.webhooks.outbox import Outbox, OutboxEntry, RetryPolicy

T0 = 1_763_712_000.0


def entry(call_id: str, type_: str = "status-update", *, at: float = T0, body: bytes | None = None) -> OutboxEntry:
    return OutboxEntry(call_id=call_id, type=type_, url="http://127.0.0.1:9/hook", secret="s3cret",
                       body=body or f'{{"message":{{"type":"{type_}"}}}}'.encode(), created_at=at,
                       headers={"X-Tenant": "acme"})


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_buffered_messages_reach_the_disk_on_flush(tmp_path: Path) -> None:
    path = tmp_path / "var" / "gw.sqlite3"  # the directory does not exist yet
    outbox = Outbox(path)
    outbox.add(entry("a"))
    assert outbox.pending == 1 and outbox.depth == 1
    other = Outbox(path)  # what another process (a restart) would see
    assert other.stored() == []
    assert outbox.flush() == 1
    assert [m.type for m in other.stored()] == ["status-update"]
    stored = other.stored()[0]
    assert stored.headers == {"X-Tenant": "acme"} and stored.secret == "s3cret" and stored.attempts == 0
    other.close()
    outbox.close()


def test_durable_add_is_committed_at_once_after_what_was_buffered(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    outbox = Outbox(path)
    outbox.add(entry("a", "status-update"))
    outbox.add(entry("a", "conversation-update"))
    outbox.add_durable(entry("a", "end-of-call-report"))
    # no flush, no close: a crash here keeps all three, in the order they were added
    other = Outbox(path)
    assert [m.type for m in other.stored("a")] == ["status-update", "conversation-update", "end-of-call-report"]
    assert other.depth == 3
    other.close()
    outbox.close()


def test_a_restart_finds_what_was_left_and_can_make_it_due_at_once(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    first = Outbox(path)
    first.add_durable(entry("a", "end-of-call-report", body=b'{"message":{"type":"end-of-call-report"}}'))
    message = first.due(T0, limit=8)[0]
    first.retry(message.id, next_attempt_at=T0 + 300, error="ConnectError")
    first.close()

    second = Outbox(path)
    assert second.depth == 1
    assert second.due(T0 + 10, limit=8) == []
    assert second.reschedule_all(T0 + 10) == 1
    (again,) = second.due(T0 + 10, limit=8)
    assert again.body == b'{"message":{"type":"end-of-call-report"}}'
    assert again.attempts == 1 and again.last_error == "ConnectError"
    second.close()


def test_only_the_oldest_message_of_each_call_is_due() -> None:
    outbox = Outbox(":memory:")
    for call_id, type_ in [("a", "status-update"), ("a", "conversation-update"), ("b", "status-update")]:
        outbox.add(entry(call_id, type_))
    outbox.flush()
    due = outbox.due(T0, limit=8)
    assert [(m.call_id, m.type) for m in due] == [("a", "status-update"), ("b", "status-update")]

    # a's first message fails and waits 10 s: its second message waits behind it, b is not held up
    a1 = due[0]
    outbox.retry(a1.id, next_attempt_at=T0 + 10, error="HTTP 500")
    outbox.delivered(due[1].id)
    assert outbox.due(T0 + 5, limit=8) == []
    assert outbox.next_due_at() == T0 + 10
    (again,) = outbox.due(T0 + 10, limit=8)
    assert again.id == a1.id and again.attempts == 1 and again.last_error == "HTTP 500"
    outbox.delivered(a1.id)
    assert [m.type for m in outbox.due(T0 + 10, limit=8)] == ["conversation-update"]


def test_calls_with_a_delivery_in_flight_and_the_limit_are_respected() -> None:
    outbox = Outbox(":memory:")
    for call_id in "abc":
        outbox.add(entry(call_id))
    outbox.flush()
    assert [m.call_id for m in outbox.due(T0, limit=8, busy_calls={"a"})] == ["b", "c"]
    assert len(outbox.due(T0, limit=2)) == 2
    assert outbox.due(T0, limit=0) == []
    assert outbox.next_due_at(busy_calls={"a", "b", "c"}) is None


def test_messages_are_not_due_before_they_were_created() -> None:
    outbox = Outbox(":memory:")
    outbox.add(entry("a", at=T0 + 1))
    outbox.flush()
    assert outbox.due(T0, limit=8) == []
    assert outbox.next_due_at() == T0 + 1


def test_delivered_messages_leave_and_the_depth_follows() -> None:
    outbox = Outbox(":memory:")
    outbox.add(entry("a"))
    outbox.add(entry("b"))
    outbox.flush()
    assert outbox.depth == 2
    for message in outbox.due(T0, limit=8):
        outbox.delivered(message.id)
    assert outbox.depth == 0 and outbox.stored() == []
    outbox.delivered(12345)  # unknown id: nothing changes
    assert outbox.depth == 0


def test_back_off_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    policy = RetryPolicy(initial=1.0, maximum=30.0, max_age=3600.0, jitter=0.0)
    rng = random.Random(1)
    assert [policy.delay(n, rng) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.delay(10_000, rng) == 30.0  # no overflow after a very long outage


def test_jitter_spreads_the_delay_within_its_bounds() -> None:
    policy = RetryPolicy(initial=2.0, maximum=300.0, max_age=3600.0, jitter=0.2)
    assert policy.delay(3, FixedRandom(0.0)) == pytest.approx(8.0 * 0.8)
    assert policy.delay(3, FixedRandom(0.5)) == pytest.approx(8.0)
    assert policy.delay(3, FixedRandom(0.999999)) == pytest.approx(8.0 * 1.2, rel=1e-5)
    rng = random.Random(7)
    delays = {round(policy.delay(1, rng), 6) for _ in range(50)}
    assert len(delays) > 10 and all(1.6 <= d <= 2.4 for d in delays)
    # the cap holds after jitter too
    assert policy.delay(20, FixedRandom(0.999999)) == 300.0


def test_retries_stop_at_the_maximum_age() -> None:
    policy = RetryPolicy(initial=10.0, maximum=100.0, max_age=60.0, jitter=0.0)
    rng = random.Random(0)
    first = policy.after_failure(created_at=T0, attempts=1, now=T0 + 1, rng=rng)
    assert first.next_attempt_at == T0 + 11 and not first.give_up
    # the delay would overshoot the deadline: the last attempt is made at the deadline itself
    late = policy.after_failure(created_at=T0, attempts=3, now=T0 + 50, rng=rng)
    assert late.next_attempt_at == T0 + 60
    assert policy.after_failure(created_at=T0, attempts=4, now=T0 + 60, rng=rng).give_up
    assert policy.after_failure(created_at=T0, attempts=1, now=T0 + 3600, rng=rng).give_up


def test_a_message_given_up_is_kept_aside_and_unblocks_its_call() -> None:
    outbox = Outbox(":memory:")
    outbox.add(entry("a", "status-update"))
    outbox.add(entry("a", "end-of-call-report"))
    outbox.flush()
    (first,) = outbox.due(T0, limit=8)
    outbox.retry(first.id, next_attempt_at=T0 + 1, error="HTTP 503")
    outbox.give_up(first.id, now=T0 + 2, error="HTTP 503")
    assert outbox.given_up() == [(first.id, "a", "status-update", 2, "HTTP 503")]
    assert [m.type for m in outbox.due(T0 + 2, limit=8)] == ["end-of-call-report"]
    assert outbox.depth == 1


def test_close_writes_what_was_buffered(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    outbox = Outbox(path)
    outbox.add(entry("a"))
    outbox.close()
    reopened = Outbox(path)
    assert len(reopened.stored()) == 1
    reopened.close()
