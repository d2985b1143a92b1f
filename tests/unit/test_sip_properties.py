"""Property tests of the SIP message layer (hypothesis).

- parse_message on arbitrary bytes and on mutated RFC 4475 messages returns a message or raises
  RemoteProtocolError, nothing else;
- parse ∘ serialize ∘ parse is stable for generated requests and responses;
- StreamFramer returns the same messages however the stream is cut.
"""

from __future__ import annotations

import string
import unicodedata
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.headers import Headers, NameAddr, Via
from gateway.sip.message import Request, Response
from gateway.sip.parser import StreamFramer, parse_message
from gateway.sip.uri import SipUri, parse_uri, uri_equal

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sip"
CORPUS = [
    p.read_bytes()
    for folder in ("rfc4475", "rfc5118", "captured")
    for p in sorted((DATA / folder).glob("*.dat"))
]

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_reject(data: bytes) -> None:
    try:
        message = parse_message(data)
    except RemoteProtocolError as err:
        assert 100 <= err.status_code <= 699
        assert err.reason
        return
    assert isinstance(message, Request | Response)
    # Whatever was accepted serialises and parses again.
    parse_message(message.serialize())


@PROPERTY
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_parse_or_reject(data: bytes) -> None:
    _parse_or_reject(data)


@PROPERTY
@given(
    st.sampled_from(CORPUS),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "dup"]),
            st.integers(0, 10**6),
            st.binary(min_size=1, max_size=8),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_corpus_parse_or_reject(base: bytes, edits: list[tuple[str, int, bytes]]) -> None:
    data = bytearray(base)
    for kind, pos, chunk in edits:
        if not data:
            break
        i = pos % len(data)
        if kind == "flip":
            data[i] = chunk[0]
        elif kind == "insert":
            data[i:i] = chunk
        elif kind == "delete":
            del data[i : i + len(chunk)]
        else:
            data[i:i] = data[i : i + 16]
    _parse_or_reject(bytes(data))


@PROPERTY
@given(
    st.sampled_from(CORPUS),
    st.sampled_from(
        [
            b": ",
            b";;",
            b",",
            b"<",
            b">",
            b'"',
            b"\\",
            b"\r\n ",
            b"\n",
            b"%",
            b"[",
            b"]",
            b"\x00",
            b"\xff",
            b"\xc3",
            b"9" * 30,
        ]
    ),
    st.integers(0, 10**6),
)
def test_corpus_with_grammar_characters_parse_or_reject(base: bytes, chunk: bytes, pos: int) -> None:
    i = pos % len(base)
    _parse_or_reject(base[:i] + chunk + base[i:])


_TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=12)
_LABEL = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10)
_HOST = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.lists(st.integers(0, 0xFFFF).map(lambda x: f"{x:x}"), min_size=3, max_size=8).map(
        lambda p: "[" + ":".join(p) + "::1]"
    ),
)
_PORT = st.one_of(st.none(), st.integers(1, 65535))
_USER = st.one_of(
    st.none(),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/%", min_size=1, max_size=12)
    .filter(lambda u: "%" not in u)
    .map(lambda u: u + "%41"),
)
_PARAM_VALUE = st.one_of(st.none(), _TOKEN)
_PARAMS = st.dictionaries(_TOKEN.map(str.lower), _PARAM_VALUE, max_size=3)
_DISPLAY = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=16),
)


@st.composite
def _sip_uri(draw: st.DrawFn) -> SipUri:
    return SipUri(
        host=draw(_HOST),
        user=draw(_USER),
        port=draw(_PORT),
        scheme=draw(st.sampled_from(["sip", "sips"])),
        params=draw(_PARAMS),
    )


@st.composite
def _name_addr(draw: st.DrawFn) -> NameAddr:
    return NameAddr(uri=draw(_sip_uri()), display_name=draw(_DISPLAY), params=draw(_PARAMS))


@st.composite
def _via(draw: st.DrawFn) -> Via:
    params = draw(_PARAMS)
    params["branch"] = "z9hG4bK" + draw(_TOKEN)
    if draw(st.booleans()):
        params["rport"] = None
    return Via(
        host=draw(_HOST),
        port=draw(_PORT),
        transport=draw(st.sampled_from(["UDP", "TCP", "TLS", "WS"])),
        params=params,
    )


@st.composite
def _headers(draw: st.DrawFn, method: str) -> Headers:
    headers = Headers()
    for via in draw(st.lists(_via(), min_size=1, max_size=3)):
        headers.add("Via", str(via))
    headers.add("From", str(draw(_name_addr()).with_tag(draw(_TOKEN))))
    headers.add("To", str(draw(_name_addr())))
    headers.add("Call-ID", draw(_TOKEN) + "@" + draw(_LABEL))
    headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    if draw(st.booleans()):
        headers.add("Max-Forwards", str(draw(st.integers(0, 255))))
    for contact in draw(st.lists(_name_addr(), max_size=2)):
        headers.add("Contact", str(contact))
    for name, value in draw(
        st.lists(
            st.tuples(
                st.sampled_from(["X-Custom", "Subject", "User-Agent", "Supported"]),
                st.text(alphabet=string.ascii_letters + " ,;=", max_size=20).map(str.strip),
            ),
            max_size=3,
        )
    ):
        headers.add(name, value)
    if draw(st.booleans()):
        headers.add("Content-Type", "application/sdp")
    return headers


