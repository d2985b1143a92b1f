"""One playout clock for every call: a monotonic 20 ms grid (RFC 3551 §4.2 "default packetization
interval of 20 ms"; RFC 3550 §5.1 timestamp and sequence-number rules for what it sends).

The scheduler owns two loop timers in all, whatever the number of calls, both on absolute deadlines
``origin + k * interval`` (``loop.call_at``; never ``sleep(0.02)``, which drifts by its own lateness):

- *prepare* at ``deadline - lead``: every stream pops its jitter buffer, decodes, conceals, encodes and
  builds its packet (the CPU-heavy part, whose duration grows with the number of calls);
- *send* at ``deadline``: every stream sends what it prepared, a ``sendto`` each, so the packets of all
  calls leave within a few microseconds of each other and of the grid, not spread over the work.

A tick whose timer fires more than ``max_catch_up`` intervals late is skipped (counted): the streams'
timestamps follow the grid index, so a skipped tick is a gap in the timestamps, never a drift.

With a pacer (``pacer.py``) the send phase is the pacer thread's, at the deadline; a stream may take its datagram
of the last batch back until shortly before then (:meth:`PlayoutScheduler.withdraw`, a barge-in).

``on_tick(lateness, skipped, now)`` hears every sent tick: how late its send phase ran and how many ticks were
skipped just before it (the load monitor's playout signal; O(1) per tick).

:class:`OutboundRtp` numbers what one stream sends: sequence numbers continuous (+1 per packet sent),
timestamps on the grid (continuous across silence: a pause advances the timestamp by its duration),
and the marker bit on the first packet of each talk spurt (RFC 3551 §4.1 "the first packet of a
talkspurt ... marker bit set").
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.observability.logging import get_logger
from gateway.observability.metrics import Metrics
from gateway.rtp.packet import RtpPacket
from gateway.transport.pacer import Datagram, Pacer

_pack_header = struct.Struct("!BBHII").pack  # RFC 3550 §5.1 fixed header: V=2, no P/X/CC

_HANDOVER_MARGIN = 0.001  # seconds a batch should reach the pacer before its deadline at the short lead
# A datagram handed to the pacer may be withdrawn until this long before its deadline (the pacer reads the
# marks when it wakes at the deadline; half a millisecond is far beyond its wake-up error and a byte store).
WITHDRAW_MARGIN = 0.0005

__all__ = [
    "WITHDRAW_MARGIN",
    "LoopClock",
    "OutboundRtp",
    "PlayoutScheduler",
    "PlayoutStream",
    "SendTiming",
]


class LoopClock(Protocol):
    """The part of ``asyncio.AbstractEventLoop`` the scheduler uses (a fake clock in tests)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Any: ...


