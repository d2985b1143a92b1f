"""RFC 3264 offer/answer for audio: answers to real peers' offers, hold, codec change, o= versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sdp import (
    CodecSpec,
    Direction,
    LocalSession,
    NegotiatedAudio,
    NoCommonCodec,
    SdpError,
    SessionDescription,
    answer,
    create_offer,
    parse_sdp,
    process_answer,
    serialize_sdp,
)

SIP_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sip"
CAPS = (
    CodecSpec("PCMU", 8000, 0),
    CodecSpec("PCMA", 8000, 8),
    CodecSpec("telephone-event", 8000, None, fmtp="0-16"),
)


def sdp_body(name: str) -> SessionDescription:
    _, _, body = (SIP_DATA / name).read_bytes().partition(b"\r\n\r\n")
    return parse_sdp(body)


def new_session() -> LocalSession:
    return LocalSession(session_id=1234, address="203.0.113.5")


def offer_text(
    media: str, *, session: str = "c=IN IP4 192.0.2.10\r\n", version: int = 1
) -> SessionDescription:
    return parse_sdp(f"v=0\r\no=peer 99 {version} IN IP4 192.0.2.10\r\ns=-\r\n{session}t=0 0\r\n{media}")


def do_answer(
    offer: SessionDescription, session: LocalSession | None = None, **kwargs: object
) -> tuple[str, NegotiatedAudio]:
    description, negotiated = answer(
        offer,
        CAPS,
        local_host="203.0.113.5",
        local_port=30000,
        session=session or new_session(),
        **kwargs,  # type: ignore[arg-type]
    )
    text = serialize_sdp(description).decode()
    assert parse_sdp(text) == description
    return text, negotiated


# ------------------------------------------------------------------------------ answers to real offers


def test_answer_to_sipp() -> None:
    text, n = do_answer(sdp_body("captured/invite-sipp-3.6-uac.dat"))
    assert n == NegotiatedAudio(
        payload_type=0,
        codec="PCMU",
        clock_rate=8000,
        ptime=20,
        dtmf_payload_type=None,
        remote_host="127.0.0.1",
        remote_port=6000,
        remote_rtcp_port=6001,
        direction=Direction.SENDRECV,
    )
    assert text == (
        "v=0\r\no=- 1234 0 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
        "m=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def test_answer_to_pjsip_takes_dynamic_telephone_event_120_and_rtcp_port() -> None:
    text, n = do_answer(sdp_body("captured/invite-pjsip-2.15.dat"))
    assert (n.payload_type, n.codec, n.dtmf_payload_type) == (0, "PCMU", 120)
    assert (n.remote_host, n.remote_port, n.remote_rtcp_port) == ("127.0.0.1", 56150, 56151)
    assert "m=audio 30000 RTP/AVP 0 120\r\n" in text
    assert "a=rtpmap:120 telephone-event/8000\r\na=fmtp:120 0-16\r\n" in text
    assert "101" not in text


def test_answer_to_baresip_takes_telephone_event_101() -> None:
    text, n = do_answer(sdp_body("captured/invite-baresip-1.0.dat"))
    assert (n.payload_type, n.dtmf_payload_type, n.ptime) == (0, 101, 20)
    # The c= is the host's interface address, not the signalling source.
    assert (n.remote_host, n.remote_port) == ("192.0.2.2", 41054)
    assert "m=audio 30000 RTP/AVP 0 101\r\n" in text


def test_answer_to_rfc5118_multiple_addresses_rejects_video() -> None:
    text, n = do_answer(sdp_body("rfc5118/mult-ip-in-sdp.dat"))
    # Audio lists static PT 0 without rtpmap (RFC 3551) and has its own IPv4 c= line.
    assert (n.payload_type, n.remote_host, n.remote_port) == (0, "192.0.2.1", 22334)
    assert "m=audio 30000 RTP/AVP 0\r\n" in text
    assert text.endswith("m=video 0 RTP/AVP 107\r\n")


def test_answer_to_rfc5118_ipv6_offer_from_ipv6_host() -> None:
    caps = (CodecSpec("G726-32", 8000, None),)
    description, n = answer(
        sdp_body("rfc5118/ipv4-mapped-ipv6.dat"),
        caps,
        local_host="2001:db8::99",
        local_port=30000,
        session=LocalSession(session_id=5, address="2001:db8::99"),
    )
    assert (n.payload_type, n.codec, n.remote_host) == (2, "G726-32", "::ffff:192.0.2.2")
    text = serialize_sdp(description).decode()
    assert "o=- 5 0 IN IP6 2001:db8::99\r\n" in text
    assert "c=IN IP6 2001:db8::99\r\n" in text
    # RFC 3264 §6: the t= line of the answer equals the offer's.
    assert "t=3338481189 3370017201\r\n" in text
    assert text.endswith("m=video 0 RTP/AVP 107\r\n")


def test_rfc5118_ipv6_offer_with_only_g726_has_no_common_codec() -> None:
    with pytest.raises(NoCommonCodec) as caught:
        do_answer(sdp_body("rfc5118/ipv6-in-sdp.dat"))
    assert (caught.value.status_code, caught.value.warning_code) == (488, 305)
    assert caught.value.warning_text == "Incompatible media format"


# ------------------------------------------------------------------------------ codec choice


def test_pcma_only_offer_stays_pcma() -> None:
    text, n = do_answer(offer_text("m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"))
    assert (n.payload_type, n.codec, n.dtmf_payload_type) == (8, "PCMA", 101)
    assert "m=audio 30000 RTP/AVP 8 101\r\n" in text
    assert "PCMU" not in text


def test_offerers_preference_order_wins() -> None:
    _, n = do_answer(offer_text("m=audio 4000 RTP/AVP 8 0\r\n"))
    assert n.codec == "PCMA"


def test_unknown_codecs_are_ignored() -> None:
    text, n = do_answer(
        offer_text(
            "m=audio 4000 RTP/AVP 96 18 97 0 101\r\na=rtpmap:96 opus/48000/2\r\n"
            "a=rtpmap:97 x-unheard-of/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        )
    )
    assert (n.payload_type, n.dtmf_payload_type) == (0, 101)
    assert "m=audio 30000 RTP/AVP 0 101\r\n" in text
    assert "opus" not in text


def test_dynamic_payload_type_for_a_known_codec_is_honoured() -> None:
    _, n = do_answer(offer_text("m=audio 4000 RTP/AVP 110\r\na=rtpmap:110 pcmu/8000\r\n"))
    assert (n.payload_type, n.codec) == (110, "PCMU")


def test_telephone_event_at_another_clock_rate_is_not_used() -> None:
    _, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0 102\r\na=rtpmap:102 telephone-event/16000\r\n"))
    assert n.dtmf_payload_type is None


def test_no_common_codec() -> None:
    with pytest.raises(NoCommonCodec, match="18 97") as caught:
        do_answer(offer_text("m=audio 4000 RTP/AVP 18 97\r\na=rtpmap:97 iLBC/8000\r\n"))
    assert caught.value.warning_code == 305


def test_telephone_event_alone_is_not_a_codec() -> None:
    with pytest.raises(NoCommonCodec):
        do_answer(offer_text("m=audio 4000 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n"))


def test_no_audio_stream_is_media_type_not_available() -> None:
    with pytest.raises(NoCommonCodec) as caught:
        do_answer(offer_text("m=video 4000 RTP/AVP 31\r\n"))
    assert (caught.value.warning_code, caught.value.warning_text) == (304, "Media type not available")


def test_srtp_profile_is_rejected() -> None:
    with pytest.raises(NoCommonCodec):
        do_answer(offer_text("m=audio 4000 RTP/SAVP 0\r\n"))


# ------------------------------------------------------------------------------ streams and addresses


def test_other_streams_answered_with_port_zero_in_order() -> None:
    offer = offer_text(
        "m=video 5000 RTP/AVP 31\r\n"
        "m=audio 4000 RTP/AVP 0\r\n"
        "m=audio 4100 RTP/AVP 8\r\n"
        "m=application 6000 UDP/BFCP *\r\n"
    )
    text, n = do_answer(offer)
    assert n.remote_port == 4000
    assert [line for line in text.split("\r\n") if line.startswith("m=")] == [
        "m=video 0 RTP/AVP 31",
        "m=audio 30000 RTP/AVP 0",
        "m=audio 0 RTP/AVP 8",
        "m=application 0 UDP/BFCP *",
    ]


def test_first_audio_stream_without_common_codec_is_skipped() -> None:
    text, n = do_answer(offer_text("m=audio 4000 RTP/AVP 18\r\nm=audio 4100 RTP/AVP 8\r\n"))
    assert (n.remote_port, n.codec) == (4100, "PCMA")
    assert "m=audio 0 RTP/AVP 18\r\nm=audio 30000 RTP/AVP 8\r\n" in text


def test_session_connection_is_used_unless_media_has_its_own() -> None:
    _, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 198.51.100.1\r\n"))
    assert n.remote_host == "198.51.100.1"
    _, n = do_answer(
        offer_text("m=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.51.100.2\r\n", session="c=IN IP4 198.51.100.1\r\n")
    )
    assert n.remote_host == "198.51.100.2"


def test_audio_without_any_connection_line_is_malformed() -> None:
    with pytest.raises(SdpError, match="no c= line") as caught:
        do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\n", session=""))
    assert not isinstance(caught.value, NoCommonCodec)
    assert caught.value.status_code == 400


def test_ptime_from_offer_is_honoured() -> None:
    text, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\na=ptime:30\r\n"))
    assert n.ptime == 30
    assert "a=ptime:30\r\n" in text


def test_preferred_ptime_is_used_when_offer_has_none_and_capped_by_maxptime() -> None:
    _, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\n"), preferred_ptime=40)
    assert n.ptime == 40
    _, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\na=maxptime:30\r\n"), preferred_ptime=40)
    assert n.ptime == 30
    _, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\na=ptime:0\r\n"))
    assert n.ptime == 20


def test_rtcp_port_follows_rfc_3605_or_rtp_plus_one() -> None:
    _, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\na=rtcp:4711\r\n"))
    assert n.remote_rtcp_port == 4711
    _, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\n"))
    assert n.remote_rtcp_port == 4001


# ------------------------------------------------------------------------------ directions and hold


@pytest.mark.parametrize(
    ("offered", "ours"),
    [
        ("sendrecv", Direction.SENDRECV),
        ("sendonly", Direction.RECVONLY),
        ("recvonly", Direction.SENDONLY),
        ("inactive", Direction.INACTIVE),
    ],
)
def test_direction_mirrors_the_offer(offered: str, ours: Direction) -> None:
    text, n = do_answer(offer_text(f"m=audio 4000 RTP/AVP 0\r\na={offered}\r\n"))
    assert n.direction is ours
    assert f"a={ours.value}\r\n" in text


def test_session_level_direction_applies_to_the_stream() -> None:
    _, n = do_answer(
        offer_text("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 192.0.2.10\r\na=sendonly\r\n")
    )
    assert n.direction is Direction.RECVONLY


def test_our_own_hold_limits_the_answer() -> None:
    text, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\n"), local_direction=Direction.SENDONLY)
    assert n.direction is Direction.SENDONLY
    assert "a=sendonly\r\n" in text


def test_rfc2543_hold_with_null_address() -> None:
    text, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 0.0.0.0\r\n"))
    # RFC 3264 §8.4: neither RTP nor RTCP is sent to 0.0.0.0; we still receive.
    assert n.direction is Direction.RECVONLY
    assert n.remote_rtcp_port is None
    assert "a=recvonly\r\n" in text
    _, n = do_answer(offer_text("m=audio 4000 RTP/AVP 0\r\na=recvonly\r\n", session="c=IN IP4 0.0.0.0\r\n"))
    assert n.direction is Direction.INACTIVE


def test_disabled_audio_stream_is_answered_with_port_zero_and_inactive() -> None:
    text, n = do_answer(offer_text("m=audio 0 RTP/AVP 0\r\n"))
    assert (n.direction, n.remote_port, n.remote_rtcp_port) == (Direction.INACTIVE, 0, None)
    assert "m=audio 0 RTP/AVP 0\r\n" in text


def test_hold_unhold_sequence_and_o_line_versions() -> None:
    session = new_session()
    media = "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    steps = [
        ("", 1, Direction.SENDRECV, 0),
        ("", 1, Direction.SENDRECV, 0),  # the same offer again: our answer is unchanged
        ("a=sendonly\r\n", 2, Direction.RECVONLY, 1),  # the peer holds us
        ("a=sendonly\r\n", 2, Direction.RECVONLY, 1),
        ("a=inactive\r\n", 3, Direction.INACTIVE, 2),
        ("a=sendrecv\r\n", 4, Direction.SENDRECV, 3),  # unhold
        ("", 5, Direction.SENDRECV, 3),  # same content as before: version kept
    ]
    for extra, offer_version, expected, our_version in steps:
        description, n = answer(
            offer_text(media + extra, version=offer_version),
            CAPS,
            local_host="203.0.113.5",
            local_port=30000,
            session=session,
        )
        assert n.direction is expected
        assert description.origin.session_version == our_version
        assert description.origin.session_id == "1234"
    assert session.version == 3


def test_codec_change_re_offer_renegotiates_and_bumps_version() -> None:
    session = new_session()
    first, n1 = answer(
        offer_text("m=audio 4000 RTP/AVP 0\r\n"),
        CAPS,
        local_host="203.0.113.5",
        local_port=30000,
        session=session,
    )
    second, n2 = answer(
        offer_text("m=audio 4000 RTP/AVP 8\r\n", version=2),
        CAPS,
        local_host="203.0.113.5",
        local_port=30000,
        session=session,
    )
    assert (n1.codec, n2.codec) == ("PCMU", "PCMA")
    assert (n2.payload_type, second.media[0].formats) == (8, ("8",))
    assert second.origin.session_version == first.origin.session_version + 1


def test_invalid_local_port_is_a_local_error() -> None:
    with pytest.raises(ValueError, match="port"):
        answer(
            offer_text("m=audio 4000 RTP/AVP 0\r\n"),
            CAPS,
            local_host="h",
            local_port=0,
            session=new_session(),
        )


# ------------------------------------------------------------------------------ our offers


def our_offer(session: LocalSession | None = None, **kwargs: object) -> SessionDescription:
    return create_offer(
        CAPS,
        local_host="203.0.113.5",
        local_port=30000,
        session=session or new_session(),
        **kwargs,  # type: ignore[arg-type]
    )


def test_create_offer() -> None:
    offer = our_offer()
    assert serialize_sdp(offer).decode() == (
        "v=0\r\no=- 1234 0 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
        "m=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def test_create_offer_with_pinned_dynamic_payload_type_and_ptime() -> None:
    offer = our_offer(payload_types={"Telephone-Event": 120}, ptime=30)
    assert offer.media[0].formats == ("0", "8", "120")
    assert offer.media[0].ptime == 30


def test_create_offer_misuse() -> None:
    with pytest.raises(ValueError, match="at least one codec"):
        create_offer((), local_host="h", local_port=1, session=new_session())
    with pytest.raises(ValueError, match="taken"):
        create_offer(
            (CodecSpec("PCMU", 8000, 0), CodecSpec("X", 8000, 0)),
            local_host="h",
            local_port=1,
            session=new_session(),
        )


def test_re_offer_versions_for_hold() -> None:
    session = new_session()
    assert our_offer(session).origin.session_version == 0
    assert our_offer(session).origin.session_version == 0
    held = our_offer(session, direction=Direction.SENDONLY)
    assert held.origin.session_version == 1
    assert held.media[0].direction is Direction.SENDONLY
    assert our_offer(session).origin.session_version == 2


def test_process_pjsip_answer() -> None:
    n = process_answer(our_offer(), sdp_body("captured/ok200-pjsip-2.15.dat"))
    assert n == NegotiatedAudio(
        payload_type=0,
        codec="PCMU",
        clock_rate=8000,
        ptime=20,
        dtmf_payload_type=101,
        remote_host="127.0.0.1",
        remote_port=51120,
        remote_rtcp_port=51121,
        direction=Direction.SENDRECV,
    )


def test_process_baresip_answer_uses_first_listed_codec() -> None:
    n = process_answer(our_offer(), sdp_body("captured/ok200-baresip-1.0.dat"))
    assert (n.payload_type, n.dtmf_payload_type, n.remote_host, n.remote_port) == (0, 101, "192.0.2.2", 41068)


def test_process_sipp_answer() -> None:
    n = process_answer(our_offer(), sdp_body("captured/ok200-sipp-3.6-uas.dat"))
    assert (n.codec, n.dtmf_payload_type, n.remote_port) == ("PCMU", None, 6000)


def answer_text(media: str) -> SessionDescription:
    return offer_text(media)


def test_answer_with_wrong_m_line_count_is_invalid() -> None:
    with pytest.raises(SdpError, match="2 m= lines, the offer had 1"):
        process_answer(our_offer(), answer_text("m=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n"))


def test_answer_with_other_media_type_is_invalid() -> None:
    with pytest.raises(SdpError, match="'video', the offer had 'audio'"):
        process_answer(our_offer(), answer_text("m=video 4000 RTP/AVP 31\r\n"))


def test_answer_rejecting_audio() -> None:
    with pytest.raises(NoCommonCodec, match="rejected"):
        process_answer(our_offer(), answer_text("m=audio 0 RTP/AVP 0\r\n"))


def test_answer_with_a_codec_we_did_not_offer() -> None:
    with pytest.raises(NoCommonCodec, match="not codecs we offered"):
        process_answer(our_offer(), answer_text("m=audio 4000 RTP/AVP 18\r\n"))
    with pytest.raises(NoCommonCodec):
        process_answer(our_offer(), answer_text("m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n"))


def test_answer_may_renumber_telephone_event() -> None:
    n = process_answer(
        our_offer(), answer_text("m=audio 4000 RTP/AVP 8 97\r\na=rtpmap:97 telephone-event/8000\r\n")
    )
    assert (n.payload_type, n.codec, n.dtmf_payload_type) == (8, "PCMA", 97)


def test_answer_directions_seen_from_our_side() -> None:
    n = process_answer(our_offer(), answer_text("m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"))
    assert n.direction is Direction.RECVONLY
    held = our_offer(direction=Direction.SENDONLY)
    # A bogus sendrecv answer cannot widen what we offered.
    n = process_answer(held, answer_text("m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"))
    assert n.direction is Direction.SENDONLY


def test_answer_ptime_then_offer_ptime() -> None:
    assert process_answer(our_offer(ptime=30), answer_text("m=audio 4000 RTP/AVP 0\r\n")).ptime == 30
    assert process_answer(our_offer(), answer_text("m=audio 4000 RTP/AVP 0\r\na=ptime:40\r\n")).ptime == 40


def test_answer_without_connection_is_invalid() -> None:
    with pytest.raises(SdpError, match="no c= line"):
        process_answer(our_offer(), offer_text("m=audio 4000 RTP/AVP 0\r\n", session=""))


# ------------------------------------------------------------------------------ both ends back to back


def test_delayed_offer_back_to_back() -> None:
    """INVITE without SDP: we offer in the 200 OK, the peer answers in the ACK."""
    ours = LocalSession(session_id=1, address="203.0.113.5")
    theirs = LocalSession(session_id=2, address="198.51.100.9")
    offer = create_offer(CAPS, local_host="203.0.113.5", local_port=30000, session=ours)
    peer_caps = (CodecSpec("PCMA", 8000, 8), CodecSpec("telephone-event", 8000, None))
    ack_sdp, peer_view = answer(
        parse_sdp(serialize_sdp(offer)),
        peer_caps,
        local_host="198.51.100.9",
        local_port=40000,
        session=theirs,
    )
    our_view = process_answer(offer, parse_sdp(serialize_sdp(ack_sdp)))
    assert (our_view.codec, our_view.payload_type, our_view.dtmf_payload_type) == ("PCMA", 8, 101)
    assert (our_view.remote_host, our_view.remote_port) == ("198.51.100.9", 40000)
    assert (peer_view.remote_host, peer_view.remote_port) == ("203.0.113.5", 30000)
    assert our_view.direction is peer_view.direction is Direction.SENDRECV


def test_our_hold_back_to_back() -> None:
    ours = LocalSession(session_id=1, address="203.0.113.5")
    theirs = LocalSession(session_id=2, address="198.51.100.9")
    for direction, peer_direction in [
        (Direction.SENDONLY, Direction.RECVONLY),
        (Direction.INACTIVE, Direction.INACTIVE),
        (Direction.SENDRECV, Direction.SENDRECV),
    ]:
        offer = create_offer(
            CAPS, local_host="203.0.113.5", local_port=30000, session=ours, direction=direction
        )
        reply, peer_view = answer(offer, CAPS, local_host="198.51.100.9", local_port=40000, session=theirs)
        assert peer_view.direction is peer_direction
        assert process_answer(offer, reply).direction is direction
    assert ours.version == 2
