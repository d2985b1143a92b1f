"""Audio codecs (sans-IO core): G.711 PCMU/PCMA, the codec registry, streaming resampling.

Modules: ``g711`` (ITU-T G.711 via audioop), ``registry`` (``Codec``, ``CodecRegistry``),
``resample`` (``StreamResampler`` on soxr). Linear audio is 16-bit LE mono PCM.
"""
