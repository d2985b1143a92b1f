"""The caller-side VAD: WebRTC's verdicts on real synthetic speech, noise and tones, and the hysteresis."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import webrtcvad

from gateway.pipeline.vad import (
    FRAME_BYTES,
    FRAME_SECONDS,
    SpeechEnded,
    SpeechStarted,
    Vad,
    VadEvent,
    VadOptions,
)

SPEECH = "Please book me a table for two people tomorrow evening"
SILENCE = np.zeros(8000, dtype="<i2")  # one second


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """espeak-ng speech resampled to 8 kHz 16-bit mono by sox."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: `make install` installs it")
    directory = tmp_path_factory.mktemp("vad")
    wav, raw = directory / "speech.wav", directory / "speech.raw"
    subprocess.run(["espeak-ng", "-w", str(wav), SPEECH], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(wav), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", "-t", "raw", str(raw)],
        check=True,
        capture_output=True,
    )
    return np.frombuffer(Path(raw).read_bytes(), dtype="<i2")


def frames(samples: np.ndarray) -> Iterator[bytes]:
    data = samples.astype("<i2").tobytes()
    for offset in range(0, len(data) - FRAME_BYTES + 1, FRAME_BYTES):
        yield data[offset : offset + FRAME_BYTES]


def arrival(index: int) -> float:
    """Frame ``index`` arrives when its 20 ms have been spoken, starting at t=100 s."""
    return 100.0 + (index + 1) * FRAME_SECONDS


def run(vad: Vad, samples: np.ndarray) -> list[tuple[float, VadEvent]]:
    """(time reported, event) for each event."""
    out = []
    for i, frame in enumerate(frames(samples)):
        event = vad.process(frame, arrival(i))
        if event is not None:
            out.append((arrival(i), event))
    return out


def loud_frames(samples: np.ndarray) -> list[int]:
    peaks = [int(np.abs(np.frombuffer(f, dtype="<i2")).max()) for f in frames(samples)]
    return [i for i, peak in enumerate(peaks) if peak > 500]


def test_speech_between_silences_is_one_run_from_onset_to_end(speech: np.ndarray) -> None:
    signal = np.concatenate([SILENCE, speech, SILENCE])
    loud = loud_frames(signal)
    vad = Vad()
    events = run(vad, signal)
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechEnded]
    (started_when, started), (ended_when, ended) = events
    assert abs(started.at - arrival(loud[0])) <= 0.06
    assert started_when == pytest.approx(started.at + FRAME_SECONDS)  # two voiced frames = 40 ms
    # WebRTC's own hangover voices a few frames past the last loud one
    assert -0.1 <= ended.at - arrival(loud[-1]) <= 0.2
    assert ended_when == pytest.approx(ended.at + 0.3)  # 0.3 s of unvoiced frames
    assert not vad.speaking
    assert vad.voiced_seconds == 0.0
    assert vad.last_voiced_at == ended.at


def test_voiced_seconds_grows_during_speech(speech: np.ndarray) -> None:
    vad = Vad()
    signal = np.concatenate([SILENCE, speech])
    seen = []
    for i, frame in enumerate(frames(signal)):
        vad.process(frame, arrival(i))
        seen.append(vad.voiced_seconds)
    assert vad.speaking
    assert vad.onset_at is not None and vad.onset_at > 100.9
    # espeak voices most of its frames; the run counts only voiced ones
    assert 0.6 * len(speech) / 8000 <= seen[-1] <= len(speech) / 8000
    assert seen == sorted(seen)


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_digital_silence_never_triggers(aggressiveness: int) -> None:
    vad = Vad(VadOptions(aggressiveness=aggressiveness))
    assert run(vad, np.zeros(8000 * 5, dtype="<i2")) == []
    assert vad.last_voiced_at is None


def reference_events(verdicts: list[bool], start_frames: int = 2, stop_frames: int = 15) -> list[VadEvent]:
    """The hysteresis written out naively, over WebRTC's raw per-frame verdicts."""
    out: list[VadEvent] = []
    speaking, run_start, run, unvoiced, last = False, 0, 0, 0, 0.0
    for i, voiced in enumerate(verdicts):
        if voiced:
            last = arrival(i)
            if speaking:
                unvoiced = 0
            else:
                run_start = i if run == 0 else run_start
                run += 1
                if run >= start_frames:
                    speaking, run = True, 0
                    out.append(SpeechStarted(at=arrival(run_start)))
        elif speaking:
            unvoiced += 1
            if unvoiced >= stop_frames:
                speaking, unvoiced = False, 0
                out.append(SpeechEnded(at=last))
        else:
            run = 0
    return out


def verdicts(samples: np.ndarray, aggressiveness: int) -> list[bool]:
    detector = webrtcvad.Vad(aggressiveness)
    return [bool(detector.is_speech(f, 8000)) for f in frames(samples)]


def test_white_noise_follows_webrtc() -> None:
    """Observed: white noise at -30 dBFS (RMS 1000) for 3 s after silence. Modes 0 and 1 voice every
    frame of it: one run as long as the noise. Mode 2 voices bursts while its noise model adapts (about
    two seconds), then next to nothing. Mode 3 voices only the first five frames."""
    noise = (np.random.default_rng(7).standard_normal(8000 * 3) * 1000).astype("<i2")
    signal = np.concatenate([SILENCE, noise, SILENCE])
    runs: dict[int, list[VadEvent]] = {}
    for aggressiveness in range(4):
        raw = verdicts(signal, aggressiveness)
        runs[aggressiveness] = [e for _, e in run(Vad(VadOptions(aggressiveness=aggressiveness)), signal)]
        assert runs[aggressiveness] == reference_events(raw)
        assert isinstance(runs[aggressiveness][0], SpeechStarted)
        assert runs[aggressiveness][0].at == pytest.approx(arrival(50))
    for aggressiveness in (0, 1):
        assert len(runs[aggressiveness]) == 2
        assert runs[aggressiveness][1].at >= arrival(199)
    assert sum(verdicts(signal, 2)[150:200]) < 15  # the last second of noise
    assert runs[2][-1].at < arrival(199)
    assert len(runs[3]) == 2 and runs[3][1].at - runs[3][0].at <= 0.1


