"""The Vapi assistant model: Vapi's defaults, provider validation, old and current shapes, overrides, config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.assistants import (
    Assistant,
    AssistantError,
    merge_overrides,
    override_variable_values,
    parse_assistant,
    unknown_fields,
)
from gateway.assistants.plans import DEFAULT_ACKNOWLEDGEMENT_PHRASES, DEFAULT_INTERRUPTION_PHRASES
from gateway.assistants.providers import (
    CustomLLMModel,
    DeepgramTranscriber,
    ElevenLabsVoice,
    EspeakVoice,
    OpenAIModel,
    PocketsphinxTranscriber,
    RulesModel,
)
from gateway.assistants.tools import DtmfTool, EndCallTool, FunctionTool, TransferCallTool
from gateway.cli import main as cli_main
from gateway.config import ConfigError, load_config, load_config_text

REPO = Path(__file__).resolve().parents[2]

# A Vapi assistant as a user would write it against Vapi's docs, using the providers this gateway runs.
FULL: dict[str, Any] = {
    "name": "Support",
    "firstMessage": "Hi, how can I help?",
    "firstMessageMode": "assistant-waits-for-user",
    "firstMessageInterruptionsEnabled": True,
    "transcriber": {"provider": "deepgram", "model": "nova-2", "language": "en-US", "keywords": ["Acme:2"],
                    "endpointing": 300, "fallbackPlan": {"transcribers": [{"provider": "pocketsphinx"}]}},
    "model": {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "maxTokens": 300,
        "messages": [{"role": "system", "content": "You are a support agent."}],
        "tools": [
            {"type": "function", "async": True, "function": {"name": "lookup_order", "description": "Find an order",
             "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}},
             "server": {"url": "https://tools.example/hook", "timeoutSeconds": 5},
             "messages": [{"type": "request-start", "content": "One moment.", "blocking": True},
                          {"type": "request-response-delayed", "content": "Still looking.", "timingMilliseconds": 2000}]},
            {"type": "endCall"},
            {"type": "transferCall", "destinations": [
                {"type": "number", "number": "+15550001111", "message": "Transferring you now"},
                {"type": "sip", "sipUri": "sip:agent@pbx.example", "sipHeaders": {"X-Team": "support"}}]},
            {"type": "dtmf"},
        ],
    },
    "voice": {
        "provider": "11labs",
        "voiceId": "burt",
        "model": "eleven_flash_v2_5",
        "speed": 1.1,
        "chunkPlan": {
            "enabled": True,
            "minCharacters": 20,
            "punctuationBoundaries": [".", "!", "?", "\u3002"],
            "formatPlan": {
                "enabled": True,
                "numberToDigitsCutoff": 3000,
                "replacements": [{"type": "exact", "key": "ST", "value": "street", "replaceAllEnabled": True},
                                 {"type": "regex", "regex": r"\bRD\b", "value": "road",
                                  "options": [{"type": "ignore-case", "enabled": True}]}],
                "formattersEnabled": ["markdown", "number"],
            },
        },
        "fallbackPlan": {"voices": [{"provider": "espeak", "voiceId": "en-us"}]},
    },
    "startSpeakingPlan": {
        "waitSeconds": 0.8,
        "smartEndpointingPlan": {"provider": "livekit", "waitFunction": "200 + 8000 * x"},
        "transcriptionEndpointingPlan": {"onPunctuationSeconds": 0.2, "onNoPunctuationSeconds": 2, "onNumberSeconds": 1},
        "customEndpointingRules": [{"type": "assistant", "regex": "phone number", "timeoutSeconds": 3}],
    },
    "stopSpeakingPlan": {"numWords": 2, "voiceSeconds": 0.3, "backoffSeconds": 2,
                         "acknowledgementPhrases": ["okay"], "interruptionPhrases": ["stop"]},
    "silenceTimeoutSeconds": 45,
    "maxDurationSeconds": 900,
    "endCallPhrases": ["goodbye"],
    "endCallMessage": "Goodbye.",
    "voicemailMessage": "Please call back.",
    "backgroundSound": "off",
    "keypadInputPlan": {"enabled": True, "timeoutSeconds": 3, "delimiters": "#"},
    "serverMessages": ["end-of-call-report", "status-update"],
    "server": {"url": "https://hooks.example/vapi", "secret": "s3cret", "timeoutSeconds": 10,
               "headers": {"X-Env": "test"}},
    "metadata": {"team": "support"},
    "analysisPlan": {"summaryPrompt": "Summarise"},
}


def test_missing_sections_take_vapi_defaults_and_offline_providers() -> None:
    a = parse_assistant({})
    assert isinstance(a.model, RulesModel) and a.model.fallback == "Sorry, I did not catch that."
    assert isinstance(a.voice, EspeakVoice)
    assert isinstance(a.transcriber, PocketsphinxTranscriber)
    assert a.first_message is None
    assert a.first_message_mode == "assistant-speaks-first"
    assert a.first_message_interruptions_enabled is False
    assert a.start_speaking_plan.wait_seconds == 0.4
    tep = a.start_speaking_plan.transcription_endpointing_plan
    assert (tep.on_punctuation_seconds, tep.on_no_punctuation_seconds, tep.on_number_seconds) == (0.1, 1.5, 0.5)
    sp = a.stop_speaking_plan
    assert (sp.num_words, sp.voice_seconds, sp.backoff_seconds) == (0, 0.2, 1.0)
    assert sp.acknowledgement_phrases == list(DEFAULT_ACKNOWLEDGEMENT_PHRASES) and "uh-huh" in sp.acknowledgement_phrases
    assert sp.interruption_phrases == list(DEFAULT_INTERRUPTION_PHRASES) and "actually" in sp.interruption_phrases
    assert (a.silence_timeout_seconds, a.max_duration_seconds) == (30, 600)
    assert a.keypad_input_plan.enabled is False and a.keypad_input_plan.timeout_seconds == 2
    assert a.voice.chunk_plan.enabled and a.voice.chunk_plan.min_characters == 30
    assert a.voice.chunk_plan.format_plan.enabled and a.voice.chunk_plan.format_plan.number_to_digits_cutoff == 2025
    assert a.message_plan.idle_messages == [] and a.idle_policy() is None
    assert a.webhook_server() is None and a.denoising_enabled() is False and a.is_recording_enabled()
    assert "end-of-call-report" in a.server_messages
    assert unknown_fields(a) == []


def test_vapi_camel_case_reads_as_snake_case_attributes() -> None:
    a = parse_assistant(FULL)
    assert a.first_message_mode == "assistant-waits-for-user" and a.first_message_interruptions_enabled
    assert isinstance(a.transcriber, DeepgramTranscriber) and a.transcriber.endpointing == 300
    assert a.transcriber.fallback_plan is not None
    assert isinstance(a.transcriber.fallback_plan.transcribers[0], PocketsphinxTranscriber)
    assert isinstance(a.model, OpenAIModel)
    assert (a.model.model, a.model.temperature, a.model.max_tokens) == ("gpt-4o-mini", 0.2, 300)
    assert a.model.system_prompt == "You are a support agent."
    function, end_call, transfer, dtmf = a.model.tools
    assert isinstance(function, FunctionTool) and function.async_ and function.function is not None
    assert function.function.name == "lookup_order" and function.server is not None
    assert function.server.timeout_seconds == 5
    assert function.messages[0].blocking and function.messages[1].timing_milliseconds == 2000
    assert isinstance(end_call, EndCallTool) and isinstance(dtmf, DtmfTool)
    assert isinstance(transfer, TransferCallTool)
    assert [d.type for d in transfer.destinations] == ["number", "sip"]
    assert isinstance(a.voice, ElevenLabsVoice) and a.voice.voice_id == "burt" and a.voice.speed == 1.1
    fp = a.voice.chunk_plan.format_plan
    assert a.voice.chunk_plan.min_characters == 20 and fp.number_to_digits_cutoff == 3000
    assert [r.type for r in fp.replacements] == ["exact", "regex"] and fp.formatters_enabled == ["markdown", "number"]
    assert a.voice.fallback_plan is not None and isinstance(a.voice.fallback_plan.voices[0], EspeakVoice)
    assert a.start_speaking_plan.wait_seconds == 0.8
    assert a.start_speaking_plan.transcription_endpointing_plan.on_no_punctuation_seconds == 2
    assert a.start_speaking_plan.custom_endpointing_rules[0].timeout_seconds == 3
    assert a.stop_speaking_plan.num_words == 2 and a.stop_speaking_plan.interruption_phrases == ["stop"]
    assert a.keypad_input_plan.delimiters == ["#"]
    server = a.webhook_server()
    assert server is not None and server.url == "https://hooks.example/vapi" and server.secret == "s3cret"
    assert a.analysis_plan == {"summaryPrompt": "Summarise"}
    assert unknown_fields(a) == []


def test_custom_llm_model_needs_an_http_url() -> None:
    a = parse_assistant({"model": {"provider": "custom-llm", "url": "http://127.0.0.1:9000/v1", "model": "local"}})
    assert isinstance(a.model, CustomLLMModel) and a.model.timeout_seconds == 20
    with pytest.raises(AssistantError, match=r"^assistant\.model\.url: .*http"):
        parse_assistant({"model": {"provider": "custom-llm", "url": "ftp://x", "model": "m"}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"voice": {"provider": "azure", "voiceId": "x"}},
         "assistants.demo.voice.provider: unsupported provider 'azure' (supported: 11labs, espeak)"),
        ({"model": {"provider": "anthropic", "model": "claude"}},
         "assistants.demo.model.provider: unsupported provider 'anthropic' (supported: openai, custom-llm, rules)"),
        ({"transcriber": {"provider": "assembly-ai"}},
         "assistants.demo.transcriber.provider: unsupported provider 'assembly-ai' (supported: deepgram, pocketsphinx)"),
        ({"voice": {"provider": "espeak", "fallbackPlan": {"voices": [{"provider": "cartesia", "voiceId": "v"}]}}},
         "assistants.demo.voice.fallbackPlan.voices.0.provider: unsupported provider 'cartesia' (supported: 11labs, espeak)"),
        ({"voice": {"voiceId": "x"}}, "assistants.demo.voice.provider: missing provider (supported: 11labs, espeak)"),
    ],
)
def test_unsupported_providers_are_rejected_naming_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(AssistantError) as info:
        parse_assistant(data, where="assistants.demo")
    assert str(info.value) == message


def test_elevenlabs_is_an_alias_of_11labs() -> None:
    a = parse_assistant({"voice": {"provider": "elevenlabs", "voiceId": "abc"}})
    assert isinstance(a.voice, ElevenLabsVoice) and a.voice.provider == "11labs" and a.voice.model == "eleven_turbo_v2"
    with pytest.raises(AssistantError, match=r"^assistant\.voice\.voiceId: required field missing$"):
        parse_assistant({"voice": {"provider": "elevenlabs"}})


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ([], "x", "must be a JSON object, not an array"),
        ({"firstMessage": 5}, "x.firstMessage", "valid string"),
        ({"firstMessageMode": "speak"}, "x.firstMessageMode", "assistant-speaks-first"),
        ({"stopSpeakingPlan": {"numWords": 11}}, "x.stopSpeakingPlan.numWords", "less than or equal to 10"),
        ({"startSpeakingPlan": {"transcriptionEndpointingPlan": {"onPunctuationSeconds": -1}}},
         "x.startSpeakingPlan.transcriptionEndpointingPlan.onPunctuationSeconds", "greater than or equal to 0"),
        ({"model": {"provider": "openai"}}, "x.model.model", "required field missing"),
        ({"model": {"provider": "openai", "model": "m", "tools": [{"type": "sms"}]}}, "x.model.tools.0.type",
         "unsupported type 'sms' (supported: function, endCall, transferCall, dtmf)"),
        ({"model": {"provider": "openai", "model": "m", "tools": [{"type": "function"}]}}, "x.model.tools.0",
         "needs function"),
        ({"model": {"provider": "openai", "model": "m", "tools": [{"type": "function", "function": {"name": "a b"}}]}},
         "x.model.tools.0.function.name", "1-64 characters"),
        ({"model": {"provider": "openai", "model": "m", "tools": [
            {"type": "transferCall", "destinations": [{"type": "sip", "sipUri": "agent@pbx"}]}]}},
         "x.model.tools.0.destinations.0.sipUri", "sip:"),
        ({"voice": {"provider": "espeak", "chunkPlan": {"formatPlan": {"replacements": [
            {"type": "regex", "regex": "(", "value": "x"}]}}}},
         "x.voice.chunkPlan.formatPlan.replacements.0", "invalid regular expression"),
        ({"hooks": [{"on": "customer.speech.timeout", "options": {"timeoutSeconds": 0}, "do": []}]},
         "x.hooks.0.options.timeoutSeconds", "greater than or equal to 1"),
        ({"hooks": [{"on": "customer.speech.timeout", "do": [{"type": "say", "exact": 5}]}]},
         "x.hooks.0.do.0.exact", "a valid string or a valid list"),
        ({"firstMessage": "Hi {{ name "}, "x.firstMessage", "template syntax error"),
        ({"messagePlan": {"idleMessages": ["{% if %}"]}}, "x.messagePlan.idleMessages.0", "template syntax error"),
        ({"backgroundSound": "jazz"}, "x.backgroundSound", "'off', 'office'"),
        ({"serverUrl": "hooks.example"}, "x.serverUrl", "http"),
        ({"model": {"provider": "rules", "rules": [{"keywords": [], "reply": "x"}]}}, "x.model.rules.0.keywords",
         "at least 1 item"),
    ],
)
def test_errors_name_the_dotted_field_path(data: Any, path: str, fragment: str) -> None:
    with pytest.raises(AssistantError) as info:
        parse_assistant(data, where="x")
    assert info.value.path == path
    assert fragment in info.value.message
    assert str(info.value).startswith(f"{path}: ")


def test_rules_responder_model() -> None:
    a = parse_assistant({"model": {"provider": "rules", "fallback": "Pardon?", "rules": [
        {"keywords": ["opening hours", "open"], "reply": "We are open nine to five."},
        {"keywords": ["bye"], "reply": "Goodbye.", "endCall": True}]}})
    assert isinstance(a.model, RulesModel) and a.model.fallback == "Pardon?"
    assert a.model.rules[0].keywords == ["opening hours", "open"] and a.model.rules[0].end_call is False
    assert a.model.rules[1].end_call is True


def test_idle_messages_from_the_old_message_plan() -> None:
    # Vapi docs "Idle messages", Configuration example.
    a = parse_assistant({"messagePlan": {
        "idleMessages": ["Are you still there?", "Can I help you with anything else?"],
        "idleTimeoutSeconds": 15, "idleMessageMaxSpokenCount": 3, "idleMessageResetCountOnUserSpeechEnabled": True,
        "silenceTimeoutMessage": "I'll end our call now. Thank you!"}, "silenceTimeoutSeconds": 60})
    policy = a.idle_policy()
    assert policy is not None
    assert policy.messages == ("Are you still there?", "Can I help you with anything else?")
    assert (policy.timeout_seconds, policy.max_spoken_count, policy.reset_on_user_speech) == (15, 3, True)
    assert a.message_plan.silence_timeout_message == "I'll end our call now. Thank you!"
    assert a.silence_timeout_seconds == 60
    # The docs' defaults when only the messages are given.
    default = parse_assistant({"messagePlan": {"idleMessages": ["Hello?"]}}).idle_policy()
    assert default is not None and (default.timeout_seconds, default.max_spoken_count) == (10, 3)
    assert default.reset_on_user_speech is False


def test_idle_messages_from_a_customer_speech_timeout_hook_win_over_the_message_plan() -> None:
    a = parse_assistant({
        "messagePlan": {"idleMessages": ["old"]},
        "hooks": [
            {"on": "call.ending", "do": [{"type": "tool", "tool": {"type": "function"}}],
             "filters": [{"type": "oneOf", "key": "call.endedReason", "oneOf": ["pipeline-error"]}]},
            {"on": "customer.speech.timeout",
             "options": {"timeoutSeconds": 12, "triggerMaxCount": 2, "triggerResetMode": "onUserSpeech"},
             "do": [{"type": "say", "exact": ["Are you there?", "Hello?"]}, {"type": "say", "exact": "Still here."}]},
            {"on": "customer.speech.timeout[turn=1]", "do": [{"type": "say", "prompt": "Ask if they need help"}]},
        ],
    })
    first, second = a.idle_policies()
    assert first.messages == ("Are you there?", "Hello?", "Still here.")
    assert (first.timeout_seconds, first.max_spoken_count, first.reset_on_user_speech) == (12, 2, True)
    assert second.messages == () and second.prompts == ("Ask if they need help",)
    assert (second.timeout_seconds, second.max_spoken_count, second.reset_on_user_speech) == (7.5, 3, False)
    assert a.idle_policy() == first
    assert a.hooks[0].on == "call.ending"  # other hooks are kept as data


@pytest.mark.parametrize(
    ("data", "enabled"),
    [
        ({"backgroundDenoisingEnabled": True}, True),
        ({"backgroundDenoisingEnabled": False}, False),
        ({"backgroundSpeechDenoisingPlan": {"smartDenoisingPlan": {}}}, True),
        ({"backgroundSpeechDenoisingPlan": {"smartDenoisingPlan": {"enabled": False}}}, False),
        ({"backgroundSpeechDenoisingPlan": {"fourierDenoisingPlan": {"enabled": True}}}, True),
        ({"backgroundSpeechDenoisingPlan": {}, "backgroundDenoisingEnabled": True}, False),  # the current shape wins
    ],
)
def test_denoising_from_old_or_current_shape(data: dict[str, Any], enabled: bool) -> None:
    assert parse_assistant(data).denoising_enabled() is enabled


def test_webhook_server_from_old_or_current_shape() -> None:
    old = parse_assistant({"serverUrl": "http://127.0.0.1:9000/hook", "serverUrlSecret": "k"}).webhook_server()
    assert old is not None and (old.url, old.secret, old.timeout_seconds) == ("http://127.0.0.1:9000/hook", "k", 20)
    new = parse_assistant({"server": {"url": "https://a.example/h"}, "serverUrl": "http://old.example/h"})
    server = new.webhook_server()
    assert server is not None and server.url == "https://a.example/h"


def test_recording_from_old_or_current_shape() -> None:
    assert parse_assistant({"recordingEnabled": False}).is_recording_enabled() is False
    assert parse_assistant({"artifactPlan": {"recordingEnabled": False}, "recordingEnabled": True}).is_recording_enabled() is False
    assert parse_assistant({"artifactPlan": {"recordingFormat": "mp3"}, "recordingEnabled": False}).is_recording_enabled() is False


def test_unknown_fields_are_kept_and_reported_by_dotted_path() -> None:
    a = parse_assistant({
        "fooBar": 1,
        "voice": {"provider": "espeak", "pitch": 50, "chunkPlan": {"formatPlan": {"mystery": True}}},
        "model": {"provider": "rules", "tools": [{"type": "endCall", "extra": "x"}]},
        "hooks": [{"on": "customer.speech.timeout", "do": [{"type": "say", "exact": "hi", "weird": 1}]}],
    })
    assert sorted(unknown_fields(a)) == [
        "fooBar", "hooks.0.do.0.weird", "model.tools.0.extra", "voice.chunkPlan.formatPlan.mystery", "voice.pitch",
    ]
    assert a.model_extra == {"fooBar": 1}


# -- assistantOverrides ------------------------------------------------------------------------------


def _base() -> Assistant:
    return parse_assistant({
        "firstMessage": "Hello",
        "model": {"provider": "openai", "model": "gpt-4o", "temperature": 0.3,
                  "messages": [{"role": "system", "content": "Be brief."}], "tools": [{"type": "endCall"}]},
        "voice": {"provider": "11labs", "voiceId": "burt", "speed": 0.9},
        "stopSpeakingPlan": {"numWords": 2},
    })


def test_overrides_deep_merge_over_the_assistant() -> None:
    merged = merge_overrides(_base(), {
        "firstMessage": "Hi {{name}}",
        "model": {"temperature": 0.9},
        "voice": {"speed": 1.2},
        "stopSpeakingPlan": {"voiceSeconds": 0.4},
        "variableValues": {"name": "John"},
    })
    assert merged.first_message == "Hi {{name}}"
    assert isinstance(merged.model, OpenAIModel)
    assert (merged.model.model, merged.model.temperature) == ("gpt-4o", 0.9)
    assert merged.model.system_prompt == "Be brief."
    assert isinstance(merged.voice, ElevenLabsVoice) and (merged.voice.voice_id, merged.voice.speed) == ("burt", 1.2)
    assert (merged.stop_speaking_plan.num_words, merged.stop_speaking_plan.voice_seconds) == (2, 0.4)
    assert "variableValues" not in (merged.model_extra or {})


def test_overrides_with_another_provider_replace_the_section_and_null_resets() -> None:
    merged = merge_overrides(_base(), {"voice": {"provider": "espeak"}, "stopSpeakingPlan": None})
    assert isinstance(merged.voice, EspeakVoice) and unknown_fields(merged) == []  # no 11labs leftovers
    assert merged.stop_speaking_plan.num_words == 0
    # The same provider under its alias merges.
    same = merge_overrides(_base(), {"voice": {"provider": "elevenlabs", "speed": 1.0}})
    assert isinstance(same.voice, ElevenLabsVoice) and same.voice.voice_id == "burt"


def test_overrides_tools_append() -> None:
    merged = merge_overrides(_base(), {"tools:append": [{"type": "dtmf"}]})
    assert [t.type for t in merged.model.tools] == ["endCall", "dtmf"]
    offline = merge_overrides(parse_assistant({}), {"tools:append": [{"type": "endCall"}]})
    assert isinstance(offline.model, RulesModel) and [t.type for t in offline.model.tools] == ["endCall"]


def test_invalid_overrides_name_the_override_path() -> None:
    with pytest.raises(AssistantError, match=r"^assistantOverrides\.voice\.provider: unsupported provider 'azure'"):
        merge_overrides(_base(), {"voice": {"provider": "azure", "voiceId": "x"}})
    with pytest.raises(AssistantError, match=r"^assistantOverrides\.variableValues: must be a JSON object"):
        override_variable_values({"variableValues": ["x"]})
    assert override_variable_values({"variableValues": {"name": "John"}}) == {"name": "John"}
    assert override_variable_values({}) == {}


def test_async_alias_survives_a_merge() -> None:
    a = parse_assistant({"model": {"provider": "rules", "tools": [
        {"type": "function", "async": True, "function": {"name": "f"}}]}})
    merged = merge_overrides(a, {"firstMessage": "x"})
    tool = merged.model.tools[0]
    assert isinstance(tool, FunctionTool) and tool.async_ is True


# -- config integration ------------------------------------------------------------------------------------


def test_config_parses_assistants_once_and_keeps_the_raw_dicts() -> None:
    config = load_config_text(
        "assistants:\n  demo: {firstMessage: Hello, model: {provider: rules}, voice: {provider: elevenlabs, voiceId: v}}\n",
        env={},
    )
    a = config.assistant("demo")
    assert a is config.assistant("demo")
    assert a.first_message == "Hello" and isinstance(a.voice, ElevenLabsVoice)
    assert config.assistants["demo"]["voice"]["provider"] == "elevenlabs"  # raw dict as written
    assert config.warnings == ()
    with pytest.raises(KeyError, match="ghost"):
        config.assistant("ghost")


def test_config_rejects_an_unsupported_provider_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"assistants\.demo\.voice\.provider: unsupported provider 'azure' "
                                          r"\(supported: 11labs, espeak\)"):
        load_config_text("assistants: {demo: {voice: {provider: azure, voiceId: x}}}", env={})


def test_config_warns_about_unknown_assistant_fields() -> None:
    config = load_config_text("assistants: {demo: {voice: {provider: espeak, pitch: 40}, colour: blue}}", env={})
    assert config.warnings == (
        "assistants.demo.colour: unknown field, ignored",
        "assistants.demo.voice.pitch: unknown field, ignored",
    )


def test_shipped_configs_hold_valid_assistants() -> None:
    assert isinstance(load_config(None, env={}).assistant("demo").model, RulesModel)
    example = load_config(REPO / "config" / "voicegw.example.yaml", env={})
    assert example.assistant("support").end_call_phrases == ["goodbye"]
    assert example.warnings == ()


def test_check_config_exits_2_naming_the_unsupported_provider(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("assistants:\n  demo:\n    transcriber: {provider: azure}\n")
    assert cli_main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "assistants.demo.transcriber.provider: unsupported provider 'azure' (supported: deepgram, pocketsphinx)" in err
    good = tmp_path / "good.yaml"
    good.write_text("assistants:\n  demo:\n    transcriber: {provider: deepgram}\n")
    assert cli_main(["check-config", str(good)]) == 0
