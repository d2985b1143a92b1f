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
from gateway.assistants.tools import (
    DtmfTool,
    EndCallTool,
    NumberDestination,
    SipDestination,
    Tool,
    TransferCallTool,
)
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
from gateway.pipeline.settings import (
    IdleSettings,
    KeypadSettings,
    SessionSettings,
    ToolBehaviour,
    ToolCondition,
    ToolKind,
    ToolMessageSpec,
)
from gateway.pipeline.turn import CustomEndpointingRule, RegexMatch, TurnOptions
from gateway.pipeline.vad import VadOptions
from gateway.providers.base import ChatMessage, LlmOptions, SttOptions, ToolSpec, TtsOptions

__all__ = ["DTMF_FUNCTION", "expected_phrases", "settings_for", "tts_options"]

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
        llm_fallback_models=tuple(getattr(model, "fallback_models", ())),
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


# Vapi's built-in tools when the assistant does not give them a function of its own.
DTMF_FUNCTION = ToolSpec(
    name="dtmf",
    description="Press keys on the phone keypad (DTMF), e.g. to navigate a phone menu or enter a number.",
    parameters={
        "type": "object",
        "properties": {"dtmf": {"type": "string", "description": "The keys to press: 0-9, *, #, A-D."}},
        "required": ["dtmf"],
    },
)
END_CALL_DESCRIPTION = "End the call when the conversation is over."
FUNCTION_TIMEOUT_MARGIN = 1.0  # the runner enforces the tool's own deadline; the session's is a backstop
DTMF_TIMEOUT_SECONDS = 60.0
TRANSFER_TIMEOUT_SECONDS = 600.0  # a warm transfer waits for the destination to answer and hear a summary


def _transfer_function(tool: TransferCallTool) -> ToolSpec:
    """Vapi's ``transferCall`` function: one ``destination`` argument naming a number or a SIP URI."""
    choices: list[str] = []
    lines: list[str] = []
    for d in tool.destinations:
        if isinstance(d, NumberDestination):
            choices.append(d.number)
        elif isinstance(d, SipDestination):
            choices.append(d.sip_uri)
        else:
            choices.append(d.assistant_name)
        if d.description:
            lines.append(f"{choices[-1]}: {d.description}")
    destination: dict[str, object] = {"type": "string", "description": "The destination to transfer the call to."}
    if choices:
        destination["enum"] = choices
    description = "Transfer the call to a person or another line."
    if lines:
        description += " Destinations: " + "; ".join(lines)
    return ToolSpec(name="transferCall", description=description,
                    parameters={"type": "object", "properties": {"destination": destination},
                                "required": ["destination"] if choices else []})


def _message_specs(tool: Tool) -> tuple[ToolMessageSpec, ...]:
    out: list[ToolMessageSpec] = []
    for m in tool.messages:
        text = m.content or (m.contents[0].text if m.contents else None)
        if not text:
            continue
        conditions = tuple(
            ToolCondition(param=str(c.get("param", "")), operator=c.get("operator", "eq"), value=str(c.get("value", "")))
            for c in m.conditions
            if isinstance(c, dict) and c.get("operator") in ("eq", "neq", "gt", "gte", "lt", "lte")
        )
        out.append(ToolMessageSpec(
            type=m.type,
            content=text,
            # role only exists on request-complete/-failed; "ignored if role is set to system" (endCallAfterSpoken)
            role=m.role if m.type in ("request-complete", "request-failed") else "assistant",
            blocking=m.blocking and m.type == "request-start",
            end_call_after_spoken=m.end_call_after_spoken_enabled and m.role == "assistant",
            timing_seconds=(m.timing_milliseconds or 1000) / 1000 if m.type == "request-response-delayed" else None,
            conditions=conditions,
        ))
    return tuple(out)


def _tools(a: Assistant) -> tuple[tuple[ToolSpec, ...], dict[str, ToolBehaviour]]:
    """The model's function list and, per function name, what the session does around a call."""
    specs: list[ToolSpec] = []
    behaviour: dict[str, ToolBehaviour] = {}
    for tool in a.model.tools:
        f = tool.function
        if isinstance(tool, EndCallTool):
            spec = ToolSpec(name=f.name if f else "endCall", description=(f.description if f else None)
                            or END_CALL_DESCRIPTION, parameters=f.parameters if f else {"type": "object", "properties": {}})
            kind: ToolKind = "endCall"
            timeout = 5.0
        elif isinstance(tool, DtmfTool):
            spec = ToolSpec(name=f.name, description=f.description or DTMF_FUNCTION.description,
                            parameters=f.parameters) if f else DTMF_FUNCTION
            kind = "dtmf"
            timeout = DTMF_TIMEOUT_SECONDS
        elif isinstance(tool, TransferCallTool):
            spec = ToolSpec(name=f.name, description=f.description or "", parameters=f.parameters) if f \
                else _transfer_function(tool)
            kind = "transferCall"
            timeout = TRANSFER_TIMEOUT_SECONDS
        else:
            assert f is not None  # FunctionTool validates it
            spec = ToolSpec(name=f.name, description=f.description or "", parameters=f.parameters)
            kind = "function"
            server = tool.server if tool.server is not None and tool.server.url else a.webhook_server()
            timeout = (server.timeout_seconds if server is not None else 20.0) + FUNCTION_TIMEOUT_MARGIN
        specs.append(spec)
        behaviour[spec.name] = ToolBehaviour(
            name=spec.name,
            kind=kind,
            messages=_message_specs(tool),
            is_async=tool.async_ and kind == "function",
            timeout_seconds=timeout,
            default_fillers=kind == "function" and not tool.async_,
        )
    return tuple(specs), behaviour
