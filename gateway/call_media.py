"""A call's media: its RTP endpoint and what it is connected to (the echo line or an assistant).

The echo line sends the caller's audio back so users can verify a trunk's audio both ways.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from gateway.observability.metrics import Metrics
from gateway.sdp import Direction, NegotiatedAudio
from gateway.transport.rtp_endpoint import RtpEndpoint
from gateway.util.dtmf_info import DtmfInfoError, parse_dtmf_info


class CallMedia:
    def __init__(self, host: str, port: int, *, echo: bool, metrics: Metrics) -> None:
        self.endpoint = RtpEndpoint(host, port, self._on_packet)
        self.echo = echo
        self.metrics = metrics
        self.params: NegotiatedAudio | None = None
        self.digits: list[str] = []
        self._ssrc = 0x5E1F0000 | (port & 0xFFFF)

    async def open(self) -> None:
        await self.endpoint.open()

    def close(self) -> None:
        self.endpoint.close()

    def apply(self, params: NegotiatedAudio) -> None:
        """New negotiated parameters (answer, re-INVITE, UPDATE): remote address, codec, direction."""
        self.params = params
        self.endpoint.set_remote((params.remote_host, params.remote_port))

    @property
    def receiving(self) -> bool:
        return self.params is not None and self.params.direction in (Direction.SENDRECV, Direction.RECVONLY)

    @property
    def sending(self) -> bool:
        return self.params is not None and self.params.direction in (Direction.SENDRECV, Direction.SENDONLY)

    def _on_packet(self, data: bytes, now: float) -> None:
        self.metrics.rtp_packets.labels("in").inc()
        if self.echo and self.sending:
            # Re-stamp the SSRC: the echo is our stream, not theirs (RFC 3550 §8: SSRCs are per source).
            out = data[:8] + struct.pack("!I", self._ssrc) + data[12:]
            if self.endpoint.send(out):
                self.metrics.rtp_packets.labels("out").inc()

    def on_info(self, content_type: str | None, body: bytes) -> None:
        """SIP INFO application/dtmf-relay or application/dtmf (other packages are accepted and ignored)."""
        if content_type not in ("application/dtmf-relay", "application/dtmf"):
            return
        try:
            digit, _duration = parse_dtmf_info(content_type, body)
        except DtmfInfoError:
            return
        self.digits.append(digit)
        self.metrics.dtmf_digits.labels("sip-info").inc()

    async def watch_timeout(self, seconds: float, on_timeout: Callable[[], None]) -> None:
        """No RTP for ``seconds`` while we expect to receive → ``on_timeout`` (suspended while on hold)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            await asyncio.sleep(min(1.0, seconds / 4))
            if not self.receiving:
                started = loop.time()
                continue
            last = self.endpoint.last_received or started
            if loop.time() - max(last, started) > seconds:
                on_timeout()
                return
