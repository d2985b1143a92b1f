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
    """What a call is connected to once answered: an assistant by name, or the echo line."""

    kind: str  # "assistant" | "echo"
    name: str | None = None
    # An assistant given inline (API, assistant-request) instead of by name, and its variable values.
    assistant: dict[str, Any] | None = field(default=None, compare=False)
    variable_values: dict[str, Any] | None = field(default=None, compare=False)


SDP = "application/sdp"
