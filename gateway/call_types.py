"""Values shared by the call modules: a call's state and what it is connected to."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class CallState(enum.Enum):
    CALLING = "calling"  # outbound INVITE sent, nothing back yet
    RINGING = "ringing"  # inbound: 180 sent / outbound: provisional received
    ANSWERED = "answered"  # inbound: 200 sent, waiting for the ACK
    CONFIRMED = "confirmed"  # ACK exchanged: media flows
    TERMINATING = "terminating"  # our BYE/CANCEL is out
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CallTarget:
    """What a call is connected to once answered.

    ``assistant``: by ``name`` (config name or stored assistant id) or inline ``assistant``, with
    ``overrides`` (Vapi assistantOverrides) and ``variable_values``; ``echo``: the echo line; ``request``:
    not known yet, the number's assistant-request server decides while the caller hears ringing; ``error``:
    speak ``message`` and hang up with ``ended_reason``; ``transfer``: send the caller on to ``destination``
    (a Vapi transfer destination) without an assistant; ``bridge``: the second leg of a transfer bridged by
    the gateway (``name``: the id of the first leg).
    """

    kind: str  # "assistant" | "echo" | "request" | "error" | "transfer" | "bridge"
    name: str | None = None
    assistant: dict[str, Any] | None = field(default=None, compare=False)
    variable_values: dict[str, Any] | None = field(default=None, compare=False)
    overrides: dict[str, Any] | None = field(default=None, compare=False)
    message: str | None = None
    ended_reason: str | None = None
    destination: dict[str, Any] | None = field(default=None, compare=False)


SDP = "application/sdp"