class PlayoutStream(Protocol):
    """A stream served by the scheduler (one per call)."""

    def prepare(self, tick: int, now: float) -> None:
        """Build what goes out at tick ``tick``; ``now`` is the prepare moment on the grid."""

    def send(self, tick: int) -> None:
        """Send what :meth:`prepare` built for ``tick`` (nothing if it built nothing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendTiming:
    """How late the send phase ran relative to the grid, over the recent ticks (seconds)."""

    ticks: int
    p50: float
    p99: float
    max: float
    skipped: int


class PlayoutScheduler:
    """The server's single 20 ms playout grid (see module doc)."""

    def __init__(
        self,
        loop: LoopClock,
        *,
        interval: float = 0.02,
        lead: float = 0.005,
        max_catch_up: int = 3,
        metrics: Metrics | None = None,
        timing_window: int = 3000,
        report_every: int = 500,
        precise_clock: Callable[[], float] | None = None,
        on_tick: Callable[[float, int, float], None] | None = None,
        pacer: Pacer | None = None,
        max_lead: float | None = None,
        calm_ticks: int = 500,
    ) -> None:
        if interval <= 0 or not 0 <= lead < interval:
            raise ValueError("need interval > 0 and 0 <= lead < interval")
        if max_lead is not None and not lead <= max_lead < interval:
            raise ValueError("need lead <= max_lead < interval")
        self._loop = loop
        self.interval = interval
        self.lead = lead
        self._max_catch_up = max_catch_up
        self._metrics = metrics
        self._streams: list[PlayoutStream] = []
        self._origin = 0.0
        self._tick = 0  # next tick to prepare
        self._prepared: int | None = None  # tick prepared, waiting for its send
        self._handle: Any = None
        self._running = False
        self.skipped = 0
        self._skipped_before = 0  # ticks skipped just before the prepared one
        self._on_tick = on_tick
        # per tick: lateness of the send phase's last sendto (an upper bound for every packet of the tick)
        self._lateness: deque[float] = deque(maxlen=timing_window)
        # Lateness is measured with this clock (same time base as the loop's): uvloop's loop.time() is
        # cached per iteration at millisecond resolution, time.monotonic is not.
        self._precise = precise_clock or loop.time
        self._report_every = report_every
        self._since_report = 0
        self._log = get_logger("playout")
        # With a pacer, each stream's send() at prepare time adds its datagram to ``batch`` (not None only
        # then) and the pacer's thread sends the batch at the deadline: no send timer on the loop.
        self.pacer = pacer
        self.batch: list[Datagram] | None = None
        # The last batch handed over: its tick, deadline and one withdrawal mark per datagram (see withdraw).
        self._handed: tuple[int, float, bytearray] | None = None
        # Adaptive lead (with a pacer): ``lead`` while every batch is handed over with a millisecond to spare,
        # ``max_lead`` from the first one that is not (a prepare timer delayed behind a burst of received
        # packets) until ``calm_ticks`` ticks in a row would have made it at ``lead`` again. A short lead is
        # less audio already handed over when a barge-in stops the assistant; a long one never sends late.
        self._min_lead = lead
        self._max_lead = max_lead if max_lead is not None else lead
        self._calm_ticks = calm_ticks
        self._calm = 0

    # -- streams -------------------------------------------------------------------------------

    def add(self, stream: PlayoutStream) -> None:
        if stream not in self._streams:
            self._streams.append(stream)
            self._gauge()
        if not self._running:
            self._start()

    def remove(self, stream: PlayoutStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
            self._gauge()

    @property
    def streams(self) -> int:
        return len(self._streams)

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.playout_streams.set(len(self._streams))

    # -- the grid --------------------------------------------------------------------------------

    def tick_time(self, tick: int) -> float:
        """The send deadline of ``tick`` (absolute, on the loop's monotonic clock)."""
        return self._origin + tick * self.interval

    def _start(self) -> None:
        self._running = True
        # The first deadline is one interval out, so there is time to prepare it.
        self._origin = self._loop.time() + self.interval
        self._tick = 0
        self._skipped_before = 0
        self._schedule_prepare()

    def close(self) -> None:
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.pacer is not None:
            self.pacer.close()

    def _schedule_prepare(self) -> None:
        self._handle = self._loop.call_at(self.tick_time(self._tick) - self.lead, self._on_prepare)

    def _on_prepare(self) -> None:
        if not self._running:
            return
        now = self._loop.time()
        # How many whole intervals late are we? Beyond max_catch_up, jump to the current grid point.
        behind = int((now - (self.tick_time(self._tick) - self.lead)) / self.interval)
        if behind > self._max_catch_up:
            self.skipped += behind
            if self._metrics is not None:
                self._metrics.playout_ticks_skipped.inc(behind)
            self._tick += behind
            self._skipped_before = behind
        tick = self._tick
        prepare_at = self.tick_time(tick) - self.lead
        streams = list(self._streams)
        for stream in streams:
            stream.prepare(tick, prepare_at)
        pacer = self.pacer
        if pacer is None:
            self._prepared = tick
            self._handle = self._loop.call_at(self.tick_time(tick), self._on_send)
            return
        batch: list[Datagram] = []
        self.batch = batch
        try:
            for stream in streams:
                stream.send(tick)
        finally:
            self.batch = None
        deadline = self.tick_time(tick)
        withdrawn = bytearray(len(batch))
        self._handed = (tick, deadline, withdrawn)
        pacer.submit(deadline, batch, withdrawn)
        handed = self._precise()
        self._adapt_lead(handed - prepare_at)
        # what the load monitor hears: how late the batch was handed over (0 when before its deadline)
        self._sent(tick, max(0.0, handed - deadline))

    def withdraw(self, tick: int, index: int) -> bool:
        """Take datagram ``index`` of tick ``tick``'s batch back from the pacer (a barge-in: the caller should
        not hear what was prepared ahead). True when done: its deadline was still at least
        ``WITHDRAW_MARGIN`` ahead; False when it has left or is about to."""
        handed = self._handed
        if handed is None or handed[0] != tick or not 0 <= index < len(handed[2]):
            return False
        if handed[1] - self._precise() < WITHDRAW_MARGIN:
            return False
        handed[2][index] = 1
        return True

    def _adapt_lead(self, spent: float) -> None:
        """``spent``: from the moment this tick's prepare was due to its hand-over (timer delay + preparing)."""
        if self._max_lead == self._min_lead:
            return
        if spent > self._min_lead - _HANDOVER_MARGIN:
            self._calm = 0
            self.lead = self._max_lead
        elif self.lead != self._min_lead:
            self._calm += 1
            if self._calm >= self._calm_ticks:
                self.lead = self._min_lead

    def _on_send(self) -> None:
        if not self._running:
            return
        tick = self._prepared
        assert tick is not None
        self._prepared = None
        for stream in list(self._streams):
            stream.send(tick)
        self._sent(tick, self._precise() - self.tick_time(tick))

    def _sent(self, tick: int, lateness: float) -> None:
        """After a tick's sends (or their hand-over to the pacer): timing, the tick hook, the next prepare."""
        self._lateness.append(lateness)
        if self._metrics is not None:
            self._metrics.playout_lateness_seconds.observe(max(0.0, lateness))
        if self._on_tick is not None:
            skipped, self._skipped_before = self._skipped_before, 0
            self._on_tick(lateness, skipped, self._loop.time())
        self._tick = tick + 1
        self._since_report += 1
        if self._report_every and self._since_report >= self._report_every:
            self._report()
        if not self._streams:
            # Idle: stop the clock; the next stream restarts it on a fresh grid.
            self._running = False
            self._handle = None
            return
        self._schedule_prepare()

    # -- measurement -----------------------------------------------------------------------------

    def _report(self) -> None:
        """Log the send-time lateness of the last ``report_every`` ticks (``playout_timing``)."""
        window = list(self._lateness)[-self._since_report :]
        self._since_report = 0
        values = sorted(window)
        if values:
            self._log.info(
                "playout_timing",
                streams=len(self._streams),
                ticks=len(values),
                p50_ms=round(1000 * _quantile(values, 0.5), 3),
                p99_ms=round(1000 * _quantile(values, 0.99), 3),
                max_ms=round(1000 * values[-1], 3),
                skipped=self.skipped,
            )

    def send_timing(self, *, reset: bool = False) -> SendTiming:
        """Percentiles of the send phase's lateness over the recent ticks (``reset`` starts afresh)."""
        values = sorted(self._lateness)
        if reset:
            self._lateness.clear()
        if not values:
            return SendTiming(ticks=0, p50=0.0, p99=0.0, max=0.0, skipped=self.skipped)
        return SendTiming(
            ticks=len(values),
            p50=_quantile(values, 0.5),
            p99=_quantile(values, 0.99),
            max=values[-1],
            skipped=self.skipped,
        )


def _quantile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


class OutboundRtp:
    """Sequence numbers, timestamps and marker bits of one outbound RTP stream on the playout grid.

    RFC 3550 §5.1: "The initial value of the sequence number SHOULD be random" and likewise the
    timestamp; both come from the injected ``rng``. The timestamp of a packet is its grid tick times
    the samples per tick, so it stays continuous across silence and skipped ticks.
    """

    def __init__(
        self,
        *,
        ssrc: int,
        payload_type: int,
        clock_rate: int,
        interval: float,
        rng: random.Random,
    ) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.samples_per_tick = round(clock_rate * interval)
        self._seq = rng.randrange(0x10000)
        self._ts_base = rng.randrange(0x100000000)
        self._tick0: int | None = None
        self._talking = False
        self._spurt_started = False  # the last packet opened a talk spurt (its marker bit is set)
        self.packets_sent = 0
        self.talk_spurts = 0

    def timestamp(self, tick: int) -> int:
        if self._tick0 is None:
            self._tick0 = tick
        return (self._ts_base + (tick - self._tick0) * self.samples_per_tick) & 0xFFFFFFFF

    def packet(self, tick: int, payload: bytes) -> RtpPacket:
        """The packet carrying ``payload`` for ``tick`` (the first one after silence has the marker)."""
        marker = not self._talking
        if marker:
            self.talk_spurts += 1
        self._talking = True
        packet = RtpPacket(
            payload_type=self.payload_type,
            sequence_number=self._seq,
            timestamp=self.timestamp(tick),
            ssrc=self.ssrc,
            payload=payload,
            marker=marker,
        )
        self._seq = (self._seq + 1) & 0xFFFF
        self.packets_sent += 1
        return packet

    def datagram(self, tick: int, payload: bytes) -> tuple[bytes, int]:
        """The same packet as :meth:`packet`, already serialized (no CSRC, extension or padding), with its
        timestamp: the per-tick send path builds the 12 header bytes directly instead of a packet object."""
        marker = not self._talking
        if marker:
            self.talk_spurts += 1
        self._talking = True
        self._spurt_started = marker
        if self._tick0 is None:
            self._tick0 = tick
        timestamp = (self._ts_base + (tick - self._tick0) * self.samples_per_tick) & 0xFFFFFFFF
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        self.packets_sent += 1
        second = (0x80 | self.payload_type) if marker else self.payload_type
        return _pack_header(0x80, second, seq, timestamp, self.ssrc) + payload, timestamp

    def silence(self, tick: int) -> None:
        """Nothing is sent at ``tick``: the next packet starts a talk spurt."""
        self.timestamp(tick)
        self._talking = False

    def withdraw(self) -> None:
        """The last :meth:`datagram` was not sent after all: its sequence number goes to the next packet,
        which starts a talk spurt (the stream is silent from the withdrawn packet's tick)."""
        self._seq = (self._seq - 1) & 0xFFFF
        self.packets_sent -= 1
        if self._spurt_started:
            self.talk_spurts -= 1
        self._spurt_started = False
        self._talking = False

    @property
    def next_sequence_number(self) -> int:
        return self._seq

