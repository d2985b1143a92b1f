"""RFC 3264 offer/answer for one audio stream (§5 offer, §6 answer, §7 offerer processing of the
answer, §8 modifying the session: hold, codec change, o= version).

Pure functions over :class:`SessionDescription` values; the only state is :class:`LocalSession`,
our ``o=`` line, which the caller keeps per call.  Codec registries are mapped to
:class:`CodecSpec` by the caller; this module knows nothing of SIP, RTP or encoders.

- :func:`answer` — we are the answerer (an INVITE or re-INVITE with an offer).
- :func:`create_offer` — we are the offerer (an outbound INVITE, a re-INVITE, or the 200 OK to an
  INVITE without a body: a "delayed offer", whose answer arrives in the ACK).
- :func:`process_answer` — the peer's answer to our offer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from gateway.sdp.crypto import SrtpKeying
from gateway.sdp.model import (
    AttributeLine,
    Connection,
    Direction,
    DirectionAttribute,
    Fmtp,
    MediaDescription,
    NoCommonCodec,
    Origin,
    Ptime,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
)

__all__ = [
    "CodecSpec",
    "LocalSession",
    "NegotiatedAudio",
    "answer",
    "create_offer",
    "process_answer",
]

TELEPHONE_EVENT = "telephone-event"

# RFC 3551 §6 Table 4: static audio payload types, used when an offer lists one without a=rtpmap.
_STATIC_AUDIO: Mapping[int, tuple[str, int, int]] = MappingProxyType(
    {
        0: ("PCMU", 8000, 1),
        3: ("GSM", 8000, 1),
        4: ("G723", 8000, 1),
        5: ("DVI4", 8000, 1),
        6: ("DVI4", 16000, 1),
        7: ("LPC", 8000, 1),
        8: ("PCMA", 8000, 1),
        9: ("G722", 8000, 1),
        10: ("L16", 44100, 2),
        11: ("L16", 44100, 1),
        12: ("QCELP", 8000, 1),
        13: ("CN", 8000, 1),
        14: ("MPA", 90000, 1),
        15: ("G728", 8000, 1),
        16: ("DVI4", 11025, 1),
        17: ("DVI4", 22050, 1),
        18: ("G729", 8000, 1),
    }
)
# The RTP profiles whose audio we can carry (AVPF is AVP plus feedback we may ignore); SAVP needs SRTP.
RTP_PROFILES = frozenset({"RTP/AVP", "RTP/AVPF"})
# Dynamic payload types handed out by create_offer: 101 first (what most peers expect for DTMF).
_DYNAMIC_ORDER = (*range(101, 128), *range(96, 101))
_PTIME_RANGE = range(1, 201)


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """One codec we can send and receive, e.g. ``CodecSpec("PCMU", 8000, 0)`` or
    ``CodecSpec("telephone-event", 8000, None, fmtp="0-16")`` (RFC 4733 DTMF)."""

    name: str
    clock_rate: int
    static_pt: int | None = None
    channels: int = 1
    fmtp: str | None = None

    @property
    def is_telephone_event(self) -> bool:
        return self.name.lower() == TELEPHONE_EVENT

    def matches(self, name: str, clock_rate: int, channels: int) -> bool:
        """RFC 4566 §6: encoding names are case-insensitive; rate and channels must agree."""
        return (
            name.lower() == self.name.lower() and clock_rate == self.clock_rate and channels == self.channels
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiatedAudio:
    """The outcome of one offer/answer exchange, in the terms the RTP side needs.

    ``payload_type`` is the one to send with (the peer's receive mapping); ``direction`` is OUR
    direction.  ``remote_rtcp_port`` is None when RTCP must not be sent (port 0, ``c=0.0.0.0``).
    """

    payload_type: int
    codec: str
    clock_rate: int
    ptime: int
    dtmf_payload_type: int | None
    remote_host: str
    remote_port: int
    remote_rtcp_port: int | None
    direction: Direction
    srtp: SrtpKeying | None = None  # SDES keys (RFC 4568) when the stream is RTP/SAVP


class LocalSession:
    """Our ``o=`` line for one call (RFC 4566 §5.2, RFC 3264 §8).

    The session id is fixed for the call. RFC 3264 §8: the new SDP's o= line "MUST be identical to
    that in the previous SDP, except that the version in the origin field MUST increment by one
    from the previous SDP. If the version in the origin line does not increment, the SDP MUST be
    identical to the SDP with that version number."  :meth:`stamp` applies that rule to every
    description we send, offers and answers alike.
    """

    def __init__(self, *, username: str = "-", session_id: int, address: str, version: int = 0) -> None:
        if session_id < 0 or version < 0:
            raise ValueError("o= session id and version are non-negative numbers")
        self._username = username
        self._session_id = session_id
        self._address = address
        self._version = version
        self._last: SessionDescription | None = None

    @property
    def username(self) -> str:
        return self._username

    @property
    def session_id(self) -> int:
        return self._session_id

    @property
    def address(self) -> str:
        return self._address

    @property
    def version(self) -> int:
        """The version of the last description stamped (or the initial one)."""
        return self._version

    def _origin(self, version: int) -> Origin:
        return Origin(
            username=self._username,
            session_id=str(self._session_id),
            session_version=version,
            address=self._address,
            addr_type=_addr_type(self._address),
        )

    def stamp(self, description: SessionDescription) -> SessionDescription:
        """``description`` with our ``o=`` line, its version bumped only if the content changed."""
        unversioned = dataclasses.replace(description, origin=self._origin(0))
        if self._last is not None and unversioned != self._last:
            self._version += 1
        self._last = unversioned
        return dataclasses.replace(description, origin=self._origin(self._version))


def _addr_type(host: str) -> str:
    return "IP6" if ":" in host else "IP4"


def _resolve(media: MediaDescription, payload_type: int) -> tuple[str, int, int] | None:
    """(encoding name, clock rate, channels) of a payload type: its a=rtpmap, else RFC 3551 §6."""
    rtpmap = media.rtpmap(payload_type)
    if rtpmap is not None:
        return rtpmap.encoding_name, rtpmap.clock_rate, rtpmap.channels or 1
    return _STATIC_AUDIO.get(payload_type)


def _find(capabilities: Sequence[CodecSpec], codec: tuple[str, int, int] | None) -> CodecSpec | None:
    if codec is None:
        return None
    return next((c for c in capabilities if c.matches(*codec)), None)


def _plausible_ptime(value: int | None) -> int | None:
    return value if value is not None and value in _PTIME_RANGE else None


@dataclass(frozen=True, slots=True)
class _Choice:
    index: int
    payload_type: int
    encoding: tuple[str, int, int]
    capability: CodecSpec
    dtmf: tuple[int, CodecSpec] | None


def _choose(media: MediaDescription, index: int, capabilities: Sequence[CodecSpec]) -> _Choice | None:
    """The offerer's most preferred codec that we support, plus a telephone-event at its rate."""
    codecs = [c for c in capabilities if not c.is_telephone_event]
    events = [c for c in capabilities if c.is_telephone_event]
    for payload_type in media.payload_types:
        encoding = _resolve(media, payload_type)
        capability = _find(codecs, encoding)
        if capability is None or encoding is None:
            continue  # RFC 3264 §6.1: formats we do not know are simply left out of the answer.
        dtmf: tuple[int, CodecSpec] | None = None
        for event_pt in media.payload_types:
            event = _find(events, _resolve(media, event_pt))
            # RFC 4733: telephone events share the RTP timestamp clock of the audio they accompany.
            if event is not None and event.clock_rate == encoding[1]:
                dtmf = (event_pt, event)
                break
        return _Choice(index, payload_type, encoding, capability, dtmf)
    return None


def _rtpmap(payload_type: int, name: str, clock_rate: int, channels: int) -> RtpMap:
    return RtpMap(
        payload_type=payload_type,
        encoding_name=name,
        clock_rate=clock_rate,
        channels=None if channels == 1 else channels,
    )


def _audio_section(
    *,
    port: int,
    proto: str,
    entries: Sequence[tuple[int, str, int, int, str | None]],
    ptime: int,
    direction: Direction,
    extra: Sequence[AttributeLine] = (),
) -> MediaDescription:
    attributes: list[AttributeLine] = []
    for payload_type, name, clock_rate, channels, _ in entries:
        # RFC 3264 §6.1: the answer "MUST contain rtpmap attributes to define the payload type
        # mappings for dynamic payload types, and SHOULD contain mappings for static payload types".
        attributes.append(_rtpmap(payload_type, name, clock_rate, channels))
    for payload_type, _, _, _, fmtp in entries:
        if fmtp is not None:
            attributes.append(Fmtp(payload_type=payload_type, parameters=fmtp))
    attributes.append(Ptime(milliseconds=ptime))
    attributes.append(DirectionAttribute(direction=direction))
    attributes.extend(extra)
    return MediaDescription(
        media="audio",
        port=port,
        proto=proto,
        formats=tuple(str(entry[0]) for entry in entries),
        attributes=tuple(attributes),
    )


def _rejected(media: MediaDescription) -> MediaDescription:
    """RFC 3264 §6: "To reject an offered stream, the port number in the corresponding stream in
    the answer MUST be set to zero. Any media formats listed are ignored. At least one MUST be
    present"."""
    return MediaDescription(media=media.media, port=0, proto=media.proto, formats=media.formats or ("0",))


def _check_port(port: int) -> None:
    if not 0 < port <= 65535:
        raise ValueError(f"local RTP port {port} is not a usable UDP port")


def answer(
    offer: SessionDescription,
    capabilities: Sequence[CodecSpec],
    *,
    local_host: str,
    local_port: int,
    session: LocalSession,
    preferred_ptime: int = 20,
    local_direction: Direction = Direction.SENDRECV,
    profiles: frozenset[str] = RTP_PROFILES,
    extra_attributes: Callable[[MediaDescription], Sequence[AttributeLine]] | None = None,
) -> tuple[SessionDescription, NegotiatedAudio]:
    """Answer ``offer`` (RFC 3264 §6) using the first audio stream we can serve.

    Every other ``m=`` line is answered with port 0, in the same order.  Among the codecs we
    support, the offerer's order of preference wins; telephone-event keeps the offerer's payload
    type; ``a=ptime`` from the offer is honoured.  ``local_direction`` is what we want (e.g.
    SENDONLY while we hold the call); the answer never allows more than the offer does.

    ``profiles`` are the m= protocols we accept (RTP/SAVP only with SRTP keys at hand);
    ``extra_attributes(offered_media)`` adds lines to the answered stream (e.g. our ``a=crypto``).

    Raises :class:`NoCommonCodec` (the UA answers 488 with a Warning) when no audio stream is usable.
    """
    _check_port(local_port)
    choice: _Choice | None = None
    unaddressed = False
    # A stream the offerer disabled (port 0) is only used when there is no live one.
    for wanted_live in (True, False):
        for index, media in enumerate(offer.media):
            if media.media != "audio" or media.proto not in profiles or (media.port != 0) != wanted_live:
                continue
            if offer.connection_of(media) is None and media.port != 0:
                unaddressed = True  # RFC 4566 §5.7: a c= line in the session or in every m= section.
                continue
            choice = _choose(media, index, capabilities)
            if choice is not None:
                break
        if choice is not None:
            break
    if choice is None:
        if not any(m.media == "audio" for m in offer.media):
            raise NoCommonCodec(
                "the offer has no audio stream", warning_code=304, warning_text="Media type not available"
            )
        if unaddressed:
            raise SdpError(
                "the offered audio stream has no c= line, at session or media level (RFC 4566 §5.7)"
            )
        offered = sorted({f for m in offer.media if m.media == "audio" for f in m.formats})
        raise NoCommonCodec(f"no offered audio format ({' '.join(offered)}) is one we support")

    media = offer.media[choice.index]
    connection = offer.connection_of(media)
    name, clock_rate, channels = choice.encoding
    ptime = _plausible_ptime(offer.ptime_of(media))
    if ptime is None:
        maxptime = _plausible_ptime(media.maxptime)
        ptime = min(preferred_ptime, maxptime) if maxptime is not None else preferred_ptime

    # RFC 3264 §6.1: "If a stream is offered as sendonly, the corresponding stream MUST be marked
    # as recvonly or inactive in the answer. If a media stream is listed as recvonly in the offer,
    # the answer MUST be marked as sendonly or inactive in the answer. [...] If an offered media
    # stream is listed as inactive, it MUST be marked as inactive in the answer."
    direction = offer.direction_of(media).reversed().restricted_to(local_direction)
    if connection is not None and connection.is_unspecified:
        # RFC 3264 §8.4: c=0.0.0.0 "means that neither RTP nor RTCP should be sent to the peer".
        direction = direction.restricted_to(Direction.RECVONLY)
    live = media.port != 0 and connection is not None
    if not live:
        direction = Direction.INACTIVE

    entries: list[tuple[int, str, int, int, str | None]] = [
        (choice.payload_type, name, clock_rate, channels, choice.capability.fmtp)
    ]
    if choice.dtmf is not None:
        event_pt, event = choice.dtmf
        event_map = media.rtpmap(event_pt)
        event_name = event_map.encoding_name if event_map is not None else event.name
        entries.append((event_pt, event_name, event.clock_rate, event.channels, event.fmtp))

    extra = tuple(extra_attributes(media)) if extra_attributes is not None and live else ()
    sections = [
        _audio_section(
            port=local_port, proto=media.proto, entries=entries, ptime=ptime, direction=direction, extra=extra
        )
        if index == choice.index and live
        else _rejected(offered)
        for index, offered in enumerate(offer.media)
    ]
    description = SessionDescription(
        origin=_placeholder(),  # LocalSession.stamp writes our o= line
        session_name="-",
        connection=Connection(address=local_host, addr_type=_addr_type(local_host)),
        # RFC 3264 §6: "The "t=" line in the answer MUST equal that of the offer."
        timings=offer.timings or (Timing(),),
        media=tuple(sections),
    )
    stamped = session.stamp(description)

    rtcp_port: int | None = None
    if live and connection is not None and not connection.is_unspecified:
        rtcp = media.rtcp
        # RFC 3605 §2.1 a=rtcp gives the port; otherwise RFC 3550 §11: the next higher (odd) port.
        rtcp_port = rtcp.port if rtcp is not None else media.port + 1
    negotiated = NegotiatedAudio(
        payload_type=choice.payload_type,
        codec=choice.capability.name,
        clock_rate=clock_rate,
        ptime=ptime,
        dtmf_payload_type=choice.dtmf[0] if choice.dtmf is not None else None,
        remote_host=connection.address if connection is not None else "",
        remote_port=media.port if live else 0,
        remote_rtcp_port=rtcp_port,
        direction=direction,
    )
    return stamped, negotiated


def _placeholder() -> Origin:
    return Origin(username="-", session_id="0", session_version=0, address="0.0.0.0")


def create_offer(
    capabilities: Sequence[CodecSpec],
    *,
    local_host: str,
    local_port: int,
    session: LocalSession,
    direction: Direction = Direction.SENDRECV,
    ptime: int = 20,
    payload_types: Mapping[str, int] | None = None,
    proto: str = "RTP/AVP",
    extra_attributes: Sequence[AttributeLine] = (),
) -> SessionDescription:
    """One audio stream listing ``capabilities`` in our order of preference (RFC 3264 §5).

    Static payload types are used where the codec has one; dynamic ones (RFC 3551 §3: 96-127)
    are handed out from 101 upwards unless ``payload_types`` pins them by encoding name, so that a
    re-offer keeps the numbers already negotiated (RFC 3264 §8.3.2: "the mapping from a particular
    dynamic payload type number to a particular codec within that media stream MUST NOT change for
    the duration of a session").  Calling it again with the
    same arguments yields the same description and therefore the same ``o=`` version.
    """
    _check_port(local_port)
    if not capabilities:
        raise ValueError("an offer needs at least one codec")
    pinned = {name.lower(): pt for name, pt in (payload_types or {}).items()}
    used: set[int] = set()
    entries: list[tuple[int, str, int, int, str | None]] = []
    for capability in capabilities:
        payload_type = capability.static_pt
        if payload_type is None:
            payload_type = pinned.get(capability.name.lower())
        if payload_type is None:
            payload_type = next(
                (pt for pt in _DYNAMIC_ORDER if pt not in used and pt not in pinned.values()), None
            )
            if payload_type is None:
                raise ValueError("more codecs than dynamic payload types")
        if payload_type in used or not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} of {capability.name} is taken or out of range")
        used.add(payload_type)
        entries.append(
            (payload_type, capability.name, capability.clock_rate, capability.channels, capability.fmtp)
        )
    description = SessionDescription(
        origin=_placeholder(),
        session_name="-",
        connection=Connection(address=local_host, addr_type=_addr_type(local_host)),
        media=(
            _audio_section(
                port=local_port, proto=proto, entries=entries, ptime=ptime, direction=direction,
                extra=extra_attributes,
            ),
        ),
    )
    return session.stamp(description)


