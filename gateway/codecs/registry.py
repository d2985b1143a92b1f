"""The audio codecs the gateway offers, in preference order (RFC 3551 §6 static payload types).

PCMU (PT 0) first, then PCMA (PT 8), then ``telephone-event`` (RFC 4733, dynamic PT).
Lookup is by encoding name, case-insensitively as SDP requires (RFC 4566 §6 "rtpmap"
encoding names are case-insensitive); A-law stays A-law: nothing here assumes μ-law.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

__all__ = ["PCMA", "PCMU", "TELEPHONE_EVENT", "Codec", "CodecRegistry"]

TELEPHONE_EVENT = "telephone-event"


@dataclass(frozen=True, slots=True, kw_only=True)
class Codec:
    """An audio codec: 16-bit LE mono PCM at ``clock_rate`` in, encoded bytes out."""

    name: str  # the SDP encoding name, e.g. "PCMU"
    clock_rate: int
    static_payload_type: int | None
    encode: Callable[[bytes], bytes]
    decode: Callable[[bytes], bytes]
    frame_bytes: int  # encoded bytes per 20 ms frame

    @property
    def samples_per_frame(self) -> int:
        """Samples (= RTP timestamp increment) per 20 ms frame."""
        return self.clock_rate // 50

    @property
    def pcm_frame_bytes(self) -> int:
        """Linear PCM bytes per 20 ms frame (16-bit samples)."""
        return 2 * self.samples_per_frame


PCMU = Codec(
    name="PCMU",
    clock_rate=8000,
    static_payload_type=0,
    encode=ulaw_encode,
    decode=ulaw_decode,
    frame_bytes=160,
)
PCMA = Codec(
    name="PCMA",
    clock_rate=8000,
    static_payload_type=8,
    encode=alaw_encode,
    decode=alaw_decode,
    frame_bytes=160,
)


class CodecRegistry:
    """An ordered, read-only set of codecs plus whether telephone-event is offered."""

    __slots__ = ("_codecs", "_telephone_event")

    def __init__(self, codecs: Iterable[Codec] = (PCMU, PCMA), *, telephone_event: bool = True) -> None:
        self._codecs = tuple(codecs)
        names = [codec.name.lower() for codec in self._codecs]
        if len(set(names)) != len(names):
            raise ValueError("codec names must be unique")
        self._telephone_event = telephone_event

    @property
    def codecs(self) -> tuple[Codec, ...]:
        return self._codecs

    def capabilities(self) -> list[tuple[str, int, int | None]]:
        """``(name, clock_rate, static_payload_type)`` in preference order; telephone-event last
        with ``None`` (it takes a dynamic payload type)."""
        caps: list[tuple[str, int, int | None]] = [
            (codec.name, codec.clock_rate, codec.static_payload_type) for codec in self._codecs
        ]
        if self._telephone_event:
            caps.append((TELEPHONE_EVENT, 8000, None))
        return caps

    def get(self, name: str, clock_rate: int | None = None) -> Codec | None:
        """The audio codec called ``name`` (case-insensitive), optionally at ``clock_rate``."""
        wanted = name.lower()
        for codec in self._codecs:
            if codec.name.lower() == wanted and (clock_rate is None or codec.clock_rate == clock_rate):
                return codec
        return None

    def by_static_payload_type(self, payload_type: int) -> Codec | None:
        for codec in self._codecs:
            if codec.static_payload_type == payload_type:
                return codec
        return None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None
