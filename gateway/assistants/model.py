"""The Vapi assistant object (``CreateAssistantDTO`` of Vapi's OpenAPI document) as pydantic models.

Users write Vapi's camelCase JSON; the pipeline reads snake_case attributes (``a.first_message_mode``,
``a.stop_speaking_plan.num_words``). Old and current Vapi shapes are both accepted and read through
normalised accessors: :meth:`Assistant.idle_policy` (``messagePlan.idle*`` or a ``customer.speech.timeout``
hook), :meth:`Assistant.denoising_enabled` (``backgroundDenoisingEnabled`` or
``backgroundSpeechDenoisingPlan``), :meth:`Assistant.webhook_server` (``server`` or ``serverUrl``),
:meth:`Assistant.is_recording_enabled` (``artifactPlan.recordingEnabled`` or ``recordingEnabled``).

:func:`parse_assistant` is the one way in: it raises :class:`AssistantError` naming the dotted field path.
:func:`merge_overrides` applies a call's ``assistantOverrides`` (Vapi ``AssistantOverrides``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, field_validator

from gateway.assistants.base import VapiModel, check_http_url
from gateway.assistants.plans import (
    ArtifactPlan,
    BackgroundSpeechDenoisingPlan,
    CustomerSpeechTimeoutHook,
    Hook,
    KeypadInputPlan,
    MessagePlan,
    Server,
    StartSpeakingPlan,
    StopSpeakingPlan,
)
from gateway.assistants.providers import (
    VOICE_ALIASES,
    EspeakVoice,
    LanguageModel,
    PocketsphinxTranscriber,
    RulesModel,
    Transcriber,
    Voice,
)
from gateway.assistants.variables import TemplateError, check_template

__all__ = [
    "DEFAULT_CLIENT_MESSAGES",
    "DEFAULT_SERVER_MESSAGES",
    "Assistant",
    "AssistantError",
    "FirstMessageMode",
    "IdlePolicy",
    "merge_overrides",
    "override_variable_values",
    "parse_assistant",
    "unknown_fields",
]

FirstMessageMode = Literal[
    "assistant-speaks-first", "assistant-speaks-first-with-model-generated-message", "assistant-waits-for-user"
]

DEFAULT_SERVER_MESSAGES: tuple[str, ...] = (
    "conversation-update", "end-of-call-report", "function-call", "hang", "speech-update", "status-update",
    "tool-calls", "transfer-destination-request", "handoff-destination-request", "user-interrupted",
    "assistant.started",
)
DEFAULT_CLIENT_MESSAGES: tuple[str, ...] = (
    "conversation-update", "function-call", "hang", "model-output", "speech-update", "status-update",
    "transfer-update", "transcript", "tool-calls", "user-interrupted", "voice-input", "workflow.node.started",
    "assistant.started",
)


class AssistantError(Exception):
    """An invalid assistant. ``path`` is the dotted field path of the first problem (``assistants.demo.voice
    .provider``); ``problems`` lists every ``(path, message)`` found."""

    def __init__(self, path: str, message: str, *, problems: tuple[tuple[str, str], ...] = ()) -> None:
        self.path = path
        self.message = message
        self.problems = problems or ((path, message),)
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in self.problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class IdlePolicy:
    """What to say when the caller stays silent: after ``timeout_seconds`` without speech, say one of
    ``messages`` (picked at random), at most ``max_spoken_count`` times; ``reset_on_user_speech``: the count
    starts again when the caller speaks. ``prompts``: ``say`` actions that ask the model instead."""

    messages: tuple[str, ...]
    timeout_seconds: float
    max_spoken_count: int
    reset_on_user_speech: bool
    prompts: tuple[str, ...] = ()


def _default_when_null(default: Callable[[], BaseModel]) -> Callable[[Any], Any]:
    def fill(value: Any) -> Any:
        return default() if value is None else value

    return fill


class Assistant(VapiModel):
    """A Vapi assistant. Attributes are snake_case; the JSON keys are Vapi's camelCase names."""

    name: str | None = None
    first_message: str | None = None
    first_message_mode: FirstMessageMode = "assistant-speaks-first"
    first_message_interruptions_enabled: bool = False

    # Missing providers default to the offline ones.
    model: Annotated[LanguageModel, BeforeValidator(_default_when_null(RulesModel))] = Field(
        default_factory=RulesModel
    )
    voice: Annotated[Voice, BeforeValidator(_default_when_null(EspeakVoice))] = Field(default_factory=EspeakVoice)
    transcriber: Annotated[Transcriber, BeforeValidator(_default_when_null(PocketsphinxTranscriber))] = Field(
        default_factory=PocketsphinxTranscriber
    )

    start_speaking_plan: StartSpeakingPlan = Field(default_factory=StartSpeakingPlan)
    stop_speaking_plan: StopSpeakingPlan = Field(default_factory=StopSpeakingPlan)
    message_plan: MessagePlan = Field(default_factory=MessagePlan)
    hooks: list[Hook] = Field(default_factory=list)

    silence_timeout_seconds: float = Field(30.0, ge=10, le=3600)
    max_duration_seconds: float = Field(600.0, ge=10, le=43200)
    end_call_phrases: list[str] = Field(default_factory=list)
    end_call_message: str | None = None
    voicemail_message: str | None = None

    background_sound: str = Field("office", description="'off', 'office' (Vapi's phone default) or an audio URL")
    background_denoising_enabled: bool = False  # old shape
    background_speech_denoising_plan: BackgroundSpeechDenoisingPlan | None = None  # current shape
    keypad_input_plan: KeypadInputPlan = Field(default_factory=KeypadInputPlan)

    server_messages: list[str] = Field(default_factory=lambda: list(DEFAULT_SERVER_MESSAGES))
    client_messages: list[str] = Field(default_factory=lambda: list(DEFAULT_CLIENT_MESSAGES))
    server: Server | None = None  # current shape
    server_url: str | None = None  # old shape
    server_url_secret: str | None = None  # old shape
    metadata: dict[str, Any] = Field(default_factory=dict)
    artifact_plan: ArtifactPlan | None = None  # current shape
    recording_enabled: bool | None = None  # old shape
    analysis_plan: dict[str, Any] | None = None  # kept as data

    @field_validator("background_sound")
    @classmethod
    def _check_background_sound(cls, v: str) -> str:
        if v in ("off", "office"):
            return v
        try:
            return check_http_url(v)
        except ValueError:
            raise ValueError(f"backgroundSound {v!r} must be 'off', 'office' or an http(s) URL") from None

    @field_validator("server_url")
    @classmethod
    def _check_server_url(cls, v: str | None) -> str | None:
        return None if v is None else check_http_url(v)

    # -- normalised accessors over old and current shapes ------------------------------------------------

    def idle_policies(self) -> list[IdlePolicy]:
        """Every ``customer.speech.timeout`` hook that says something; else the old ``messagePlan``."""
        policies = []
        for hook in self.hooks:
            if not isinstance(hook, CustomerSpeechTimeoutHook):
                continue
            say = [a for a in hook.do if a.type == "say"]
            messages = tuple(text for a in say for text in a.exact_texts)
            prompts = tuple(a.prompt for a in say if isinstance(a.prompt, str))
            if not messages and not prompts:
                continue
            policies.append(
                IdlePolicy(
                    messages=messages,
                    timeout_seconds=hook.options.timeout_seconds,
                    max_spoken_count=hook.options.trigger_max_count,
                    reset_on_user_speech=hook.options.trigger_reset_mode == "onUserSpeech",
                    prompts=prompts,
                )
            )
        if policies:
            return policies
        plan = self.message_plan
        if not plan.idle_messages:
            return []
        return [
            IdlePolicy(
                messages=tuple(plan.idle_messages),
                timeout_seconds=plan.idle_timeout_seconds,
                max_spoken_count=plan.idle_message_max_spoken_count,
                reset_on_user_speech=plan.idle_message_reset_count_on_user_speech_enabled,
            )
        ]

    def idle_policy(self) -> IdlePolicy | None:
        """The first of :meth:`idle_policies`, or None when no idle message is configured."""
        policies = self.idle_policies()
        return policies[0] if policies else None

    def denoising_enabled(self) -> bool:
        if self.background_speech_denoising_plan is not None:
            return self.background_speech_denoising_plan.enabled
        return self.background_denoising_enabled

    def webhook_server(self) -> Server | None:
        """Where server messages go: ``server`` when it has a url, else the old ``serverUrl``/``serverUrlSecret``."""
        if self.server is not None and self.server.url:
            return self.server
        if self.server_url:
            return Server(url=self.server_url, secret=self.server_url_secret)
        return None

    def is_recording_enabled(self) -> bool:
        if self.artifact_plan is not None and "recording_enabled" in self.artifact_plan.model_fields_set:
            return self.artifact_plan.recording_enabled
        if self.recording_enabled is not None:
            return self.recording_enabled
        return True  # Vapi: "Defaults to true"

    # -- template strings (the fields where {{variables}} are substituted) --------------------------------

    def template_strings(self) -> list[tuple[str, str]]:
        """``(dotted path, text)`` of every field that takes ``{{variables}}``."""
        raw = self.model_dump(by_alias=True, exclude_unset=True)
        return [(path, container[key]) for path, container, key in _template_slots(raw)]

    def map_templates(self, fn: Callable[[str, str], str]) -> Assistant:
        """A copy with ``fn(path, text)`` applied to every :meth:`template_strings` field."""
        raw = self.model_dump(by_alias=True, exclude_unset=True)
        for path, container, key in _template_slots(raw):
            container[key] = fn(path, container[key])
        return Assistant.model_validate(raw)


