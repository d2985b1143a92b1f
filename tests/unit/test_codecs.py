"""G.711 μ-law/A-law (ITU-T G.711) and the codec registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gateway.codecs import g711
from gateway.codecs.registry import PCMA, PCMU, TELEPHONE_EVENT, CodecRegistry

ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2")
G711A_PCAP = Path("/usr/share/sip-tester/g711a.pcap")

LAWS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "ulaw": (g711.ulaw_encode, g711.ulaw_decode),
    "alaw": (g711.alaw_encode, g711.alaw_decode),
}


def pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def samples(data: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(data, dtype="<i2")]


def test_known_ulaw_codes() -> None:
    # G.711 Table 2a: zero encodes as 0xFF (positive zero); full scale as 0x80 / 0x00
    assert g711.ulaw_encode(pcm(0)) == b"\xff"
    assert g711.ulaw_encode(pcm(32767, -32768)) == b"\x80\x00"
    assert samples(g711.ulaw_decode(b"\xff\x7f\x80\x00")) == [0, 0, 32124, -32124]


def test_known_alaw_codes() -> None:
    # G.711 Table 1a: zero encodes as 0xD5 (even bits inverted); full scale 0xAA / 0x2A
    assert g711.alaw_encode(pcm(0)) == b"\xd5"
    assert g711.alaw_encode(pcm(32767, -32768)) == b"\xaa\x2a"
    assert samples(g711.alaw_decode(b"\xd5\x55\xaa\x2a")) == [8, -8, 32256, -32256]


def test_little_endian_in_and_out() -> None:
    assert g711.ulaw_decode(b"\x80") == (32124).to_bytes(2, "little", signed=True)
    assert g711.alaw_encode(b"\x00\x7f") == g711.alaw_encode(pcm(0x7F00))


@pytest.mark.parametrize("law", sorted(LAWS))
def test_round_trip_error_is_within_one_quantisation_step(law: str) -> None:
    encode, decode = LAWS[law]
    x = ALL_SAMPLES.astype(int)
    decoded = np.frombuffer(decode(encode(ALL_SAMPLES.tobytes())), dtype="<i2").astype(int)
    levels = np.unique(np.frombuffer(decode(bytes(range(256))), dtype="<i2").astype(int))
    assert len(levels) == (255 if law == "ulaw" else 256)  # μ-law has two zeros
    inside = (x >= levels[0]) & (x <= levels[-1])
    index = np.searchsorted(levels, x, side="right")
    below = levels[np.clip(index - 1, 0, len(levels) - 1)]
    above = levels[np.clip(index, 0, len(levels) - 1)]
    error = np.abs(decoded - x)
    assert np.all(error[inside] <= (above - below)[inside])
    # beyond the largest level the codec saturates
    assert set(decoded[~inside]) == {int(levels[0]), int(levels[-1])}
    # logarithmic: under 3.6 % relative error above the linear segment
    loud = np.abs(x) > 1024
    assert np.max(error[loud] / np.abs(x[loud])) < 0.036


@pytest.mark.parametrize("law", sorted(LAWS))
def test_decoded_levels_are_fixed_points(law: str) -> None:
    encode, decode = LAWS[law]
    codes = bytes(code for code in range(256) if not (law == "ulaw" and code == 0x7F))  # -0 -> +0
    assert encode(decode(codes)) == codes


def test_alaw_and_ulaw_differ() -> None:
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype("<i2").tobytes()
    assert g711.ulaw_encode(tone) != g711.alaw_encode(tone)
    # decoding A-law as μ-law is badly wrong, so the codec choice matters
    wrong = np.frombuffer(g711.ulaw_decode(g711.alaw_encode(tone)), dtype="<i2").astype(int)
    right = np.frombuffer(g711.alaw_decode(g711.alaw_encode(tone)), dtype="<i2").astype(int)
    original = np.frombuffer(tone, dtype="<i2").astype(int)
    assert np.max(np.abs(right - original)) < 300
    assert np.max(np.abs(wrong - original)) > 3000


def test_sipp_alaw_capture_decodes_to_speech_level_audio() -> None:
    if not G711A_PCAP.exists():
        pytest.skip("sip-tester's g711a.pcap is not installed")
    from gateway.rtp.packet import RtpPacket
    from tests.helpers.pcap import read_udp

    payload = b"".join(RtpPacket.parse(d.payload).payload for d in read_udp(G711A_PCAP))
    audio = np.frombuffer(PCMA.decode(payload), dtype="<i2").astype(float)
    assert len(audio) == len(payload)
    rms = np.sqrt(np.mean(audio**2))
    assert 100 < rms < 20000  # audible, not clipped noise
    assert PCMA.encode(PCMA.decode(payload)) == payload


# -- registry ----------------------------------------------------------------------


def test_capabilities_in_preference_order() -> None:
    assert CodecRegistry().capabilities() == [
        ("PCMU", 8000, 0),
        ("PCMA", 8000, 8),
        (TELEPHONE_EVENT, 8000, None),
    ]


def test_lookup_is_case_insensitive_and_alaw_stays_alaw() -> None:
    registry = CodecRegistry()
    codec = registry.get("pcma")
    assert codec is PCMA
    assert codec.encode is g711.alaw_encode
    assert codec.decode is g711.alaw_decode
    assert registry.get("PCMU", 8000) is PCMU
    assert registry.get("PCMU", 16000) is None
    assert registry.get("opus") is None
    assert registry.get(TELEPHONE_EVENT) is None  # not an audio codec
    assert registry.by_static_payload_type(8) is PCMA
    assert registry.by_static_payload_type(0) is PCMU
    assert registry.by_static_payload_type(18) is None
    assert "PcMa" in registry


def test_frame_sizes() -> None:
    assert PCMU.frame_bytes == 160
    assert PCMA.samples_per_frame == 160
    assert PCMA.pcm_frame_bytes == 320
    frame = bytes(PCMA.pcm_frame_bytes)
    assert len(PCMA.encode(frame)) == PCMA.frame_bytes


def test_an_alaw_only_registry_offers_no_ulaw() -> None:
    registry = CodecRegistry([PCMA], telephone_event=False)
    assert registry.capabilities() == [("PCMA", 8000, 8)]
    assert registry.get("PCMU") is None


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError):
        CodecRegistry([PCMU, PCMU])
