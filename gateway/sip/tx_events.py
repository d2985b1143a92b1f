"""Vocabulary of the SIP transaction layer (RFC 3261 §17): timer values, identifiers, outputs and events.

Timer values follow RFC 3261 §17.1.1.1 and Table 4 (A-K) and RFC 6026 §8.4 (L, M). T1, T2 and T4 are
injected through :class:`TimerConfig`; every other timer derives from them. On a reliable transport the
timers that only exist to absorb retransmissions (D, I, J, K) are zero (Table 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

from gateway.sip.message import Request, Response

Addr = tuple[str, int]

ClientTransactionId = NewType("ClientTransactionId", str)
"""RFC 3261 §17.1.3: the top Via branch of the request plus its CSeq method (a CANCEL is its own transaction)."""

ServerTransactionId = NewType("ServerTransactionId", str)
"""RFC 3261 §17.2.3: branch, sent-by and method (ACK folded onto INVITE), or the RFC 2543 fallback key."""

RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "sctp", "ws", "wss"})


def is_reliable(transport: str) -> bool:
    """RFC 3261 §18: TCP (and TLS/SCTP/WebSocket over them) are reliable; UDP is not."""
    return transport.lower() in RELIABLE_TRANSPORTS


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 / Table 4: T1 (RTT estimate), T2 (max non-INVITE retransmit interval), T4 (max
    time a message stays in the network). Everything else is derived."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 >= 0):
            raise ValueError("TimerConfig needs t1 > 0, t2 >= t1 and t4 >= 0")

    @property
    def timer_a(self) -> float:
        """INVITE request retransmit interval, initially T1, doubling (unreliable only)."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE transaction timeout: 64*T1."""
        return 64 * self.t1

    @property
    def timer_d(self) -> float:
        """Wait time for response retransmissions: > 32 s on an unreliable transport (0 on reliable)."""
        return 32.0

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit interval, initially T1, doubling up to T2 (unreliable only)."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE transaction timeout: 64*T1."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE response retransmit interval, initially T1, doubling up to T2 (unreliable only)."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt: 64*T1."""
        return 64 * self.t1

    @property
    def timer_i(self) -> float:
        """Wait time for ACK retransmissions: T4 on an unreliable transport (0 on reliable)."""
        return self.t4

    @property
    def timer_j(self) -> float:
        """Wait time for non-INVITE request retransmissions: 64*T1 on an unreliable transport (0 on reliable)."""
        return 64 * self.t1

    @property
    def timer_k(self) -> float:
        """Wait time for non-INVITE response retransmissions: T4 on an unreliable transport (0 on reliable)."""
        return self.t4

    @property
    def timer_l(self) -> float:
        """RFC 6026: wait time for accepted INVITE request retransmissions (and the ACK): 64*T1."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """RFC 6026: wait time for retransmission of 2xx to INVITE or additional 2xx from forks: 64*T1."""
        return 64 * self.t1

    @property
    def cancel_expiry(self) -> float:
        """RFC 3261 §9.1: no final response 64*T1 after the CANCEL -> the INVITE is considered cancelled."""
        return 64 * self.t1


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """Bytes the edge must send. For a reliable transport ``destination`` names the connection's peer."""

    data: bytes
    destination: Addr
    transport: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A new request (never a retransmission, never an ACK) with the server transaction it created.

    For CANCEL, ``cancels`` is the INVITE server transaction it matches (RFC 3261 §9.2), or None, in which
    case the TU answers 481.
    """

    request: Request
    source: Addr
    transport: str
    server_tx: ServerTransactionId
    cancels: ServerTransactionId | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AckReceived:
    """An ACK for a 2xx: it matched an INVITE server transaction in the RFC 6026 Accepted state
    (``server_tx``) or no transaction at all (None). ACKs for non-2xx finals never surface."""

    request: Request
    source: Addr
    transport: str
    server_tx: ServerTransactionId | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """A response for a client transaction, including every 2xx retransmission while the INVITE client
    transaction is Accepted (the TU re-sends its ACK for each, RFC 3261 §13.2.2.4)."""

    response: Response
    client_tx: ClientTransactionId
    source: Addr


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTransactionTimeout:
    """Timer B or F fired, a transport failure occurred, or a CANCELled INVITE got no final response
    within 64*T1 (RFC 3261 §9.1). The TU acts as on a 408 (Request Timeout)."""

    client_tx: ClientTransactionId
    request: Request


@dataclass(frozen=True, slots=True, kw_only=True)
class AckTimeout:
    """A 2xx to an INVITE was never ACKed within 64*T1: the TU ends the session with a BYE (§13.3.1.4)."""

    server_tx: ServerTransactionId
    response: Response


TransactionEvent = RequestReceived | AckReceived | ResponseReceived | ClientTransactionTimeout | AckTimeout
