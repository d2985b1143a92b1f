"""Cross-check our RTP and RTCP wire formats against aiortc, an independent implementation.

Both directions: aiortc builds -> we parse, we build -> aiortc parses, on the same bytes,
including CSRCs, RFC 8285 header extensions, padding, SR/RR report blocks, SDES and BYE.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

aiortc_rtp = pytest.importorskip("aiortc.rtp")
aiortc_params = pytest.importorskip("aiortc.rtcrtpparameters")

from gateway.rtp import rtcp  # noqa: E402
from gateway.rtp.packet import RtpPacket  # noqa: E402

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


def _extension_map() -> object:
    parameters = aiortc_params.RTCRtpParameters(
        headerExtensions=[
            aiortc_params.RTCRtpHeaderExtensionParameters(id=1, uri=MID_URI),
            aiortc_params.RTCRtpHeaderExtensionParameters(id=2, uri=AUDIO_LEVEL_URI),
        ]
    )
    extensions_map = aiortc_rtp.HeaderExtensionsMap()
    extensions_map.configure(parameters)
    return extensions_map


header_fields = st.fixed_dictionaries(
    {
        "payload_type": st.integers(0, 127),
        "sequence_number": st.integers(0, 0xFFFF),
        "timestamp": st.integers(0, 0xFFFFFFFF),
        "ssrc": st.integers(0, 0xFFFFFFFF),
        "payload": st.binary(max_size=200),
        "marker": st.booleans(),
        "csrc": st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
        "padding_size": st.integers(0, 255),
    }
)


@given(header_fields, st.sampled_from(["", "a", "audio0"]), st.none() | st.integers(0, 127))
def test_aiortc_builds_we_parse(fields: dict, mid: str, level: int | None) -> None:  # type: ignore[type-arg]
    theirs = aiortc_rtp.RtpPacket(
        payload_type=fields["payload_type"],
        marker=int(fields["marker"]),
        sequence_number=fields["sequence_number"],
        timestamp=fields["timestamp"],
        ssrc=fields["ssrc"],
        payload=fields["payload"],
    )
    theirs.csrc = list(fields["csrc"])
    theirs.padding_size = fields["padding_size"]
    if mid:
        theirs.extensions.mid = mid
    if level is not None:
        theirs.extensions.audio_level = (True, level)
    extensions_map = _extension_map()
    wire = theirs.serialize(extensions_map)

    ours = RtpPacket.parse(wire)
    assert ours.payload_type == theirs.payload_type
    assert ours.marker == bool(theirs.marker)
    assert ours.sequence_number == theirs.sequence_number
    assert ours.timestamp == theirs.timestamp
    assert ours.ssrc == theirs.ssrc
    assert list(ours.csrc) == theirs.csrc
    assert ours.payload == theirs.payload
    assert ours.padding_size == theirs.padding_size
    if mid or level is not None:
        assert ours.extension_profile == 0xBEDE
        profile, value = aiortc_rtp.pack_header_extensions(
            aiortc_rtp.unpack_header_extensions(0xBEDE, ours.extension_data)
        )
        assert (profile, value) == (0xBEDE, ours.extension_data)
    else:
        assert ours.extension_profile is None
    # our serialization of what we parsed is bit-identical except aiortc's random padding bytes
    again = ours.serialize()
    assert len(again) == len(wire)
    assert again[: len(wire) - ours.padding_size] == wire[: len(wire) - ours.padding_size]


@given(header_fields, st.sampled_from(["a", "audio0"]), st.integers(0, 127))
def test_we_build_aiortc_parses(fields: dict, mid: str, level: int) -> None:  # type: ignore[type-arg]
    _profile, extension_data = aiortc_rtp.pack_header_extensions(
        [(1, mid.encode()), (2, bytes([0x80 | level]))]
    )
    ours = RtpPacket(
        payload_type=fields["payload_type"],
        sequence_number=fields["sequence_number"],
        timestamp=fields["timestamp"],
        ssrc=fields["ssrc"],
        payload=fields["payload"],
        marker=fields["marker"],
        csrc=tuple(fields["csrc"]),
        extension_profile=0xBEDE,
        extension_data=extension_data,
        padding_size=fields["padding_size"],
    )
    theirs = aiortc_rtp.RtpPacket.parse(ours.serialize(), _extension_map())
    assert theirs.payload_type == ours.payload_type
    assert bool(theirs.marker) == ours.marker
    assert theirs.sequence_number == ours.sequence_number
    assert theirs.timestamp == ours.timestamp
    assert theirs.ssrc == ours.ssrc
    assert theirs.csrc == list(ours.csrc)
    assert theirs.payload == ours.payload
    assert theirs.padding_size == ours.padding_size
    assert theirs.extensions.mid == mid
    assert theirs.extensions.audio_level == (True, level)


def test_plain_packet_is_bit_identical_both_ways() -> None:
    theirs = aiortc_rtp.RtpPacket(
        payload_type=0, marker=1, sequence_number=65535, timestamp=4294967295, ssrc=1
    )
    theirs.payload = b"\xff" * 160
    ours = RtpPacket(
        payload_type=0,
        sequence_number=65535,
        timestamp=4294967295,
        ssrc=1,
        payload=b"\xff" * 160,
        marker=True,
    )
    assert theirs.serialize() == ours.serialize()


# -- RTCP -------------------------------------------------------------------------

blocks = st.builds(
    rtcp.ReportBlock,
    ssrc=st.integers(0, 0xFFFFFFFF),
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_sequence=st.integers(0, 0xFFFFFFFF),
    jitter=st.integers(0, 0xFFFFFFFF),
    lsr=st.integers(0, 0xFFFFFFFF),
    dlsr=st.integers(0, 0xFFFFFFFF),
)


def _their_block(block: rtcp.ReportBlock) -> object:
    return aiortc_rtp.RtcpReceiverInfo(
        ssrc=block.ssrc,
        fraction_lost=block.fraction_lost,
        packets_lost=block.cumulative_lost,
        highest_sequence=block.highest_sequence,
        jitter=block.jitter,
        lsr=block.lsr,
        dlsr=block.dlsr,
    )


def _assert_same_block(theirs: object, ours: rtcp.ReportBlock) -> None:
    assert theirs.ssrc == ours.ssrc  # type: ignore[attr-defined]
    assert theirs.fraction_lost == ours.fraction_lost  # type: ignore[attr-defined]
    assert theirs.packets_lost == ours.cumulative_lost  # type: ignore[attr-defined]
    assert theirs.highest_sequence == ours.highest_sequence  # type: ignore[attr-defined]
    assert theirs.jitter == ours.jitter  # type: ignore[attr-defined]
    assert theirs.lsr == ours.lsr  # type: ignore[attr-defined]
    assert theirs.dlsr == ours.dlsr  # type: ignore[attr-defined]


@given(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 2**64 - 1),
    st.integers(0, 0xFFFFFFFF),
    st.lists(blocks, max_size=4),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
)
def test_compound_sr_sdes_bye_both_ways(
    ssrc: int, ntp: int, rtp_ts: int, report_blocks: list[rtcp.ReportBlock], cname: str
) -> None:
    ours: list[rtcp.RtcpPacket] = [
        rtcp.RtcpSenderReport(
            ssrc=ssrc,
            ntp_timestamp=ntp,
            rtp_timestamp=rtp_ts,
            packet_count=10,
            octet_count=1600,
            reports=tuple(report_blocks),
        ),
        rtcp.RtcpSourceDescription(
            chunks=(rtcp.SdesChunk(ssrc=ssrc, items=((rtcp.SDES_CNAME, cname.encode()),)),)
        ),
        rtcp.RtcpBye(sources=(ssrc,)),
    ]
    wire = rtcp.serialize_compound(ours)
    theirs = aiortc_rtp.RtcpPacket.parse(wire)
    assert [type(p).__name__ for p in theirs] == ["RtcpSrPacket", "RtcpSdesPacket", "RtcpByePacket"]
    sr, sdes, bye = theirs
    assert sr.ssrc == ssrc
    assert sr.sender_info.ntp_timestamp == ntp
    assert sr.sender_info.rtp_timestamp == rtp_ts
    assert (sr.sender_info.packet_count, sr.sender_info.octet_count) == (10, 1600)
    assert len(sr.reports) == len(report_blocks)
    for their_block, our_block in zip(sr.reports, report_blocks, strict=True):
        _assert_same_block(their_block, our_block)
    assert sdes.chunks[0].ssrc == ssrc
    assert sdes.chunks[0].items == [(rtcp.SDES_CNAME, cname.encode())]
    assert bye.sources == [ssrc]

    # aiortc's SR and BYE are byte-identical to ours; its SDES pads differently (two null
    # octets, then to the boundary) which is also valid, so compare what it means
    assert bytes(sr) == wire[: len(bytes(sr))]
    assert bytes(bye) == wire[-len(bytes(bye)) :]
    rebuilt = b"".join(bytes(p) for p in theirs)
    assert rtcp.parse_compound(rebuilt) == ours


@given(st.integers(0, 0xFFFFFFFF), st.lists(blocks, max_size=4))
def test_aiortc_rr_we_parse(ssrc: int, report_blocks: list[rtcp.ReportBlock]) -> None:
    theirs = aiortc_rtp.RtcpRrPacket(ssrc=ssrc, reports=[_their_block(b) for b in report_blocks])
    (ours,) = rtcp.parse_compound(bytes(theirs))
    assert ours == rtcp.RtcpReceiverReport(ssrc=ssrc, reports=tuple(report_blocks))
