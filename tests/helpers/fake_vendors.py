"""The three fake vendor servers (Deepgram, OpenAI, ElevenLabs) running on loopback in a background thread,
so a synchronous integration test can point a gateway process at them and still read what they
received (``deepgram.connections``, ``openai.requests``, ``elevenlabs.requests``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.elevenlabs_server import FakeElevenLabs
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers.http_thread import serve_apps_in_thread

KEY = "test-key"


@dataclass
class FakeVendors:
    deepgram: FakeDeepgram
    openai: FakeOpenAI
    elevenlabs: FakeElevenLabs
    urls: dict[str, str]

    def providers_yaml(self) -> str:
        """The gateway config's ``providers:`` block pointing at the fakes."""
        return (
            "providers:\n"
            f"  deepgram: {{api_key: {KEY}, base_url: \"{self.urls['deepgram']}\"}}\n"
            f"  openai: {{api_key: {KEY}, base_url: \"{self.urls['openai']}/v1\"}}\n"
            f"  elevenlabs: {{api_key: {KEY}, base_url: \"{self.urls['elevenlabs']}\"}}\n"
        )


@contextlib.contextmanager
def fake_vendors(*, transcripts: Sequence[str] = (), openai_script: Any = None,
                 tts_mode: str = "tone") -> Iterator[FakeVendors]:
    deepgram = FakeDeepgram(list(transcripts), api_key=KEY)
    openai = FakeOpenAI(openai_script, api_key=KEY)
    elevenlabs = FakeElevenLabs(api_key=KEY, mode=tts_mode)  # type: ignore[arg-type]
    with serve_apps_in_thread([deepgram.app, openai.app, elevenlabs.app]) as (dg, oa, el):
        yield FakeVendors(deepgram, openai, elevenlabs, {"deepgram": dg, "openai": oa, "elevenlabs": el})
