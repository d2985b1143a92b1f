"""Values shared by the call modules: a call's state and what it is connected to."""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


SDP = "application/sdp"
