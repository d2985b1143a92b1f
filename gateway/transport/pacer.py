"""RTP sent at its grid deadline by a thread of its own, whatever the event loop is doing.

The playout scheduler prepares every call's packet a few milliseconds before the tick's deadline; without a
pacer it then sends them from a loop timer, which fires when the loop gets to it: a busy loop (a burst of
received packets, SIP work) or libuv's millisecond timer resolution make the send moment wander by a
millisecond or more. With a pacer the scheduler hands the tick's datagrams over right after preparing them,
and the compiled helper ``_pacer.send_at`` (``_pacer.c``) sleeps until the deadline on ``CLOCK_MONOTONIC``
(the loop's clock) and sends them, without the GIL, on another core if there is one.

The helper is built with the compiled media path (``build_native.py``) and used only when that path is in use
(``gateway.native.STATUS == "compiled"``): ``Pacer.create`` returns None otherwise, and the scheduler sends
from the loop as before. The thread is owned by the scheduler: started by the first batch, stopped by the
scheduler's ``close``.

A batch comes with a byte per datagram (``withdrawn``) that the loop may set until shortly before the deadline
(``PlayoutScheduler.withdraw``, a barge-in): the thread skips those datagrams when it wakes.

Datagrams are counted as sent when handed over (and uncounted when withdrawn); a datagram the kernel refuses (``sendto`` error) is counted
by ``errno`` name in ``failed`` on the loop, with an ``rtp_send_failed`` line at most once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import queue
import threading
from types import ModuleType

from gateway import native
from gateway.observability.logging import get_logger

__all__ = ["Datagram", "Pacer"]

Datagram = tuple[int, bytes, bytes]  # (socket fd, payload, packed sockaddr)


def _helper() -> ModuleType | None:
    if native.STATUS != "compiled":
        return None
    try:
        from gateway.transport import _pacer  # type: ignore[attr-defined]
    except ImportError:
        return None
    helper: ModuleType = _pacer
    return helper


class Pacer:
    """A thread sending each submitted batch at its deadline (see module doc)."""

    def __init__(self, helper: ModuleType, loop: asyncio.AbstractEventLoop) -> None:
        self._helper = helper
        self._loop = loop
        # a batch (deadline in ns, datagrams, withdrawn marks), a descriptor to close after the batches before
        # it, or the end
        self._jobs: queue.SimpleQueue[tuple[int, list[Datagram], bytearray | None] | int | None] = queue.SimpleQueue()
        # started by the first batch, so a gateway that fails to start never leaves a thread behind
        self._thread = threading.Thread(target=self._run, name="rtp-pacer", daemon=True)
        self._closed = False
        self.failed: dict[str, int] = {}  # errno name -> datagrams refused (updated on the loop)
        self._log = get_logger("playout")
        self._logged_at = float("-inf")

    @classmethod
    def create(cls, loop: asyncio.AbstractEventLoop) -> Pacer | None:
        """A pacer (its thread starts with the first batch), or None when the compiled helper is not in use."""
        helper = _helper()
        return cls(helper, loop) if helper is not None else None

    def sockaddr(self, host: str, port: int) -> bytes | None:
        """The packed destination for :meth:`submit`, or None when ``host`` is not an IP literal."""
        try:
            packed: bytes = self._helper.sockaddr(host, port)
        except (ValueError, OverflowError):
            return None
        return packed

    def submit(self, deadline: float, datagrams: list[Datagram], withdrawn: bytearray | None = None) -> None:
        """Send ``datagrams`` at ``deadline`` (seconds on the monotonic clock; at once if it has passed).
        The list is the pacer's from now on. ``withdrawn`` (a byte per datagram, zeros) may be written to until
        shortly before the deadline: datagram ``i`` is not sent if ``withdrawn[i]`` is then non-zero."""
        if datagrams and not self._closed:
            if not self._thread.is_alive():
                self._thread.start()
            self._jobs.put((round(deadline * 1e9), datagrams, withdrawn))

    def release(self, fd: int) -> None:
        """Close ``fd`` once every batch handed over before has been sent (a socket's duplicate descriptor,
        given up by its endpoint: until then no other socket or file can get its number while a send on it is
        pending)."""
        if self._thread.is_alive() and not self._closed:
            self._jobs.put(fd)
        else:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Stop the thread after the batches already submitted (at most one tick's wait)."""
        self._closed = True
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        send_at = self._helper.send_at
        while (job := self._jobs.get()) is not None:
            if isinstance(job, int):
                with contextlib.suppress(OSError):
                    os.close(job)
                continue
            failed = send_at(*job)
            if failed:
                counts: dict[str, int] = {}
                for _, code in failed:
                    name = errno.errorcode.get(code, str(code))
                    counts[name] = counts.get(name, 0) + 1
                try:
                    self._loop.call_soon_threadsafe(self._count_failed, counts)
                except RuntimeError:  # the loop is closed: nobody left to tell
                    return

    def _count_failed(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.failed[name] = self.failed.get(name, 0) + n
        now = self._loop.time()
        if now - self._logged_at >= 1.0:  # a line a second at most, with the totals so far
            self._logged_at = now
            self._log.warning("rtp_send_failed", errors=counts, totals=dict(self.failed))
