"""The three fake vendor servers (Deepgram, OpenAI, ElevenLabs) running on loopback in a background thread,
so a synchronous integration test can point a gateway process at them and still read what they
received (``deepgram.connections``, ``openai.requests``, ``elevenlabs.requests``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tests.fakes._server import serve_app
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.elevenlabs_server import FakeElevenLabs
from tests.fakes.openai_server import FakeOpenAI

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
    ready = threading.Event()
    urls: dict[str, str] = {}
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    failure: list[BaseException] = []

    async def main() -> None:
        nonlocal stop, loop
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        async with (serve_app(deepgram.app) as dg, serve_app(openai.app) as oa,
                    serve_app(elevenlabs.app) as el):
            urls.update(deepgram=dg, openai=oa, elevenlabs=el)
            ready.set()
            await stop.wait()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=thread_main, name="fake-vendors", daemon=True)
    thread.start()
    ready.wait(15)
    if failure or not urls:
        raise RuntimeError(f"fake vendors did not start: {failure!r}")
    try:
        yield FakeVendors(deepgram, openai, elevenlabs, urls)
    finally:
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
