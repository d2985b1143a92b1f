"""A call's media: its RTP endpoint, the receive path and what it is connected to (the echo line or an
assistant). RFC 3550 (RTP/RTCP), RFC 3551 §4.5.14 (G.711), RFC 4733 (telephone-event), RFC 6086 INFO.

Receive path, per packet (from the endpoint, arrival time ``now``):
``ReceiverStats`` (every packet of the stream: audio, telephone-event and comfort noise share the
sequence space, RFC 4733 §2.1) → by payload type: the negotiated audio codec → ``JitterBuffer``;
telephone-event → ``DtmfReceiver``; comfort noise (PT 13, RFC 3389) tolerated and ignored; anything
else counted and ignored.

Per 20 ms tick of the server's :class:`PlayoutScheduler` (prepare phase): jitter buffer pop → decode with
the negotiated codec (PCMA stays PCMA) → G.711 Appendix I concealment for missing frames → for the echo
line, encode with the same codec into the next outbound packet, which the send phase puts on the wire.
The same tick services the RTCP session and DTMF timers, so a call costs no timer of its own.

Send path for DTMF (RFC 4733 §2.5): :meth:`CallMedia.send_dtmf` queues digits; the tick drives a
:class:`DtmfSender` on the same 20 ms grid, and while a digit plays its telephone-event packet takes the
place of the assistant's audio packet (same SSRC, same sequence space: §2.1 "the RTP sequence number ... is
shared with the audio"); the assistant's audio waits and resumes after the digits.

The echo line sends the caller's audio back so users can verify a trunk's audio both ways.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from gateway.codecs.plc import Concealer
from gateway.codecs.registry import Codec, CodecRegistry
from gateway.observability.logging import get_logger
from gateway.observability.metrics import Metrics
from gateway.recording import CallRecording
from gateway.rtp.dtmf import DIGIT_EVENTS, DtmfReceiver, DtmfSender
from gateway.rtp.jitter import FrameKind, JitterBuffer, JitterStats, PushResult
from gateway.rtp.mos import estimate_mos
from gateway.rtp.packet import RtpPacket
from gateway.rtp.rtcp import RtcpParseError
from gateway.rtp.session import RtcpSession
from gateway.rtp.stats import ReceiverStats, ReceiverStatsSnapshot
from gateway.sdp import Direction, NegotiatedAudio
from gateway.transport.playout import OutboundRtp, PlayoutScheduler
from gateway.transport.rtp_endpoint import RtpEndpoint
from gateway.util.dtmf_info import DtmfInfoError, parse_dtmf_info

__all__ = ["CallMedia", "Conversation", "DtmfEvent", "MediaStats"]

COMFORT_NOISE_PT = 13  # RFC 3551 §6 Table 4 / RFC 3389
DTMF_QUEUE_LIMIT = 64
DTMF_TONE_MS = 100  # each digit we send (ITU-T Q.24 asks for at least 40 ms of tone)
DTMF_GAP_SECONDS = 0.06  # after the last end packet; with the two end retransmissions ~100 ms of no tone
DTMF_SEND_LIMIT = 64  # digits waiting to be sent
METRICS_FLUSH_TICKS = 50  # RTP packet/byte counters reach the metrics every 50 ticks (1 s) and at call end


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfEvent:
    """A digit the caller pressed; ``method`` is ``rfc4733`` or ``sip-info``."""

    digit: str
    method: str
    duration_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaStats:
    """What one call's media looked like (the ``media_stats`` log line at call end)."""

    codec: str | None
    receiver: ReceiverStatsSnapshot | None
    jitter_buffer: JitterStats | None
    rtt: float | None  # seconds, from the peer's RTCP reports (RFC 3550 §6.4.1)
    mos: float | None  # G.107 E-model estimate of the received audio
    peer_fraction_lost: float | None  # the peer's view of our stream (its last report block)
    peer_jitter: float | None  # seconds
    packets_sent: int
    rtcp_sent: int
    rtcp_received: int
    ignored: dict[str, int]
    dropped: dict[str, int]
    dtmf_digits: int

    def log_fields(self) -> dict[str, Any]:
        """Flat key-values for the log line."""
        fields: dict[str, Any] = {
            "codec": self.codec,
            "rtt": self.rtt,
            "mos": self.mos,
            "peer_fraction_lost": self.peer_fraction_lost,
            "peer_jitter": self.peer_jitter,
            "packets_sent": self.packets_sent,
            "rtcp_sent": self.rtcp_sent,
            "rtcp_received": self.rtcp_received,
            "ignored": self.ignored,
            "dropped": self.dropped,
            "dtmf_digits": self.dtmf_digits,
        }
        if self.receiver is not None:
            fields.update({f"rx_{k}": v for k, v in asdict(self.receiver).items()})
        if self.jitter_buffer is not None:
            fields.update({f"jb_{k}": v for k, v in asdict(self.jitter_buffer).items()})
        return fields


