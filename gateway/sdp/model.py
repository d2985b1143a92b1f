"""SDP data model: RFC 4566 §5 (as carried forward by RFC 8866), attributes of RFC 4566 §6 and RFC 3605.

Every value is a frozen, slotted dataclass made of tuples, so two descriptions compare (and hash) by
content: :class:`gateway.sdp.negotiate.LocalSession` relies on that to tell whether our SDP changed
(RFC 3264 §8).  Addresses are kept as written on the wire, IPv6 without brackets (RFC 5118 §4.6).

The attributes the offer/answer code reads are typed (``rtpmap``, ``fmtp``, ``ptime``, ``maxptime``,
the four direction attributes, ``rtcp`` and ``rtcp-mux``); every other one is an :class:`Attribute`
kept verbatim and in its original order.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias


class SdpError(Exception):
    """The peer sent something that is not usable SDP. ``reason`` says precisely what.

    ``status_code`` is what a UAS answers to an offer it cannot read (RFC 3261 §21.4.1, 400).
    """

    status_code: int = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoCommonCodec(SdpError):
    """An offer (or answer) that is valid SDP but leaves no audio stream we can use.

    RFC 3261 §21.4.26: the UAS answers 488 and "MAY contain a Warning header field explaining
    why the offer was rejected": §20.43 code 305 "Incompatible media format" (no codec in common)
    or 304 "Media type not available" (no audio stream at all).
    """

    status_code = 488

    def __init__(
        self, reason: str, *, warning_code: int = 305, warning_text: str = "Incompatible media format"
    ) -> None:
        super().__init__(reason)
        self.warning_code = warning_code
        self.warning_text = warning_text


class Direction(Enum):
    """The media direction attributes of RFC 4566 §6 (RFC 3264 §5.1 gives their offer/answer meaning)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, *, send: bool, receive: bool) -> Direction:
        if send and receive:
            return cls.SENDRECV
        if send:
            return cls.SENDONLY
        if receive:
            return cls.RECVONLY
        return cls.INACTIVE

    def reversed(self) -> Direction:
        """The same stream seen from the other end: sendonly <-> recvonly."""
        return Direction.from_flags(send=self.receives, receive=self.sends)

    def restricted_to(self, other: Direction) -> Direction:
        """Only what both directions allow (e.g. what we want, limited by what the peer permits)."""
        return Direction.from_flags(send=self.sends and other.sends, receive=self.receives and other.receives)


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (RFC 4566 §5.7).

    ``ttl`` and ``count`` are the multicast suffixes: ``224.2.1.1/127/3`` (IP4 has a TTL, IP6 only a count).
    """

    address: str
    net_type: str = "IN"
    addr_type: str = "IP4"
    ttl: int | None = None
    count: int | None = None

    @property
    def is_unspecified(self) -> bool:
        """``0.0.0.0`` (or ``::``): RFC 3264 §8.4, "neither RTP nor RTCP should be sent to the peer"."""
        try:
            return ipaddress.ip_address(self.address).is_unspecified
        except ValueError:
            return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`` (RFC 4566 §5.2).

    The session id is an opaque identifier (compared as text); the version is a number that
    RFC 3264 §8 increments by one whenever the description changes.
    """

    username: str
    session_id: str
    session_version: int
    address: str
    net_type: str = "IN"
    addr_type: str = "IP4"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (RFC 4566 §5.8), e.g. ``AS:84`` or ``TIAS:64000``."""

    bwtype: str
    bandwidth: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """``t=<start-time> <stop-time>`` with its ``r=`` repeat lines kept as written (RFC 4566 §5.9, §5.10)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpMap:
    """``a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`` (RFC 4566 §6).

    For audio the encoding parameter is the channel count; absent means one channel.
    """

    payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fmtp:
    """``a=fmtp:<format> <format specific parameters>`` (RFC 4566 §6), e.g. ``fmtp:101 0-16``."""

    payload_type: int
    parameters: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ptime:
    """``a=ptime:<packet time>`` in milliseconds (RFC 4566 §6)."""

    milliseconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MaxPtime:
    """``a=maxptime:<maximum packet time>`` in milliseconds (RFC 4566 §6)."""

    milliseconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectionAttribute:
    """``a=sendrecv`` / ``a=sendonly`` / ``a=recvonly`` / ``a=inactive`` (RFC 4566 §6)."""

    direction: Direction


