"""From a Vapi assistant (variables already substituted) to a conversation's :class:`SessionSettings`:
the start/stop speaking plans become the turn detector's options, ``voice.chunkPlan`` the chunker's,
old and new shapes of idle messages are folded, tools become the model's function list plus what the
session does for each (endCall, request-* messages)."""

from __future__ import annotations

from gateway.assistants import Assistant
from gateway.assistants.plans import CustomEndpointingRule as VapiEndpointingRule
from gateway.assistants.plans import RegexOption as VapiRegexOption
from gateway.assistants.providers import (
    DeepgramTranscriber,
    ElevenLabsVoice,
    EspeakVoice,
    ExactReplacement,
    RulesModel,
)
from gateway.assistants.tools import DtmfTool, EndCallTool, FunctionTool, TransferCallTool
from gateway.pipeline.chunker import PUNCTUATION_BOUNDARIES, ChunkOptions
from gateway.pipeline.formatter import (
    ExactReplacement as FormatExact,
)
from gateway.pipeline.formatter import (
    FormatOptions,
    RegexOption,
    RegexReplacement,
    Replacement,
)
from gateway.pipeline.settings import IdleSettings, KeypadSettings, SessionSettings, ToolBehaviour
from gateway.pipeline.turn import CustomEndpointingRule, RegexMatch, TurnOptions
from gateway.pipeline.vad import VadOptions
from gateway.providers.base import ChatMessage, LlmOptions, SttOptions, ToolSpec, TtsOptions

__all__ = ["expected_phrases", "settings_for", "tts_options"]

ESPEAK_DEFAULT_VOICE = "en-us"


def settings_for(assistant: Assistant) -> SessionSettings:
    a = assistant
    model = a.model
    messages = tuple(
        ChatMessage(role=m.role if m.role in ("system", "user", "assistant") else "system", content=m.content)  # type: ignore[arg-type]
        for m in model.messages
    )
    tools, behaviour = _tools(a)
    idle = a.idle_policy()
    msg_plan = a.message_plan
    keypad = a.keypad_input_plan
    return SessionSettings(
        first_message=a.first_message or None,
        first_message_mode=a.first_message_mode,
        first_message_interruptible=a.first_message_interruptions_enabled,
        messages=messages,
        tools=tools,
        tool_behaviour=behaviour,
        llm=LlmOptions(
            model=getattr(model, "model", None),
            temperature=model.temperature,
            max_tokens=model.max_tokens,
        ),
        stt=SttOptions(
            language=a.transcriber.language,
            model=a.transcriber.model,
            keywords=expected_phrases(a),
            extra=_stt_extra(a),
        ),
        tts=tts_options(a),
        turn=_turn(a),
        vad=VadOptions(),
        chunk=_chunk(a),
        idle=IdleSettings(
            messages=idle.messages,
            timeout_seconds=idle.timeout_seconds,
            max_spoken_count=idle.max_spoken_count,
            reset_on_user_speech=idle.reset_on_user_speech,
        ) if idle is not None else IdleSettings(),
        keypad=KeypadSettings(
            enabled=keypad.enabled,
            timeout_seconds=keypad.timeout_seconds,
            delimiters=tuple(keypad.delimiters) or ("#",),
        ),
        silence_timeout_seconds=a.silence_timeout_seconds,
        silence_timeout_message=msg_plan.silence_timeout_message,
        max_duration_seconds=a.max_duration_seconds,
        end_call_phrases=tuple(a.end_call_phrases),
        end_call_message=a.end_call_message or None,
    )


def expected_phrases(a: Assistant) -> tuple[str, ...]:
    """What the caller is expected to say: the transcriber's keywords, the rules' keywords, and a few
    phrases every phone conversation has (a grammar for a local recognizer, boosting for a cloud one)."""
    phrases: list[str] = list(a.transcriber.keywords)
    if isinstance(a.transcriber, DeepgramTranscriber):
        phrases += a.transcriber.keyterm
    if isinstance(a.model, RulesModel):
        for rule in a.model.rules:
            phrases += rule.keywords
        phrases += ["yes", "no", "goodbye", "thank you", "hello", "help"]
    seen: dict[str, None] = {}
    for p in phrases:
        p = p.strip()
        if p and p.lower() not in seen:
            seen[p.lower()] = None
    return tuple(seen)


def _stt_extra(a: Assistant) -> dict[str, object]:
    t = a.transcriber
    if isinstance(t, DeepgramTranscriber):
        return {"endpointing": t.endpointing, "smart_format": t.smart_format, "numerals": t.numerals,
                "keyterm": list(t.keyterm)}
    return {}


def tts_options(a: Assistant) -> tuple[TtsOptions, ...]:
    """Options for the voice and each ``fallbackPlan`` voice, in order."""
    voices = [a.voice, *(a.voice.fallback_plan.voices if a.voice.fallback_plan else [])]
    out = []
    for v in voices:
        if isinstance(v, ElevenLabsVoice):
            extra = {k: getattr(v, k) for k in ("stability", "similarity_boost", "style", "use_speaker_boost",
                                                 "optimize_streaming_latency") if getattr(v, k) is not None}
            out.append(TtsOptions(voice_id=v.voice_id, model=v.model, language=v.language, speed=v.speed,
                                  extra=extra))
        elif isinstance(v, EspeakVoice):
            out.append(TtsOptions(voice_id=v.voice_id or _espeak_voice(v.language), speed=v.speed))
    return tuple(out)


