"""Sans-IO RTCP scheduling for one unicast RTP session (RFC 3550 §6.2, §6.3, Appendix A.7).

The session sends an SR when we have sent RTP since the previous report, an RR otherwise,
each followed by an SDES CNAME ("each compound RTCP packet MUST include" it, §6.1), at the
interval of §6.3.1 computed by ``rtcp_interval`` (Appendix A.7) with its randomisation
("uniformly distributed between 0.5 and 1.5 times the deterministic calculated interval"
and the ``e - 3/2`` compensation), the 5 s minimum halved for the first report. A BYE is
sent at :meth:`RtcpSession.close` (§6.3.7: with fewer than 50 members "the participant MAY
send a BYE packet immediately").

From the peer's reports it exposes their view of our stream (fraction lost, jitter) and
the round-trip time (§6.4.1 "A - LSR - DLSR").

Time: ``now`` is monotonic seconds; NTP timestamps come from an injected wall-clock value
(``wall_clock`` is the Unix time at ``now=start``), so no clock is read here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.rtp.packet import RtpPacket
from gateway.rtp.rtcp import (
    SDES_CNAME,
    ReportBlock,
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpSourceDescription,
    SdesChunk,
    ntp_middle,
    ntp_timestamp,
    parse_compound,
    round_trip_time,
    serialize_compound,
)
from gateway.rtp.stats import ReceiverStats

__all__ = ["RtcpConfig", "RtcpSession", "rtcp_interval"]

_RTCP_SENDER_BW_FRACTION = 0.25
_COMPENSATION = 2.71828 - 1.5  # RFC 3550 A.7: "e - 3/2"
_LOWER_LAYER_OVERHEAD = 28  # IPv4 + UDP: §6.2 counts "lower-layer headers"


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpConfig:
    min_interval: float = 5.0  # RFC 3550 §6.2 "the recommended value ... is 5 seconds"
    session_bandwidth_bps: float = 80_000.0  # G.711 at 20 ms with IP/UDP/RTP headers
    rtcp_fraction: float = 0.05  # §6.2: "the fraction ... be fixed at 5%"


def rtcp_interval(
    *,
    members: int,
    senders: int,
    rtcp_bw: float,
    we_sent: bool,
    avg_rtcp_size: float,
    initial: bool,
    rng: random.Random,
    min_time: float = 5.0,
) -> float:
    """RFC 3550 Appendix A.7 ``rtcp_interval()``; ``rtcp_bw`` in octets per second."""
    rtcp_min_time = min_time / 2 if initial else min_time
    n = members
    if senders <= members * _RTCP_SENDER_BW_FRACTION:
        if we_sent:
            rtcp_bw *= _RTCP_SENDER_BW_FRACTION
            n = senders
        else:
            rtcp_bw *= 1 - _RTCP_SENDER_BW_FRACTION
            n -= senders
    t = avg_rtcp_size * n / rtcp_bw if rtcp_bw > 0 else rtcp_min_time
    t = max(t, rtcp_min_time)
    t *= rng.random() + 0.5
    return t / _COMPENSATION


class RtcpSession:
    """RTCP for our SSRC towards one peer. Feed it, poll the timer, drain datagrams."""

    def __init__(
        self,
        *,
        ssrc: int,
        cname: str,
        clock_rate: int,
        rng: random.Random,
        now: float,
        wall_clock: float,
        receiver_stats: ReceiverStats | None = None,
        config: RtcpConfig | None = None,
    ) -> None:
        self.ssrc = ssrc
        self.cname = cname
        self._clock_rate = clock_rate
        self._rng = rng
        self._start = now
        self._wall_clock = wall_clock
        self._stats = receiver_stats
        self._config = config or RtcpConfig()
        self._outbox: list[bytes] = []
        self._closed = False
        # sender state (§6.4.1 sender info)
        self._packet_count = 0
        self._octet_count = 0
        self._sent_since_report = False
        self._last_rtp_timestamp = 0
        self._last_rtp_sent_at: float | None = None
        # what we learnt from the peer
        self._remote_ssrc: int | None = None
        self._last_sr_middle = 0
        self._last_sr_arrival: float | None = None
        self.peer_sender_report: RtcpSenderReport | None = None
        self.peer_report: ReportBlock | None = None
        self.rtt: float | None = None
        self.peer_bye = False
        self.last_rtcp_received_at: float | None = None
        self.reports_sent = 0
        self._avg_rtcp_size = float(len(self._build_report()) + _LOWER_LAYER_OVERHEAD)
        self._next_report: float | None = now + self._interval(initial=True)

    # -- inputs ------------------------------------------------------------------

    def on_rtp_sent(self, packet: RtpPacket, now: float) -> None:
        """Account one RTP packet we sent (§6.4.1: payload octets, not header or padding)."""
        self.count_sent(packet.timestamp, len(packet.payload), now)

    def count_sent(self, timestamp: int, payload_octets: int, now: float) -> None:
        """:meth:`on_rtp_sent` for a packet known by its timestamp and payload size (the per-tick send path)."""
        self._packet_count = (self._packet_count + 1) & 0xFFFFFFFF
        self._octet_count = (self._octet_count + payload_octets) & 0xFFFFFFFF
        self._last_rtp_timestamp = timestamp
        self._last_rtp_sent_at = now
        self._sent_since_report = True

    def uncount_sent(self, payload_octets: int) -> None:
        """The last packet counted by :meth:`count_sent` was withdrawn before it was sent."""
        self._packet_count = (self._packet_count - 1) & 0xFFFFFFFF
        self._octet_count = (self._octet_count - payload_octets) & 0xFFFFFFFF

    def on_rtcp(self, data: bytes, now: float) -> None:
        """Take in one RTCP datagram from the peer; raises ``RtcpParseError`` if invalid."""
        packets = parse_compound(data)
        self.last_rtcp_received_at = now
        # §6.3.3: "avg_rtcp_size = (1/16) * packet_size + (15/16) * avg_rtcp_size"
        self._avg_rtcp_size += (len(data) + _LOWER_LAYER_OVERHEAD - self._avg_rtcp_size) / 16.0
        for packet in packets:
            match packet:
                case RtcpSenderReport():
                    self._remote_ssrc = packet.ssrc
                    self.peer_sender_report = packet
                    self._last_sr_middle = ntp_middle(packet.ntp_timestamp)
                    self._last_sr_arrival = now
                    self._take_blocks(packet.reports, now)
                case RtcpReceiverReport():
                    self._remote_ssrc = packet.ssrc
                    self._take_blocks(packet.reports, now)
                case RtcpBye():
                    if self._remote_ssrc is None or self._remote_ssrc in packet.sources:
                        self.peer_bye = True
                case _:
                    pass

    def _take_blocks(self, blocks: tuple[ReportBlock, ...], now: float) -> None:
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue
            self.peer_report = block
            rtt = round_trip_time(self._ntp(now), block.lsr, block.dlsr)
            if rtt is not None:
                self.rtt = rtt

    # -- timers --------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._next_report

    def handle_timer(self, now: float) -> None:
        if self._next_report is None or now < self._next_report:
            return
        we_sent = self._sent_since_report
        self._queue([*self._report_packets(now)])
        self._next_report = now + self._interval(initial=False, we_sent=we_sent)

    def close(self, now: float, reason: str = "") -> None:
        """Send the final report and a BYE; no more timers afterwards. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._next_report = None
        self._queue([*self._report_packets(now), RtcpBye(sources=(self.ssrc,), reason=reason)])

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def remote_ssrc(self) -> int | None:
        return self._remote_ssrc

    # -- outputs -------------------------------------------------------------------

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def _queue(self, packets: list[RtcpPacket]) -> None:
        data = serialize_compound(packets)
        self._avg_rtcp_size += (len(data) + _LOWER_LAYER_OVERHEAD - self._avg_rtcp_size) / 16.0
        self._sent_since_report = False
        self.reports_sent += 1
        self._outbox.append(data)

    # -- building --------------------------------------------------------------------

    def _ntp(self, now: float) -> int:
        return ntp_timestamp(self._wall_clock + (now - self._start))

    def _interval(self, *, initial: bool, we_sent: bool = False) -> float:
        peer_known = self._remote_ssrc is not None or (self._stats is not None and self._stats.valid)
        members = 2 if peer_known else 1
        peer_sends = self.peer_sender_report is not None or (self._stats is not None and self._stats.valid)
        senders = int(we_sent) + int(peer_sends)
        rtcp_bw = self._config.session_bandwidth_bps * self._config.rtcp_fraction / 8.0
        return rtcp_interval(
            members=members,
            senders=senders,
            rtcp_bw=rtcp_bw,
            we_sent=we_sent,
            avg_rtcp_size=self._avg_rtcp_size,
            initial=initial,
            rng=self._rng,
            min_time=self._config.min_interval,
        )

    def _report_blocks(self, now: float) -> tuple[ReportBlock, ...]:
        stats = self._stats
        if stats is None or not stats.valid or stats.ssrc is None:
            return ()
        fraction, lost, highest, jitter = stats.report_block_values()
        lsr, dlsr = 0, 0
        if self._last_sr_arrival is not None and self._remote_ssrc == stats.ssrc:
            lsr = self._last_sr_middle
            # §6.4.1 DLSR: "expressed in units of 1/65536 seconds". A caller's clock reading taken before the
            # SR's arrival (a call closing on its last media tick) counts as no delay, not a negative one.
            dlsr = min(0xFFFFFFFF, max(0, int((now - self._last_sr_arrival) * 65536)))
        return (
            ReportBlock(
                ssrc=stats.ssrc,
                fraction_lost=fraction,
                cumulative_lost=lost,
                highest_sequence=highest,
                jitter=jitter,
                lsr=lsr,
                dlsr=dlsr,
            ),
        )

    def _report_packets(self, now: float) -> tuple[RtcpPacket, RtcpPacket]:
        blocks = self._report_blocks(now)
        report: RtcpPacket
        if self._sent_since_report:
            rtp_timestamp = self._last_rtp_timestamp
            if self._last_rtp_sent_at is not None:
                # §6.4.1: the RTP timestamp "corresponds to the same time as the NTP timestamp"
                rtp_timestamp += round((now - self._last_rtp_sent_at) * self._clock_rate)
            report = RtcpSenderReport(
                ssrc=self.ssrc,
                ntp_timestamp=self._ntp(now),
                rtp_timestamp=rtp_timestamp & 0xFFFFFFFF,
                packet_count=self._packet_count,
                octet_count=self._octet_count,
                reports=blocks,
            )
        else:
            report = RtcpReceiverReport(ssrc=self.ssrc, reports=blocks)
        return report, self._sdes()

    def _sdes(self) -> RtcpSourceDescription:
        cname = self.cname.encode()[:255]
        return RtcpSourceDescription(chunks=(SdesChunk(ssrc=self.ssrc, items=((SDES_CNAME, cname),)),))

    def _build_report(self) -> bytes:
        return serialize_compound([RtcpReceiverReport(ssrc=self.ssrc), self._sdes()])
