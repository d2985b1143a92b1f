"""Property tests: parse∘serialize round trips, the parser's "value or SdpError" invariant, and
RFC 3264 §6 invariants of every answer."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sdp import (
    Attribute,
    AttributeLine,
    Bandwidth,
    CodecSpec,
    Connection,
    Direction,
    DirectionAttribute,
    Fmtp,
    LocalSession,
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
    answer,
    parse_sdp,
    serialize_sdp,
)

KNOWN_ATTRIBUTES = {"rtpmap", "fmtp", "ptime", "maxptime", "rtcp", "rtcp-mux", *(d.value for d in Direction)}

tokens = st.from_regex(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,12}", fullmatch=True)
# Free text as RFC 4566 §9 allows it: no NUL, CR or LF; trailing blanks are not significant.
texts = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00\r\n"), max_size=30
).filter(lambda t: t == t.rstrip(" \t"))
big_numbers = st.integers(min_value=0, max_value=10**19)
ports = st.integers(min_value=0, max_value=65535)
payload_types = st.integers(min_value=0, max_value=127)
host_names = st.sampled_from(["host.example.com", "localhost", "a-b.example."])


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    kind = draw(st.sampled_from(["IP4", "IP6", "other"]))
    if kind == "IP4":
        ttl = draw(st.none() | st.integers(0, 255))
        return Connection(
            address=draw(st.ip_addresses(v=4).map(str) | host_names),
            ttl=ttl,
            count=None if ttl is None else draw(st.none() | st.integers(1, 9)),
        )
    if kind == "IP6":
        return Connection(
            address=draw(st.ip_addresses(v=6).map(str) | host_names),
            addr_type="IP6",
            count=draw(st.none() | st.integers(1, 9)),
        )
    # Another network type (e.g. RFC 2848 "TN"): the address is not checked, so anything goes.
    return Connection(
        net_type=draw(tokens.filter(lambda t: t != "IN")), addr_type=draw(tokens), address=draw(tokens)
    )


bandwidths = st.builds(Bandwidth, bwtype=tokens, bandwidth=big_numbers)
stripped_texts = texts.filter(lambda t: t == t.strip() and t != "")

attributes: st.SearchStrategy[AttributeLine] = st.one_of(
    st.builds(
        RtpMap,
        payload_type=payload_types,
        encoding_name=tokens,
        clock_rate=st.integers(1, 10**9 - 1),
        channels=st.none() | st.integers(1, 999),
    ),
    st.builds(Fmtp, payload_type=payload_types, parameters=st.just("") | stripped_texts),
    st.builds(Ptime, milliseconds=st.integers(0, 999999)),
    st.builds(MaxPtime, milliseconds=st.integers(0, 999999)),
    st.builds(DirectionAttribute, direction=st.sampled_from(Direction)),
    st.builds(Rtcp, port=ports),
    st.builds(
        lambda port, address: Rtcp(port=port, net_type="IN", addr_type="IP4", address=address),
        ports,
        st.ip_addresses(v=4).map(str),
    ),
    st.just(RtcpMux()),
    st.builds(Attribute, name=tokens.filter(lambda n: n not in KNOWN_ATTRIBUTES), value=st.none() | texts),
)

media_descriptions = st.builds(
    MediaDescription,
    media=tokens,
    port=ports,
    port_count=st.none() | st.integers(1, 10),
    proto=st.lists(tokens, min_size=1, max_size=3).map("/".join),
    formats=st.lists(tokens, max_size=5).map(tuple),
    information=st.none() | texts,
    connections=st.lists(connections(), max_size=2).map(tuple),
    bandwidths=st.lists(bandwidths, max_size=2).map(tuple),
    key=st.none() | texts,
    attributes=st.lists(attributes, max_size=8).map(tuple),
)

session_descriptions = st.builds(
    SessionDescription,
    origin=st.builds(
        Origin,
        username=tokens,
        session_id=tokens,
        session_version=big_numbers,
        address=tokens,
        net_type=tokens,
        addr_type=tokens,
    ),
    session_name=texts,
    information=st.none() | texts,
    uri=st.none() | texts,
    emails=st.lists(texts, max_size=2).map(tuple),
    phones=st.lists(texts, max_size=2).map(tuple),
    connection=st.none() | connections(),
    bandwidths=st.lists(bandwidths, max_size=2).map(tuple),
    timings=st.lists(
        st.builds(
            Timing, start=big_numbers, stop=big_numbers, repeats=st.lists(texts, max_size=2).map(tuple)
        ),
        min_size=1,
        max_size=2,
    ).map(tuple),
    time_zones=st.none() | texts,
    key=st.none() | texts,
    attributes=st.lists(attributes, max_size=4).map(tuple),
    media=st.lists(media_descriptions, max_size=4).map(tuple),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(session_descriptions)
def test_parse_after_serialize_is_identity(description: SessionDescription) -> None:
    assert parse_sdp(serialize_sdp(description)) == description


@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_a_description_or_sdp_error(data: bytes) -> None:
    try:
        parse_sdp(data)
    except SdpError as error:
        assert error.reason


sdp_lines = st.tuples(
    st.sampled_from("vosiuepcbtrzkamx"), st.sampled_from(["", " ", "IN IP4 ", "audio "]), texts
)


@settings(max_examples=300)
@given(st.lists(sdp_lines, max_size=15), st.sampled_from(["\r\n", "\n"]))
def test_sdp_like_text_gives_a_description_or_sdp_error_and_is_stable(
    lines: list[tuple[str, str, str]], newline: str
) -> None:
    text = "v=0" + newline + "o=- 1 1 IN IP4 192.0.2.1" + newline
    text += newline.join(f"{letter}={prefix}{value}" for letter, prefix, value in lines)
    try:
        description = parse_sdp(text)
    except SdpError:
        return
    # Whatever the parser accepts, it writes back in a form it reads as the same description.
    assert parse_sdp(serialize_sdp(description)) == description


CAPS = (CodecSpec("PCMU", 8000, 0), CodecSpec("PCMA", 8000, 8), CodecSpec("telephone-event", 8000, None))
DYNAMIC = {
    "96": "opus/48000/2",
    "101": "telephone-event/8000",
    "110": "PCMA/8000",
    "120": "telephone-event/16000",
}


@st.composite
def offered_streams(draw: st.DrawFn) -> str:
    media = draw(st.sampled_from(["audio", "audio", "video"]))
    port = draw(st.sampled_from([0, 4000, 5000]))
    proto = draw(st.sampled_from(["RTP/AVP", "RTP/AVP", "RTP/SAVP"]))
    formats = draw(st.lists(st.sampled_from(["0", "8", "18", *DYNAMIC]), min_size=1, max_size=5, unique=True))
    lines = [f"m={media} {port} {proto} {' '.join(formats)}"]
    lines += [f"a=rtpmap:{pt} {DYNAMIC[pt]}" for pt in formats if pt in DYNAMIC]
    lines += draw(
        st.lists(st.sampled_from(["a=sendonly", "a=recvonly", "a=inactive", "a=ptime:30"]), max_size=2)
    )
    return "\r\n".join(lines) + "\r\n"


@settings(max_examples=200)
@given(st.lists(offered_streams(), max_size=4), st.sampled_from(["192.0.2.1", "0.0.0.0"]))
def test_every_answer_keeps_the_offers_m_lines_and_accepts_at_most_one(streams: list[str], host: str) -> None:
    offer = parse_sdp(
        f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n" + "".join(streams)
    )
    try:
        reply, negotiated = answer(
            offer,
            CAPS,
            local_host="203.0.113.1",
            local_port=30000,
            session=LocalSession(session_id=1, address="h"),
        )
    except SdpError:
        assert not any(
            m.media == "audio" and m.port != 0 and m.proto == "RTP/AVP" and {"0", "8", "110"} & set(m.formats)
            for m in offer.media
        )
        return
    # RFC 3264 §6: same number of m= lines, same media types, in order; rejected ones have port 0.
    assert [m.media for m in reply.media] == [m.media for m in offer.media]
    live = [m for m in reply.media if m.port != 0]
    assert len(live) <= 1
    for ours, theirs in zip(reply.media, offer.media, strict=True):
        if theirs.port == 0 or theirs.media != "audio":
            assert ours.port == 0
    if live:
        assert negotiated.codec in ("PCMU", "PCMA")
        assert live[0].formats[0] == str(negotiated.payload_type)
        offered_direction = offer.direction_of(offer.media[reply.media.index(live[0])])
        assert not (negotiated.direction.sends and not offered_direction.receives)
        assert not (negotiated.direction.receives and not offered_direction.sends)
        if host == "0.0.0.0":
            assert not negotiated.direction.sends
    else:
        assert negotiated.direction is Direction.INACTIVE
    assert parse_sdp(serialize_sdp(reply)) == reply


_SIP_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sip"
_SDP_CORPUS = [
    body
    for folder in ("rfc4475", "rfc5118", "captured")
    for p in sorted((_SIP_DATA / folder).glob("*.dat"))
    if (body := p.read_bytes().partition(b"\r\n\r\n")[2] or p.read_bytes().partition(b"\n\n")[2]).startswith(b"v=")
]


def test_sdp_corpus_is_present() -> None:
    assert len(_SDP_CORPUS) >= 5


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_SDP_CORPUS),
    st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "delete", "repeat"]), st.integers(0, 10**6), st.binary(min_size=1, max_size=6)),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_real_sdp_gives_a_description_or_sdp_error(body: bytes, edits: list[tuple[str, int, bytes]]) -> None:
    """SDP bodies of the torture and captured messages with byte flips, truncations and huge repeats."""
    data = bytearray(body)
    for kind, pos, chunk in edits:
        if not data:
            break
        i = pos % len(data)
        if kind == "flip":
            data[i] = chunk[0]
        elif kind == "insert":
            data[i:i] = chunk
        elif kind == "delete":
            del data[i:]
        else:
            data[i:i] = data[i : i + 40] * (chunk[0] * 4)
    try:
        description = parse_sdp(bytes(data))
    except SdpError as error:
        assert error.reason
        return
    assert parse_sdp(serialize_sdp(description)) == description
