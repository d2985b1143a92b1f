"""Adaptive playout (jitter) buffer for sample-based audio payloads (RFC 3550 §6.4.1, §5.1; RFC 3551 §4.1).

Playout is time-driven: the playout scheduler calls :meth:`JitterBuffer.pop` on its 20 ms
clock and every call returns exactly one frame, whatever did or did not arrive. Nothing is
ever released because a number of packets arrived (the failure of packet-count buffers,
which keep the extra delay of every loss or stall for the rest of the call).

The buffer stores payload bytes by RTP timestamp, one byte per timestamp unit (G.711 PCMU
and PCMA; G.722 too, whose RTP clock is 8000 Hz, RFC 3551 §4.5.2). Packets of any ptime
are split and joined into frames of ``frame_ms`` by their timestamps. Decoding and packet
loss concealment happen after the buffer (``gateway.codecs``): a frame of kind
``CONCEALED`` asks the decoder side to run its concealment.

How the delay is chosen
-----------------------
Every packet gives a transit ``d = arrival - timestamp / clock_rate`` (the quantity RFC 3550
§6.4.1 measures the interarrival jitter with). The *floor* is the smallest transit of the
last ``window`` seconds: the path delay of the fastest packets. A packet's relative delay is
``d - floor``; the *jitter estimate* is the 95th percentile of the relative delays of the
last ``window`` seconds, and the target delay is that plus one frame, clamped to
``[max(min_delay, one frame), max_delay - half a frame]``. A percentile over a sliding
window attacks fast (a few slow packets move it) and forgets within ``window`` seconds once
the jitter is gone. A packet that arrived after its playout moment is recorded at the delay
in force (the target then adds a frame), not at its full lateness: a stall then a burst
raises the target by a frame or two for ``window`` seconds, not by the length of the stall.

The frame at timestamp ``t`` plays at ``origin + t / clock_rate + floor + delay``. The delay
in force moves towards the target by whole frames:

- too shallow by more than 3/4 of a frame: a frame is inserted at once (``CONCEALED`` in
  speech, ``SILENCE`` in silence), since waiting means late packets;
- too deep by more than 1.25 frames: a frame is dropped when that is inaudible (a missing
  frame with audio after it, or a frame the injected ``is_quiet`` predicate calls quiet),
  otherwise one frame once the excess has lasted ``shrink_patience`` seconds (four times
  that while the excess is under two frames: drift is slow and can wait for a pause);
  beyond five frames of excess (our own scheduler stalled) one frame per pop;
- in silence (a talk spurt ended: the next packet has the marker bit, RFC 3551 §4.1
  "the first packet of a talkspurt", or its sequence number follows the last one played
  while its timestamp jumps; or nothing arrived for 60 ms) playout re-anchors on the next
  talk spurt at the target delay, skipping whole frames whose moment has passed.

Sender clock drift (a sender a few hundred ppm fast or slow) moves the floor slowly, so it
comes out as one dropped or inserted frame every minute or so, at the quietest moment
available.

Discontinuities (RFC 3550 §8.2 and Appendix A.1): a new SSRC, a sequence jump beyond
``MAX_DROPOUT``/``MAX_MISORDER`` or a transit more than one second away from the floor puts
the packet on probation; the next packet confirming the new stream resets the buffer and
both are kept. Packets that keep landing outside the window with a steady transit (a path
delay step, a timestamp jump below one second) reset it too. Timestamps are unwrapped
(32 bits) and sequence numbers compared with 16-bit wrap-around.

Memory is bounded: at most ``max_delay`` plus one frame of audio is held (more is dropped
and counted as overflow), and the measurement windows are bounded in time and length.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from gateway.rtp.packet import RtpPacket, seq_distance
from gateway.rtp.stats import MAX_DROPOUT, MAX_MISORDER

__all__ = ["FrameKind", "JitterBuffer", "JitterStats", "PlayoutFrame", "PushResult"]

_TS_MASK = 0xFFFFFFFF
_TS_HALF = 0x80000000
_QUANTILE = 0.95
_GROW_BELOW = 0.75  # frames of missing delay before a frame is inserted
_SHRINK_ABOVE = 1.25  # frames of extra delay before a frame may be dropped
_SHRINK_FAST_ABOVE = 2.0  # frames of extra delay dropped after shrink_patience, fewer after 4x that
_CATCH_UP_ABOVE = 5.0  # frames of extra delay dropped one per pop (our own clock stalled)
_CONCEAL_MAX = 0.06  # seconds of underrun concealed before playout falls back to silence
_DISCONTINUITY = 1.0  # seconds of transit change that cannot be jitter
_STEP_RUN = 4  # consecutive out-of-window packets with a steady transit: the path changed
_WARMUP_PACKETS = 50  # the start delay is a floor until this many packets were measured
_SEEN_SEQS = 512  # sequence numbers remembered for duplicate detection
_WINDOW_MAX_SAMPLES = 1000


class FrameKind(enum.Enum):
    AUDIO = "audio"  # received audio
    CONCEALED = "concealed"  # a frame is missing: the decoder side conceals it
    SILENCE = "silence"  # nothing to play: before the first packet, between talk spurts


class PushResult(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"  # arrived after its playout moment; dropped
    TOO_EARLY = "too_early"  # beyond max_delay of audio ahead; dropped (overflow)
    RESET = "reset"  # the stream restarted (SSRC change, jump, path change); packet kept
    PROBATION = "probation"  # looks like a new stream; held until the next packet confirms it


@dataclass(frozen=True, slots=True, kw_only=True)
class PlayoutFrame:
    """One frame of playout.

    ``timestamp`` is the playout clock: it starts at 0 and advances by exactly one frame
    per pop (modulo 2**32), whatever was inserted or dropped. ``source_timestamp`` is the
    RTP timestamp the frame stands for (the received audio, or the missing frame being
    concealed), ``None`` for silence and for frames inserted to grow the delay.
    ``payload`` is always exactly one frame of bytes (``silence_byte`` where nothing was
    received).
    """

    kind: FrameKind
    payload: bytes
    timestamp: int
    source_timestamp: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class JitterStats:
    """Snapshot of a :class:`JitterBuffer`. Durations in seconds."""

    current_delay: float  # playout delay in force, above the fastest packets' transit
    target_delay: float
    jitter: float  # 95th percentile of relative delay over the window
    buffered: float  # audio held now
    max_buffered: float
    frames_played: int  # AUDIO frames
    frames_concealed: int  # CONCEALED frames (losses, underruns, insertions in speech)
    frames_silence: int  # SILENCE frames
    frames_partial: int  # AUDIO frames with some samples missing (filled with silence)
    frames_inserted: int  # frames inserted to grow the delay (included in the two above)
    frames_dropped: int  # frames skipped to shrink the delay
    packets_accepted: int
    packets_late: int
    packets_duplicate: int
    packets_overflow: int  # too early: more than max_delay of audio ahead
    packets_discarded: int  # probation candidates the stream did not confirm
    resets: int


@dataclass(slots=True)
class _Counts:
    frames_played: int = 0
    frames_concealed: int = 0
    frames_silence: int = 0
    frames_partial: int = 0
    frames_inserted: int = 0
    frames_dropped: int = 0
    packets_accepted: int = 0
    packets_late: int = 0
    packets_duplicate: int = 0
    packets_overflow: int = 0
    packets_discarded: int = 0
    resets: int = 0


class _State(enum.Enum):
    SILENCE = "silence"  # between talk spurts: playout may re-anchor
    PLAYING = "playing"  # inside a talk spurt: one frame per pop, continuous timestamps


@dataclass(slots=True)
class _Segment:
    start: int  # unwrapped RTP timestamp of data[0]
    data: bytes
    seq: int
    marker: bool

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass(frozen=True, slots=True)
class _Candidate:
    packet: RtpPacket
    arrival: float


class JitterBuffer:
    """Adaptive, time-driven playout buffer of one received audio stream (see module doc).

    ``push`` every received packet of the audio payload type with its arrival time;
    ``pop`` once per frame from the playout clock. ``is_quiet`` (optional) tells whether a
    frame of payload bytes is quiet enough to drop or stretch unnoticed; without it the
    buffer only uses talk-spurt gaps and missing frames for inaudible adaptation.
    """

    _ssrc: int | None
    _candidate: _Candidate | None
    _played_end: int | None
    _last_seq: int | None
    _over_since: float | None

    def __init__(
        self,
        *,
        silence_byte: int,
        clock_rate: int = 8000,
        frame_ms: int = 20,
        min_delay: float = 0.02,
        start_delay: float = 0.04,
        max_delay: float = 0.2,
        window: float = 2.0,
        shrink_patience: float = 1.0,
        is_quiet: Callable[[bytes], bool] | None = None,
    ) -> None:
        if clock_rate <= 0 or frame_ms <= 0:
            raise ValueError("clock_rate and frame_ms must be positive")
        samples = clock_rate * frame_ms
        if samples % 1000:
            raise ValueError(f"{frame_ms} ms is not a whole number of samples at {clock_rate} Hz")
        if not 0 <= silence_byte <= 255:
            raise ValueError("silence_byte must be a byte value")
        frame_s = frame_ms / 1000
        low = max(min_delay, frame_s)
        if not low <= start_delay <= max_delay - frame_s / 2:
            raise ValueError(
                "need max(min_delay, one frame) <= start_delay <= max_delay - half a frame, got "
                f"min_delay={min_delay} start_delay={start_delay} max_delay={max_delay}"
            )
        if window <= 0 or shrink_patience < 0:
            raise ValueError("window must be positive and shrink_patience not negative")
        self._clock = clock_rate
        self._frame = samples // 1000
        self._frame_s = frame_s
        self._silence = bytes((silence_byte,)) * self._frame
        self._min_target = low
        self._max_target = max_delay - frame_s / 2
        self._start_delay = start_delay
        self._max_delay = max_delay
        self._capacity = round(max_delay * clock_rate) + self._frame
        self._window = window
        self._shrink_patience = shrink_patience
        self._is_quiet = is_quiet
        self._conceal_max = max(1, math.ceil(_CONCEAL_MAX / frame_s - 1e-9))
        self._count = _Counts()  # survives resets
        self._playout_ts = 0
        self._max_buffered = 0
        self._last_kind = FrameKind.SILENCE
        self._reset_stream()

    # -- public API ------------------------------------------------------------------

    def push(self, packet: RtpPacket, now: float) -> PushResult:
        """Take one received packet (arrival time ``now``, the playout clock's time base)."""
        if self._ssrc is None:
            self._start_stream(packet, now)
            return self._accept(packet, now)
        # Per packet: the unwrapped timestamp and the transit are computed once, for the discontinuity
        # check and for _accept (nothing changes the stream state in between).
        ts_max = self._ts_max
        start = ts_max + ((packet.timestamp - ts_max + _TS_HALF) & _TS_MASK) - _TS_HALF  # _unwrap, inlined
        transit = now - (start - self._origin) / self._clock
        if self._is_discontinuity(packet, transit):
            return self._probation(packet, now)
        if self._candidate is not None:
            # The old stream went on: the candidate was a stray packet.
            self._candidate = None
            self._count.packets_discarded += 1
        return self._accept(packet, now, start, transit)

    def pop(self, now: float) -> PlayoutFrame:
        """Return the frame to play at ``now``; exactly one frame per call."""
        timestamp = self._playout_ts
        kind, payload, source = self._pop(now)
        return PlayoutFrame(
            kind=kind,
            payload=payload,
            timestamp=timestamp,
            source_timestamp=None if source is None else source & _TS_MASK,
        )

    def pop_frame(self, now: float) -> tuple[FrameKind, bytes]:
        """:meth:`pop` as a (kind, payload) pair: the per-tick playout path, which needs nothing else and
        builds no frame object (the state moves exactly as with :meth:`pop`)."""
        kind, payload, _ = self._pop(now)
        return kind, payload

    def _pop(self, now: float) -> tuple[FrameKind, bytes, int | None]:
        self._playout_ts = (self._playout_ts + self._frame) & _TS_MASK
        if self._state is _State.PLAYING:
            kind, payload, source = self._pop_playing(now)
        else:
            kind, payload, source = self._pop_silence(now)
        if kind is FrameKind.AUDIO:
            self._count.frames_played += 1
        elif kind is FrameKind.CONCEALED:
            self._count.frames_concealed += 1
        else:
            self._count.frames_silence += 1
        self._last_kind = kind
        return kind, payload, source

    def reset(self) -> None:
        """Forget the stream (e.g. the peer's media changed); counters are kept."""
        self._count.resets += 1
        self._reset_stream()

    def stats(self) -> JitterStats:
        held = self._held()
        return JitterStats(
            current_delay=self._current_delay,
            target_delay=self._target(),
            jitter=self._jitter,
            buffered=held / self._clock,
            max_buffered=max(self._max_buffered, held) / self._clock,
            **asdict(self._count),
        )

    # -- stream state -------------------------------------------------------------------

    def _reset_stream(self) -> None:
        self._state = _State.SILENCE
        self._ssrc = None
        self._origin = 0  # unwrapped timestamp of transit zero
        self._ts_max = 0  # highest unwrapped timestamp seen
        self._seq_max = 0
        self._segments: list[_Segment] = []
        self._next = 0  # PLAYING: unwrapped timestamp of the next frame
        self._played_end = None  # nothing before this may play again
        self._last_seq = None  # sequence number of the audio played last
        self._underrun = 0
        self._over_since = None
        self._last_drop = -math.inf
        self._floor_window: deque[tuple[float, float]] = deque()  # (arrival, transit), increasing
        self._delays: deque[tuple[float, float]] = deque()  # (arrival, relative delay)
        self._ordered_delays: list[float] = []  # the same relative delays, sorted
        self._measured = 0
        self._target_cache: float | None = None
        self._jitter = 0.0
        self._current_delay = self._start_delay
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._candidate = None
        self._run_count = 0
        self._run_low = math.inf
        self._run_high = -math.inf

    def _rebase(self) -> None:
        """The path delay changed (or the timestamps jumped by less than a second): measure afresh.

        Same stream, so timestamp unwrapping, duplicate memory and the played position stay;
        playout re-anchors in silence on the new transit.
        """
        self._count.resets += 1
        self._state = _State.SILENCE
        self._floor_window.clear()
        self._delays.clear()
        self._ordered_delays.clear()
        self._measured = 0
        self._target_cache = None
        self._run_count = 0
        self._over_since = None
        self._underrun = 0

    def _start_stream(self, packet: RtpPacket, now: float) -> None:
        self._ssrc = packet.ssrc
        self._origin = packet.timestamp
        self._ts_max = packet.timestamp
        self._seq_max = packet.sequence_number

    def _unwrap(self, timestamp: int) -> int:
        delta = ((timestamp - self._ts_max + _TS_HALF) & _TS_MASK) - _TS_HALF
        return self._ts_max + delta

    def _transit(self, start: int, now: float) -> float:
        return now - (start - self._origin) / self._clock

    def _is_discontinuity(self, packet: RtpPacket, transit: float) -> bool:
        if packet.ssrc != self._ssrc:
            return True
        jump = seq_distance(packet.sequence_number, self._seq_max)
        if jump > MAX_DROPOUT or jump < -MAX_MISORDER:
            return True
        floors = self._floor_window
        # floors[0][1] is _floor(), inlined (per packet)
        return bool(floors) and abs(transit - floors[0][1]) > _DISCONTINUITY

    def _probation(self, packet: RtpPacket, now: float) -> PushResult:
        """RFC 3550 A.1: a new source (or a restarted one) must send two packets in sequence."""
        candidate = self._candidate
        if candidate is not None:
            first = candidate.packet
            elapsed = now - candidate.arrival
            advance = (((packet.timestamp - first.timestamp + _TS_HALF) & _TS_MASK) - _TS_HALF) / self._clock
            if (
                packet.ssrc == first.ssrc
                and seq_distance(packet.sequence_number, first.sequence_number) == 1
                and abs(advance - elapsed) < _DISCONTINUITY / 2
            ):
                self._count.resets += 1
                self._reset_stream()
                self._start_stream(first, candidate.arrival)
                self._accept(first, candidate.arrival)
                self._accept(packet, now)
                return PushResult.RESET
            self._count.packets_discarded += 1
        self._candidate = _Candidate(packet, now)
        return PushResult.PROBATION

    # -- arrival --------------------------------------------------------------------------

    def _accept(self, packet: RtpPacket, now: float, start: int | None = None,
                transit: float | None = None) -> PushResult:
        """Store one packet of the current stream; ``start``/``transit``: its unwrapped timestamp and transit
        when the caller computed them already."""
        seq = packet.sequence_number
        if seq in self._seen:
            self._count.packets_duplicate += 1
            return PushResult.DUPLICATE
        # _remember(seq), inlined (per packet)
        self._seen.add(seq)
        order = self._seen_order
        order.append(seq)
        if len(order) > _SEEN_SEQS:
            self._seen.discard(order.popleft())
        if ((seq - self._seq_max + 0x8000) & 0xFFFF) - 0x8000 > 0:  # seq_distance(seq, self._seq_max), inlined
            self._seq_max = seq
        if start is None or transit is None:
            start = self._unwrap(packet.timestamp)
            transit = self._transit(start, now)
        end = start + len(packet.payload)
        if start > self._ts_max:
            self._ts_max = start
        if not self._floor_window:
            self._floor_window.append((now, transit))
        low = self._next if self._state is _State.PLAYING else self._window_start(now)
        # Never before what already played; in silence the head of a packet straddling the
        # window is kept here and cut at playout in whole frames.
        lo = start if self._played_end is None else max(start, self._played_end)
        if self._state is _State.PLAYING:
            lo = max(lo, self._next)
        # At most max_delay plus a frame of audio is held, counted from the oldest held sample.
        base = min(low, lo, self._segments[0].start) if self._segments else min(low, lo)
        high = base + self._capacity
        if end <= low or start >= high:
            late = end <= low
            if late:
                self._count.packets_late += 1
            else:
                self._count.packets_overflow += 1
            if self._path_changed(transit):
                self._rebase()
                self._seen.discard(seq)
                self._accept(packet, now)
                return PushResult.RESET
            if late:
                self._observe(now, transit, late=True)
                return PushResult.LATE
            return PushResult.TOO_EARLY
        self._run_count = 0
        self._observe(now, transit, late=False)
        if not packet.payload:
            self._count.packets_accepted += 1
            return PushResult.ACCEPTED
        hi = min(end, high)
        if hi < end:
            self._count.packets_overflow += 1
        data = packet.payload[lo - start : hi - start]
        if not self._insert(_Segment(lo, data, seq, packet.marker and lo == start)):
            self._count.packets_duplicate += 1
            return PushResult.DUPLICATE
        self._count.packets_accepted += 1
        segments = self._segments
        # What is held lies within [first start, last end) (disjoint segments): sum it only when that span
        # could set a new maximum, not on every packet.
        last = segments[-1]
        if last.start + len(last.data) - segments[0].start > self._max_buffered:
            self._max_buffered = max(self._max_buffered, self._held())
        return PushResult.ACCEPTED

    def _window_start(self, now: float) -> int:
        """Earliest timestamp that can still be played."""
        if self._state is _State.PLAYING:
            return self._next
        # Starting earlier would put the delay past the point where a frame is dropped.
        low = math.ceil(self._desired_position(now) - _SHRINK_ABOVE * self._frame)
        return low if self._played_end is None else max(low, self._played_end)

    def _path_changed(self, transit: float) -> bool:
        """Consecutive out-of-window packets with a steady transit: not jitter but a new path delay."""
        if self._run_count == 0:
            self._run_low = self._run_high = transit
        else:
            self._run_low = min(self._run_low, transit)
            self._run_high = max(self._run_high, transit)
        self._run_count += 1
        return self._run_count >= _STEP_RUN and self._run_high - self._run_low < self._frame_s / 2

    def _insert(self, segment: _Segment) -> bool:
        """Store the parts of ``segment`` not held yet; False when nothing was new."""
        segments = self._segments
        if not segments or segments[-1].start + len(segments[-1].data) <= segment.start:
            # Per-packet fast path: in order after everything held (the held segments are sorted and
            # disjoint), so nothing is cut and it goes last; the same as the general case below.
            segments.append(segment)
            return True
        pieces = [(segment.start, segment.end)]
        for other in self._segments:
            if other.start >= segment.end or other.end <= segment.start:
                continue
            cut: list[tuple[int, int]] = []
            for a, b in pieces:
                if other.end <= a or other.start >= b:
                    cut.append((a, b))
                    continue
                if a < other.start:
                    cut.append((a, other.start))
                if other.end < b:
                    cut.append((other.end, b))
            pieces = cut
        for a, b in pieces:
            data = segment.data[a - segment.start : b - segment.start]
            piece = _Segment(a, data, segment.seq, segment.marker and a == segment.start)
            bisect.insort(self._segments, piece, key=lambda segment: segment.start)
        return bool(pieces)

    def _held(self) -> int:
        return sum(len(segment.data) for segment in self._segments)

    # -- delay estimation -------------------------------------------------------------------

    def _observe(self, now: float, transit: float, *, late: bool) -> None:
        floors = self._floor_window
        while floors and floors[-1][1] >= transit:
            floors.pop()
        floors.append((now, transit))
        horizon = now - self._window
        while len(floors) > 1 and floors[0][0] < horizon:
            floors.popleft()
        relative = transit - floors[0][1]
        if late:
            # Lateness says "the delay in force was not enough" (the target adds a frame to
            # it), not "the whole stall was needed".
            relative = min(relative, self._current_delay)
        delays, ordered = self._delays, self._ordered_delays
        delays.append((now, relative))
        bisect.insort(ordered, relative)
        while delays and (delays[0][0] < horizon or len(delays) > _WINDOW_MAX_SAMPLES):
            _, expired = delays.popleft()
            del ordered[bisect.bisect_left(ordered, expired)]
        self._measured += 1
        self._target_cache = None

    def _floor(self) -> float:
        return self._floor_window[0][1] if self._floor_window else 0.0

    def _target(self) -> float:
        if self._target_cache is None:
            # The same window kept sorted on insert (per-packet cost O(log n) search + a short memmove)
            # instead of sorting it on every packet.
            values = self._ordered_delays
            self._jitter = values[min(len(values) - 1, int(_QUANTILE * len(values)))] if values else 0.0
            target = self._jitter + self._frame_s
            if self._measured < _WARMUP_PACKETS:
                target = max(target, self._start_delay)
            self._target_cache = min(max(target, self._min_target), self._max_target)
        return self._target_cache

    def _desired_position(self, now: float) -> float:
        """Unwrapped timestamp that should be playing at ``now`` at exactly the target delay."""
        return self._origin + (now - self._floor() - self._target()) * self._clock

    # -- playout ------------------------------------------------------------------------------

    def _take(self, position: int) -> tuple[bytes, int]:
        """Remove and return the frame starting at ``position`` and how many samples were held."""
        end = position + self._frame
        segments = self._segments
        if segments and segments[0].start == position and len(segments[0].data) == self._frame:
            segment = segments.pop(0)
            self._last_seq = segment.seq
            return segment.data, self._frame
        out: bytearray | None = None
        covered = 0
        while segments and segments[0].start < end:
            segment = segments[0]
            a = max(segment.start, position)
            b = min(segment.end, end)
            if b > a:
                if out is None:
                    out = bytearray(self._silence)
                out[a - position : b - position] = segment.data[a - segment.start : b - segment.start]
                covered += b - a
                self._last_seq = segment.seq
            if segment.end <= end:
                segments.pop(0)
            else:
                segment.data = segment.data[end - segment.start :]
                segment.start = end
                segment.marker = False
                break
        return (self._silence if out is None else bytes(out)), covered

    def _pop_playing(self, now: float) -> tuple[FrameKind, bytes, int | None]:
        floor = self._floor()
        target = self._target()
        delay = now - (self._next - self._origin) / self._clock - floor
        self._current_delay = delay
        excess = (delay - target) / self._frame_s
        if excess < -_GROW_BELOW and delay + self._frame_s <= self._max_delay:
            self._count.frames_inserted += 1
            self._current_delay = delay + self._frame_s
            kind = FrameKind.CONCEALED if self._last_kind is FrameKind.AUDIO else self._last_kind
            return kind, self._silence, None
        shrink = excess > _SHRINK_ABOVE or delay > self._max_delay
        if not shrink:
            self._over_since = None
        elif self._over_since is None:
            self._over_since = now
        payload, covered = self._take(self._next)
        if shrink and self._may_drop(now, excess, delay, payload, covered):
            self._count.frames_dropped += 1
            self._last_drop = now
            self._over_since = now
            self._next += self._frame
            self._current_delay = delay - self._frame_s
            payload, covered = self._take(self._next)
        position = self._next
        if covered:
            self._next += self._frame
            self._played_end = self._next
            self._underrun = 0
            if covered < self._frame:
                self._count.frames_partial += 1
            return FrameKind.AUDIO, payload, position
        following = self._segments[0] if self._segments else None
        if following is None:
            self._underrun += 1
            if self._underrun > self._conceal_max:
                # Nothing for 60 ms: a stall or the end of a talk spurt; re-anchor on what comes.
                self._state = _State.SILENCE
                return self._pop_silence(now)
        elif following.marker or (
            self._last_seq is not None and seq_distance(following.seq, self._last_seq) == 1
        ):
            # RFC 3551 §4.1: a talk spurt starts with the marker bit; a timestamp jump with
            # no sequence number missing is a pause of the sender, not a loss.
            self._state = _State.SILENCE
            return self._pop_silence(now)
        self._next += self._frame
        self._played_end = self._next
        return FrameKind.CONCEALED, self._silence, position

    def _may_drop(self, now: float, excess: float, delay: float, payload: bytes, covered: int) -> bool:
        if delay > self._max_delay or excess > _CATCH_UP_ABOVE:
            return True
        if covered == 0:
            # A missing frame with audio after it: skipping it is better than concealing it.
            return bool(self._segments)
        if self._is_quiet is not None and covered == self._frame and self._is_quiet(payload):
            return True
        # A small excess (drift) waits longer for a quiet frame than a large one (jitter gone).
        patience = self._shrink_patience * (1 if excess > _SHRINK_FAST_ABOVE else 4)
        since = max(self._over_since if self._over_since is not None else now, self._last_drop)
        return now - since >= patience

    def _pop_silence(self, now: float) -> tuple[FrameKind, bytes, int | None]:
        self._current_delay = self._target()
        if not self._segments:
            return FrameKind.SILENCE, self._silence, None
        position = self._desired_position(now)
        earliest = self._window_start(now)
        segments = self._segments
        while segments:
            front = segments[0]
            if front.end <= earliest:
                # Arrived in time but its moment passed while we were not asked to play (or the
                # delay shrank): as good as late.
                segments.pop(0)
                self._count.packets_late += 1
                continue
            if front.start < earliest:
                # Skip whole frames so that the talk spurt keeps its own frame boundaries.
                # Round down: a first frame only partly past the window still plays (the shrink rule
                # removes any lasting excess); rounding up would discard audio nothing else made late.
                cut = (earliest - front.start) // self._frame * self._frame
                if cut >= len(front.data):
                    segments.pop(0)
                    self._count.packets_late += 1
                    continue
                front.data = front.data[cut:]
                front.start += cut
                front.marker = False
            break
        if not segments or segments[0].start > position + self._frame / 2:
            return FrameKind.SILENCE, self._silence, None
        self._state = _State.PLAYING
        self._next = segments[0].start
        self._underrun = 0
        self._over_since = None
        self._current_delay = now - (self._next - self._origin) / self._clock - self._floor()
        payload, covered = self._take(self._next)
        start = self._next
        self._next += self._frame
        self._played_end = self._next
        if covered < self._frame:
            self._count.frames_partial += 1
        return FrameKind.AUDIO, payload, start
