"""DTMF over RTP: the telephone-event payload (RFC 4733 §2.3, §2.5, events of §3.2).

Receiver: an event is identified by its RTP timestamp (§2.5.1.2 "the RTP timestamp ...
is the time of the beginning of the event"), so the redundant start, update and end
packets give one digit. The end bit ends it; the marker bit is NOT required (some peers
never set it, and a receiver that waits for it loses their digits). An event whose end
never arrives is emitted after a timeout. Events 0-9, ``*`` (10), ``#`` (11), A-D (12-15)
are digits; flash (16) and anything else is consumed silently.

Sender: §2.5.1.2 start packet with the marker bit, updates at the update interval,
and §2.5.1.4 "The final packet for each event ... SHOULD be sent a total of three times
at the interval used by the source for updates", all with the event's timestamp; sequence
numbers come from the audio stream's allocator (§2.1 "shares the RTP sequence number").
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.rtp.packet import RtpPacket

__all__ = ["DIGIT_EVENTS", "DtmfDigit", "DtmfReceiver", "DtmfSender", "event_to_digit"]

DIGIT_EVENTS = "0123456789*#ABCD"  # event code -> digit (RFC 4733 §3.2, Table 7)
_EVENT = struct.Struct("!BBH")
_MAX_DURATION = 0xFFFF


def event_to_digit(event: int) -> str | None:
    return DIGIT_EVENTS[event] if 0 <= event < len(DIGIT_EVENTS) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfDigit:
    digit: str
    duration_ms: int
    timestamp: int  # RTP timestamp of the event start, identifies the event
    ended_by_timeout: bool = False  # no end packet arrived


@dataclass(slots=True)
class _Current:
    key: tuple[int, int]  # (ssrc, timestamp)
    event: int
    duration: int
    last_seen: float


def _ts_older(a: int, b: int) -> bool:
    """RTP timestamp ``a`` is before ``b`` (32-bit wrap-around)."""
    return ((a - b) & 0xFFFFFFFF) >= 0x80000000


class DtmfReceiver:
    """Turns telephone-event RTP packets into :class:`DtmfDigit` events."""

    def __init__(self, payload_type: int, clock_rate: int = 8000, *, end_timeout: float = 0.5) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.end_timeout = end_timeout
        self._current: _Current | None = None
        self._done: deque[tuple[int, int]] = deque(maxlen=16)
        self._events: list[DtmfDigit] = []
        self.malformed = 0

    def receive_packet(self, packet: RtpPacket, now: float) -> None:
        """Feed one RTP packet; packets of other payload types are ignored."""
        if packet.payload_type != self.payload_type:
            return
        if len(packet.payload) < 4:
            self.malformed += 1
            return
        event, flags, duration = _EVENT.unpack_from(packet.payload, 0)
        key = (packet.ssrc, packet.timestamp)
        if key in self._done:
            return  # a retransmitted end packet or a late update of a finished event
        current = self._current
        if current is not None and current.key != key:
            if current.key[0] == key[0] and _ts_older(key[1], current.key[1]):
                return  # a reordered packet of an event older than the current one
            # §2.5.2.2: a new event means the previous one is over, even without its end
            self._finish(current, by_timeout=True)
            current = None
        if current is None:
            current = _Current(key=key, event=event, duration=duration, last_seen=now)
            self._current = current
        else:
            current.duration = max(current.duration, duration)
            current.last_seen = now
        if flags & 0x80:  # E bit
            self._finish(current, by_timeout=False)

    def _finish(self, current: _Current, *, by_timeout: bool) -> None:
        self._current = None
        self._done.append(current.key)
        digit = event_to_digit(current.event)
        if digit is None:
            return  # flash (16) and non-DTMF events are consumed, not reported
        self._events.append(
            DtmfDigit(
                digit=digit,
                duration_ms=current.duration * 1000 // self.clock_rate,
                timestamp=current.key[1],
                ended_by_timeout=by_timeout,
            )
        )

    def get_timer(self) -> float | None:
        if self._current is None:
            return None
        return self._current.last_seen + self.end_timeout

    def handle_timer(self, now: float) -> None:
        current = self._current
        if current is not None and now >= current.last_seen + self.end_timeout:
            self._finish(current, by_timeout=True)

    def pop_events(self) -> list[DtmfDigit]:
        events, self._events = self._events, []
        return events


@dataclass(slots=True)
class _Sending:
    event: int
    timestamp: int
    total: int  # samples
    duration: int  # samples so far
    ends_left: int  # copies of the final packet still to send
    started_at: float
    next_at: float


class DtmfSender:
    """Produces telephone-event RTP packets for queued digits, paced by the caller's clock.

    ``send_digits(..., timestamp=ts, now=t)`` anchors the event timeline on the audio
    stream's clock (``ts`` is the audio RTP timestamp at ``t``); a digit starting later gets
    ``ts + (start - t) * clock_rate``. While :attr:`busy` the caller sends no audio.
    """

    def __init__(
        self,
        *,
        payload_type: int,
        ssrc: int,
        next_sequence_number: Callable[[], int],
        clock_rate: int = 8000,
        update_interval: float = 0.05,
        inter_digit_gap: float = 0.05,
        volume: int = 10,
    ) -> None:
        if not 0 <= volume <= 63:
            raise ValueError("volume is 0..63 (-dBm0)")
        if update_interval <= 0:
            raise ValueError("update_interval must be positive")
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.update_interval = update_interval
        self.inter_digit_gap = inter_digit_gap
        self.volume = volume
        self._next_seq = next_sequence_number
        self._queue: deque[tuple[int, int]] = deque()  # (event, total samples)
        self._sending: _Sending | None = None
        self._anchor = (0, 0.0)  # (RTP timestamp, now) of the audio clock
        self._not_before = 0.0
        self._out: list[RtpPacket] = []

    @property
    def busy(self) -> bool:
        """A digit is being sent or waits in the queue."""
        return self._sending is not None or bool(self._queue)

    def send_digits(self, digits: str, *, timestamp: int, now: float, duration_ms: int = 100) -> None:
        """Queue ``digits`` (0-9 * # A-D), each lasting ``duration_ms``.

        Raises ``ValueError`` (our misuse) for a character that is not a DTMF digit or a
        duration that does not fit the 16-bit duration field.
        """
        total = duration_ms * self.clock_rate // 1000
        if not 0 < total <= _MAX_DURATION:
            raise ValueError(f"duration_ms must give 1..65535 samples, got {duration_ms}")
        events = []
        for char in digits.upper():
            event = DIGIT_EVENTS.find(char)
            if event < 0:
                raise ValueError(f"not a DTMF digit: {char!r}")
            events.append((event, total))
        was_idle = not self.busy
        self._queue.extend(events)
        if was_idle:
            self._anchor = (timestamp, now)
            self._start_next(now)

    def _start_next(self, now: float) -> None:
        event, total = self._queue.popleft()
        anchor_ts, anchor_now = self._anchor
        timestamp = (anchor_ts + round((now - anchor_now) * self.clock_rate)) & 0xFFFFFFFF
        sending = _Sending(
            event=event,
            timestamp=timestamp,
            total=total,
            duration=0,
            ends_left=3,
            started_at=now,
            next_at=now + self.update_interval,
        )
        self._sending = sending
        # §2.5.1.2: "the marker bit ... set in the first packet of an event"; the duration
        # field carries the duration so far
        self._emit(sending, marker=True)

    def _emit(self, sending: _Sending, *, marker: bool) -> None:
        end = sending.duration >= sending.total
        if end:
            sending.ends_left -= 1
        flags = (0x80 if end else 0) | self.volume
        self._out.append(
            RtpPacket(
                payload_type=self.payload_type,
                sequence_number=self._next_seq() & 0xFFFF,
                timestamp=sending.timestamp,
                ssrc=self.ssrc,
                payload=_EVENT.pack(sending.event, flags, sending.duration),
                marker=marker,
            )
        )

    def get_timer(self) -> float | None:
        if self._sending is not None:
            return self._sending.next_at
        if self._queue:
            return self._not_before
        return None

    def handle_timer(self, now: float) -> None:
        sending = self._sending
        if sending is None:
            if self._queue and now >= self._not_before:
                self._start_next(now)
            return
        if now < sending.next_at:
            return
        elapsed = round((now - sending.started_at) * self.clock_rate)
        sending.duration = min(sending.total, max(sending.duration, elapsed))
        self._emit(sending, marker=False)
        sending.next_at = now + self.update_interval
        if sending.ends_left == 0:
            self._sending = None
            self._not_before = now + self.inter_digit_gap

    def packets_to_send(self) -> list[RtpPacket]:
        out, self._out = self._out, []
        return out
