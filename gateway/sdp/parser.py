"""SDP parser and serialiser: RFC 4566 §5 (grammar §9), attributes of §6, RFC 3605 ``a=rtcp``,
RFC 5118 §4.6 IPv6 connection addresses (written without brackets).

``parse_sdp`` returns a :class:`SessionDescription` or raises :class:`SdpError`, nothing else.
It is lenient where real peers are sloppy and strict where the body is not SDP at all:

- lenient: LF-only or CR-only line ends, trailing white space, blank lines, runs of spaces
  between fields, a missing ``s=`` or ``t=`` line, session-level lines out of the §5 order,
  brackets around an IPv6 connection address, a known attribute whose value we cannot read
  (kept as an untyped :class:`Attribute`, exactly as written);
- strict: the first line MUST be ``v=0``; ``o=`` is required; "An SDP parser MUST completely
  ignore any session description that contains a type letter that it does not understand"
  (RFC 4566 §5), so an unknown type letter rejects the body; a session-only line inside a
  media section, malformed ``o=``/``c=``/``m=``/``b=``/``t=`` lines and NUL bytes are rejected.

Resource use is bounded by :class:`SdpLimits` (body size, line count, line length, media count).

``serialize_sdp`` writes the fields in the §5 order with CRLF line ends; for a body that was
written in that order (every capture in the test data) ``serialize_sdp(parse_sdp(b)) == b``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import assert_never

from gateway.sdp.model import (
    Attribute,
    AttributeLine,
    Bandwidth,
    Connection,
    Direction,
    DirectionAttribute,
    Fmtp,
    MaxPtime,
    MediaDescription,
    Origin,
    Ptime,
    Rtcp,
    RtcpMux,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
)

__all__ = ["DEFAULT_LIMITS", "SdpLimits", "parse_sdp", "serialize_sdp"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SdpLimits:
    """Bounds on what one SDP body may cost us to parse."""

    max_bytes: int = 65536
    max_lines: int = 1000
    max_line_length: int = 4096
    max_media: int = 64
    max_attributes: int = 512  # a=lines in the whole body; rich WebRTC offers carry about 100


DEFAULT_LIMITS = SdpLimits()

_LINE_BREAK = re.compile(r"\r\n|\n|\r")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 4566 §9 token-char
_PROTO = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+(?:/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)*")
_HOST_NAME = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?\.)*[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?\.?"
)
_DOTTED_QUAD = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
_DECIMAL = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")
_SESSION_LETTERS = frozenset("vosiuepcbtrzkam")
_MEDIA_LETTERS = frozenset("icbka")
_DIRECTIONS = {d.value: d for d in Direction}


# --------------------------------------------------------------------------------------------
# parsing


@dataclass(slots=True)
class _MediaBuilder:
    line: int
    media: str
    port: int
    port_count: int | None
    proto: str
    formats: tuple[str, ...]
    information: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    attributes: list[AttributeLine] = field(default_factory=list)

    def build(self) -> MediaDescription:
        return MediaDescription(
            media=self.media,
            port=self.port,
            port_count=self.port_count,
            proto=self.proto,
            formats=self.formats,
            information=self.information,
            connections=tuple(self.connections),
            bandwidths=tuple(self.bandwidths),
            key=self.key,
            attributes=tuple(self.attributes),
        )


@dataclass(slots=True)
class _SessionBuilder:
    origin: Origin | None = None
    session_name: str | None = None
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    time_zones: str | None = None
    key: str | None = None
    attributes: list[AttributeLine] = field(default_factory=list)
    media: list[_MediaBuilder] = field(default_factory=list)


def parse_sdp(data: bytes | str, *, limits: SdpLimits = DEFAULT_LIMITS) -> SessionDescription:
    """Parse one SDP body. Raises :class:`SdpError` with a precise reason when it is not SDP."""
    if isinstance(data, bytes):
        if len(data) > limits.max_bytes:
            raise SdpError(f"SDP body of {len(data)} bytes exceeds the limit of {limits.max_bytes}")
        # RFC 4566 §5: the default character set is UTF-8; undecodable bytes survive a round trip.
        text = data.decode("utf-8", errors="surrogateescape")
    else:
        if len(data) > limits.max_bytes:
            raise SdpError(f"SDP body of {len(data)} characters exceeds the limit of {limits.max_bytes}")
        text = data
    if "\x00" in text:
        raise SdpError("SDP body contains a NUL byte")

    session = _SessionBuilder()
    seen_version = False
    count = 0
    attributes = 0
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        if len(raw) > limits.max_line_length:
            raise SdpError(f"line {number} is longer than {limits.max_line_length} characters")
        line = raw.rstrip(" \t")
        if not line:
            continue
        count += 1
        if count > limits.max_lines:
            raise SdpError(f"SDP body has more than {limits.max_lines} lines")
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {number} is not '<type>=<value>': {_excerpt(line)}")
        letter, value = line[0], line[2:]
        if letter == "a":
            attributes += 1
            if attributes > limits.max_attributes:
                raise SdpError(f"SDP body has more than {limits.max_attributes} attribute lines")
        if not seen_version:
            if letter != "v":
                raise SdpError(f"line {number}: an SDP body starts with 'v=', not {_excerpt(line)}")
            if value.strip() != "0":
                raise SdpError(f"line {number}: unsupported SDP version {value!r} (only v=0 exists)")
            seen_version = True
            continue
        if letter not in _SESSION_LETTERS:
            # RFC 4566 §5: "An SDP parser MUST completely ignore any session description that
            # contains a type letter that it does not understand."
            raise SdpError(f"line {number}: unknown SDP type letter {letter!r}")
        if session.media and letter != "m":
            _media_line(session.media[-1], letter, value, number)
        else:
            _session_line(session, letter, value, number, limits)

    if not seen_version:
        raise SdpError("empty body: no 'v=0' line")
    if session.origin is None:
        raise SdpError("missing o= line (RFC 4566 §5.2 requires it)")
    return SessionDescription(
        origin=session.origin,
        session_name="" if session.session_name is None else session.session_name,
        information=session.information,
        uri=session.uri,
        emails=tuple(session.emails),
        phones=tuple(session.phones),
        connection=session.connection,
        bandwidths=tuple(session.bandwidths),
        timings=tuple(session.timings) or (Timing(),),
        time_zones=session.time_zones,
        key=session.key,
        attributes=tuple(session.attributes),
        media=tuple(m.build() for m in session.media),
    )


def _excerpt(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _once(current: object, letter: str, number: int, where: str = "the session") -> None:
    if current is not None:
        raise SdpError(f"line {number}: second {letter}= line in {where}")


def _session_line(s: _SessionBuilder, letter: str, value: str, number: int, limits: SdpLimits) -> None:
    match letter:
        case "v":
            raise SdpError(f"line {number}: second v= line")
        case "o":
            _once(s.origin, letter, number)
            s.origin = _parse_origin(value, number)
        case "s":
            _once(s.session_name, letter, number)
            s.session_name = value
        case "i":
            _once(s.information, letter, number)
            s.information = value
        case "u":
            _once(s.uri, letter, number)
            s.uri = value
        case "e":
            s.emails.append(value)
        case "p":
            s.phones.append(value)
        case "c":
            _once(s.connection, letter, number)
            s.connection = _parse_connection(value, number)
        case "b":
            s.bandwidths.append(_parse_bandwidth(value, number))
        case "t":
            s.timings.append(_parse_timing(value, number))
        case "r":
            if not s.timings:
                raise SdpError(f"line {number}: r= line without a preceding t= line")
            last = s.timings[-1]
            s.timings[-1] = Timing(start=last.start, stop=last.stop, repeats=(*last.repeats, value))
        case "z":
            _once(s.time_zones, letter, number)
            s.time_zones = value
        case "k":
            _once(s.key, letter, number)
            s.key = value
        case "a":
            s.attributes.append(_parse_attribute(value, number))
        case "m":
            if len(s.media) >= limits.max_media:
                raise SdpError(f"line {number}: more than {limits.max_media} m= lines")
            s.media.append(_parse_media(value, number))
        case _:  # pragma: no cover - guarded by _SESSION_LETTERS
            raise SdpError(f"line {number}: unknown SDP type letter {letter!r}")


def _media_line(m: _MediaBuilder, letter: str, value: str, number: int) -> None:
    if letter not in _MEDIA_LETTERS:
        raise SdpError(
            f"line {number}: {letter}= is a session-level line, found in the m= section of line {m.line}"
        )
    where = f"the m= section of line {m.line}"
    match letter:
        case "i":
            _once(m.information, letter, number, where)
            m.information = value
        case "c":
            # RFC 4566 §5.7: several c= lines are allowed in a media description (multicast).
            m.connections.append(_parse_connection(value, number))
        case "b":
            m.bandwidths.append(_parse_bandwidth(value, number))
        case "k":
            _once(m.key, letter, number, where)
            m.key = value
        case _:
            m.attributes.append(_parse_attribute(value, number))


def _fields(value: str, letter: str, number: int, expected: int) -> list[str]:
    parts = value.split()
    if len(parts) != expected:
        raise SdpError(
            f"line {number}: {letter}= needs {expected} fields, got {len(parts)}: {_excerpt(value)}"
        )
    return parts


def _integer(text: str, what: str, number: int, maximum: int | None = None) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise SdpError(f"line {number}: {what} {_excerpt(text)} is not a number")
    result = int(text)
    if maximum is not None and result > maximum:
        raise SdpError(f"line {number}: {what} {result} is larger than {maximum}")
    return result


def _token(text: str, what: str, number: int) -> str:
    if not _TOKEN.fullmatch(text):
        raise SdpError(f"line {number}: {what} {_excerpt(text)} is not a token")
    return text


def _proto(text: str, number: int) -> str:
    if not _PROTO.fullmatch(text):
        raise SdpError(f"line {number}: m= transport protocol {_excerpt(text)} is not '<token>/<token>...'")
    return text


def _parse_origin(value: str, number: int) -> Origin:
    username, session_id, version, net_type, addr_type, address = _fields(value, "o", number, 6)
    return Origin(
        username=username,
        session_id=session_id,
        session_version=_integer(version, "o= session version", number),
        net_type=_token(net_type, "o= network type", number),
        addr_type=_token(addr_type, "o= address type", number),
        address=address,
    )


def _check_address(net_type: str, addr_type: str, address: str, number: int) -> str:
    """Validate an ``IN IP4`` / ``IN IP6`` address; returns it without IPv6 brackets."""
    if net_type != "IN":
        return address
    if addr_type == "IP6":
        # RFC 5118 §4.6: IPv6 addresses in SDP carry no brackets; tolerate them and drop them.
        if address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
        if ":" in address:
            try:
                ipaddress.IPv6Address(address)
            except ValueError:
                raise SdpError(f"line {number}: {_excerpt(address)} is not an IPv6 address") from None
            return address
    elif addr_type == "IP4":
        if _DOTTED_QUAD.fullmatch(address):
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise SdpError(f"line {number}: {_excerpt(address)} is not an IPv4 address") from None
            return address
    else:
        return address
    if not _HOST_NAME.fullmatch(address) or address.replace(".", "").isdigit():
        raise SdpError(f"line {number}: {_excerpt(address)} is not an {addr_type} address or host name")
    return address


def _parse_connection(value: str, number: int) -> Connection:
    net_type, addr_type, address = _fields(value, "c", number, 3)
    _token(net_type, "c= network type", number)
    _token(addr_type, "c= address type", number)
    ttl: int | None = None
    count: int | None = None
    if net_type == "IN" and addr_type in ("IP4", "IP6") and "/" in address:
        base, *suffixes = address.split("/")
        numbers = [_integer(s, "c= multicast suffix", number) for s in suffixes]
        if addr_type == "IP4" and len(numbers) in (1, 2):
            ttl = numbers[0]
            count = numbers[1] if len(numbers) == 2 else None
        elif addr_type == "IP6" and len(numbers) == 1:
            count = numbers[0]
        else:
            raise SdpError(f"line {number}: too many '/' suffixes in c= address {_excerpt(address)}")
        address = base
    address = _check_address(net_type, addr_type, address, number)
    return Connection(net_type=net_type, addr_type=addr_type, address=address, ttl=ttl, count=count)


def _parse_bandwidth(value: str, number: int) -> Bandwidth:
    bwtype, colon, amount = value.partition(":")
    if not colon:
        raise SdpError(f"line {number}: b= needs '<bwtype>:<bandwidth>', got {_excerpt(value)}")
    return Bandwidth(
        bwtype=_token(bwtype, "b= bandwidth type", number),
        bandwidth=_integer(amount.strip(), "b= bandwidth", number),
    )


def _parse_timing(value: str, number: int) -> Timing:
    start, stop = _fields(value, "t", number, 2)
    return Timing(start=_integer(start, "t= start time", number), stop=_integer(stop, "t= stop time", number))


def _parse_media(value: str, number: int) -> _MediaBuilder:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"line {number}: m= needs '<media> <port> <proto> <fmt> ...', got {_excerpt(value)}")
    media, port_text, proto, *formats = parts
    port_text, slash, count_text = port_text.partition("/")
    for fmt in formats:
        _token(fmt, "m= format", number)
    return _MediaBuilder(
        line=number,
        media=_token(media, "m= media type", number),
        port=_integer(port_text, "m= port", number, 65535),
        port_count=_integer(count_text, "m= number of ports", number) if slash else None,
        proto=_proto(proto, number),
        formats=tuple(formats),
    )


def _parse_attribute(value: str, number: int) -> AttributeLine:
    name, colon, rest = value.partition(":")
    if not _TOKEN.fullmatch(name):
        raise SdpError(f"line {number}: a= attribute name {_excerpt(name)} is not a token")
    attribute_value = rest if colon else None
    typed = _typed_attribute(name, attribute_value)
    return typed if typed is not None else Attribute(name=name, value=attribute_value)


def _payload_type(text: str) -> int | None:
    if text.isascii() and text.isdigit() and len(text) <= 3 and int(text) <= 127:
        return int(text)
    return None


def _milliseconds(text: str) -> int | None:
    text = text.strip()
    if not text.isascii() or not _DECIMAL.fullmatch(text):
        return None
    return round(float(text))


def _typed_attribute(name: str, value: str | None) -> AttributeLine | None:
    """The typed form of a known attribute, or None to keep it verbatim (unknown or unreadable)."""
    if value is None:
        if name in _DIRECTIONS:
            return DirectionAttribute(direction=_DIRECTIONS[name])
        if name == "rtcp-mux":
            return RtcpMux()
        return None
    match name:
        case "rtpmap":
            parts = value.split()
            if len(parts) != 2:
                return None
            payload_type = _payload_type(parts[0])
            encoding = parts[1].split("/")
            if payload_type is None or len(encoding) not in (2, 3) or not encoding[0]:
                return None
            rate = encoding[1]
            channels = encoding[2] if len(encoding) == 3 else None
            if not (rate.isascii() and rate.isdigit() and len(rate) <= 9):
                return None
            if channels is not None and not (
                channels.isascii() and channels.isdigit() and len(channels) <= 3
            ):
                return None
            return RtpMap(
                payload_type=payload_type,
                encoding_name=encoding[0],
                clock_rate=int(rate),
                channels=None if channels is None else int(channels),
            )
        case "fmtp":
            head, *tail = value.split(None, 1) or [""]
            payload_type = _payload_type(head)
            if payload_type is None:
                return None
            return Fmtp(payload_type=payload_type, parameters=tail[0] if tail else "")
        case "ptime" | "maxptime":
            milliseconds = _milliseconds(value)
            if milliseconds is None:
                return None
            return (
                Ptime(milliseconds=milliseconds) if name == "ptime" else MaxPtime(milliseconds=milliseconds)
            )
        case "rtcp":
            parts = value.split()
            if len(parts) not in (1, 4):
                return None
            port = _port(parts[0])
            if port is None:
                return None
            if len(parts) == 1:
                return Rtcp(port=port)
            try:
                address = _check_address(parts[1], parts[2], parts[3], 0)
            except SdpError:
                return None
            return Rtcp(port=port, net_type=parts[1], addr_type=parts[2], address=address)
        case _:
            return None


def _port(text: str) -> int | None:
    if text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535:
        return int(text)
    return None


# --------------------------------------------------------------------------------------------
# serialisation


def serialize_sdp(description: SessionDescription) -> bytes:
    """Write ``description`` in the RFC 4566 §5 order with CRLF line ends.

    Raises ValueError when a field holds a line break or NUL (a bug in the caller: it would
    let text inject SDP lines).
    """
    d = description
    o = d.origin
    lines = [
        f"v={d.version}",
        f"o={o.username} {o.session_id} {o.session_version} {o.net_type} {o.addr_type} {o.address}",
        # RFC 4566 §5.3: "If a session has no meaningful name, the value "s= " SHOULD be used".
        f"s={d.session_name or ' '}",
    ]
    _optional(lines, "i", d.information)
    _optional(lines, "u", d.uri)
    lines.extend(f"e={email}" for email in d.emails)
    lines.extend(f"p={phone}" for phone in d.phones)
    if d.connection is not None:
        lines.append(_connection(d.connection))
    lines.extend(f"b={b.bwtype}:{b.bandwidth}" for b in d.bandwidths)
    for timing in d.timings or (Timing(),):
        lines.append(f"t={timing.start} {timing.stop}")
        lines.extend(f"r={repeat}" for repeat in timing.repeats)
    _optional(lines, "z", d.time_zones)
    _optional(lines, "k", d.key)
    lines.extend(_attribute(a) for a in d.attributes)
    for m in d.media:
        port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
        lines.append(" ".join((f"m={m.media}", port, m.proto, *m.formats)))
        _optional(lines, "i", m.information)
        lines.extend(_connection(c) for c in m.connections)
        lines.extend(f"b={b.bwtype}:{b.bandwidth}" for b in m.bandwidths)
        _optional(lines, "k", m.key)
        lines.extend(_attribute(a) for a in m.attributes)
    for line in lines:
        if "\r" in line or "\n" in line or "\x00" in line:
            raise ValueError(f"SDP field would break the line structure: {line!r}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", errors="surrogateescape")


def _optional(lines: list[str], letter: str, value: str | None) -> None:
    if value is not None:
        lines.append(f"{letter}={value}")


def _connection(c: Connection) -> str:
    address = c.address
    if c.ttl is not None:
        address += f"/{c.ttl}"
    if c.count is not None:
        address += f"/{c.count}"
    return f"c={c.net_type} {c.addr_type} {address}"


def _attribute(attribute: AttributeLine) -> str:
    match attribute:
        case RtpMap(payload_type=pt, encoding_name=name, clock_rate=rate, channels=channels):
            suffix = "" if channels is None else f"/{channels}"
            return f"a=rtpmap:{pt} {name}/{rate}{suffix}"
        case Fmtp(payload_type=pt, parameters=parameters):
            return f"a=fmtp:{pt} {parameters}" if parameters else f"a=fmtp:{pt}"
        case Ptime(milliseconds=ms):
            return f"a=ptime:{ms}"
        case MaxPtime(milliseconds=ms):
            return f"a=maxptime:{ms}"
        case DirectionAttribute(direction=direction):
            return f"a={direction.value}"
        case Rtcp(port=port, net_type=net_type, addr_type=addr_type, address=address):
            if net_type is None or addr_type is None or address is None:
                return f"a=rtcp:{port}"
            return f"a=rtcp:{port} {net_type} {addr_type} {address}"
        case RtcpMux():
            return "a=rtcp-mux"
        case Attribute(name=name, value=value):
            return f"a={name}" if value is None else f"a={name}:{value}"
        case _:
            assert_never(attribute)
