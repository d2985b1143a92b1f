"""Parsing SIP messages from bytes and framing them on streams (RFC 3261 §7, §8.2, §18.3).

:func:`parse_message` takes one UDP datagram and returns a :class:`Request` or :class:`Response`,
or raises :class:`RemoteProtocolError` carrying the status a UAS answers (400, 505, 513 ...) and the
header fields read so far, so the edge can answer statelessly. It performs the checks a UAS makes
before anything else (§8.2, RFC 4475): request line, SIP version, mandatory and single-instance
headers, CSeq, and the syntax of From, To, Via, Contact, Route and Record-Route. The parsed typed
values are cached on the message so later access costs nothing.

:class:`StreamFramer` cuts a TCP byte stream into messages by Content-Length, which "MUST be used
with stream oriented transports" (§18.3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.grammar import is_token
from gateway.sip.headers import _CANONICAL, Headers
from gateway.sip.message import Message, Request, Response
from gateway.sip.uri import Uri, parse_uri

__all__ = ["DEFAULT_LIMITS", "ParserLimits", "StreamFramer", "parse_message"]


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Resource limits: exceeding one raises instead of doing unbounded work."""

    max_message_size: int = 65535  # the largest UDP datagram
    max_header_count: int = 256
    max_line_length: int = 8192
    max_body_size: int = 65535


DEFAULT_LIMITS = ParserLimits()

# §8.1.1: "A valid SIP request formulated by a UAC MUST, at a minimum, contain the following
# header fields: To, From, CSeq, Call-ID, Max-Forwards, and Via". Max-Forwards is not demanded
# on receipt: RFC 2543 peers omit it (RFC 4475 §3.4.1 inv2543).
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type")
_SINGLE_KEYS = tuple(name.lower() for name in _SINGLE)
_MANDATORY_KEYS = tuple(name.lower() for name in _MANDATORY)


def _error(reason: str, status_code: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(reason, status_code=status_code)


def _find_header_end(data: bytes | bytearray, start: int) -> tuple[int, int]:
    """(end of header section, start of body), or (-1, -1) when no empty line was found.

    Bare LF line ends are accepted liberally (many stacks and hand-written test files use them).
    """
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start)
    if crlf < 0 and lf < 0:
        return -1, -1
    if lf < 0 or (0 <= crlf < lf):
        return crlf + 1, crlf + 3
    return lf + 1, lf + 2


def parse_message(data: bytes, *, limits: ParserLimits = DEFAULT_LIMITS) -> Message:
    """Parse one SIP message from a datagram (RFC 3261 §7, §18.3); raises RemoteProtocolError."""
    n = len(data)
    if n > limits.max_message_size:
        raise _error(f"Message too large ({n} bytes)", 513)
    start = 0
    # §7.5: implementations "MUST ignore any CRLF appearing before the start-line".
    while start < n and data[start] in b"\r\n":
        start += 1
    if start == n:
        raise _error("Empty message")
    head_end, body_start = _find_header_end(data, start)
    if head_end < 0:
        # No empty line: the message is all headers and has no body (RFC 4475 baddn's file).
        head_end = body_start = n
    try:
        head = data[start:head_end].decode("utf-8")
    except UnicodeDecodeError:
        raise _error("Header section is not valid UTF-8") from None
    lines = head.split("\n")
    start_line = lines[0].rstrip("\r")
    is_response = start_line[:4].upper() == "SIP/"
    entries: list[tuple[str, str, str]] = []
    headers = Headers._from_entries(entries)
    try:
        try:
            # The start line is judged first so that a 505 or a malformed Request-Line is
            # reported as such; the headers are still read to address a stateless answer.
            parsed = _parse_status_line(start_line) if is_response else _parse_request_line(start_line)
        except RemoteProtocolError:
            try:
                _read_headers(lines, entries, limits)
            except RemoteProtocolError:
                pass
            raise
        counts = _read_headers(lines, entries, limits)
        body = _body(headers, counts, data, body_start, limits)
        _check_headers(headers, counts)
        message: Message
        if isinstance(parsed, _StatusLine):
            message = Response(
                status_code=parsed.status_code, reason=parsed.reason, headers=headers, body=body
            )
            message.validate()
        else:
            message = Request(method=parsed.method, uri=parsed.uri, headers=headers, body=body)
            message.validate()
            if message.cseq.method != parsed.method:
                raise _error("CSeq method does not match request method")
        return message
    except RemoteProtocolError as err:
        err.headers = headers
        err.is_response = is_response
        raise


