"""Request and response bodies of the HTTP API in Vapi's camelCase shapes (Vapi API reference: ``POST /call``
``CreateCallDTO``, ``CreateCustomerDTO``, live call control messages, ``Call``, ``Assistant``).

Request models forbid unknown keys, so a typo or a Vapi feature this gateway does not have (``squadId``,
``schedulePlan``) is a 422 naming the field rather than a silently different call. Response models allow
extra keys: the call and assistant objects carry whatever ``call_record.call_object`` and the stored body hold.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.uri import SipUri, parse_uri

__all__ = [
    "AddMessageControl",
    "AssistantObject",
    "CallLog",
    "CallLogEvent",
    "CallObject",
    "ControlAccepted",
    "ControlMessage",
    "CreateCall",
    "Customer",
    "EndCallControl",
    "ErrorBody",
    "Health",
    "LiveControl",
    "MuteControl",
    "SayControl",
    "TransferControl",
]

# E.164: "+" then up to 15 digits, no leading zero (Vapi's default numberE164CheckEnabled: true).
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# With the check off: what may stand in the user part of the trunk's Request-URI unescaped (RFC 3261 §25.1
# unreserved, plus the dial-string characters * and #). Nothing that could end the URI or a header.
DIAL_STRING = re.compile(r"[0-9A-Za-z+*#._-]{1,64}")


class _Request(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


# -- POST /call -------------------------------------------------------------------------------------------


class Customer(_Request):
    """Who to call: ``number`` (dialled through a trunk) or ``sipUri`` (dialled directly)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["number"]}, {"required": ["sipUri"]}]})

    number: str | None = Field(None, description="the customer's number, E.164 unless numberE164CheckEnabled "
                               "is false", examples=["+15551234567"])
    sip_uri: str | None = Field(None, description="a sip: or sips: URI to dial directly",
                                examples=["sip:alice@192.0.2.10:5060"])
    name: str | None = Field(None, max_length=40, description="for your own reference; the From display name")
    email: str | None = None
    external_id: str | None = None
    number_e164_check_enabled: bool = Field(
        True, alias="numberE164CheckEnabled",
        description="false allows any dial string (extensions, short codes) of digits, letters and + * # . _ -",
    )

    @field_validator("sip_uri")
    @classmethod
    def _check_sip_uri(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            uri = parse_uri(v)
        except RemoteProtocolError as exc:
            raise ValueError(exc.reason) from None
        if not isinstance(uri, SipUri):
            raise ValueError("must be a sip: or sips: URI")
        return v

    @model_validator(mode="after")
    def _one_address(self) -> Customer:
        if (self.number is None) == (self.sip_uri is None):
            raise ValueError("give exactly one of number or sipUri")
        if self.number is not None:
            if self.number_e164_check_enabled and not E164.fullmatch(self.number):
                raise ValueError(f"number {self.number!r} is not E.164 (+ and up to 15 digits); set "
                                 "numberE164CheckEnabled: false to dial other strings")
            if not DIAL_STRING.fullmatch(self.number):
                raise ValueError(f"number {self.number!r} may only hold digits, letters and + * # . _ -")
        return self


class CreateCall(_Request):
    """Vapi's ``CreateCallDTO``, the parts a SIP gateway can honour."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["assistantId"]}, {"required": ["assistant"]}]}
    )

    assistant_id: str | None = Field(
        None, description="a config assistant's name or the id of an assistant created with POST /assistant"
    )
    assistant: dict[str, Any] | None = Field(None, description="an inline Vapi assistant object")
    assistant_overrides: dict[str, Any] | None = Field(
        None, description="Vapi assistantOverrides, deep-merged over the assistant; variableValues fill "
        "{{variables}}"
    )
    customer: Customer
    phone_number_id: str | None = Field(
        None, description="the trunk (its name in the config) to dial customer.number through; default the "
        "first trunk"
    )
    name: str | None = Field(None, max_length=40, description="for your own reference")

    @model_validator(mode="after")
    def _one_assistant(self) -> CreateCall:
        if (self.assistant_id is None) == (self.assistant is None):
            raise ValueError("give exactly one of assistantId or assistant")
        return self


# -- POST /call/{id}/control -----------------------------------------------------------------------------


class SayControl(_Request):
    type: Literal["say"]
    content: str = Field(min_length=1)
    end_call_after_spoken: bool = False


class ControlMessage(_Request):
    role: Literal["system", "user", "assistant"]
    content: str


class AddMessageControl(_Request):
    type: Literal["add-message"]
    message: ControlMessage
    trigger_response_enabled: bool = Field(
        True, description="ask the model for a reply now (unless the assistant is answering or the caller is "
        "speaking: then that reply or the caller's turn sees the message)"
    )


class EndCallControl(_Request):
    type: Literal["end-call"]


class MuteControl(_Request):
    type: Literal["control"]
    control: Literal["mute-assistant", "unmute-assistant"]


class _Destination(BaseModel):
    # Vapi's transfer destination objects carry more options (transferPlan, sipHeaders, ...): kept as given.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)

    message: str | None = None
    description: str | None = None


class NumberDestination(_Destination):
    type: Literal["number"]
    number: str = Field(min_length=1)


class SipDestination(_Destination):
    type: Literal["sip"]
    sip_uri: str = Field(min_length=1)


class TransferControl(_Request):
    type: Literal["transfer"]
    destination: Annotated[NumberDestination | SipDestination, Field(discriminator="type")]
    content: str | None = Field(None, description="said to the caller before the transfer")


LiveControl = Annotated[
    SayControl | AddMessageControl | EndCallControl | MuteControl | TransferControl, Field(discriminator="type")
]


class ControlAccepted(_Response):
    call_id: str
    type: str
    status: Literal["ok", "pending"] = "ok"
    transfer: dict[str, Any] | None = Field(None, description="a transfer's outcome: result (completed, "
                                            "bridged), mode (blind, warm), detail")


# -- responses --------------------------------------------------------------------------------------------


class CallObject(_Response):
    """Vapi's ``Call`` (see ``gateway.call_record.call_object``); more keys as the call has them."""

    id: str
    org_id: str
    type: str
    status: str
    created_at: str
    updated_at: str


class AssistantObject(_Response):
    """Vapi's ``Assistant``: the body as created or updated, plus the server-managed fields."""

    id: str
    org_id: str
    created_at: str
    updated_at: str


class CallLogEvent(_Response):
    time: str
    type: str


class CallLog(_Response):
    call_id: str
    events: list[CallLogEvent]


class ErrorBody(BaseModel):
    detail: str | list[dict[str, Any]]


class Health(BaseModel):
    status: str
