"""RFC 4566 parsing and serialisation against bodies captured from real peers and RFC 5118 §4.6-4.9."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sdp import (
    Attribute,
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
    SdpLimits,
    SessionDescription,
    Timing,
    parse_sdp,
    serialize_sdp,
)

SIP_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sip"
CAPTURED = sorted((SIP_DATA / "captured").glob("*.dat"))
RFC5118 = [
    SIP_DATA / "rfc5118" / name for name in ("ipv6-in-sdp.dat", "mult-ip-in-sdp.dat", "ipv4-mapped-ipv6.dat")
]


def sdp_body(path: Path) -> bytes:
    """The body after the blank line of a captured SIP message."""
    _, _, body = path.read_bytes().partition(b"\r\n\r\n")
    return body


def test_fixtures_are_present() -> None:
    assert len(CAPTURED) == 6
    assert all(p.exists() for p in RFC5118)


@pytest.mark.parametrize("path", CAPTURED + RFC5118, ids=lambda p: p.name)
def test_real_bodies_parse(path: Path) -> None:
    description = parse_sdp(sdp_body(path))
    assert description.version == 0
    assert description.media
    assert description.media[0].media == "audio"


@pytest.mark.parametrize("path", [*CAPTURED, RFC5118[0], RFC5118[2]], ids=lambda p: p.name)
def test_real_bodies_serialise_back_byte_for_byte(path: Path) -> None:
    body = sdp_body(path)
    assert serialize_sdp(parse_sdp(body)) == body


def test_empty_session_name_is_written_as_rfc_recommends() -> None:
    # mult-ip-in-sdp.dat has "s=" with nothing; RFC 4566 §5.3 recommends "s= " for no name.
    body = sdp_body(RFC5118[1])
    out = serialize_sdp(parse_sdp(body))
    assert out == body.replace(b"s=\r\n", b"s= \r\n")
    assert parse_sdp(out) == parse_sdp(body)


def test_pjsip_invite_typed_fields() -> None:
    d = parse_sdp(sdp_body(SIP_DATA / "captured" / "invite-pjsip-2.15.dat"))
    assert d.origin == Origin(
        username="-", session_id="4004270299", session_version=4004270299, address="127.0.0.1"
    )
    assert d.session_name == "pjmedia"
    assert d.bandwidths == (Bandwidth(bwtype="AS", bandwidth=84),)
    assert d.connection is None
    assert d.attributes == (Attribute(name="X-nat", value="0"),)
    (audio,) = d.media
    assert (audio.port, audio.proto, audio.formats) == (56150, "RTP/AVP", ("0", "8", "120"))
    assert audio.connections == (Connection(address="127.0.0.1"),)
    assert d.connection_of(audio) == Connection(address="127.0.0.1")
    assert audio.rtcp == Rtcp(port=56151, net_type="IN", addr_type="IP4", address="127.0.0.1")
    assert audio.rtpmap(120) == RtpMap(payload_type=120, encoding_name="telephone-event", clock_rate=8000)
    assert audio.fmtp(120) == "0-16"
    assert audio.direction is Direction.SENDRECV
    assert audio.attributes[-1] == Attribute(name="ssrc", value="981835842 cname:4f3f50545f9670be")


def test_baresip_invite_keeps_unknown_attributes_in_order() -> None:
    d = parse_sdp(sdp_body(SIP_DATA / "captured" / "invite-baresip-1.0.dat"))
    assert d.connection == Connection(address="192.0.2.2")
    assert d.attribute_values("tool") == ("baresip 1.0.0",)
    (audio,) = d.media
    assert audio.attributes == (
        RtpMap(payload_type=0, encoding_name="PCMU", clock_rate=8000),
        RtpMap(payload_type=8, encoding_name="PCMA", clock_rate=8000),
        RtpMap(payload_type=101, encoding_name="telephone-event", clock_rate=8000),
        Fmtp(payload_type=101, parameters="0-15"),
        DirectionAttribute(direction=Direction.SENDRECV),
        Attribute(name="label", value="1"),
        Attribute(name="rtcp-rsize"),
        Attribute(name="ssrc", value="1061648789 cname:sip:tester@127.0.0.1"),
        Attribute(name="minptime", value="20"),
        Ptime(milliseconds=20),
    )
    assert audio.attribute_values("minptime") == ("20",)
    assert audio.ptime == 20


def test_ipv6_connection_without_brackets() -> None:
    d = parse_sdp(sdp_body(RFC5118[0]))
    assert d.origin.addr_type == "IP6"
    assert d.connection == Connection(address="2001:db8::20", addr_type="IP6")
    assert d.timings == (Timing(start=3338481189, stop=3370017201),)
    assert [m.media for m in d.media] == ["audio", "video"]
    assert d.media[0].rtpmap(2) == RtpMap(payload_type=2, encoding_name="G726-32", clock_rate=8000)


def test_media_level_connections_of_mixed_families() -> None:
    d = parse_sdp(sdp_body(RFC5118[1]))
    assert d.connection is None
    assert d.origin.address == "host.example.com"
    audio, video = d.media
    assert d.connection_of(audio) == Connection(address="192.0.2.1")
    assert d.connection_of(video) == Connection(address="2001:db8::1", addr_type="IP6")


def test_ipv4_mapped_ipv6() -> None:
    d = parse_sdp(sdp_body(RFC5118[2]))
    assert d.connection == Connection(address="::ffff:192.0.2.2", addr_type="IP6")


MINIMAL = (
    "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def test_media_connection_overrides_session_connection() -> None:
    d = parse_sdp(MINIMAL + "c=IN IP4 198.51.100.7\r\n")
    assert d.connection == Connection(address="192.0.2.1")
    assert d.connection_of(d.media[0]) == Connection(address="198.51.100.7")


def test_lf_only_lines_and_trailing_whitespace_are_tolerated() -> None:
    sloppy = MINIMAL.replace("\r\n", "  \n").replace("s=-", "s=-\t") + "\n\n"
    assert parse_sdp(sloppy) == parse_sdp(MINIMAL)
    assert parse_sdp(MINIMAL.replace("\r\n", "\r")) == parse_sdp(MINIMAL)


def test_missing_session_name_and_timing_are_tolerated() -> None:
    d = parse_sdp(MINIMAL.replace("s=-\r\n", "").replace("t=0 0\r\n", ""))
    assert d.session_name == ""
    assert d.timings == (Timing(),)
    assert b"s= \r\n" in serialize_sdp(d)
    assert b"t=0 0\r\n" in serialize_sdp(d)


def test_bracketed_ipv6_connection_is_tolerated() -> None:
    d = parse_sdp(MINIMAL.replace("c=IN IP4 192.0.2.1", "c=IN IP6 [2001:db8::5]"))
    assert d.connection == Connection(address="2001:db8::5", addr_type="IP6")
    assert b"c=IN IP6 2001:db8::5\r\n" in serialize_sdp(d)


def test_multicast_suffixes() -> None:
    d = parse_sdp(MINIMAL.replace("c=IN IP4 192.0.2.1", "c=IN IP4 224.2.1.1/127/3"))
    assert d.connection == Connection(address="224.2.1.1", ttl=127, count=3)
    d6 = parse_sdp(MINIMAL.replace("c=IN IP4 192.0.2.1", "c=IN IP6 ff15::101/3"))
    assert d6.connection == Connection(address="ff15::101", addr_type="IP6", count=3)
    assert b"c=IN IP6 ff15::101/3\r\n" in serialize_sdp(d6)


def test_all_session_fields_and_repeat_lines() -> None:
    text = (
        "v=0\r\no=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\ns=SDP Seminar\r\n"
        "i=A Seminar on the session description protocol\r\nu=http://www.example.com/seminars/sdp.pdf\r\n"
        "e=j.doe@example.com (Jane Doe)\r\np=+1 617 555-6011\r\nc=IN IP4 224.2.17.12/127\r\n"
        "b=CT:1000\r\nt=2873397496 2873404696\r\nr=604800 3600 0 90000\r\nr=7d 1h 0 25h\r\n"
        "z=2882844526 -1h 2898848070 0\r\nk=prompt\r\na=recvonly\r\n"
        "m=audio 49170/2 RTP/AVP 0\r\ni=voice\r\nb=AS:64\r\nk=clear:secret\r\na=maxptime:40\r\na=rtcp-mux\r\n"
        "m=video 51372 RTP/AVP 99\r\na=rtpmap:99 h263-1998/90000\r\n"
    )
    d = parse_sdp(text)
    assert d.information == "A Seminar on the session description protocol"
    assert d.uri == "http://www.example.com/seminars/sdp.pdf"
    assert d.emails == ("j.doe@example.com (Jane Doe)",)
    assert d.phones == ("+1 617 555-6011",)
    assert d.timings == (
        Timing(start=2873397496, stop=2873404696, repeats=("604800 3600 0 90000", "7d 1h 0 25h")),
    )
    assert d.time_zones == "2882844526 -1h 2898848070 0"
    assert d.key == "prompt"
    assert d.direction is Direction.RECVONLY
    audio = d.media[0]
    assert (audio.port, audio.port_count, audio.information, audio.key) == (49170, 2, "voice", "clear:secret")
    assert audio.maxptime == 40
    assert audio.rtcp_mux
    assert d.direction_of(audio) is Direction.RECVONLY  # inherited from the session level
    assert serialize_sdp(d).decode() == text


def test_stereo_rtpmap_and_decimal_ptime() -> None:
    d = parse_sdp(MINIMAL + "m=audio 4002 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=ptime:20.0\r\n")
    opus = d.media[1]
    assert opus.rtpmap(111) == RtpMap(payload_type=111, encoding_name="opus", clock_rate=48000, channels=2)
    assert opus.attributes[1] == Ptime(milliseconds=20)


@pytest.mark.parametrize(
    "line",
    [
        "a=rtpmap:abc PCMU/8000",
        "a=rtpmap:0 PCMU",
        "a=fmtp:x y",
        "a=ptime:soon",
        "a=rtcp:99999",
        "a=sendrecv:x",
    ],
)
def test_unreadable_known_attribute_is_kept_verbatim(line: str) -> None:
    d = parse_sdp(MINIMAL + line + "\r\n")
    name, _, value = line[2:].partition(":")
    assert d.media[0].attributes[-1] == Attribute(name=name, value=value)
    assert serialize_sdp(d).endswith(line.encode() + b"\r\n")


def test_property_and_empty_valued_attributes_round_trip() -> None:
    text = MINIMAL + "a=foo\r\na=bar:\r\na=baz: spaced value\r\n"
    d = parse_sdp(text)
    assert d.media[0].attributes[-3:] == (
        Attribute(name="foo"),
        Attribute(name="bar", value=""),
        Attribute(name="baz", value=" spaced value"),
    )
    assert serialize_sdp(d).decode() == text


def test_undecodable_bytes_survive_a_round_trip() -> None:
    body = MINIMAL.encode().replace(b"s=-", b"s=caf\xe9")
    assert serialize_sdp(parse_sdp(body)) == body


def test_typed_media_direction_and_rtcp_port_only() -> None:
    d = parse_sdp(MINIMAL + "a=inactive\r\na=rtcp:4001\r\n")
    assert d.media[0].direction is Direction.INACTIVE
    assert d.media[0].rtcp == Rtcp(port=4001)
    assert d.media[0].attributes[-2:] == (DirectionAttribute(direction=Direction.INACTIVE), Rtcp(port=4001))
    assert not d.media[0].rtcp_mux
    assert RtcpMux() not in d.media[0].attributes
    assert MaxPtime(milliseconds=1) not in d.media[0].attributes


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "no 'v=0'"),
        (b"<html><body>hello</body></html>", "not '<type>=<value>'"),
        (b"INVITE sip:a@b SIP/2.0\r\n", "not '<type>=<value>'"),
        (b"o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", "starts with 'v='"),
        (b"v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "unsupported SDP version"),
        (b"v=0\r\ns=-\r\n", "missing o="),
        (b"v=0\r\no=- 1 IN IP4 1.2.3.4\r\n", "o= needs 6 fields, got 5"),
        (b"v=0\r\no=- 1 x IN IP4 1.2.3.4\r\n", "session version"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "second o="),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nx=what\r\n", "unknown SDP type letter 'x'"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 999.1.1.1\r\n", "not an IPv4 address"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 2001:db8::1\r\n", "not an IP4 address or host name"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP6 2001:db8:::1\r\n", "not an IPv6 address"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4\r\n", "c= needs 3 fields"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 224.0.0.1/1/2/3\r\n", "too many '/'"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nb=AS\r\n", "b= needs"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nb=AS:lots\r\n", "b= bandwidth"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nt=0\r\n", "t= needs 2 fields"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nr=1 2 3\r\n", "r= line without a preceding t="),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n", "m= port 70000 is larger"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000\r\n", "m= needs"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/ 0\r\n", "transport protocol"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\ns=late\r\n", "session-level line"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\ni=a\r\ni=b\r\n", "second i="),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\na=\r\n", "attribute name"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n a=x\r\n", "not '<type>=<value>'"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\x00\r\n", "NUL"),
    ],
)
def test_not_sdp_raises_with_a_precise_reason(body: bytes, reason: str) -> None:
    with pytest.raises(SdpError) as caught:
        parse_sdp(body)
    assert reason in caught.value.reason
    assert caught.value.status_code == 400


def test_limits_are_enforced() -> None:
    many_lines = MINIMAL + "a=x\r\n" * 50
    with pytest.raises(SdpError, match="more than 40 lines"):
        parse_sdp(many_lines, limits=SdpLimits(max_lines=40))
    parse_sdp(many_lines, limits=SdpLimits(max_lines=60))
    with pytest.raises(SdpError, match="longer than 100 characters"):
        parse_sdp(MINIMAL + "a=x:" + "y" * 200 + "\r\n", limits=SdpLimits(max_line_length=100))
    with pytest.raises(SdpError, match="more than 2 m= lines"):
        parse_sdp(MINIMAL + "m=audio 0 RTP/AVP 0\r\n" * 2, limits=SdpLimits(max_media=2))
    with pytest.raises(SdpError, match="exceeds the limit"):
        parse_sdp(MINIMAL.encode(), limits=SdpLimits(max_bytes=50))
    with pytest.raises(SdpError, match="exceeds the limit"):
        parse_sdp(MINIMAL, limits=SdpLimits(max_bytes=50))


def test_serialising_a_line_break_is_refused() -> None:
    d = SessionDescription(
        origin=Origin(username="-", session_id="1", session_version=1, address="192.0.2.1"),
        session_name="evil\r\na=injected",
    )
    with pytest.raises(ValueError, match="line structure"):
        serialize_sdp(d)


def test_model_built_in_code_serialises_in_rfc_order() -> None:
    d = SessionDescription(
        origin=Origin(
            username="-", session_id="7", session_version=3, address="2001:db8::1", addr_type="IP6"
        ),
        connection=Connection(address="2001:db8::1", addr_type="IP6"),
        media=(
            MediaDescription(
                media="audio",
                port=5004,
                proto="RTP/AVP",
                formats=("0",),
                attributes=(RtpMap(payload_type=0, encoding_name="PCMU", clock_rate=8000),),
            ),
        ),
    )
    assert serialize_sdp(d) == (
        b"v=0\r\no=- 7 3 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n"
        b"m=audio 5004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    assert parse_sdp(serialize_sdp(d)) == d