# field-name HCOLON: token *(SP / HTAB) ":" (§7.3.1); one character class, no backtracking.
_FIELD_NAME_RE = re.compile(r"([A-Za-z0-9.!%*_+`'~-]+)[ \t]*:")


def _read_headers(
    lines: list[str], entries: list[tuple[str, str, str]], limits: ParserLimits
) -> dict[str, int]:
    counts: dict[str, int] = {}
    name = ""
    key = ""
    value = ""
    max_line = limits.max_line_length
    max_count = limits.max_header_count
    for raw in lines[1:]:
        line = raw[:-1] if raw.endswith("\r") else raw
        if len(line) > max_line:
            raise _error("Header line too long", 513)
        if not line:
            continue  # the trailing line end of the header section
        if line[0] in " \t":
            # §7.3.1: header folding; "a CRLF followed by SP/HT" continues the line.
            if not name:
                raise _error("Continuation line before the first header")
            piece = line.strip(" \t")
            value = f"{value} {piece}" if value else piece
            # The limit holds for the unfolded line too, as it is serialised again.
            if len(name) + 2 + len(value) > max_line:
                raise _error("Header line too long", 513)
            entries[-1] = (name, key, value)
            continue
        match = _FIELD_NAME_RE.match(line)
        if match is None:
            colon = line.find(":")
            if colon <= 0:
                raise _error(f"Malformed header line: {line[:64]!r}")
            raise _error(f"Invalid header name: {line[:colon].strip()[:64]!r}")
        field_name = match.group(1)
        lower = field_name.lower()
        canon = _CANONICAL.get(lower)
        if canon is None:
            name, key = field_name, lower
        else:
            name, key = canon, canon.lower()
        value = line[match.end() :].strip(" \t")
        entries.append((name, key, value))
        counts[key] = counts.get(key, 0) + 1
        if len(entries) > max_count:
            # §21.5.14 513 Message Too Large: "the message length exceeded its capabilities".
            raise _error(f"Too many header fields (more than {max_count})", 513)
    return counts


def _check_headers(headers: Headers, counts: dict[str, int]) -> None:
    for name, key in zip(_MANDATORY, _MANDATORY_KEYS, strict=True):
        if key not in counts:
            raise _error(f"Missing {name} header")
    for name, key in zip(_SINGLE, _SINGLE_KEYS, strict=True):
        if counts.get(key, 0) > 1:
            raise _error(f"Multiple {name} headers")


def _body(
    headers: Headers, counts: dict[str, int], data: bytes, body_start: int, limits: ParserLimits
) -> bytes:
    """Frame the body by Content-Length (§18.3); a missing one on UDP means "rest of datagram"."""
    if "content-length" not in counts:
        return data[body_start:]
    if counts["content-length"] > 1:
        raise _error("Multiple Content-Length headers")
    raw = headers.get("Content-Length") or ""
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise _error(f"Invalid Content-Length: {raw[:24]!r}")
    length = int(text)
    if length > limits.max_body_size:
        raise _error(f"Body too large ({length} bytes)", 413)
    available = len(data) - body_start
    if length > available:
        raise _error(f"Content-Length {length} larger than the {available} bytes received")
    # Octets after the body are ignored (RFC 4475 §3.1.1.8 dblreq).
    return data[body_start : body_start + length]


def _split_start_line(line: str) -> list[str]:
    # Liberal about runs of SP/HT between elements and trailing SP (RFC 4475 §3.1.2.9 lwsstart,
    # §3.1.2.10 trws): accepted, and never propagated since serialisation rebuilds the line.
    return [part for part in line.replace("\t", " ").split(" ") if part]


def _check_version(version: str) -> None:
    if version.upper() != "SIP/2.0":
        if version[:4].upper() == "SIP/":
            raise _error(f"Version Not Supported: {version[:16]}", 505)
        raise _error(f"Invalid SIP-Version: {version[:16]!r}")


class _RequestLine(NamedTuple):
    method: str
    uri: Uri


def _parse_request_line(line: str) -> _RequestLine:
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF (§7.1)
    parts = _split_start_line(line)
    if len(parts) != 3:
        raise _error("Malformed Request-Line")
    method, uri_text, version = parts
    if not is_token(method):
        raise _error(f"Invalid method: {method[:32]!r}")
    _check_version(version)
    if uri_text[0] == "<":
        raise _error("Request-URI must not be enclosed in <>")
    try:
        uri = parse_uri(uri_text)
    except RemoteProtocolError as err:
        raise _error(f"Invalid Request-URI: {err.reason}") from None
    return _RequestLine(method, uri)


class _StatusLine(NamedTuple):
    status_code: int
    reason: str


