"""Every parser limit: a message just under it parses, one just over it gets the parser's protocol error.

Limits bound the memory and time one message may cost (SIP: RFC 3261 §21.5.14 513 Message Too Large,
§21.4.11 413 for a body; SDP: lines, attributes, media; TCP framing: bytes buffered before a boundary).
"""

from __future__ import annotations

import pytest

from gateway.sdp import SdpError, parse_sdp
from gateway.sdp.parser import SdpLimits
from gateway.sip.errors import RemoteProtocolError
from gateway.sip.message import Request
from gateway.sip.parser import DEFAULT_LIMITS, ParserLimits, StreamFramer, parse_message

HEAD = (
    "OPTIONS sip:gw@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
    "From: <sip:a@example.com>;tag=1\r\n"
    "To: <sip:gw@example.com>\r\n"
    "Call-ID: limits\r\n"
    "CSeq: 1 OPTIONS\r\n"
)
HEAD_FIELDS = 5


def _message(extra: str = "", body: bytes = b"") -> bytes:
    return (HEAD + extra + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _rejected(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data, limits=limits)
    return info.value


def test_header_line_length_limit() -> None:
    limit = DEFAULT_LIMITS.max_line_length
    at_limit = "X-Long: " + "a" * (limit - len("X-Long: ")) + "\r\n"
    assert isinstance(parse_message(_message(at_limit)), Request)
    err = _rejected(_message(at_limit.replace("a", "aa", 1)))
    assert err.status_code == 513 and "too long" in err.reason
    # The headers read before the long line are kept so the edge can answer 513 statelessly.
    assert err.headers is not None and err.headers.get("Call-ID") == "limits"


def test_folded_header_line_counts_unfolded() -> None:
    limits = ParserLimits(max_line_length=100)
    folded = "X-Folded: " + "\r\n ".join(["a" * 40] * 2) + "\r\n"  # 10 + 81 characters once unfolded
    assert parse_message(_message(folded), limits=limits).headers.get("X-Folded") == "a" * 40 + " " + "a" * 40
    err = _rejected(_message("X-Folded: " + "\r\n ".join(["a" * 40] * 3) + "\r\n"), limits)
    assert err.status_code == 513 and "too long" in err.reason


def test_header_count_limit() -> None:
    limit = DEFAULT_LIMITS.max_header_count
    padding = "".join(f"X-H{i}: v\r\n" for i in range(limit - HEAD_FIELDS - 1))  # + Content-Length
    assert len(parse_message(_message(padding)).headers) == limit
    err = _rejected(_message(padding + "X-One-More: v\r\n"))
    assert err.status_code == 513 and "Too many header fields" in err.reason


def test_message_size_limit() -> None:
    limits = ParserLimits(max_message_size=600)
    base = _message()
    pad = "X-Pad: " + "p" * (600 - len(base) - len("X-Pad: \r\n")) + "\r\n"
    assert len(_message(pad)) == 600
    assert isinstance(parse_message(_message(pad), limits=limits), Request)
    err = _rejected(_message(pad + "Z"), limits)
    assert err.status_code == 513 and "too large" in err.reason


def test_body_size_limit() -> None:
    limits = ParserLimits(max_body_size=100)
    assert parse_message(_message(body=b"x" * 100), limits=limits).body == b"x" * 100
    err = _rejected(_message(body=b"x" * 101), limits)
    assert err.status_code == 413


def test_content_length_beyond_the_datagram_is_rejected() -> None:
    data = _message(body=b"abc").replace(b"Content-Length: 3", b"Content-Length: 4")
    assert "larger than" in _rejected(data).reason


def _frame_all(framer: StreamFramer, data: bytes) -> list[bytes]:
    framer.feed(data)
    out = []
    while (message := framer.next_message()) is not None:
        out.append(message)
    return out


def test_stream_header_section_limit_closes_the_stream() -> None:
    message = _message()
    assert _frame_all(StreamFramer(max_header_bytes=len(message)), message) == [message]
    framer = StreamFramer(max_header_bytes=len(message) - 3)
    with pytest.raises(RemoteProtocolError) as info:
        _frame_all(framer, message)
    assert info.value.status_code == 513
    # The stream cannot be resynchronised: later calls raise again (the edge closes the connection).
    with pytest.raises(RemoteProtocolError):
        _frame_all(framer, message)


def test_stream_without_boundary_is_refused_once_past_the_limit() -> None:
    framer = StreamFramer(max_header_bytes=1024)
    framer.feed(b"OPTIONS sip:gw@example.com SIP/2.0\r\n")
    for _ in range(29):  # 36 + 29 * 34 = 1022 bytes: under the limit
        framer.feed(b"X-Pad: " + b"a" * 25 + b"\r\n")  # never the empty line
        assert framer.next_message() is None
    with pytest.raises(RemoteProtocolError, match="Header section too large"):
        framer.feed(b"X-Pad: " + b"a" * 25 + b"\r\n")
        framer.next_message()


def test_stream_message_size_limit() -> None:
    body = b"b" * 200
    message = _message(body=body)
    assert _frame_all(StreamFramer(max_message_size=len(message)), message) == [message]
    with pytest.raises(RemoteProtocolError, match="Message too large") as info:
        _frame_all(StreamFramer(max_message_size=len(message) - 1), message)
    assert info.value.status_code == 513


def test_stream_trickled_byte_by_byte_frames_the_same() -> None:
    messages = [_message(body=b"hello"), _message("X-A: b\r\n"), _message(body=b"\r\n\r\n")]
    framer = StreamFramer()
    out = []
    for byte in b"".join(messages):
        out += _frame_all(framer, bytes([byte]))
    assert out == messages


SDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def test_sdp_attribute_limit() -> None:
    limits = SdpLimits(max_attributes=10)
    assert len(parse_sdp(SDP + "a=x-test\r\n" * 10, limits=limits).media[0].attributes) == 10
    with pytest.raises(SdpError, match="more than 10 attribute lines"):
        parse_sdp(SDP + "a=x-test\r\n" * 11, limits=limits)


def test_sdp_line_limit() -> None:
    lines = len(SDP.splitlines())
    limits = SdpLimits(max_lines=lines + 5)
    parse_sdp(SDP + "a=x-test\r\n" * 5, limits=limits)
    with pytest.raises(SdpError, match="more than"):
        parse_sdp(SDP + "a=x-test\r\n" * 6, limits=limits)
