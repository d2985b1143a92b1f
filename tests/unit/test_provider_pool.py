"""gateway/pipeline/factory.py ProviderPool: the vendor clients are built when the gateway starts (or its
provider keys change), so the first call's setup does not build HTTP clients and load CA bundles while
other calls' audio waits on the event loop."""

from __future__ import annotations

import asyncio

from gateway.assistants.model import parse_assistant
from gateway.config import ProviderConfig, ProvidersConfig
from gateway.pipeline.factory import ProviderPool
from gateway.providers.deepgram import DeepgramStt
from gateway.providers.elevenlabs import ElevenLabsTts
from gateway.providers.openai_llm import OpenAiLlm

VENDOR_ASSISTANT = parse_assistant({
    "model": {"provider": "openai", "model": "gpt-4o-mini"},
    "voice": {"provider": "11labs", "voiceId": "v"},
    "transcriber": {"provider": "deepgram", "model": "nova-3"},
})


def _keys(url: str = "http://127.0.0.1:9") -> ProvidersConfig:
    return ProvidersConfig(deepgram=ProviderConfig(api_key="dg", base_url=url),
                           openai=ProviderConfig(api_key="oa", base_url=url),
                           elevenlabs=ProviderConfig(api_key="el", base_url=url))


def test_warm_builds_the_clients_a_call_then_uses() -> None:
    pool = ProviderPool(_keys())
    pool.warm()
    built = dict(pool._shared)
    assert sorted(type(c).__name__ for c in built.values()) == ["DeepgramStt", "ElevenLabsTts", "OpenAiLlm"]
    providers = pool.for_assistant(VENDOR_ASSISTANT)
    assert pool._shared == built  # nothing new was built for the call
    assert isinstance(providers.stt, DeepgramStt) and providers.stt in built.values()
    assert isinstance(providers.llm, OpenAiLlm) and providers.llm in built.values()
    assert isinstance(providers.tts[0], ElevenLabsTts) and providers.tts[0] in built.values()
    asyncio.run(pool.aclose())


def test_warm_without_keys_builds_nothing() -> None:
    pool = ProviderPool(ProvidersConfig())
    pool.warm()
    assert pool._shared == {}


def test_new_keys_are_built_at_once_calls_get_the_new_clients_and_shutdown_closes_both() -> None:
    pool = ProviderPool(_keys())
    pool.warm()
    old = pool.for_assistant(VENDOR_ASSISTANT)
    pool.update(_keys("http://127.0.0.1:10"))  # a config reload
    assert len(pool._shared) == 3
    new = pool.for_assistant(VENDOR_ASSISTANT)
    assert new.stt is not old.stt and new.llm is not old.llm and new.tts[0] is not old.tts[0]
    assert len(pool._shared) == 3
    asyncio.run(pool.aclose())
    # the replaced clients (kept for the calls that had them) are closed at shutdown too
    assert isinstance(old.llm, OpenAiLlm) and old.llm._client.is_closed()
    assert isinstance(old.tts[0], ElevenLabsTts) and old.tts[0]._http.is_closed