@dataclass(frozen=True, slots=True, kw_only=True)
class Rtcp:
    """``a=rtcp:<port> [<nettype> <addrtype> <connection-address>]`` (RFC 3605 §2.1)."""

    port: int
    net_type: str | None = None
    addr_type: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpMux:
    """``a=rtcp-mux`` (RFC 5761 §5.1.1): RTP and RTCP share one port."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribute:
    """Any other ``a=<name>[:<value>]``, kept verbatim. ``value`` is None for a property attribute."""

    name: str
    value: str | None = None


AttributeLine: TypeAlias = RtpMap | Fmtp | Ptime | MaxPtime | DirectionAttribute | Rtcp | RtcpMux | Attribute


def _direction_of(attributes: tuple[AttributeLine, ...]) -> Direction | None:
    for attribute in attributes:
        if isinstance(attribute, DirectionAttribute):
            return attribute.direction
    return None


def _ptime_of(attributes: tuple[AttributeLine, ...]) -> int | None:
    for attribute in attributes:
        if isinstance(attribute, Ptime):
            return attribute.milliseconds
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDescription:
    """One ``m=<media> <port>[/<number of ports>] <proto> <fmt> ...`` section (RFC 4566 §5.14)."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    information: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = None
    attributes: tuple[AttributeLine, ...] = ()

    @property
    def payload_types(self) -> tuple[int, ...]:
        """The formats that are RTP payload type numbers, in the offerer's preference order."""
        return tuple(int(fmt) for fmt in self.formats if fmt.isascii() and fmt.isdigit() and int(fmt) <= 127)

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        for attribute in self.attributes:
            if isinstance(attribute, RtpMap) and attribute.payload_type == payload_type:
                return attribute
        return None

    def fmtp(self, payload_type: int) -> str | None:
        for attribute in self.attributes:
            if isinstance(attribute, Fmtp) and attribute.payload_type == payload_type:
                return attribute.parameters
        return None

    @property
    def direction(self) -> Direction | None:
        """The direction attribute written in this section, if any (see SessionDescription.direction_of)."""
        return _direction_of(self.attributes)

    @property
    def ptime(self) -> int | None:
        return _ptime_of(self.attributes)

    @property
    def maxptime(self) -> int | None:
        for attribute in self.attributes:
            if isinstance(attribute, MaxPtime):
                return attribute.milliseconds
        return None

    @property
    def rtcp(self) -> Rtcp | None:
        for attribute in self.attributes:
            if isinstance(attribute, Rtcp):
                return attribute
        return None

    @property
    def rtcp_mux(self) -> bool:
        return any(isinstance(attribute, RtcpMux) for attribute in self.attributes)

    def attribute_values(self, name: str) -> tuple[str | None, ...]:
        """Values of the untyped attributes called ``name`` (e.g. ``minptime``), in order."""
        return tuple(a.value for a in self.attributes if isinstance(a, Attribute) and a.name == name)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDescription:
    """A whole SDP body (RFC 4566 §5): session-level fields, then the media sections in order."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    timings: tuple[Timing, ...] = (Timing(),)
    time_zones: str | None = None
    key: str | None = None
    attributes: tuple[AttributeLine, ...] = ()
    media: tuple[MediaDescription, ...] = ()

    @property
    def direction(self) -> Direction | None:
        """The session-level direction attribute, if any."""
        return _direction_of(self.attributes)

    def connection_of(self, media: MediaDescription) -> Connection | None:
        """RFC 4566 §5.7: a media-level ``c=`` overrides the session-level one."""
        if media.connections:
            return media.connections[0]
        return self.connection

    def direction_of(self, media: MediaDescription) -> Direction:
        """RFC 4566 §6: media-level direction, else session-level, else ``sendrecv``."""
        return media.direction or self.direction or Direction.SENDRECV

    def ptime_of(self, media: MediaDescription) -> int | None:
        """``a=ptime`` is a media attribute; some stacks put it at session level, so fall back to it."""
        return media.ptime or _ptime_of(self.attributes)

    def attribute_values(self, name: str) -> tuple[str | None, ...]:
        """Values of the untyped session-level attributes called ``name``, in order."""
        return tuple(a.value for a in self.attributes if isinstance(a, Attribute) and a.name == name)