def _espeak_voice(language: str | None) -> str:
    if not language or language in ("en", "en-US", "en-us"):
        return ESPEAK_DEFAULT_VOICE
    return language.lower()


def _regex(pattern: str | None, options: list[VapiRegexOption]) -> RegexMatch | None:
    if pattern is None:
        return None
    on = {o.type for o in options if o.enabled}
    return RegexMatch(pattern=pattern, ignore_case="ignore-case" in on, whole_word="whole-word" in on,
                      multi_line="multi-line" in on)


def _custom_rule(rule: VapiEndpointingRule) -> CustomEndpointingRule:
    if rule.type == "both":
        return CustomEndpointingRule(
            target="both", timeout_seconds=rule.timeout_seconds,
            customer=_regex(rule.customer_regex, rule.customer_regex_options),
            assistant=_regex(rule.assistant_regex, rule.assistant_regex_options),
        )
    match = _regex(rule.regex, rule.regex_options)
    if rule.type == "customer":
        return CustomEndpointingRule(target="customer", timeout_seconds=rule.timeout_seconds, customer=match)
    return CustomEndpointingRule(target="assistant", timeout_seconds=rule.timeout_seconds, assistant=match)


def _turn(a: Assistant) -> TurnOptions:
    start = a.start_speaking_plan
    stop = a.stop_speaking_plan
    tep = start.transcription_endpointing_plan
    return TurnOptions(
        wait_seconds=start.wait_seconds,
        on_punctuation_seconds=tep.on_punctuation_seconds,
        on_no_punctuation_seconds=tep.on_no_punctuation_seconds,
        on_number_seconds=tep.on_number_seconds,
        custom_rules=tuple(_custom_rule(r) for r in start.custom_endpointing_rules),
        num_words=stop.num_words,
        voice_seconds=stop.voice_seconds,
        backoff_seconds=stop.backoff_seconds,
        acknowledgement_phrases=tuple(stop.acknowledgement_phrases),
        interruption_phrases=tuple(stop.interruption_phrases),
    )


def _chunk(a: Assistant) -> ChunkOptions:
    plan = a.voice.chunk_plan
    fp = plan.format_plan
    replacements: list[Replacement] = []
    for r in fp.replacements:
        if isinstance(r, ExactReplacement):
            replacements.append(FormatExact(key=r.key, value=r.value, replace_all_enabled=r.replace_all_enabled))
        else:
            replacements.append(RegexReplacement(
                regex=r.regex, value=r.value,
                options=tuple(RegexOption(type=o.type, enabled=o.enabled) for o in r.options),
            ))
    return ChunkOptions(
        enabled=plan.enabled,
        min_characters=plan.min_characters,
        punctuation_boundaries=tuple(plan.punctuation_boundaries) if plan.punctuation_boundaries
        else PUNCTUATION_BOUNDARIES,
        format=FormatOptions(
            enabled=fp.enabled,
            number_to_digits_cutoff=fp.number_to_digits_cutoff,
            replacements=tuple(replacements),
            formatters_enabled=tuple(fp.formatters_enabled) if fp.formatters_enabled is not None else None,
        ),
    )


def _tools(a: Assistant) -> tuple[tuple[ToolSpec, ...], dict[str, ToolBehaviour]]:
    specs: list[ToolSpec] = []
    behaviour: dict[str, ToolBehaviour] = {}
    for tool in a.model.tools:
        if isinstance(tool, EndCallTool):
            name = tool.function.name if tool.function else "endCall"
            specs.append(ToolSpec(name=name, description=(tool.function.description if tool.function else None)
                                  or "End the call when the conversation is over."))
            behaviour[name] = ToolBehaviour(name=name, kind="endCall")
            continue
        if tool.function is None:
            continue
        f = tool.function
        specs.append(ToolSpec(name=f.name, description=f.description or "", parameters=f.parameters))
        said: dict[str, str | None] = {}
        delayed_after = 2.0
        for m in tool.messages:
            text = m.content or (m.contents[0].text if m.contents else None)
            said[m.type] = text
            if m.type == "request-response-delayed" and m.timing_milliseconds:
                delayed_after = m.timing_milliseconds / 1000
        kind = ("function" if isinstance(tool, FunctionTool) else "dtmf" if isinstance(tool, DtmfTool)
                else "transferCall" if isinstance(tool, TransferCallTool) else "function")
        timeout = tool.server.timeout_seconds if tool.server is not None else 20.0
        behaviour[f.name] = ToolBehaviour(
            name=f.name, kind=kind,  # type: ignore[arg-type]
            request_start=said.get("request-start"),
            request_complete=said.get("request-complete"),
            request_failed=said.get("request-failed"),
            request_delayed=said.get("request-response-delayed"),
            delayed_after_seconds=delayed_after,
            is_async=tool.async_,
            timeout_seconds=timeout,
        )
    return tuple(specs), behaviour