def _template_slots(raw: dict[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """Where variables are substituted: (path, container, key) with ``container[key]`` a string."""

    def text(path: str, container: Any, key: Any) -> Iterator[tuple[str, Any, Any]]:
        value = container.get(key) if isinstance(container, dict) else container[key]
        if isinstance(value, str):
            yield path, container, key

    def items(value: Any) -> list[tuple[int, Any]]:
        return list(enumerate(value)) if isinstance(value, list) else []

    for key in ("firstMessage", "endCallMessage", "voicemailMessage"):
        yield from text(key, raw, key)
    model = raw.get("model") or {}
    for i, message in items(model.get("messages")):
        yield from text(f"model.messages.{i}.content", message, "content")
    for i, rule in items(model.get("rules")):
        yield from text(f"model.rules.{i}.reply", rule, "reply")
    yield from text("model.fallback", model, "fallback")
    for i, tool in items(model.get("tools")):
        for j, message in items(tool.get("messages")):
            yield from text(f"model.tools.{i}.messages.{j}.content", message, "content")
            for k, content in items(message.get("contents")):
                yield from text(f"model.tools.{i}.messages.{j}.contents.{k}.text", content, "text")
        for j, destination in items(tool.get("destinations")):
            yield from text(f"model.tools.{i}.destinations.{j}.message", destination, "message")
    plan = raw.get("messagePlan") or {}
    messages = plan.get("idleMessages")
    for i, _ in items(messages):
        yield from text(f"messagePlan.idleMessages.{i}", messages, i)
    yield from text("messagePlan.silenceTimeoutMessage", plan, "silenceTimeoutMessage")
    for i, hook in items(raw.get("hooks")):
        for j, action in items(hook.get("do")):
            yield from text(f"hooks.{i}.do.{j}.exact", action, "exact")
            exact = action.get("exact")
            for k, _ in items(exact):
                yield from text(f"hooks.{i}.do.{j}.exact.{k}", exact, k)
            yield from text(f"hooks.{i}.do.{j}.prompt", action, "prompt")


# -- parsing and error paths -------------------------------------------------------------------------------

_HOOK_TAGS = frozenset({"speech_timeout_hook", "event_hook"})


def _is_union_tag(container: Mapping[str, Any], part: object) -> bool:
    """pydantic puts a tagged union member's tag in the error location; it is not a JSON key."""
    if not isinstance(part, str):
        return False
    if part in _HOOK_TAGS:
        return True
    provider = container.get("provider")
    if part == provider or (isinstance(provider, str) and VOICE_ALIASES.get(provider) == part):
        return True
    return part == container.get("type")


def _json_path(loc: tuple[int | str, ...], data: Any) -> list[str]:
    """The error location as the user's JSON path: union tags dropped, union member names after a
    scalar dropped (``exact.str``)."""
    parts: list[str] = []
    current: Any = data
    tag_allowed = True
    for part in loc:
        if isinstance(current, Mapping):
            if tag_allowed and _is_union_tag(current, part):
                tag_allowed = False
                continue
            parts.append(str(part))
            current = current.get(part) if isinstance(part, str) else None
        elif isinstance(current, list) and isinstance(part, int):
            parts.append(str(part))
            current = current[part] if 0 <= part < len(current) else None
        else:
            break
        tag_allowed = True
    return parts


def _problems(exc: ValidationError, data: Any, where: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for err in exc.errors():
        parts = _json_path(err["loc"], data)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("missing_tag", "unsupported_tag"):
            parts.append(str(err.get("ctx", {}).get("key", "")))
        elif err["type"] == "missing":
            message = "required field missing"
        path = ".".join(p for p in (where, *parts) if p)
        found.append((path, message))
    # One line per path: a value that fits no member of a plain union (``str | list[str]``) gets one
    # error per member, "Input should be a valid string" and "... a valid list".
    merged: dict[str, list[str]] = {}
    for path, message in found:
        messages = merged.setdefault(path, [])
        if messages and message.startswith("Input should be ") and messages[0].startswith("Input should be "):
            message = message.removeprefix("Input should be ")
        if message not in messages:
            messages.append(message)
    return [(path, " or ".join(messages)) for path, messages in merged.items()]


def parse_assistant(data: Any, *, where: str = "assistant") -> Assistant:
    """Validate a Vapi assistant object. ``where`` prefixes error paths (``assistants.demo``).
    Raises :class:`AssistantError` for a wrong JSON type, an unsupported provider, a value out of range,
    a bad regex or a template syntax error."""
    if not isinstance(data, Mapping):
        raise AssistantError(where, f"an assistant must be a JSON object, not {_json_type(data)}")
    try:
        assistant = Assistant.model_validate(dict(data))
    except ValidationError as exc:
        problems = _problems(exc, data, where)
        raise AssistantError(*problems[0], problems=tuple(problems)) from None
    template_problems = []
    for path, text in assistant.template_strings():
        try:
            check_template(text)
        except TemplateError as exc:
            template_problems.append((f"{where}.{path}", f"template syntax error: {exc.message}"))
    if template_problems:
        raise AssistantError(*template_problems[0], problems=tuple(template_problems))
    return assistant


def _json_type(value: Any) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list() | tuple():
            return "an array"
        case _:
            return type(value).__name__


def unknown_fields(assistant: BaseModel) -> list[str]:
    """Dotted paths (``voice.fooBar``, ``model.tools.0.fooBar``) of keys the models do not know; they are
    kept but unused, so the loader warns about them."""
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, BaseModel):
            for key in value.model_extra or {}:
                found.append(f"{path}.{key}" if path else str(key))
            for name, info in type(value).model_fields.items():
                walk(getattr(value, name), f"{path}.{info.alias or name}" if path else (info.alias or name))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}.{i}")

    walk(assistant, "")
    return found


# -- assistantOverrides ---------------------------------------------------------------------------------------


def override_variable_values(overrides: Mapping[str, Any], *, where: str = "assistantOverrides") -> dict[str, Any]:
    """``assistantOverrides.variableValues`` (the values for ``{{variables}}``), ``{}`` when absent."""
    values = overrides.get("variableValues")
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise AssistantError(f"{where}.variableValues", f"must be a JSON object, not {_json_type(values)}")
    return dict(values)


def merge_overrides(
    assistant: Assistant, overrides: Mapping[str, Any], *, where: str = "assistantOverrides"
) -> Assistant:
    """The assistant with Vapi ``assistantOverrides`` deep-merged over it: objects merge key by key, arrays and
    scalars replace, ``null`` resets a field to its default, a ``transcriber``/``model``/``voice`` with another
    provider replaces the old one whole, and ``tools:append`` adds tools to ``model.tools``.
    ``variableValues`` is not part of the assistant: read it with :func:`override_variable_values`."""
    if not isinstance(overrides, Mapping):
        raise AssistantError(where, f"must be a JSON object, not {_json_type(overrides)}")
    over = {k: v for k, v in overrides.items() if k not in ("variableValues", "tools:append")}
    merged = _deep_merge(assistant.model_dump(by_alias=True, exclude_unset=True), over)
    append = overrides.get("tools:append")
    if append is not None:
        if not isinstance(append, list):
            raise AssistantError(f"{where}.tools:append", f"must be an array, not {_json_type(append)}")
        model = dict(merged.get("model") or {"provider": assistant.model.provider})
        model["tools"] = [*model.get("tools", []), *copy.deepcopy(append)]
        merged["model"] = model
    return parse_assistant(merged, where=where)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if value is None:
            out.pop(key, None)
        elif (
            isinstance(old, dict)
            and isinstance(value, Mapping)
            and not ("provider" in value and _provider(value) != _provider(old))
        ):
            out[key] = _deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _provider(value: Mapping[str, Any]) -> Any:
    provider = value.get("provider")
    return VOICE_ALIASES.get(provider, provider) if isinstance(provider, str) else provider
