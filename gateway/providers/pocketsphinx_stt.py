"""Local speech recognition with pocketsphinx 5: the offline default transcriber, constrained by a JSGF
grammar of the phrases the assistant expects (the rules responder's keywords, yes/no, goodbye, digits...).

Front end. The wheel's only acoustic model (en-us, PTM) was trained on 16 kHz audio with a 130-6800 Hz
mel filterbank. Run at ``samprate=8000`` the filterbank has to stop below 4 kHz (``upperf`` 3500-3800,
``nfft`` 256), which moves every filter and gives cepstra the model has never seen: on espeak-ng test
speech that recognised none of six grammar phrases. So telephone audio is upsampled 8 -> 16 kHz (libsoxr)
and decoded with the model's own front end (its ``feat.params`` spelled out below); the empty band above
4 kHz costs a little but the grammar absorbs it.

Normalisation. Cepstral mean normalisation is per utterance (``cmn batch``): the decoder's live estimate
starts from ``cmninit`` 40,3,-1 while band-limited phone speech sits near 37,15,-29, and feeding audio
in 20 ms pieces made the first utterances of a call come out empty or wrong. The utterance is therefore
decoded whole when it is finalised (in the stream's worker thread), which is also why there are no
interim hypotheses. The utterance starts at the first frame whose energy says speech (with a 300 ms
pre-roll), so a long silence before it does not dilute the mean.

Grammar. Each expected phrase is an alternative and the utterance is one or more of them. Speech
that fits no path through the grammar comes out empty (pocketsphinx: "final result does not match the
grammar"), which is the rejection we get; a long unrelated sentence can still surface a phrase it
resembles ("like to talk about" ~ "book an appointment"). An optional *garbage* path
(``garbage_weight``) adds a loop over single-phone pseudo-words (one per phone of the model) with that
prior per phone, for out-of-grammar speech to fall into; garbage words never reach the transcript. It is
off by default because it did not help: on 22 espeak-ng utterances (11 phrases x voices en and en-us: 8
in the grammar, 3 outside it) the plain grammar got 18 right, garbage at weight 1e-20 or 1e-30 also 18
(the loop is then too dear to be taken), and at 1e-5 only 9: it takes short words (yes, hello) too,
as a free phone loop fits band-limited audio better than any word does.

Digits in a phrase are spoken as words ("1" -> "one"), as is what the recognizer writes. Words missing from the dictionary drop their phrase (with a warning);
with no usable phrase at all the wheel's general language model decodes freely (poorly on phone audio).
"""

from __future__ import annotations

import asyncio
import audioop
import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from gateway.observability.logging import get_logger
from gateway.providers.base import SAMPLE_RATE, AudioEncoding, ProviderError, SttOptions, Transcript

__all__ = [
    "DEFAULT_GARBAGE_WEIGHT",
    "PocketsphinxStream",
    "PocketsphinxStt",
    "build_grammar",
    "grammar_words",
]

NAME = "pocketsphinx"
MODEL_RATE = 16000
FRAMES_PER_SECOND = 100  # the front end's frame rate (10 ms shift)
DEFAULT_GARBAGE_WEIGHT: float | None = None  # no garbage loop (see the module doc for the measurements)
GARBAGE_PREFIX = "garbage_"

# The context-independent phones of the wheel's en-us model (CMUdict's 39; SIL and the fillers excluded).
PHONES = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY", "JH",
    "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)

# The model's feat.params, spelled out: a decoder configured from them with samprate 16000 (see module doc).
_FRONT_END: dict[str, Any] = {
    "lowerf": 130.0,
    "upperf": 6800.0,
    "nfilt": 25,
    "transform": "dct",
    "lifter": 22,
    "feat": "1s_c_d_dd",
    "svspec": "0-12/13-25/26-38",
    "agc": "none",
    "cmn": "batch",
    "varnorm": False,
    # Spectral noise subtraction is off: over the empty 4-8 kHz band it cost "goodbye", "book an
    # appointment" and "one" with the en voice (measured, 8 phrases x 2 voices: 12/16 on, 15/16 off).
    "remove_noise": False,
    "wip": 0.2,  # word insertion penalty (default 0.65): fewer stray short words ("... hours one")
    "samprate": float(MODEL_RATE),
    "dither": True,  # espeak-ng and comfort-noise-free trunks send exact digital silence (log(0) energy)
    "seed": 1,  # dither from a fixed seed: the same audio gives the same words
    "bestpath": False,  # the lattice pass over a phone loop takes seconds and changes nothing here
}

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DIGIT_WORDS = dict(zip("0123456789", _NUMBER_WORDS, strict=True))
_WORD = re.compile(r"[a-z']+")