def process_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedAudio:
    """Read the peer's answer to our ``offer`` (RFC 3264 §7), also for a delayed offer (ACK).

    Raises :class:`SdpError` when ``answer`` is not an answer to ``offer`` (RFC 3264 §6: "The
    answer MUST contain exactly the same number of "m=" lines as the offer", each of the same
    media type) and :class:`NoCommonCodec` when it rejects our audio or picks a codec we never offered.
    """
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"the answer has {len(answer.media)} m= lines, the offer had {len(offer.media)} "
            "(RFC 3264 §6: exactly the same number)"
        )
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True)):
        if ours.media != theirs.media:
            raise SdpError(
                f"m= line {index + 1} of the answer is {theirs.media!r}, the offer had {ours.media!r}"
            )
    pairs = [
        (ours, theirs)
        for ours, theirs in zip(offer.media, answer.media, strict=True)
        if ours.media == "audio" and ours.port != 0
    ]
    if not pairs:
        raise NoCommonCodec(
            "our offer has no active audio stream", warning_code=304, warning_text="Media type not available"
        )
    accepted = [(ours, theirs) for ours, theirs in pairs if theirs.port != 0]
    if not accepted:
        raise NoCommonCodec("the answer rejected our audio stream (port 0)")
    ours, theirs = accepted[0]

    connection = answer.connection_of(theirs)
    if connection is None:
        raise SdpError("the answer's audio stream has no c= line (RFC 4566 §5.7)")
    offered_events = [(pt, codec) for pt in ours.payload_types if (codec := _resolve(ours, pt)) is not None]
    chosen: tuple[int, tuple[str, int, int]] | None = None
    dtmf_candidates: list[tuple[int, int]] = []
    for payload_type in theirs.payload_types:
        # A format without its own rtpmap in the answer keeps the mapping of our offer.
        codec = (
            _resolve(theirs, payload_type) if theirs.rtpmap(payload_type) else _resolve(ours, payload_type)
        )
        if codec is None or not any(_same(codec, offered) for _, offered in offered_events):
            continue  # RFC 3264 §6.1: the answer's formats must be among those offered.
        if codec[0].lower() == TELEPHONE_EVENT:
            dtmf_candidates.append((payload_type, codec[1]))
        elif chosen is None:
            chosen = (payload_type, codec)
    if chosen is None:
        raise NoCommonCodec(
            f"the answer's audio formats ({' '.join(theirs.formats)}) are not codecs we offered"
        )
    payload_type, (name, clock_rate, _) = chosen
    dtmf = next((pt for pt, rate in dtmf_candidates if rate == clock_rate), None)

    offered_direction = offer.direction_of(ours)
    direction = answer.direction_of(theirs).reversed().restricted_to(offered_direction)
    if connection.is_unspecified:
        direction = direction.restricted_to(Direction.RECVONLY)
    ptime = _plausible_ptime(answer.ptime_of(theirs)) or _plausible_ptime(offer.ptime_of(ours)) or 20
    rtcp = theirs.rtcp
    return NegotiatedAudio(
        payload_type=payload_type,
        codec=name,
        clock_rate=clock_rate,
        ptime=ptime,
        dtmf_payload_type=dtmf,
        remote_host=connection.address,
        remote_port=theirs.port,
        remote_rtcp_port=None if connection.is_unspecified else (rtcp.port if rtcp else theirs.port + 1),
        direction=direction,
    )


def _same(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[0].lower() == b[0].lower() and a[1:] == b[1:]
