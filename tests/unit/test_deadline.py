"""gateway/providers/deadline.py: a reusable timeout scope that behaves like ``asyncio.timeout_at`` (expiry
is TimeoutError, someone else's cancellation stays a cancellation) while moving its deadline lazily."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.providers.deadline import Deadline


def _run(body: Callable[[asyncio.AbstractEventLoop], Awaitable[object]]) -> object:
    async def main() -> object:
        return await body(asyncio.get_running_loop())
    return asyncio.run(main())


def test_a_scope_past_its_deadline_is_a_timeout_error() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> Deadline:
        deadline = Deadline()
        with pytest.raises(TimeoutError):
            async with deadline.at(loop.time() + 0.02):
                await asyncio.sleep(5)
        return deadline
    deadline = _run(body)
    assert isinstance(deadline, Deadline) and deadline.expired()


def test_moving_the_deadline_later_keeps_the_work_alive_past_the_first_one() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> str:
        deadline = Deadline()
        async with deadline.at(loop.time() + 0.02):
            deadline.reschedule(loop.time() + 5)
            await asyncio.sleep(0.1)  # the timer armed for the first deadline fires in here
        assert not deadline.expired()
        return "finished"
    assert _run(body) == "finished"


def test_a_deadline_moved_later_still_expires_at_the_new_time() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> tuple[bool, bool]:
        deadline = Deadline()
        reached = False
        with pytest.raises(TimeoutError):
            async with deadline.at(loop.time() + 0.01):
                deadline.reschedule(loop.time() + 0.08)
                await asyncio.sleep(0.04)
                reached = True
                await asyncio.sleep(5)
        return reached, deadline.expired()
    assert _run(body) == (True, True)


def test_a_deadline_moved_earlier_fires_at_the_earlier_time() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> bool:
        deadline = Deadline()
        with pytest.raises(TimeoutError):
            async with deadline.at(loop.time() + 30):
                deadline.reschedule(loop.time() + 0.01)
                await asyncio.sleep(10)
        return deadline.expired()
    assert _run(body) is True


def test_no_deadline_never_expires() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> bool:
        deadline = Deadline()
        async with deadline.at(loop.time() + 0.01):
            deadline.reschedule(None)  # e.g. while the consumer, not the provider, has the time
            await asyncio.sleep(0.05)
        return deadline.expired()
    assert _run(body) is False


def test_the_scope_can_be_entered_again_with_the_old_timer_still_armed() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> list[str]:
        deadline = Deadline()
        seen: list[str] = []
        for _ in range(3):  # each entry moves the deadline later; the first timer fires with no scope open
            async with deadline.at(loop.time() + 0.03):
                await asyncio.sleep(0)
            seen.append("sent")
            await asyncio.sleep(0.04)
        with pytest.raises(TimeoutError):
            async with deadline.at(loop.time() + 0.02):
                await asyncio.sleep(5)
        seen.append("timed out")
        deadline.close()
        return seen
    assert _run(body) == ["sent", "sent", "sent", "timed out"]


def test_someone_elses_cancellation_is_not_turned_into_a_timeout() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> bool:
        deadline = Deadline()

        async def guarded() -> None:
            async with deadline.at(loop.time() + 5):
                await asyncio.sleep(5)

        task = asyncio.create_task(guarded())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return deadline.expired()
    assert _run(body) is False


def test_a_cancellation_arriving_with_the_expiry_stays_a_cancellation() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> bool:
        deadline = Deadline()

        async def guarded() -> None:
            async with deadline.at(loop.time() + 0.01):
                try:
                    await asyncio.sleep(5)
                finally:
                    asyncio.current_task().cancel()  # type: ignore[union-attr]
                    await asyncio.sleep(0)

        task = asyncio.create_task(guarded())
        with pytest.raises(asyncio.CancelledError):
            await task
        return deadline.expired()
    assert _run(body) is True


def test_one_scope_at_a_time() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        deadline = Deadline()
        async with deadline.at(loop.time() + 5):
            with pytest.raises(RuntimeError, match="already entered"):
                async with deadline:
                    pass
    _run(body)
