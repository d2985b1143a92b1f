"""The jitter buffer sheds excess delay in quiet frames: the G.711 quiet test the call gives it."""

from __future__ import annotations

import math
import struct

import pytest

from gateway.call_media import QUIET_LEVEL, quiet_frame_test
from gateway.codecs.registry import PCMA, PCMU, Codec


def _pcm(amplitude: float) -> bytes:
    return b"".join(struct.pack("<h", round(amplitude * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(160))


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_silence_and_faint_noise_are_quiet_speech_is_not(codec: Codec) -> None:
    is_quiet = quiet_frame_test(codec)
    assert is_quiet is not None
    assert is_quiet(codec.encode(b"\x00\x00" * 160))
    assert is_quiet(codec.encode(_pcm(QUIET_LEVEL * 0.5)))  # about -46 dBFS
    assert not is_quiet(codec.encode(_pcm(3000)))  # speech level
    # one loud sample (a click) in an otherwise silent frame is not quiet
    click = bytearray(codec.encode(b"\x00\x00" * 160))
    click[80] = codec.encode(struct.pack("<h", 8000))[0]
    assert not is_quiet(bytes(click))