@st.composite
def _message(draw: st.DrawFn) -> Request | Response:
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "REGISTER", "NOTIFY"]))
    headers = draw(_headers(method))
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        return Request(method=method, uri=draw(_sip_uri()), headers=headers, body=body)
    reason = draw(
        st.text(
            alphabet=st.characters(codec="utf-8").filter(
                lambda c: c == " " or unicodedata.category(c)[0] not in "CZ"
            ),
            max_size=20,
        )
    ).strip()
    reason = " ".join(reason.split())
    return Response(status_code=draw(st.integers(100, 699)), reason=reason, headers=headers, body=body)


@PROPERTY
@given(_message())
def test_serialize_parse_round_trip(message: Request | Response) -> None:
    wire = message.serialize()
    parsed = parse_message(wire)
    assert type(parsed) is type(message)
    assert parsed.body == message.body
    assert [h for h in parsed.headers if h[0] != "Content-Length"] == list(message.headers)
    assert parsed.headers.get("Content-Length") == str(len(message.body))
    assert parsed.serialize() == wire
    if isinstance(message, Request):
        assert isinstance(parsed, Request)
        assert parsed.method == message.method
        assert uri_equal(parsed.uri, message.uri)
    else:
        assert isinstance(parsed, Response)
        assert (parsed.status_code, parsed.reason) == (message.status_code, message.reason)
    # Typed views survive the trip.
    assert [str(v) for v in parsed.vias] == [str(v) for v in message.vias]
    assert str(parsed.from_) == str(message.from_)
    assert parsed.to.display_name == message.to.display_name
    assert [str(c) for c in parsed.contacts] == [str(c) for c in message.contacts]


@PROPERTY
@given(_sip_uri())
def test_uri_string_round_trip(uri: SipUri) -> None:
    again = parse_uri(str(uri))
    assert again == uri
    assert uri_equal(again, uri)


@PROPERTY
@given(
    st.lists(_message(), min_size=1, max_size=4),
    st.lists(st.integers(1, 300), min_size=1, max_size=40),
    st.booleans(),
)
def test_stream_framer_any_cut(messages: list[Request | Response], cuts: list[int], keepalive: bool) -> None:
    wires = [m.serialize() for m in messages]
    stream = (b"\r\n\r\n" if keepalive else b"").join(wires)
    framer = StreamFramer()
    out: list[bytes] = []
    pos = 0
    for cut in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        if pos >= len(stream):
            break
        framer.feed(stream[pos : pos + cut])
        pos += cut
        while (frame := framer.next_message()) is not None:
            out.append(frame)
    framer.feed(stream[pos:])
    while (frame := framer.next_message()) is not None:
        out.append(frame)
    assert out == wires


def _header_lines(message: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = message.partition(b"\n\n")
    start, *lines = head.split(b"\n")
    return start, lines, body


@PROPERTY
@given(
    st.sampled_from(CORPUS),
    st.sampled_from(CORPUS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), min_size=1, max_size=8),
)
def test_corpus_with_spliced_header_lines_parse_or_reject(base: bytes, donor: bytes, moves: list[tuple[int, int]]) -> None:
    """Header lines of one torture message moved into another (duplicates, misplaced Via, two Content-Lengths)."""
    start, lines, body = _header_lines(base)
    _, donor_lines, _ = _header_lines(donor)
    for src, dst in moves:
        if donor_lines:
            lines.insert(dst % (len(lines) + 1), donor_lines[src % len(donor_lines)])
    _parse_or_reject(b"\n".join([start, *lines]) + b"\r\n\r\n" + body)


@PROPERTY
@given(
    st.sampled_from(CORPUS),
    st.integers(0, 10**6),
    st.integers(1, 20),
    st.integers(10, 5000),
)
def test_corpus_with_huge_repeats_parse_or_reject(base: bytes, pos: int, width: int, times: int) -> None:
    """A slice of a message repeated thousands of times: the limits answer, no unbounded work."""
    i = pos % len(base)
    chunk = base[i : i + width]
    _parse_or_reject(base[:i] + chunk * times + base[i:])


@PROPERTY
@given(
    st.sampled_from(CORPUS),
    st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=4)), max_size=4),
    st.lists(st.integers(1, 200), min_size=1, max_size=20),
)
def test_stream_framer_on_mutated_streams_frames_or_rejects(
    base: bytes, edits: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    """Whatever the bytes, the framer yields messages, waits, or raises RemoteProtocolError; what it
    holds stays bounded by its limit plus the last piece fed."""
    data = bytearray(base + b"\r\n\r\n" + base)
    for pos, chunk in edits:
        i = pos % len(data)
        data[i : i + len(chunk)] = chunk
    framer = StreamFramer(max_message_size=4096, max_header_bytes=2048)
    pos = 0
    for cut in cuts * (len(data) // sum(cuts) + 1):
        if pos >= len(data):
            break
        framer.feed(bytes(data[pos : pos + cut]))
        pos += cut
        try:
            while (frame := framer.next_message()) is not None:
                assert frame
                _parse_or_reject(frame)
        except RemoteProtocolError as err:
            assert err.status_code in (400, 513)
            return
        assert len(framer._buffer) <= 4096 + cut
