"""SIP over UDP is handled in bounded turns (gateway/transport/sip_transport.py): a burst of datagrams that each
take a while to handle lets the event loop's timers (the 20 ms playout clock) run in between, in order, and a
backlog beyond the inbox is dropped and counted with the kernel's queue."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from gateway.transport import sip_transport
from gateway.transport.sip_transport import Addr, SipTransport

SOURCE = ("127.0.0.1", 5070)


def busy(seconds: float) -> None:
    """Handle a datagram the slow way: at least ``seconds`` of wall time (never less, whatever the machine)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_burst_of_slow_datagrams_lets_timers_run_between_turns_and_keeps_its_order() -> None:
    handled: list[bytes] = []

    def receive(data: bytes, source: Addr, kind: str) -> None:
        assert (source, kind) == (SOURCE, "udp")
        busy(0.001)
        handled.append(data)

    async def go() -> list[int]:
        async with asyncio.TaskGroup() as tasks:
            transport = SipTransport(receive, lambda *_: None, tasks)
            timer_saw: list[int] = []
            asyncio.get_running_loop().call_later(0, lambda: timer_saw.append(len(handled)))
            for i in range(60):  # what the loop hands over from one socket wake-up, at once
                transport._enqueue(b"m%d" % i, SOURCE, "udp")
            while len(handled) < 60:
                await asyncio.sleep(0)
            await transport.close()
            return timer_saw

    timer_saw = asyncio.run(asyncio.wait_for(go(), 20))
    assert handled == [b"m%d" % i for i in range(60)]
    # each datagram takes >= 1 ms and a turn ends after DRAIN_BUDGET (2 ms): the timer ran a few datagrams in,
    # not after all sixty (handled in one go, the burst held it back 60 ms)
    assert timer_saw and timer_saw[0] <= 10, timer_saw


def test_an_exception_while_handling_one_datagram_does_not_stall_the_rest() -> None:
    handled: list[bytes] = []

    def receive(data: bytes, source: Addr, kind: str) -> None:
        if data == b"bad":
            raise RuntimeError("handler bug")
        handled.append(data)

    async def go() -> list[dict[str, object]]:
        errors: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        async with asyncio.TaskGroup() as tasks:
            transport = SipTransport(receive, lambda *_: None, tasks)
            for data in (b"one", b"bad", b"two"):
                transport._enqueue(data, SOURCE, "udp")
            while len(handled) < 2:
                await asyncio.sleep(0)
            await transport.close()
        return errors

    errors = asyncio.run(asyncio.wait_for(go(), 20))
    assert handled == [b"one", b"two"]
    assert [str(e["exception"]) for e in errors] == ["handler bug"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_MEMINFO is Linux's")
def test_datagrams_beyond_the_inbox_are_dropped_and_counted_in_the_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sip_transport, "INBOX_LIMIT_BYTES", 1000)

    async def go() -> tuple[object, object, int]:
        async with asyncio.TaskGroup() as tasks:
            transport = SipTransport(lambda *_: None, lambda *_: None, tasks)
            await transport.start("127.0.0.1", 0)
            before = transport.receive_backlog()
            for _ in range(15):  # 1500 bytes into a 1000-byte inbox, before any turn runs
                transport._enqueue(b"x" * 100, SOURCE, "udp")
            during = transport.receive_backlog()
            await asyncio.sleep(0.05)
            after = transport.receive_backlog()
            await transport.close()
            return before, during, (after.queued if after is not None else -1)

    before, during, queued_after = asyncio.run(asyncio.wait_for(go(), 20))
    assert before is not None and during is not None
    assert during.drops - before.drops == 5  # type: ignore[attr-defined]
    assert during.queued >= 1000 and during.capacity == before.capacity  # type: ignore[attr-defined]
    assert queued_after < 1000  # handled: the inbox is empty again