def grammar_words(phrase: str) -> list[str]:
    """The dictionary words of ``phrase``: lower case, punctuation dropped, each digit spoken."""
    text = phrase.lower().replace("\u2019", "'")
    text = "".join(f" {_DIGIT_WORDS[c]} " if c in _DIGIT_WORDS else c for c in text)
    return [w.strip("'") for w in _WORD.findall(text) if w.strip("'")]


def build_grammar(
    phrases: Iterable[str],
    known: Callable[[str], bool],
    *,
    garbage_weight: float | None = DEFAULT_GARBAGE_WEIGHT,
) -> str | None:
    """A JSGF grammar whose utterance is one or more of ``phrases`` (or garbage, see module doc).

    A phrase with a word the dictionary lacks (``known(word)`` false) is dropped. ``garbage_weight=None``
    leaves the garbage loop out (every utterance is forced onto the phrases). None when no phrase
    survives."""
    keys: list[str] = []
    for phrase in phrases:
        words = grammar_words(phrase)
        if words and all(known(w) for w in words):
            alt = " ".join(words)
            if alt not in keys:
                keys.append(alt)
    if not keys:
        return None
    lines = ["#JSGF V1.0;", "grammar expected;", f"<key> = {' | '.join(keys)};"]
    if garbage_weight is None:
        lines.append("public <utterance> = <key>+;")
    else:
        lines.append("<garbage> = " + " | ".join(GARBAGE_PREFIX + p.lower() for p in PHONES) + ";")
        lines.append(f"public <utterance> = ( /1/ <key> | /{garbage_weight:g}/ <garbage> )+;")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Result:
    text: str
    confidence: float
    end_frame: int


class PocketsphinxStt:
    """An :class:`~gateway.providers.base.SttProvider` running pocketsphinx locally (see module doc).

    ``speech_rms``: frame energy (16-bit RMS) that opens an utterance; ``max_utterance_seconds``: an
    utterance this long is decoded and a new one started (``speech_final=False``); ``queue_size`` bounds
    the transcripts waiting for ``results()`` (the oldest is dropped, with a warning)."""

    name = NAME

    def __init__(
        self,
        *,
        garbage_weight: float | None = DEFAULT_GARBAGE_WEIGHT,
        speech_rms: int = 250,
        max_utterance_seconds: float = 20.0,
        queue_size: int = 64,
    ) -> None:
        self.garbage_weight = garbage_weight
        self.speech_rms = speech_rms
        self.max_utterance_seconds = max_utterance_seconds
        self.queue_size = queue_size
        self._log = get_logger("stt").bind(provider=NAME)

    def accepts(self, encoding: AudioEncoding) -> bool:
        return encoding == "linear16"

    async def connect(self, options: SttOptions) -> PocketsphinxStream:
        if options.encoding != "linear16" or options.sample_rate != SAMPLE_RATE:
            raise ProviderError(NAME, "bad_request", "pocketsphinx takes 8 kHz linear16 audio")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pocketsphinx")
        loop = asyncio.get_running_loop()
        try:
            decoder, grammar = await loop.run_in_executor(executor, self._make_decoder, options.keywords)
        except (RuntimeError, OSError, ValueError) as exc:
            executor.shutdown(wait=False)
            raise ProviderError(NAME, "unavailable", f"cannot start pocketsphinx: {exc}") from None
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return PocketsphinxStream(decoder, executor, provider=self, grammar=grammar)

    def _make_decoder(self, keywords: tuple[str, ...]) -> tuple[Any, bool]:
        """Runs in the stream's worker thread (loading the model takes ~0.1 s). Returns the decoder and
        whether it is grammar-constrained."""
        from pocketsphinx import Config, Decoder, get_model_path

        config = Config(loglevel="FATAL", lm=None)
        config["featparams"] = os.devnull  # the front end is _FRONT_END, not the model's file
        for key, value in _FRONT_END.items():
            config[key] = value
        decoder = Decoder(config)

        def known(word: str) -> bool:
            return decoder.lookup_word(word) is not None

        grammar = build_grammar(keywords, known, garbage_weight=self.garbage_weight)
        dropped = [k for k in keywords if not grammar_words(k) or not all(map(known, grammar_words(k)))]
        if dropped:
            self._log.warning("stt_grammar_phrases_dropped", phrases=dropped, reason="word not in dictionary")
        if grammar is None:
            decoder.add_lm_file("dictation", os.path.join(get_model_path(), "en-us", "en-us.lm.bin"))
            decoder.activate_search("dictation")
            return decoder, False
        if self.garbage_weight is not None:
            for i, phone in enumerate(PHONES):
                decoder.add_word(GARBAGE_PREFIX + phone.lower(), phone, i == len(PHONES) - 1)
        decoder.add_jsgf_string("expected", grammar)
        decoder.activate_search("expected")
        return decoder, True