def _parse_status_line(line: str) -> _StatusLine:
    # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF (§7.2)
    version, _, rest = line.partition(" ")
    _check_version(version)
    rest = rest.lstrip(" ")
    code_text, _, reason = rest.partition(" ")
    if len(code_text) != 3 or not code_text.isascii() or not code_text.isdigit():
        raise _error(f"Invalid status code: {code_text[:16]!r}")
    status_code = int(code_text)
    if not 100 <= status_code <= 699:
        raise _error(f"Status code out of range: {status_code}")
    return _StatusLine(status_code, reason.strip(" \t"))


class StreamFramer:
    """Cut a stream (TCP, TLS) into SIP messages by Content-Length (RFC 3261 §18.3).

    After a :class:`RemoteProtocolError` the stream cannot be resynchronised: the connection must
    be closed, and further calls raise again.
    """

    def __init__(self, *, max_message_size: int = 65535, max_header_bytes: int = 16384) -> None:
        self._buffer = bytearray()
        self._max_message_size = max_message_size
        self._max_header_bytes = max_header_bytes
        self._need: int | None = None  # total length of the message at the buffer head
        self._error: RemoteProtocolError | None = None
        # Bytes at the buffer head already searched for the end of the header section, and whether
        # the start line there was checked: a message trickled in byte by byte costs linear time.
        self._scanned = 0
        self._start_line_ok = False

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_message(self) -> bytes | None:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RemoteProtocolError as err:
            self._error = err
            raise

    def _next(self) -> bytes | None:
        buf = self._buffer
        if self._need is None:
            # RFC 5626 §3.5.1 keep-alives (CRLFCRLF ping, CRLF pong) and §7.5 leading CRLFs.
            skip = 0
            while skip < len(buf) and buf[skip] in b"\r\n":
                skip += 1
            if skip:
                del buf[:skip]
            if not buf:
                return None
            if not self._start_line_ok:
                self._start_line_ok = self._check_start_line(buf, self._scanned)
            # A match of "\n\r\n" may straddle what was searched before and what just arrived.
            head_end, body_start = _find_header_end(buf, max(0, self._scanned - 2))
            if head_end < 0:
                if len(buf) > self._max_header_bytes:
                    raise _error("Header section too large", 513)
                self._scanned = len(buf)
                return None
            self._scanned = 0
            self._start_line_ok = False
            if head_end > self._max_header_bytes:
                raise _error("Header section too large", 513)
            length = _stream_content_length(bytes(buf[:head_end]))
            self._need = body_start + length
            if self._need > self._max_message_size:
                raise _error(f"Message too large ({self._need} bytes)", 513)
        if len(buf) < self._need:
            return None
        message = bytes(buf[: self._need])
        del buf[: self._need]
        self._need = None
        return message

    def _check_start_line(self, buf: bytearray, scanned: int) -> bool:
        """Raise early on bytes that can never become a SIP start line; True once it is complete.

        ``buf[:scanned]`` was checked before and holds no line feed.
        """
        nl = buf.find(b"\n", scanned)
        if nl < 0:
            if len(buf) > self._max_header_bytes:
                raise _error("Header section too large", 513)
            if _CONTROL_RE.search(buf, scanned) is not None:
                raise _error("Unframeable data on stream")
            return False  # incomplete start line: wait for more
        line = bytes(buf[:nl]).rstrip(b"\r")
        if not (line[:4].upper() == b"SIP/" or line.rsplit(b" ", 1)[-1][:4].upper() == b"SIP/"):
            raise _error("Unframeable data on stream: not a SIP start line")
        return True


# Control characters other than HTAB and CR (LF ends the line) never appear in a start line (§7.1).
_CONTROL_RE = re.compile(rb"[\x00-\x08\x0a-\x0c\x0e-\x1f]")


def _stream_content_length(head: bytes) -> int:
    text = head.decode("latin-1")
    values: list[str] = []
    current: int | None = None
    for raw in text.split("\n")[1:]:
        line = raw.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t":
            if current is not None:
                values[current] += " " + line.strip()
            continue
        current = None
        name, colon, value = line.partition(":")
        if colon and name.rstrip(" \t").lower() in ("content-length", "l"):
            values.append(value)
            current = len(values) - 1
    if not values:
        raise _error("Missing Content-Length on a stream transport")
    if len(values) > 1:
        raise _error("Multiple Content-Length headers")
    value = values[0].strip()
    if not value.isdigit() or len(value) > 10:
        raise _error(f"Invalid Content-Length: {value[:24]!r}")
    return int(value)
