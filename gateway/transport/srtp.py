"""SRTP/SRTCP for one call's media (RFC 3711), keyed by SDES (RFC 4568), via libsrtp (pylibsrtp).

Two libsrtp sessions: outbound keyed with our master key (``ssrc_any_outbound``), inbound with the
peer's (``ssrc_any_inbound``). Every RTP and RTCP packet both ways goes through them. A packet that
fails to unprotect (RFC 3711 §3.3: "If the result of the authentication is "AUTHENTICATION FAILURE",
the packet MUST be discarded") is dropped and counted in ``voicegw_srtp_errors{direction,kind}``; it
never raises into the call. Keys are never logged.
"""

from __future__ import annotations

from collections import Counter

import pylibsrtp

from gateway.observability.metrics import Metrics
from gateway.sdp.crypto import SUITE_32, SUITE_80, SrtpKeying

_PROFILES = {
    SUITE_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    SUITE_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


class SrtpContext:
    """Protect what we send and unprotect what we receive; ``None`` out means "drop, counted"."""

    def __init__(self, keying: SrtpKeying, *, metrics: Metrics | None = None) -> None:
        profile = _PROFILES.get(keying.suite)
        if profile is None:
            raise ValueError(f"unsupported SRTP suite {keying.suite}")
        self.keying = keying
        self._metrics = metrics
        self.counters: Counter[str] = Counter()
        outbound = pylibsrtp.Policy(
            key=keying.local_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
        inbound = pylibsrtp.Policy(
            key=keying.remote_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
        self._tx = pylibsrtp.Session(policy=outbound)
        self._rx = pylibsrtp.Session(policy=inbound)

    def _error(self, direction: str, kind: str) -> None:
        self.counters[f"{direction}_{kind}_error"] += 1
        if self._metrics is not None:
            self._metrics.srtp_errors.labels(direction, kind).inc()

    def protect(self, packet: bytes) -> bytes | None:
        try:
            data = self._tx.protect(packet)
        except pylibsrtp.Error:
            self._error("out", "rtp")
            return None
        self.counters["out_rtp"] += 1
        return data

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        try:
            data = self._tx.protect_rtcp(packet)
        except pylibsrtp.Error:
            self._error("out", "rtcp")
            return None
        self.counters["out_rtcp"] += 1
        return data

    def unprotect(self, packet: bytes) -> bytes | None:
        try:
            data = self._rx.unprotect(packet)
        except pylibsrtp.Error:
            self._error("in", "rtp")
            return None
        self.counters["in_rtp"] += 1
        return data

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        try:
            data = self._rx.unprotect_rtcp(packet)
        except pylibsrtp.Error:
            self._error("in", "rtcp")
            return None
        self.counters["in_rtcp"] += 1
        return data