class Conversation(Protocol):
    """The assistant side of a call's media (a :class:`gateway.pipeline.session.ConversationSession`)."""

    def on_voice_frame(self, pcm: bytes, now: float) -> None:
        """A 20 ms frame of caller audio as it arrives (VAD, barge-in)."""

    def on_tick(self, encoded: bytes | None, encoding: str, pcm: bytes | None, now: float) -> None:
        """This tick's caller frame after the jitter buffer (for STT); ``encoded`` are the wire bytes
        (None for a concealed or missing frame) in ``encoding`` (``mulaw``/``alaw``/``linear16``)."""

    def next_frame(self, now: float) -> bytes | None:
        """Assistant audio (20 ms of 8 kHz PCM) for the packet sent at ``now``."""


STT_ENCODINGS = {"PCMU": "mulaw", "PCMA": "alaw"}
RTP_HEADER_BYTES = 12  # what OutboundRtp.datagram puts before the payload (no CSRC, extension or padding)
QUIET_LEVEL = 328  # |sample| at or below about -40 dBFS: a frame of only such samples may be dropped unheard


def quiet_frame_test(codec: Codec) -> Callable[[bytes], bool] | None:
    """For a one-byte-per-sample codec (G.711): whether every sample of an encoded frame is at or below
    QUIET_LEVEL, via one C-level ``bytes.translate`` deleting the quiet code words. The jitter buffer asks this
    only when it holds more delay than it wants, so it sheds that delay in a pause instead of mid-word."""
    if codec.frame_bytes != codec.samples_per_frame:
        return None
    quiet = _quiet_code_words(codec)
    return lambda payload: not payload.translate(None, quiet)


@functools.lru_cache(maxsize=16)
def _quiet_code_words(codec: Codec) -> bytes:
    """The code words of a one-byte-per-sample codec that decode to a quiet sample: the same for every call of
    the codec, so worked out once (256 decodes per call were 4 % of the gateway's CPU at 150 setups a second)."""
    return bytes(
        code for code in range(256)
        if abs(int.from_bytes(codec.decode(bytes((code,)))[:2], "little", signed=True)) <= QUIET_LEVEL
    )


class _Receive:
    """Per-codec receive and send state; rebuilt when the codec changes."""

    def __init__(self, codec: Codec, params: NegotiatedAudio, *, ssrc: int, interval: float,
                 rng: random.Random) -> None:
        self.codec = codec
        self.payload_type = params.payload_type
        silence = codec.encode(b"\x00\x00")[0]
        self.silence_payload = bytes((silence,)) * codec.frame_bytes
        self.jitter = JitterBuffer(clock_rate=codec.clock_rate, frame_ms=20, silence_byte=silence, is_quiet=quiet_frame_test(codec))
        self.concealer = Concealer(codec.clock_rate, 20)
        self.outbound = OutboundRtp(
            ssrc=ssrc, payload_type=params.payload_type, clock_rate=codec.clock_rate, interval=interval, rng=rng
        )


