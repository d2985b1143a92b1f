"""G.711 PCMU (μ-law) and PCMA (A-law) (ITU-T G.711; RTP payload format RFC 3551 §4.5.14).

Linear audio throughout the gateway is 16-bit signed little-endian PCM, mono. The codec
work is done by ``audioop`` (C, stdlib up to 3.12; the ``audioop-lts`` package provides
the same module on 3.13+), which works in native byte order, so on a big-endian host
the samples are swapped around it.
"""

from __future__ import annotations

import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

_SAMPLE_WIDTH = 2
_SWAP = sys.byteorder == "big"


def ulaw_encode(pcm: bytes) -> bytes:
    """16-bit LE linear PCM -> μ-law, one byte per sample."""
    if _SWAP:
        pcm = audioop.byteswap(pcm, _SAMPLE_WIDTH)
    return audioop.lin2ulaw(pcm, _SAMPLE_WIDTH)


def ulaw_decode(data: bytes) -> bytes:
    """μ-law -> 16-bit LE linear PCM."""
    pcm = audioop.ulaw2lin(data, _SAMPLE_WIDTH)
    return audioop.byteswap(pcm, _SAMPLE_WIDTH) if _SWAP else pcm


def alaw_encode(pcm: bytes) -> bytes:
    """16-bit LE linear PCM -> A-law, one byte per sample."""
    if _SWAP:
        pcm = audioop.byteswap(pcm, _SAMPLE_WIDTH)
    return audioop.lin2alaw(pcm, _SAMPLE_WIDTH)


def alaw_decode(data: bytes) -> bytes:
    """A-law -> 16-bit LE linear PCM."""
    pcm = audioop.alaw2lin(data, _SAMPLE_WIDTH)
    return audioop.byteswap(pcm, _SAMPLE_WIDTH) if _SWAP else pcm
