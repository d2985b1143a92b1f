"""pocketsphinx STT on phone audio: espeak-ng speech, 8 kHz, recognised against a grammar of expected
phrases; stream behaviour (empty finals, timestamps, close) and the grammar builder."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr

from gateway.providers.base import ProviderError, SttOptions, Transcript
from gateway.providers.pocketsphinx_stt import PocketsphinxStt, build_grammar, grammar_words

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

FRAME = 320
PHRASES = ("what are your opening hours", "goodbye", "yes", "no", "book an appointment", "thank you", "1")


def speech(text: str, tmp_path: Path, voice: str = "en-us") -> bytes:
    """``text`` spoken by espeak-ng, as 8 kHz 16-bit PCM between 0.3 s silences, whole 20 ms frames."""
    path = tmp_path / f"{voice}-{abs(hash(text))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    pcm = np.asarray(soxr.resample(samples, rate, 8000), dtype="<i2").tobytes()
    silence = bytes(2 * 2400)
    pcm = silence + pcm + silence
    return pcm[: len(pcm) // FRAME * FRAME]


async def recognise(stt: PocketsphinxStt, keywords: tuple[str, ...], utterances: list[bytes]) -> list[Transcript]:
    """Send each utterance in 20 ms frames, finalize after each; the finals in order."""
    stream = await stt.connect(SttOptions(keywords=keywords))
    results = stream.results()
    out = []
    for pcm in utterances:
        for i in range(0, len(pcm), FRAME):
            await stream.send(pcm[i : i + FRAME])
        await stream.finalize()
        out.append(await asyncio.wait_for(anext(results), 30))
    await stream.close()
    assert [t async for t in results] == []  # close ends results()
    return out


@pytest.mark.parametrize("voice", ["en-us", "en"])
@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("what are your opening hours", "what are your opening hours"),
        ("goodbye", "goodbye"),
        ("yes", "yes"),
        ("book an appointment", "book an appointment"),
        ("press one", "one"),  # "1" in the grammar is spoken "one"; "press" is not in it
    ],
)
def test_expected_phrases_are_recognised_on_phone_audio(said: str, expected: str, voice: str, tmp_path: Path) -> None:
    [final] = asyncio.run(recognise(PocketsphinxStt(), PHRASES, [speech(said, tmp_path, voice)]))
    assert expected in final.text
    assert final.is_final and final.speech_final


def test_several_utterances_in_one_stream_with_timestamps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    said = ["yes", "what are your opening hours", "goodbye"]
    audio = [speech(s, tmp_path) for s in said]
    started = time.perf_counter()
    finals = asyncio.run(recognise(PocketsphinxStt(), PHRASES, audio))
    elapsed = time.perf_counter() - started
    assert [f.text for f in finals] == said
    offset = 0.0
    for pcm, final in zip(audio, finals, strict=True):
        length = len(pcm) / 16000
        # Speech starts after the 0.3 s lead-in (less the 0.3 s pre-roll) and ends before the tail.
        assert offset <= final.start < final.end <= offset + length
        assert final.confidence == 1.0
        offset += length
    with capsys.disabled():  # the real-time factor, for the record (includes connect and resampling)
        print(f"\npocketsphinx: {offset:.2f} s of audio in {elapsed:.2f} s, real-time factor {elapsed / offset:.3f}")


def test_out_of_grammar_speech_does_not_invent_a_phrase(tmp_path: Path) -> None:
    [final] = asyncio.run(recognise(PocketsphinxStt(), PHRASES, [speech("cancel my booking", tmp_path)]))
    assert final.text == ""


def test_an_unknown_word_drops_its_phrase_and_the_rest_still_works(tmp_path: Path) -> None:
    keywords = ("zzqxw blorfle", "goodbye", "yes")
    [final] = asyncio.run(recognise(PocketsphinxStt(), keywords, [speech("goodbye", tmp_path)]))
    assert final.text == "goodbye"


def test_only_unknown_words_fall_back_to_free_dictation(tmp_path: Path) -> None:
    [final] = asyncio.run(recognise(PocketsphinxStt(), ("zzqxw",), [speech("yes", tmp_path)]))
    assert final.is_final  # the general model: whatever it heard, it must not crash or hang


def test_no_keywords_decodes_with_the_general_language_model(tmp_path: Path) -> None:
    async def go() -> bool:
        stream = await PocketsphinxStt().connect(SttOptions())
        grammar = getattr(stream, "grammar", None)
        await stream.close()
        return bool(grammar)

    assert asyncio.run(go()) is False
    [final] = asyncio.run(recognise(PocketsphinxStt(), (), [speech("hello", tmp_path)]))
    assert final.is_final and final.speech_final


def test_finalize_without_speech_gives_an_empty_final() -> None:
    finals = asyncio.run(recognise(PocketsphinxStt(), PHRASES, [bytes(8000), b""]))
    assert [(f.text, f.is_final, f.speech_final) for f in finals] == [("", True, True)] * 2


def test_only_8khz_linear16_is_taken() -> None:
    stt = PocketsphinxStt()
    assert stt.accepts("linear16") and not stt.accepts("mulaw") and not stt.accepts("alaw")
    for options in (SttOptions(encoding="mulaw"), SttOptions(sample_rate=16000)):
        with pytest.raises(ProviderError) as info:
            asyncio.run(stt.connect(options))
        assert info.value.kind == "bad_request"


def test_an_overlong_utterance_is_cut_into_finals(tmp_path: Path) -> None:
    pcm = speech("yes", tmp_path)
    noise = (np.random.default_rng(7).normal(0, 2000, 8000 * 3)).astype("<i2").tobytes()

    async def go() -> list[Transcript]:
        stream = await PocketsphinxStt(max_utterance_seconds=1.0).connect(SttOptions(keywords=PHRASES))
        for i in range(0, len(noise), FRAME):
            await stream.send(noise[i : i + FRAME])
        for i in range(0, len(pcm), FRAME):
            await stream.send(pcm[i : i + FRAME])
        await stream.finalize()
        await stream.close()
        return [t async for t in stream.results()]

    finals = asyncio.run(go())
    assert len(finals) >= 3 and all(f.is_final for f in finals)
    assert [f.speech_final for f in finals[:-1]] == [False] * (len(finals) - 1) and finals[-1].speech_final


# -- the grammar -----------------------------------------------------------------------------------


def test_grammar_words_speak_digits_and_drop_punctuation() -> None:
    assert grammar_words("Press 1, or 23!") == ["press", "one", "or", "two", "three"]
    assert grammar_words("What\u2019s up?") == ["what's", "up"]
    assert grammar_words("  ...  ") == []


def test_grammar_lists_known_phrases_once() -> None:
    known = {"goodbye", "opening", "hours", "one"}.__contains__
    grammar = build_grammar(("Goodbye", "zzqxw blorf", "opening hours", "goodbye!", "1"), known)
    assert grammar is not None
    assert "<key> = goodbye | opening hours | one;" in grammar
    assert "public <utterance> = <key>+;" in grammar and "zzqxw" not in grammar
    assert build_grammar(("zzqxw",), lambda w: False) is None


def test_grammar_with_a_garbage_loop() -> None:
    grammar = build_grammar(("yes",), lambda w: True, garbage_weight=1e-20)
    assert grammar is not None
    assert "( /1/ <key> | /1e-20/ <garbage> )+" in grammar
    assert "garbage_aa | garbage_ae" in grammar
    [final] = asyncio.run(recognise(PocketsphinxStt(garbage_weight=1e-20), ("yes", "goodbye"), [bytes(3200)]))
    assert final.text == ""