class CallMedia:
    """One call's media (see module doc).

    Digits arrive as :class:`DtmfEvent` through ``on_dtmf`` (a callback the call may set) and the
    bounded ``dtmf_events`` queue (oldest dropped when full); ``digits`` keeps the digit string.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        echo: bool,
        metrics: Metrics,
        playout: PlayoutScheduler | None = None,
        log: Any = None,
        rng: random.Random | None = None,
        registry: CodecRegistry | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.echo = echo
        self.metrics = metrics
        self.playout = playout
        self._own_playout = False
        self.log = log if log is not None else get_logger("media").bind(rtp_port=port)
        self._rng = rng or random.Random()
        self._registry = registry or CodecRegistry()
        self._wall_clock = wall_clock
        self._clock = clock  # monotonic; the loop's clock once opened
        self.endpoint = RtpEndpoint(
            host, port, on_rtp=self.on_rtp, on_rtcp=self.on_rtcp, metrics=metrics, log=self.log
        )
        self.params: NegotiatedAudio | None = None
        self._final_stats: MediaStats | None = None  # set by close()
        # receiving/sending of the negotiated direction, kept as plain flags: the per-packet and per-tick
        # paths test them (set in apply(), the only place params changes)
        self._receiving = self._sending = False
        self.ssrc = self._rng.randrange(1, 0x100000000)
        self.cname = f"voicegw-{self.ssrc:08x}@{host}"
        self.stats = ReceiverStats(8000)
        self.rtcp: RtcpSession | None = None
        self.dtmf: DtmfReceiver | None = None
        self._rx: _Receive | None = None
        self._pending: bytes | None = None  # packet prepared for the next send phase
        self._pending_tick = -1
        self._pending_audio = False  # _pending carries assistant (or echoed) audio, not a DTMF event
        # The last audio packet handed to the pacer (withdraw_audio): its tick, index in the batch, bytes.
        self._handed_tick = -1
        self._handed_index = -1
        self._handed: bytes | None = None
        self._ignored: dict[str, int] = {}
        self.digits: list[str] = []
        self.dtmf_events: deque[DtmfEvent] = deque(maxlen=DTMF_QUEUE_LIMIT)
        self.on_dtmf: Callable[[DtmfEvent], None] | None = None
        self._receiving_since: float | None = None
        self._closed = False
        self._last_now = 0.0
        self.conversation: Conversation | None = None
        self._voice_buf = bytearray()  # arrival-order caller audio cut into 20 ms frames for the VAD
        self._dtmf_out: DtmfSender | None = None
        self._dtmf_pending = ""  # digits queued by send_dtmf, handed to the sender on the next tick
        self._dtmf_waiters: list[asyncio.Future[None]] = []
        self.digits_sent = 0
        self.local_addr = (host, port)
        # Recording: ``recorder`` takes each tick's caller and assistant frames (the stereo WAV), ``capture``
        # each RTP/RTCP datagram both ways (the call's PCAP); None costs one test per tick or packet.
        self.recorder: CallRecording | None = None
        self.capture: CallRecording | None = None
        self._sent_packets = 0  # sent, not yet in the metrics (see flush_metrics)
        self._sent_bytes = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = loop.time
        await self.endpoint.open()
        self._last_now = loop.time()
        if self.playout is None:
            # Without a server scheduler (a call built on its own) the call gets a private grid.
            self.playout = PlayoutScheduler(loop, metrics=self.metrics)
            self._own_playout = True
        self._receiving_since = loop.time()

    def close(self) -> None:
        """End the media: final RTCP report and BYE, the ``media_stats`` log line, sockets closed."""
        if self._closed:
            return
        self._closed = True
        if self.playout is not None:
            self.playout.remove(self)
            if self._own_playout:
                self.playout.close()
        if self.rtcp is not None:
            self.rtcp.close(self._last_now)
            self._flush_rtcp()
        self.flush_metrics()
        stats = self.media_stats()
        self._observe(stats)
        if self.endpoint.srtp is not None:
            self.log.info("srtp_stats", suite=self.endpoint.srtp.keying.suite, **self.endpoint.srtp.counters)
        self.log.info("media_stats", **stats.log_fields())
        self.endpoint.close()
        self._dtmf_pending = ""
        self._release_dtmf_waiters(ConnectionError("the call's media is closed"))
        # The call's objects refer to each other (the endpoint calls back into this media, the call holds both),
        # so only a full garbage collection would free them, up to minutes later under load; the bulky state
        # (jitter buffer, concealment history, receive statistics) goes now, and the final figures stay.
        self._final_stats = stats
        self._rx = None
        self.dtmf = None
        self.stats = ReceiverStats(8000)

    def apply(self, params: NegotiatedAudio) -> None:
        """New negotiated parameters (answer, re-INVITE, UPDATE): remote address, codec, direction."""
        was_receiving = self.receiving
        if self._clock is not None:
            self._last_now = self._clock()
        self.params = params
        self._receiving = params.direction in (Direction.SENDRECV, Direction.RECVONLY)
        self._sending = params.direction in (Direction.SENDRECV, Direction.SENDONLY)
        self.endpoint.set_srtp(params.srtp)
        rtcp_addr = (params.remote_host, params.remote_rtcp_port) if params.remote_rtcp_port else None
        self.endpoint.set_remote((params.remote_host, params.remote_port), rtcp_addr)
        codec = self._registry.get(params.codec, params.clock_rate)
        if codec is None:
            self.log.warning("media_codec_unsupported", codec=params.codec, clock_rate=params.clock_rate)
            self._rx = None
        elif self._rx is None or self._rx.codec is not codec or self._rx.payload_type != params.payload_type:
            self._rx = _Receive(codec, params, ssrc=self.ssrc, interval=self._interval(), rng=self._rng)
            if self.stats.ssrc is None:
                self.stats = ReceiverStats(codec.clock_rate)
        if params.dtmf_payload_type is not None:
            if self.dtmf is None or self.dtmf.payload_type != params.dtmf_payload_type:
                self.dtmf = DtmfReceiver(params.dtmf_payload_type)
        else:
            self.dtmf = None
        if self._dtmf_out is not None and self._dtmf_out.payload_type != params.dtmf_payload_type:
            self._dtmf_out = None  # a digit being sent is cut; the pending ones go out with the new payload type
        if self.rtcp is None and params.remote_rtcp_port:
            self.rtcp = RtcpSession(
                ssrc=self.ssrc,
                cname=self.cname,
                clock_rate=params.clock_rate,
                rng=self._rng,
                now=self._last_now,
                wall_clock=self._wall_clock(),
                receiver_stats=self.stats,
            )
        if self.receiving and not was_receiving:
            self._receiving_since = self._last_now
        if self.playout is not None:
            self.playout.add(self)

    @property
    def stt_encoding(self) -> str:
        """How caller audio can reach an STT without transcoding: ``mulaw``/``alaw`` or ``linear16``."""
        rx = self._rx
        return STT_ENCODINGS.get(rx.codec.name, "linear16") if rx is not None else "linear16"

    def _interval(self) -> float:
        return self.playout.interval if self.playout is not None else 0.02

    @property
    def receiving(self) -> bool:
        return self._receiving

    @property
    def sending(self) -> bool:
        return self._sending

    # -- receive path ------------------------------------------------------------------------------

    def on_rtp(self, packet: RtpPacket, now: float) -> None:
        """One RTP packet from the latched peer."""
        self._last_now = now
        rx = self._rx
        if not self._receiving or rx is None:
            self._ignore("not_receiving")
            return
        self.stats.update(packet, now)
        capture = self.capture
        if capture is not None:
            capture.packet(packet.serialize(), self.endpoint.remote or self.local_addr, self.local_addr)
        pt = packet.payload_type
        if pt == rx.payload_type:
            if rx.jitter.push(packet, now) is PushResult.LATE:
                self.stats.record_late()
            conversation = self.conversation
            if conversation is not None:
                pcm = rx.codec.decode(packet.payload)
                if len(pcm) == 320 and not self._voice_buf:
                    conversation.on_voice_frame(pcm, now)
                else:
                    buf = self._voice_buf
                    buf += pcm
                    while len(buf) >= 320:
                        conversation.on_voice_frame(bytes(buf[:320]), now)
                        del buf[:320]
        elif self.dtmf is not None and pt == self.dtmf.payload_type:
            self.dtmf.receive_packet(packet, now)
            self._take_dtmf()
        elif pt == COMFORT_NOISE_PT:
            self._ignore("comfort_noise")
        else:
            self._ignore("unknown_payload_type")

    def _ignore(self, reason: str) -> None:
        self._ignored[reason] = self._ignored.get(reason, 0) + 1
        self.metrics.rtp_packets_ignored.labels(reason).inc()

    def on_rtcp(self, data: bytes, now: float) -> None:
        capture = self.capture
        if capture is not None:
            capture.packet(data, self.endpoint.rtcp_remote or self.local_addr, (self.local_addr[0],
                                                                                self.local_addr[1] + 1))
        if self.rtcp is None:
            return
        try:
            self.rtcp.on_rtcp(data, now)
        except RtcpParseError as exc:
            self.endpoint.count_rtcp_error(exc.reason)

    # -- DTMF ----------------------------------------------------------------------------------------

    def _take_dtmf(self) -> None:
        if self.dtmf is None:
            return
        for digit in self.dtmf.pop_events():
            self._digit(DtmfEvent(digit=digit.digit, method="rfc4733", duration_ms=digit.duration_ms))

    def on_info(self, content_type: str | None, body: bytes) -> None:
        """SIP INFO application/dtmf-relay or application/dtmf (other packages are accepted and ignored)."""
        if content_type not in ("application/dtmf-relay", "application/dtmf"):
            return
        try:
            digit, duration = parse_dtmf_info(content_type, body)
        except DtmfInfoError as exc:
            self.log.info("dtmf_info_invalid", reason=exc.reason)
            return
        self._digit(DtmfEvent(digit=digit, method="sip-info", duration_ms=duration))

    def _digit(self, event: DtmfEvent) -> None:
        self.digits.append(event.digit)
        self.dtmf_events.append(event)
        self.metrics.dtmf_digits.labels(event.method).inc()
        self.log.info("dtmf_digit", digit=event.digit, method=event.method, duration_ms=event.duration_ms)
        if self.on_dtmf is not None:
            self.on_dtmf(event)

    @property
    def can_send_rfc4733(self) -> bool:
        """The peer negotiated telephone-event (RFC 4733 §7.1.1 ``a=rtpmap:<pt> telephone-event/8000``)."""
        return self.params is not None and self.params.dtmf_payload_type is not None

    def send_dtmf(self, digits: str) -> asyncio.Future[None]:
        """Send ``digits`` (0-9 * # A-D) as RFC 4733 events, after any digits already queued; the future is
        done once the last end packet of the queue has gone out. Raises ``ValueError`` (our misuse) for a
        character that is not a digit, when the queue is full, or when telephone-event was not negotiated."""
        digits = digits.upper()
        bad = [c for c in digits if c not in DIGIT_EVENTS]
        if bad:
            raise ValueError(f"not DTMF digits: {''.join(bad)!r}")
        if not self.can_send_rfc4733:
            raise ValueError("the peer did not negotiate telephone-event")
        if len(self._dtmf_pending) + len(digits) > DTMF_SEND_LIMIT:
            raise ValueError(f"more than {DTMF_SEND_LIMIT} digits waiting to be sent")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(ConnectionError("the call's media is closed"))
            return future
        self._dtmf_pending += digits
        self._dtmf_waiters.append(future)
        if not digits and not self._dtmf_busy:
            self._release_dtmf_waiters(None)
        return future

    @property
    def _dtmf_busy(self) -> bool:
        return bool(self._dtmf_pending) or (self._dtmf_out is not None and self._dtmf_out.busy)

    def _release_dtmf_waiters(self, error: BaseException | None) -> None:
        waiters, self._dtmf_waiters = self._dtmf_waiters, []
        for future in waiters:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def _dtmf_packet(self, rx: _Receive, tick: int, now: float) -> RtpPacket | None:
        """This tick's telephone-event packet, or None (a pause between digits). ``now`` is the tick's
        send time: the sender's 20 ms updates fall on the playout grid."""
        params = self.params
        assert params is not None and params.dtmf_payload_type is not None
        sender = self._dtmf_out
        if sender is None:
            sender = self._dtmf_out = DtmfSender(
                payload_type=params.dtmf_payload_type, ssrc=self.ssrc, clock_rate=rx.codec.clock_rate,
                next_sequence_number=lambda: rx.outbound.next_sequence_number,
                update_interval=self._interval(), inter_digit_gap=DTMF_GAP_SECONDS,
            )
        if self._dtmf_pending:
            digits, self._dtmf_pending = self._dtmf_pending, ""
            # anchored on the audio clock: the event's timestamp is the audio timestamp of this tick
            sender.send_digits(digits, timestamp=rx.outbound.timestamp(tick), now=now, duration_ms=DTMF_TONE_MS)
        timer = sender.get_timer()
        # the grid and the sender add up the same 20 ms differently; half a tick of slack absorbs the rounding
        if timer is not None and timer <= now + self._interval() / 2:
            sender.handle_timer(max(now, timer))
        packets = sender.packets_to_send()
        if not packets:
            rx.outbound.silence(tick)
            return None
        # One packet per tick (updates every interval, never two in one); the audio stream numbers it.
        event = packets[-1]
        packet = replace(rx.outbound.packet(tick, event.payload), payload_type=event.payload_type,
                         timestamp=event.timestamp, marker=event.marker)
        if event.marker:
            self.digits_sent += 1
            self.metrics.dtmf_sent.labels("rfc4733").inc()
        if not sender.busy:
            rx.outbound.silence(tick)  # the audio after the digits is a new talk spurt (marker bit)
        return packet

    # -- playout (PlayoutStream) ------------------------------------------------------------------

    def prepare(self, tick: int, now: float) -> None:
        self._last_now = now
        if not tick % METRICS_FLUSH_TICKS:
            self.flush_metrics()
        if self.dtmf is not None:
            timer = self.dtmf.get_timer()
            if timer is not None and now >= timer:
                self.dtmf.handle_timer(now)
                self._take_dtmf()
        rtcp = self.rtcp
        if rtcp is not None:
            timer = rtcp.get_timer()
            if timer is not None and now >= timer:
                rtcp.handle_timer(now)
                self._flush_rtcp()
        rx = self._rx
        if rx is None:
            return
        kind, payload = rx.jitter.pop_frame(now)
        passthrough: bytes | None = None  # the received frame itself, when the echo may send it back as is
        if kind is FrameKind.AUDIO:
            decoded = rx.codec.decode(payload)
            pcm: bytes | None = rx.concealer.good_frame(decoded)
            if pcm is decoded:  # not merged with a concealment: re-encoding would give the same bytes back
                passthrough = payload
        elif kind is FrameKind.CONCEALED:
            pcm = rx.concealer.conceal()
        else:
            if rx.concealer.concealing:
                rx.concealer.conceal()  # fades out and keeps the fade-in for the next talk spurt
            pcm = None
        conversation = self.conversation
        if conversation is not None:
            encoded = payload if kind is FrameKind.AUDIO else None
            conversation.on_tick(encoded, STT_ENCODINGS.get(rx.codec.name, "linear16"), pcm, now)
        played = self._prepare_send(rx, tick, now, pcm, conversation, passthrough)
        recorder = self.recorder
        if recorder is not None:
            recorder.add_frame(pcm, played)  # caller left, what we played right; None: silence

    def _prepare_send(self, rx: _Receive, tick: int, now: float, pcm: bytes | None,
                      conversation: Conversation | None, passthrough: bytes | None = None) -> bytes | None:
        """The packet of this tick for the send phase; returns the audio it carries (None: nothing played).
        ``passthrough``: the received encoded frame that ``pcm`` decodes, which the echo sends back as is."""
        rtcp = self.rtcp
        if self._sending and self._dtmf_busy and self.can_send_rfc4733:
            # A digit replaces the audio of this tick; the assistant's audio waits (next_frame not called).
            assert self.playout is not None
            dtmf = self._dtmf_packet(rx, tick, self.playout.tick_time(tick))
            if not self._dtmf_busy:
                self._release_dtmf_waiters(None)
            if dtmf is not None:
                self._pending = dtmf.serialize()
                self._pending_tick = tick
                self._pending_audio = False
                if rtcp is not None:
                    rtcp.on_rtp_sent(dtmf, now)
            return None
        if conversation is not None:
            assert self.playout is not None
            pcm = conversation.next_frame(self.playout.tick_time(tick))
            passthrough = None
            if not self._sending:
                return None
        elif not (self.echo and self._sending):
            return None
        if pcm is None:
            rx.outbound.silence(tick)
            return None
        payload = passthrough if passthrough is not None else rx.codec.encode(pcm)
        self._pending, timestamp = rx.outbound.datagram(tick, payload)
        self._pending_tick = tick
        self._pending_audio = True
        if rtcp is not None:
            rtcp.count_sent(timestamp, len(payload), now)
        return pcm

    def send(self, tick: int) -> None:
        data = self._pending
        if data is None or self._pending_tick != tick:
            return
        self._pending = None
        playout = self.playout
        self._handed = None
        batch = None if playout is None else playout.batch
        if batch is None:
            sent = self.endpoint.send(data)
        else:
            index = len(batch)
            sent = self.endpoint.send(data, batch, playout.pacer if playout is not None else None)
            if sent and self._pending_audio and len(batch) > index:
                self._handed, self._handed_tick, self._handed_index = data, tick, index
        if sent:
            # Hot path: plain ints here, added to the metrics about once a second (flush_metrics).
            self._sent_packets += 1
            self._sent_bytes += len(data)
            capture = self.capture
            if capture is not None:
                capture.packet(data, self.local_addr, self.endpoint.remote or self.local_addr)

    def withdraw_audio(self) -> bool:
        """Take back the audio packet prepared ahead of its send time, if it has not left yet (a barge-in: the
        caller should not hear what was prepared before they spoke). Its sequence number goes to the next
        packet, and the counters, RTCP sender counts, recording and capture forget it. Not with SRTP (a
        protected packet's index is spent: reusing it would reuse keystream). True when one was withdrawn."""
        rx = self._rx
        playout = self.playout
        if rx is None or playout is None or self.endpoint.srtp is not None:
            return False
        data = self._pending
        if data is not None and self._pending_audio:
            self._pending = None  # sends from the loop: still here, not handed to anyone
        else:
            data = self._handed
            if data is None or not playout.withdraw(self._handed_tick, self._handed_index):
                return False
            self._handed = None
            self.endpoint.counters["sent"] -= 1
            self._sent_packets -= 1
            self._sent_bytes -= len(data)
        rx.outbound.withdraw()
        if self.rtcp is not None:
            self.rtcp.uncount_sent(len(data) - RTP_HEADER_BYTES)
        recording = self.recorder
        if recording is not None:
            recording.withdraw_assistant_frame()
        capture = self.capture
        if capture is not None:
            capture.withdraw_packet(data)
        return True

    def flush_metrics(self) -> None:
        """Add the RTP packets and bytes counted since the last flush (both ways) to the metrics."""
        self.endpoint.flush_metrics()
        if self._sent_packets:
            self.metrics.rtp_packets_out.inc(self._sent_packets)
            self.metrics.rtp_bytes_out.inc(self._sent_bytes)
            self._sent_packets = self._sent_bytes = 0

    def _flush_rtcp(self) -> None:
        if self.rtcp is None:
            return
        for data in self.rtcp.datagrams_to_send():
            self.endpoint.send_rtcp(data)
            capture = self.capture
            if capture is not None:
                capture.packet(data, (self.local_addr[0], self.local_addr[1] + 1),
                               self.endpoint.rtcp_remote or self.local_addr)

    # -- media timeout ------------------------------------------------------------------------------

    async def watch_timeout(self, seconds: float, on_timeout: Callable[[], None]) -> None:
        """No RTP for ``seconds`` while we expect to receive → ``on_timeout`` (suspended while on hold)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if not self.receiving:
                self._receiving_since = None
                await asyncio.sleep(min(1.0, seconds))
                continue
            if self._receiving_since is None:
                self._receiving_since = now
            last = max(self.endpoint.last_received or 0.0, self._receiving_since)
            remaining = last + seconds - now
            if remaining <= 0:
                self.metrics.media_timeouts.inc()
                on_timeout()
                return
            await asyncio.sleep(remaining)

    # -- statistics ------------------------------------------------------------------------------------

    def _observe(self, stats: MediaStats) -> None:
        """The call's receive quality into the metrics, once, at call end (nothing per packet)."""
        m = self.metrics
        if stats.mos is not None:
            m.call_mos.observe(stats.mos)
        rx = stats.receiver
        if rx is not None:
            # A.3's cumulative loss nets duplicates off ("may be negative"); the metric counts packets never
            # received, so the duplicates go back in.
            m.rtp_packets_lost.inc(max(0, rx.cumulative_lost + rx.duplicates))
            m.rtp_packets_late.inc(rx.late)
            m.rtp_packets_duplicated.inc(rx.duplicates)
            m.rtp_jitter_seconds.observe(rx.jitter_seconds)
        jb = stats.jitter_buffer
        if jb is not None and rx is not None:
            m.rtp_frames_concealed.inc(jb.frames_concealed)
            m.jitter_buffer_delay_seconds.observe(jb.current_delay)

    def media_stats(self) -> MediaStats:
        if self._final_stats is not None:
            return self._final_stats  # closed: what the call ended with
        rx = self._rx
        receiver = self.stats.snapshot() if self.stats.ssrc is not None else None
        jitter = rx.jitter.stats() if rx is not None else None
        rtcp = self.rtcp
        rtt = rtcp.rtt if rtcp is not None else None
        mos = None
        if receiver is not None and receiver.valid:
            mos = round(
                estimate_mos(
                    loss_fraction=receiver.loss_ratio,
                    rtt_seconds=rtt,
                    jitter_buffer_delay_seconds=jitter.current_delay if jitter is not None else 0.0,
                ),
                2,
            )
        peer = rtcp.peer_report if rtcp is not None else None
        clock = rx.codec.clock_rate if rx is not None else 8000
        return MediaStats(
            codec=rx.codec.name if rx is not None else None,
            receiver=receiver,
            jitter_buffer=jitter,
            rtt=rtt,
            mos=mos,
            peer_fraction_lost=peer.fraction_lost_ratio if peer is not None else None,
            peer_jitter=peer.jitter / clock if peer is not None else None,
            packets_sent=rx.outbound.packets_sent if rx is not None else 0,
            rtcp_sent=rtcp.reports_sent if rtcp is not None else 0,
            rtcp_received=self.endpoint.counters["rtcp_received"],
            ignored=dict(self._ignored),
            dropped={k: v for k, v in self.endpoint.counters.items()
                     if k not in ("received", "sent", "rtcp_received", "rtcp_sent") and not k.startswith("latched")},
            dtmf_digits=len(self.digits),
        )
