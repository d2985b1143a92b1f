"""The speaker: 20 ms frames for the playout tick, and what the caller heard when a barge-in cuts a reply."""

from __future__ import annotations

import math
import struct

from gateway.pipeline.speaker import (
    FRAME_BYTES,
    Speaker,
    UtteranceFinished,
    UtteranceStarted,
    UtteranceVoiced,
)


def tone(seconds: float, amplitude: int = 8000) -> bytes:
    n = int(8000 * seconds)
    return struct.pack(f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(n)))


def drain(speaker: Speaker, start: float = 0.0) -> tuple[list[bytes], float]:
    frames = []
    now = start
    while (frame := speaker.next_frame(now)) is not None:
        frames.append(frame)
        now += 0.02
    return frames, now


def test_plays_whole_frames_and_pads_the_tail() -> None:
    sp = Speaker()
    utt = sp.start("reply")
    sp.chunk(utt, "Hello there.")
    sp.feed(utt, tone(0.05))  # 2.5 frames
    sp.end(utt)
    frames, _ = drain(sp)
    assert [len(f) for f in frames] == [FRAME_BYTES] * 3
    assert frames[2][160:] == bytes(160)  # the padding is silence
    events = sp.pop_events()
    assert isinstance(events[0], UtteranceStarted) and events[0].at == 0.0
    assert isinstance(events[1], UtteranceVoiced)
    finished = [e for e in events if isinstance(e, UtteranceFinished)]
    assert finished[0].heard.complete and finished[0].heard.text == "Hello there."
    assert not sp.speaking


def test_waits_for_audio_of_an_unfinished_chunk() -> None:
    sp = Speaker()
    utt = sp.start("reply")
    sp.chunk(utt, "Hi")
    sp.feed(utt, tone(0.01))  # half a frame, more to come
    assert sp.next_frame(0.0) is None
    assert sp.speaking
    sp.feed(utt, tone(0.01))
    assert sp.next_frame(0.02) is not None


def test_barge_in_keeps_only_the_heard_words() -> None:
    sp = Speaker()
    utt = sp.start("reply")
    sp.chunk(utt, "The first sentence is here.")
    sp.feed(utt, tone(0.4))
    sp.chunk(utt, "one two three four five six seven eight")
    sp.feed(utt, tone(0.8))
    sp.end(utt)
    now = 0.0
    for _ in range(20 + 20):  # all of chunk one, half of chunk two
        assert sp.next_frame(now) is not None
        now += 0.02
    heard = sp.flush(now)
    assert len(heard) == 1 and not heard[0].complete
    assert heard[0].text.startswith("The first sentence is here. one two three")
    assert "seven" not in heard[0].text and "eight" not in heard[0].text
    assert sp.next_frame(now) is None  # silence from the very next tick


def test_flush_spares_a_non_interruptible_message() -> None:
    sp = Speaker()
    first = sp.start("first-message", interruptible=False)
    sp.chunk(first, "Welcome")
    sp.feed(first, tone(0.1))
    sp.end(first)
    reply = sp.start("reply")
    sp.chunk(reply, "queued reply")
    sp.feed(reply, tone(0.1))
    assert not [h for h in sp.flush(0.0) if h.utterance_id == first]
    assert sp.pending(first) and not sp.pending(reply)
    frames, _ = drain(sp)
    assert len(frames) == 5


def test_utterances_play_in_order() -> None:
    sp = Speaker()
    a = sp.start("say")
    b = sp.start("say")
    sp.chunk(b, "b")
    sp.feed(b, tone(0.02, amplitude=1000))
    sp.end(b)
    assert sp.next_frame(0.0) is None  # a has no audio yet: b waits behind it
    sp.chunk(a, "a")
    sp.feed(a, tone(0.02, amplitude=9000))
    sp.end(a)
    frames, _ = drain(sp)
    assert len(frames) == 2
    order = [e.heard.text for e in sp.pop_events() if isinstance(e, UtteranceFinished)]
    assert order == ["a", "b"]
