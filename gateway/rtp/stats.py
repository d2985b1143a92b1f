"""Receiver-side statistics of one RTP source (RFC 3550 Appendix A.1, A.3, A.8; §6.4.1).

- A.1: sequence-number validation with probation (``MIN_SEQUENTIAL``), ``MAX_DROPOUT``,
  ``MAX_MISORDER``, wrap-around cycles and resynchronisation after a restart.
- A.3: cumulative packets lost and the fraction lost over a reporting interval.
- A.8: interarrival jitter, in timestamp units; the arrival time ``now`` (seconds) is
  converted to timestamp units with the stream's clock rate. A.8's 1/16 smoothing makes the
  estimate a picture of the last few hundred milliseconds, so the mean of the estimate over the
  call (``jitter_mean``) is kept too: a call-end report should describe the call, not its last second.

On top of the RFC counters this keeps counts a voice operator asks for: duplicates,
reordered packets and "late" packets (arrived after their playout moment, which only the
jitter buffer knows: it calls :meth:`ReceiverStats.record_late`).

A change of SSRC is a new source (RFC 3550 §8.2 "the SSRC identifier ... a new source"):
the state restarts and probation begins again; ``ssrc_changes`` counts it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.rtp.packet import RtpPacket

__all__ = [
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "MIN_SEQUENTIAL",
    "ReceiverStats",
    "ReceiverStatsSnapshot",
]

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
# Extended sequence numbers remembered for duplicate detection (a ring of bits).
_HISTORY = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverStatsSnapshot:
    """A read-only view of :class:`ReceiverStats` (no interval side effects)."""

    ssrc: int | None
    valid: bool  # probation passed (RFC 3550 A.1)
    packets_received: int  # A.3: includes duplicates and late packets
    packets_expected: int
    cumulative_lost: int  # may be negative with duplicates (A.3)
    loss_ratio: float  # max(0, lost) / expected, 0.0 when nothing expected
    extended_highest_sequence: int
    jitter: float  # timestamp units (A.8)
    jitter_seconds: float
    jitter_mean_seconds: float  # the A.8 estimate averaged over every sample of the call
    duplicates: int
    reordered: int
    late: int
    bad_sequence: int  # packets rejected by the A.1 validity check
    ssrc_changes: int


class ReceiverStats:
    """RFC 3550 A.1/A.3/A.8 receiver state for the stream from one peer.

    Feed every RTP packet of the stream with :meth:`update`; ask
    :meth:`report_block_values` once per RTCP report (it advances the A.3 interval).
    """

    __slots__ = (
        "_bad_seq",
        "_bad_sequence",
        "_base_seq",
        "_clock_rate",
        "_cycles",
        "_duplicates",
        "_expected_prior",
        "_have_transit",
        "_jitter",
        "_jitter_samples",
        "_jitter_sum",
        "_last_jitter_ts",
        "_late",
        "_max_seq",
        "_probation",
        "_received",
        "_received_prior",
        "_reordered",
        "_seen",
        "_ssrc",
        "_ssrc_changes",
        "_transit",
    )

    def __init__(self, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError("clock_rate must be positive")
        self._clock_rate = clock_rate
        self._ssrc: int | None = None
        self._ssrc_changes = 0
        self._reset_source()

    # -- A.1 -----------------------------------------------------------------

    def _reset_source(self) -> None:
        self._base_seq = 0
        self._max_seq = 0
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._probation = MIN_SEQUENTIAL
        self._transit = 0.0
        self._have_transit = False
        self._jitter = 0.0
        self._jitter_sum = 0.0
        self._jitter_samples = 0
        self._last_jitter_ts: int | None = None
        self._duplicates = 0
        self._reordered = 0
        self._late = 0
        self._bad_sequence = 0
        self._seen = bytearray(_HISTORY // 8)

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1  # so seq == bad_seq is false
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._seen = bytearray(_HISTORY // 8)

    def _mark_seen(self, extended: int) -> bool:
        """Remember ``extended``; return True when it was already there (a duplicate)."""
        index = extended % _HISTORY
        byte, bit = index >> 3, 1 << (index & 7)
        if self._seen[byte] & bit:
            return True
        self._seen[byte] |= bit
        return False

    def _forget_range(self, first: int, last: int) -> None:
        """Clear history bits for extended numbers first..last (slots about to be reused)."""
        if last - first + 1 >= _HISTORY:
            self._seen = bytearray(_HISTORY // 8)
            return
        for extended in range(first, last + 1):
            index = extended % _HISTORY
            self._seen[index >> 3] &= ~(1 << (index & 7)) & 0xFF

    def update(self, packet: RtpPacket, now: float) -> bool:
        """Account one received packet arriving at ``now`` (seconds, any monotonic origin).

        Returns True for a new, valid packet. False during probation, for a very large
        sequence jump that is not yet confirmed (RFC 3550 A.1), and for a duplicate (which
        A.1/A.3 still count as received, so the cumulative loss may go negative).
        """
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self._ssrc_changes += 1
            self._ssrc = packet.ssrc
            self._reset_source()
            # A.1: "init_seq(s, seq); s->max_seq = seq - 1; s->probation = MIN_SEQUENTIAL;"
            self._init_seq(packet.sequence_number)
            self._max_seq = (packet.sequence_number - 1) & 0xFFFF
            self._probation = MIN_SEQUENTIAL
        if not self._update_seq(packet.sequence_number):
            return False
        self._update_jitter(packet.timestamp, now)
        return True

    def _update_seq(self, seq: int) -> bool:
        udelta = (seq - self._max_seq) & 0xFFFF
        if self._probation:
            # A.1: "packet is in sequence" during probation
            if seq == (self._max_seq + 1) & 0xFFFF:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self._received += 1
                    self._mark_seen(self._cycles + seq)
                    return True
            else:
                self._probation = MIN_SEQUENTIAL - 1
                self._max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            # in order, with permissible gap
            if udelta == 0:
                self._duplicates += 1
                self._received += 1
                return False
            old_extended = self._cycles + self._max_seq
            if seq < self._max_seq:
                # sequence number wrapped: count another 64K cycle
                self._cycles += RTP_SEQ_MOD
            self._max_seq = seq
            new_extended = self._cycles + seq
            self._forget_range(old_extended + 1, new_extended)
            self._mark_seen(new_extended)
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # the sequence number made a very large jump
            if seq == self._bad_seq:
                # A.1: "Two sequential packets -- assume that the other side restarted
                # without telling us so just re-sync"
                self._init_seq(seq)
                self._mark_seen(self._cycles + seq)
            else:
                self._bad_seq = (seq + 1) & (RTP_SEQ_MOD - 1)
                self._bad_sequence += 1
                return False
        else:
            # duplicate or reordered packet (A.1 counts both as received)
            extended = self._cycles + self._max_seq - (RTP_SEQ_MOD - udelta)
            if extended >= 0 and self._mark_seen(extended):
                self._duplicates += 1
                self._received += 1
                return False
            self._reordered += 1
        self._received += 1
        return True

    # -- A.8 -----------------------------------------------------------------

    def _update_jitter(self, timestamp: int, now: float) -> None:
        # Packets sharing a timestamp (RFC 4733 event updates) are not independent samples
        # of the network transit time, so only the first of them is used.
        if timestamp == self._last_jitter_ts:
            return
        self._last_jitter_ts = timestamp
        arrival = now * self._clock_rate
        transit = arrival - timestamp
        if self._have_transit:
            d = transit - self._transit
            # the RTP timestamp is a 32-bit counter: unwrap the difference
            if d > 2**31:
                d -= 2**32
            elif d < -(2**31):
                d += 2**32
            # A.8: "s->jitter += (1./16.) * ((double)d - s->jitter);"
            self._jitter += (abs(d) - self._jitter) / 16.0
            self._jitter_sum += self._jitter
            self._jitter_samples += 1
        self._transit = transit
        self._have_transit = True

    # -- counters fed from outside --------------------------------------------

    def record_late(self, count: int = 1) -> None:
        """The jitter buffer received a packet after its playout moment."""
        self._late += count

    # -- A.3 -----------------------------------------------------------------

    @property
    def ssrc(self) -> int | None:
        return self._ssrc

    @property
    def valid(self) -> bool:
        return self._ssrc is not None and self._probation == 0

    @property
    def extended_highest_sequence(self) -> int:
        return self._cycles + self._max_seq

    @property
    def packets_expected(self) -> int:
        if not self.valid:
            return 0
        return self.extended_highest_sequence - self._base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        return self.packets_expected - self._received

    @property
    def jitter(self) -> float:
        return self._jitter

    def report_block_values(self) -> tuple[int, int, int, int]:
        """Return ``(fraction_lost, cumulative_lost, extended_highest_sequence, jitter)``
        for an RTCP report block and start a new reporting interval (RFC 3550 A.3).

        ``fraction_lost`` is the 8-bit fixed-point fraction; ``cumulative_lost`` is
        clamped to the signed 24-bit field.
        """
        expected = self.packets_expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self._received - self._received_prior
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost))
        return fraction, lost, self.extended_highest_sequence & 0xFFFFFFFF, int(self._jitter)

    def snapshot(self) -> ReceiverStatsSnapshot:
        expected = self.packets_expected
        lost = self.cumulative_lost
        return ReceiverStatsSnapshot(
            ssrc=self._ssrc,
            valid=self.valid,
            packets_received=self._received,
            packets_expected=expected,
            cumulative_lost=lost,
            loss_ratio=(max(0, lost) / expected) if expected > 0 else 0.0,
            extended_highest_sequence=self.extended_highest_sequence,
            jitter=self._jitter,
            jitter_seconds=self._jitter / self._clock_rate,
            jitter_mean_seconds=(
                self._jitter_sum / self._jitter_samples / self._clock_rate if self._jitter_samples else 0.0
            ),
            duplicates=self._duplicates,
            reordered=self._reordered,
            late=self._late,
            bad_sequence=self._bad_sequence,
            ssrc_changes=self._ssrc_changes,
        )
