"""Local speech recognition with pocketsphinx: the offline default transcriber, constrained by a grammar of
the phrases the assistant expects (the rules responder's keywords, yes/no, goodbye...).

The wheel's only acoustic model (en-us) is a 16 kHz one, so telephone audio is resampled 8 → 16 kHz
(streaming soxr); the band above 4 kHz stays empty, which costs accuracy, hence the grammar: an
utterance is recognised as one or more of the expected phrases (``<key>+``). Speech that matches none of
them mostly comes out empty (the responder's fallback then asks again); a filler-word garbage model was
tried and made matters worse on band-limited audio, so list the phrases callers say whole ("what are your
opening hours") as well as the keywords. With no expected phrases the wheel's general language model
decodes freely.

Decoding is CPU work and runs in one worker thread per stream, never on the event loop. The utterance
(from the frame whose energy says speech started, with a short pre-roll) is decoded whole when it is
finalised: the model normalises cepstra over the utterance (``-cmn batch``), and feeding it in pieces
made it pick wrong phrases on short utterances, so the price is a decode of roughly half the
utterance's length after the caller stops (measured real-time factor 0.3-0.8 on this machine).
"""

from __future__ import annotations

import asyncio
import audioop
import re
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import soxr

from gateway.observability.logging import get_logger
from gateway.providers.base import AudioEncoding, ProviderError, SttOptions, Transcript

__all__ = ["PocketsphinxStream", "PocketsphinxStt", "build_grammar"]

NAME = "pocketsphinx"
FRAME_BYTES = 320
SPEECH_RMS = 250  # frame energy (16-bit RMS) that opens an utterance
PRE_ROLL_FRAMES = 15  # 300 ms kept before the energy gate opens
MAX_UTTERANCE_SECONDS = 20.0

_WORD = re.compile(r"[a-z']+")


def build_grammar(phrases: tuple[str, ...], known: Any) -> str | None:
    """A JSGF grammar (see module doc) from ``phrases``; words the dictionary lacks are dropped
    (``known(word) -> bool``). None when no phrase survives."""
    keys: list[str] = []
    for phrase in phrases:
        words = _WORD.findall(phrase.lower())
        if words and all(known(w) for w in words):
            alt = " ".join(words)
            if alt not in keys:
                keys.append(alt)
    if not keys:
        return None
    return (
        "#JSGF V1.0;\ngrammar expected;\n"
        "public <utterance> = <key>+;\n"
        f"<key> = {' | '.join(keys)};\n"
    )


class PocketsphinxStt:
    """An :class:`~gateway.providers.base.SttProvider` running pocketsphinx locally (see module doc)."""

    name = NAME

    def __init__(self) -> None:
        self._log = get_logger("stt").bind(provider=NAME)

    def accepts(self, encoding: AudioEncoding) -> bool:
        return encoding == "linear16"

    async def connect(self, options: SttOptions) -> PocketsphinxStream:
        if options.encoding != "linear16" or options.sample_rate != 8000:
            raise ProviderError(NAME, "bad_request", "pocketsphinx takes 8 kHz linear16 audio")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pocketsphinx")
        loop = asyncio.get_running_loop()
        try:
            decoder = await loop.run_in_executor(executor, _make_decoder, options.keywords, self._log)
        except Exception as exc:
            executor.shutdown(wait=False)
            raise ProviderError(NAME, "unavailable", f"cannot start pocketsphinx: {exc}") from None
        return PocketsphinxStream(decoder, executor)


def _make_decoder(keywords: tuple[str, ...], log: Any) -> Any:
    from pocketsphinx import Decoder

    decoder = Decoder(loglevel="FATAL")
    if not keywords:
        return decoder
    grammar = build_grammar(keywords, lambda w: decoder.lookup_word(w) is not None)
    dropped = [k for k in keywords if not all(decoder.lookup_word(w) for w in _WORD.findall(k.lower()))]
    if dropped:
        log.warning("stt_grammar_words_unknown", phrases=dropped)
    if grammar is None:
        return decoder
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "expected.gram"
        path.write_text(grammar)
        return Decoder(loglevel="FATAL", jsgf=str(path))


class PocketsphinxStream:
    """One call's recognition stream (see module doc)."""

    def __init__(self, decoder: Any, executor: ThreadPoolExecutor) -> None:
        self._decoder = decoder
        self._executor = executor
        self._loop = asyncio.get_running_loop()
        self._results: asyncio.Queue[Transcript | None] = asyncio.Queue()
        self._resampler = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality="HQ")
        self._pre_roll: list[bytes] = []
        self._pending = bytearray()  # 16 kHz audio not yet decoded
        self._in_utterance = False
        self._utt_bytes = 0
        self._audio_seconds = 0.0
        self._utt_start = 0.0
        self._closed = False

    async def send(self, audio: bytes) -> None:
        if self._closed:
            return
        self._audio_seconds += len(audio) / 16000
        if not self._in_utterance:
            self._pre_roll.append(audio)
            if len(self._pre_roll) > PRE_ROLL_FRAMES:
                self._pre_roll.pop(0)
            if len(audio) >= 2 and audioop.rms(audio, 2) >= SPEECH_RMS:
                self._in_utterance = True
                self._utt_start = self._audio_seconds - len(self._pre_roll) * 0.02
                for frame in self._pre_roll:
                    self._queue_audio(frame)
                self._pre_roll.clear()
            return
        self._queue_audio(audio)
        if self._utt_bytes > MAX_UTTERANCE_SECONDS * 32000:
            await self.finalize()

    def _queue_audio(self, audio: bytes) -> None:
        import numpy as np

        up = self._resampler.resample_chunk(np.frombuffer(audio, dtype="<i2"))
        self._pending += up.astype("<i2").tobytes()
        self._utt_bytes += len(audio) * 2

    def _decode(self, data: bytes) -> str:
        d = self._decoder
        d.start_utt()
        d.process_raw(data, False, True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr if hyp is not None else ""

    async def finalize(self) -> None:
        if self._closed:
            return
        if not self._in_utterance:
            self._results.put_nowait(Transcript(text="", is_final=True, speech_final=True,
                                                start=self._audio_seconds, end=self._audio_seconds))
            return
        self._in_utterance = False
        data = bytes(self._pending)
        self._pending.clear()
        self._utt_bytes = 0
        start = self._utt_start
        try:
            text = await self._loop.run_in_executor(self._executor, self._decode, data)
        except RuntimeError as exc:
            raise ProviderError(NAME, "server", f"decoding failed: {exc}") from None
        self._results.put_nowait(Transcript(text=text, is_final=True, speech_final=True, start=start,
                                            end=self._audio_seconds))

    async def results(self) -> AsyncIterator[Transcript]:
        while True:
            item = await self._results.get()
            if item is None:
                return
            yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._results.put_nowait(None)
        self._executor.shutdown(wait=False, cancel_futures=True)