def test_noise_floor_onset_is_a_short_run() -> None:
    """Observed: any new steady sound, even noise at -70 dBFS, is voiced for about four frames while
    WebRTC's noise model adapts; the run is far too short for a 0.2 s voice barge-in."""
    noise = (np.random.default_rng(3).standard_normal(8000 * 2) * 10).astype("<i2")
    vad = Vad()
    longest = 0.0
    events = []
    for i, frame in enumerate(frames(np.concatenate([SILENCE, noise]))):
        event = vad.process(frame, arrival(i))
        longest = max(longest, vad.voiced_seconds)
        if event is not None:
            events.append(event)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    assert longest <= 0.1


def test_tone_is_speech_to_webrtc() -> None:
    """Observed: a steady 1 kHz tone at -12 dBFS is voiced on every frame in every mode, so it is one
    speech run (WebRTC's own hangover voices a few frames after it stops)."""
    t = np.arange(8000 * 2) / 8000
    tone = (np.sin(2 * np.pi * 1000 * t) * 8000).astype("<i2")
    signal = np.concatenate([SILENCE, tone, SILENCE])
    for aggressiveness in range(4):
        raw = verdicts(signal, aggressiveness)
        assert all(raw[50:150])
        events = [e for _, e in run(Vad(VadOptions(aggressiveness=aggressiveness)), signal)]
        assert events == reference_events(raw)
        assert isinstance(events[0], SpeechStarted) and events[0].at == pytest.approx(arrival(50))
        assert arrival(149) <= events[1].at <= arrival(149) + 0.2


# -- hysteresis with a scripted classifier --------------------------------------------------------------


class Script:
    """Per-frame verdicts from a string of 1/0."""

    def __init__(self, pattern: str) -> None:
        self.verdicts = iter(pattern)

    def __call__(self, pcm: bytes, sample_rate: int) -> bool:
        assert sample_rate == 8000 and len(pcm) == FRAME_BYTES
        return next(self.verdicts) == "1"


def scripted(pattern: str, options: VadOptions | None = None) -> list[tuple[int, VadEvent]]:
    vad = Vad(options, classifier=Script(pattern))
    out = []
    for i in range(len(pattern)):
        event = vad.process(bytes(FRAME_BYTES), arrival(i))
        if event is not None:
            out.append((i, event))
    return out


@pytest.mark.parametrize(
    ("pattern", "options", "expected"),
    [
        # a single voiced frame is not speech with start_frames=2
        ("0001000000", VadOptions(), []),
        # two in a row: starts on the second, at the first
        ("0011" + "0" * 14, VadOptions(), [(3, SpeechStarted(at=arrival(2)))]),
        # 15 unvoiced frames (0.3 s) end it at the last voiced frame
        ("011" + "0" * 15, VadOptions(), [(2, SpeechStarted(at=arrival(1))), (17, SpeechEnded(at=arrival(2)))]),
        # a 14-frame gap does not end the run
        ("011" + "0" * 14 + "1" + "0" * 15, VadOptions(),
         [(2, SpeechStarted(at=arrival(1))), (32, SpeechEnded(at=arrival(17)))]),
        # interrupted onsets restart the count
        ("10101100", VadOptions(start_frames=2), [(5, SpeechStarted(at=arrival(4)))]),
        ("1101110", VadOptions(start_frames=3), [(5, SpeechStarted(at=arrival(3)))]),
        ("1" + "0" * 5, VadOptions(start_frames=1, stop_seconds=0.1),
         [(0, SpeechStarted(at=arrival(0))), (5, SpeechEnded(at=arrival(0)))]),
    ],
)  # fmt: skip
def test_hysteresis(pattern: str, options: VadOptions, expected: list[tuple[int, VadEvent]]) -> None:
    assert scripted(pattern, options) == expected


def test_voiced_seconds_counts_voiced_frames_of_the_run() -> None:
    pattern = "1" + "0" * 3 + "11" + "0" * 3 + "111" + "0" * 15
    vad = Vad(classifier=Script(pattern))
    seen = []
    for i in range(len(pattern)):
        vad.process(bytes(FRAME_BYTES), arrival(i))
        seen.append(round(vad.voiced_seconds, 6))
    assert seen[:4] == [0.0] * 4  # a lone voiced frame starts nothing
    assert vad.last_voiced_at == arrival(11)
    assert seen[5] == 0.04 and seen[8] == 0.04 and seen[9] == 0.06
    assert seen[11] == 0.1 and seen[25] == 0.1  # gaps inside the run are not counted
    assert seen[-1] == 0.0 and not vad.speaking


@pytest.mark.parametrize("size", [0, 160, 318, 322, 640])
def test_frames_of_the_wrong_length_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="320 bytes"):
        Vad().process(bytes(size), 0.0)


@pytest.mark.parametrize(
    "options",
    [{"aggressiveness": 4}, {"aggressiveness": -1}, {"start_frames": 0}, {"stop_seconds": -0.1}],
)
def test_bad_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VadOptions(**options)  # type: ignore[arg-type]