class PocketsphinxStream:
    """One call's recognition stream (see module doc). Decoding runs in ``executor`` (one thread)."""

    PRE_ROLL_FRAMES = 15  # 300 ms of 20 ms frames kept before the energy gate opens

    def __init__(self, decoder: Any, executor: ThreadPoolExecutor, *, provider: PocketsphinxStt, grammar: bool) -> None:
        self._decoder = decoder
        self._executor = executor
        self._provider = provider
        self.grammar = grammar
        self._loop = asyncio.get_running_loop()
        self._results: asyncio.Queue[Transcript | None] = asyncio.Queue(maxsize=max(2, provider.queue_size))
        self._pre_roll: list[bytes] = []
        self._utterance = bytearray()  # 8 kHz PCM of the utterance in progress
        self._in_utterance = False
        self._audio_bytes = 0  # everything sent since the stream opened
        self._utt_start = 0.0
        self._closed = False

    @property
    def _seconds(self) -> float:
        return self._audio_bytes / (2 * SAMPLE_RATE)

    async def send(self, audio: bytes) -> None:
        if self._closed or not audio:
            return
        if len(audio) % 2:
            raise ProviderError(NAME, "bad_request", "16-bit PCM must have an even number of bytes")
        self._audio_bytes += len(audio)
        if not self._in_utterance:
            self._pre_roll.append(audio)
            if len(self._pre_roll) > self.PRE_ROLL_FRAMES:
                self._pre_roll.pop(0)
            if audioop.rms(audio, 2) < self._provider.speech_rms:
                return
            self._in_utterance = True
            self._utt_start = self._seconds - sum(map(len, self._pre_roll)) / (2 * SAMPLE_RATE)
            self._utterance += b"".join(self._pre_roll)
            self._pre_roll.clear()
        else:
            self._utterance += audio
        if len(self._utterance) >= self._provider.max_utterance_seconds * 2 * SAMPLE_RATE:
            await self._end_utterance(speech_final=False)

    async def finalize(self) -> None:
        if self._closed:
            return
        await self._end_utterance(speech_final=True)

    async def _end_utterance(self, *, speech_final: bool) -> None:
        if not self._in_utterance:
            now = self._seconds
            self._emit(Transcript(text="", is_final=True, speech_final=speech_final, confidence=0.0,
                                  start=now, end=now))
            return
        pcm = bytes(self._utterance)
        start = self._utt_start
        self._utterance.clear()
        self._in_utterance = False
        try:
            result = await self._loop.run_in_executor(self._executor, self._decode, pcm)
        except RuntimeError as exc:
            raise ProviderError(NAME, "server", f"decoding failed: {exc}") from None
        end = start + result.end_frame / FRAMES_PER_SECOND if result.text else self._seconds
        self._emit(Transcript(text=result.text, is_final=True, speech_final=speech_final,
                              confidence=result.confidence, start=start, end=end))

    def _decode(self, pcm: bytes) -> _Result:
        """Worker thread: upsample and decode one whole utterance."""
        samples = np.frombuffer(pcm, dtype="<i2")
        up = np.asarray(soxr.resample(samples, SAMPLE_RATE, MODEL_RATE, quality="HQ"), dtype="<i2").tobytes()
        d = self._decoder
        d.start_utt()
        d.process_raw(up, False, True)
        d.end_utt()
        if d.hyp() is None:  # "final result does not match the grammar": nothing recognisable
            return _Result(text="", confidence=0.0, end_frame=0)
        words: list[str] = []
        word_frames = garbage_frames = end_frame = 0
        for seg in d.seg():
            word = seg.word
            frames = max(0, seg.end_frame - seg.start_frame + 1)
            if word.startswith(GARBAGE_PREFIX):
                garbage_frames += frames
            elif word.startswith(("<", "[", "(")):  # <s>, <sil>, [NOISE], (NULL)
                continue
            else:
                words.append(word.split("(")[0])  # "read(2)": an alternate pronunciation
                word_frames += frames
                end_frame = seg.end_frame + 1
        spoken = word_frames + garbage_frames
        confidence = word_frames / spoken if spoken else 0.0
        return _Result(text=" ".join(words), confidence=confidence, end_frame=end_frame)

    def _emit(self, transcript: Transcript | None) -> None:
        """Queue for ``results()``; the queue is bounded, so a reader that stopped reading loses the oldest."""
        while True:
            try:
                self._results.put_nowait(transcript)
                return
            except asyncio.QueueFull:
                dropped = self._results.get_nowait()
                self._provider._log.warning("stt_transcript_dropped", reason="queue_full",
                                            text=dropped.text if dropped else None)

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
        self._emit(None)
        # A decode in progress finishes in the worker thread; nothing waits for it.
        with contextlib.suppress(RuntimeError):
            self._executor.shutdown(wait=False, cancel_futures=True)
