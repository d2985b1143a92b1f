"""Whole conversations over SIP with a real phone (baresip): the caller hears the first message, speaks, the
transcript reaches the model with the assistant's variables substituted, and the caller hears the reply.

Two setups: the cloud providers (Deepgram, OpenAI, ElevenLabs) driven by their own SDKs against local
servers speaking their wire protocols, and the offline default of `make run` (pocketsphinx, the rules
responder, espeak-ng), which must hold a short conversation and hang up when the caller says goodbye.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from tests.fakes.elevenlabs_server import tone_seconds
from tests.helpers.baresip import RATE, call, read_wav, speech_wav, voiced_segments, write_wav
from tests.helpers.fake_vendors import fake_vendors
from tests.integration.harness import start_default_gateway, start_gateway

pytestmark = pytest.mark.integration

FIRST_MESSAGE = "Hello, this is the booking line."
REPLY = "Certainly. Which day suits you best?"
CALLER_SAYS = "I would like to book an appointment."

CLOUD_CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
log: {level: info}
assistants:
  booking:
    firstMessage: "FIRST_MESSAGE"
    model:
      provider: openai
      model: gpt-4o-mini
      messages:
        - role: system
          content: 'You book appointments for caller {{customer.number}} in {{ "now" | date: "%Y" }}.'
    voice: {provider: 11labs, voiceId: test-voice}
    transcriber: {provider: deepgram, model: nova-3}
    startSpeakingPlan: {waitSeconds: 0}
numbers:
  - {number: "*", assistant: booking}
""".replace("FIRST_MESSAGE", FIRST_MESSAGE)


def caller_audio(tmp_path: Path, parts: list[tuple[float, str | None]]) -> Path:
    """A WAV of silences (``(seconds, None)``) and spoken phrases (``(0, text)``)."""
    chunks = []
    for i, (seconds, text) in enumerate(parts):
        if text is None:
            chunks.append(np.zeros(int(seconds * RATE)))
        else:
            chunks.append(read_wav(speech_wav(text, tmp_path / f"part{i}.wav")))
    path = tmp_path / "caller.wav"
    write_wav(path, np.concatenate(chunks))
    return path


def test_cloud_providers_full_call(tmp_path: Path) -> None:
    with fake_vendors(transcripts=[CALLER_SAYS], openai_script=[REPLY]) as vendors:
        gw = start_gateway(tmp_path, CLOUD_CONFIG + vendors.providers_yaml())
        try:
            play = caller_audio(tmp_path, [(3.0, None), (0, "I would like to book an appointment"), (6.0, None)])
            result = call(f"sip:+15550001111@127.0.0.1:{gw.sip_port}", play=play, tmp_path=tmp_path, duration=9.0)
        finally:
            gw.stop()
        assert result.established, result.log
        heard = voiced_segments(result.recording)
        assert len(heard) >= 2, heard
        # 1. the first message, as the voice rendered it (the fake's tone lasts 60 ms per character)
        first = heard[0]
        assert first[0] < 0.8
        assert first[1] - first[0] == pytest.approx(tone_seconds(FIRST_MESSAGE), abs=0.15)
        # 2. the caller's words went to Deepgram as mu-law at 8 kHz, as they came off the wire
        query = vendors.deepgram.connections[0].query
        assert query["encoding"] == "mulaw" and query["sample_rate"] == "8000"
        # 3. the model got the transcript, and the system prompt with its variables substituted
        request = vendors.openai.requests[0]
        system = request["messages"][0]["content"]
        assert "{{" not in system and str(dt.datetime.now(dt.UTC).year) in system
        assert "for caller phone in" in system  # {{customer.number}}: the user part of the phone's From
        assert request["messages"][-1] == {"role": "user", "content": CALLER_SAYS}
        assert request["messages"][1] == {"role": "assistant", "content": FIRST_MESSAGE}
        # 4. the reply was spoken and heard after the caller finished
        texts = [r.text for r in vendors.elevenlabs.requests]
        assert texts[0] == FIRST_MESSAGE and " ".join(texts[1:]) == REPLY
        speech_end = voiced_segments(play)[0][1]
        reply = heard[1]
        assert speech_end < reply[0] < speech_end + 2.0
        total_tone = sum(tone_seconds(t) for t in texts[1:])
        assert reply[1] - reply[0] == pytest.approx(total_tone, abs=0.3)
        timing = gw.logs("turn_timing")
        assert timing and timing[0]["gateway_added_ms"] is not None


def test_offline_default_config_holds_a_conversation(tmp_path: Path) -> None:
    gw = start_default_gateway(tmp_path)
    try:
        play = caller_audio(tmp_path, [
            (7.0, None), (0, "where are you located"), (7.0, None), (0, "bye bye"), (8.0, None),
        ])
        result = call(f"sip:1000@127.0.0.1:{gw.sip_port}", play=play, tmp_path=tmp_path, duration=30.0)
        ended = gw.wait_for_log("conversation_ended", timeout=10)
    finally:
        gw.stop()
    assert result.established, result.log
    assert result.closed_by_remote, "the gateway hangs up after the goodbye"
    users = [line["text"] for line in gw.logs("transcript") if line.get("role") == "user"]
    assert any("located" in str(t) for t in users), users
    assert any("bye" in str(t) for t in users), users
    assert ended["reason"] == "assistant-ended-call"
    heard = voiced_segments(result.recording)
    spoken = voiced_segments(play)
    # greeting, the answer about the hours (after the question), the goodbye (after "goodbye")
    assert heard[0][0] < 1.0
    assert any(spoken[0][1] < s < spoken[0][1] + 3.0 for s, _ in heard)
    assert any(spoken[1][1] < s < spoken[1][1] + 3.0 for s, _ in heard)
