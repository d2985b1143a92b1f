"""The tools an assistant's model may call: ``function``, ``endCall``, ``transferCall`` and ``dtmf``.

Shapes follow Vapi's ``CreateFunctionToolDTO``, ``CreateEndCallToolDTO``, ``CreateTransferCallToolDTO`` and
``CreateDtmfToolDTO`` with their ``messages`` (``ToolMessageStart/Complete/Failed/Delayed``) and transfer
``destinations`` (``TransferDestinationNumber/Sip/Assistant``). Other Vapi tool types run on Vapi's own
platform and are rejected with the list of supported ones.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gateway.assistants.base import VapiModel, tag_checker
from gateway.assistants.plans import Server

__all__ = [
    "TOOL_TYPES",
    "AssistantDestination",
    "DtmfTool",
    "EndCallTool",
    "FunctionTool",
    "NumberDestination",
    "OpenAIFunction",
    "SipDestination",
    "TextContent",
    "Tool",
    "ToolMessage",
    "TransferCallTool",
    "TransferDestination",
]

TOOL_TYPES = ("function", "endCall", "transferCall", "dtmf")
TOOL_MESSAGE_TYPES = ("request-start", "request-complete", "request-failed", "request-response-delayed")
DESTINATION_TYPES = ("number", "sip", "assistant")

# OpenAI: "The name of the function to be called. Must be a-z, A-Z, 0-9, or contain underscores and
# dashes, with a maximum length of 64."
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class TextContent(VapiModel):
    type: Literal["text"] = "text"
    text: str
    language: str | None = None


class ToolMessage(VapiModel):
    """What the assistant says around a tool call: ``request-start`` (before; ``blocking`` waits for it to be
    spoken), ``request-complete`` / ``request-failed`` (after; ``role: system`` makes it a hint for the model
    instead of speech), ``request-response-delayed`` (after ``timingMilliseconds`` without a result)."""

    type: Literal["request-start", "request-complete", "request-failed", "request-response-delayed"]
    content: str | None = None
    contents: list[TextContent] = Field(default_factory=list)
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    blocking: bool = False
    role: Literal["assistant", "system"] = "assistant"
    end_call_after_spoken_enabled: bool = False
    timing_milliseconds: int | None = Field(None, ge=100, le=120000)


class OpenAIFunction(VapiModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _FUNCTION_NAME.match(v):
            raise ValueError(f"function name {v!r} must be 1-64 characters of a-z, A-Z, 0-9, _ or -")
        return v


class NumberDestination(VapiModel):
    type: Literal["number"]
    number: str
    extension: str | None = None
    caller_id: str | None = None
    message: str | dict[str, Any] | None = None  # default spoken text: "Transferring the call now"
    description: str | None = None
    number_e164_check_enabled: bool = True
    transfer_plan: dict[str, Any] | None = None  # Vapi's default mode: blind-transfer

    @field_validator("number")
    @classmethod
    def _check_number(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("number must not be empty")
        return v


class SipDestination(VapiModel):
    type: Literal["sip"]
    sip_uri: str
    caller_id: str | None = None
    message: str | dict[str, Any] | None = None
    description: str | None = None
    sip_headers: dict[str, str] = Field(default_factory=dict)
    transfer_plan: dict[str, Any] | None = None

    @field_validator("sip_uri")
    @classmethod
    def _check_uri(cls, v: str) -> str:
        if not re.match(r"^sips?:", v, re.IGNORECASE):
            raise ValueError(f"sipUri {v!r} must start with sip: or sips:")
        return v


class AssistantDestination(VapiModel):
    type: Literal["assistant"]
    assistant_name: str
    message: str | dict[str, Any] | None = None
    description: str | None = None
    transfer_mode: Literal[
        "rolling-history",
        "swap-system-message-in-history",
        "swap-system-message-in-history-and-remove-transfer-tool-messages",
        "delete-history",
    ] = "rolling-history"


TransferDestination = Annotated[
    NumberDestination | SipDestination | AssistantDestination,
    Field(discriminator="type"),
    BeforeValidator(tag_checker("type", DESTINATION_TYPES)),
]

ToolMessageItem = Annotated[ToolMessage, BeforeValidator(tag_checker("type", TOOL_MESSAGE_TYPES))]


class _ToolBase(VapiModel):
    messages: list[ToolMessageItem] = Field(default_factory=list)
    function: OpenAIFunction | None = None
    server: Server | None = None
    async_: bool = Field(False, alias="async")


class FunctionTool(_ToolBase):
    """A function the model may call; the call is sent to ``server`` (else the assistant's server)."""

    type: Literal["function"]
    variable_extraction_plan: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check_function(self) -> FunctionTool:
        if self.function is None:
            raise ValueError("a function tool needs function: {name, description, parameters}")
        return self


class EndCallTool(_ToolBase):
    type: Literal["endCall"]


class TransferCallTool(_ToolBase):
    type: Literal["transferCall"]
    destinations: list[TransferDestination] = Field(default_factory=list)


class DtmfTool(_ToolBase):
    type: Literal["dtmf"]
    sip_info_dtmf_enabled: bool = False


Tool = Annotated[
    FunctionTool | EndCallTool | TransferCallTool | DtmfTool,
    Field(discriminator="type"),
    BeforeValidator(tag_checker("type", TOOL_TYPES)),
]
