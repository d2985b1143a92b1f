"""Machinery shared by the RFC 3261 §17 client and server transactions: timers and the host interface.

A transaction never sends, schedules or reports anything itself: it asks its :class:`TransactionHost`
(the transaction layer) to do so, which keeps the whole layer sans-IO and lets one timer heap serve every
transaction.
"""

from __future__ import annotations

import collections
from enum import StrEnum
from typing import Protocol

from gateway.sip.message import Request
from gateway.sip.tx_events import Addr, Outgoing, TimerConfig, TransactionEvent, is_reliable


class TimerName(StrEnum):
    """RFC 3261 Table 4 and RFC 6026 §8.4, plus two timers RFC 3261 describes in prose."""

    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"
    RETRANSMIT_2XX = "2xx"  # §13.3.1.4: 2xx retransmission (T1 doubling up to T2) until the ACK arrives
    CANCEL_EXPIRY = "cancel"  # §9.1: no final response 64*T1 after the CANCEL


class TransactionHost(Protocol):
    """What a transaction needs from the layer that owns it."""

    timers: TimerConfig
    counters: collections.Counter[str]

    def send(self, outgoing: Outgoing) -> None: ...

    def emit(self, event: TransactionEvent) -> None: ...

    def schedule(self, tx: Transaction, name: TimerName, deadline: float) -> None: ...

    def unschedule(self, tx: Transaction, name: TimerName) -> None: ...

    def remove(self, tx: Transaction) -> None: ...

    def start_cancel(self, cancel: Request, *, destination: Addr, transport: str, now: float) -> None:
        """Run a CANCEL in its own non-INVITE client transaction (§9.1)."""
        ...


class Transaction:
    """Fields and timer helpers common to the four state machines."""

    __slots__ = ("_zero_timer", "destination", "host", "interval", "reliable", "timers", "transport")

    def __init__(self, host: TransactionHost, *, destination: Addr, transport: str) -> None:
        self.host = host
        self.destination = destination
        self.transport = transport.lower()
        self.reliable = is_reliable(self.transport)
        # name -> token of the heap entry that is current; the host keeps this in step.
        self.timers: dict[TimerName, int] = {}
        # current retransmission interval (A, E, G or the 2xx timer; only one runs at a time)
        self.interval = 0.0
        self._zero_timer: TimerName | None = None

    def start_timer(self, name: TimerName, duration: float, now: float) -> None:
        """Start (or restart) a timer. A zero duration (reliable transports, Table 4) fires right after the
        current transition's actions rather than through the clock, so nothing lingers."""
        if duration <= 0:
            self.host.unschedule(self, name)
            self._zero_timer = name
            return
        self.host.schedule(self, name, now + duration)

    def stop_timer(self, name: TimerName) -> None:
        self.host.unschedule(self, name)

    def keep_only_timers(self, allowed: frozenset[TimerName]) -> None:
        """Stop every running timer the new state does not use (the figures stop timers on leaving a state)."""
        for name in [n for n in self.timers if n not in allowed]:
            self.host.unschedule(self, name)

    def take_zero_timer(self) -> TimerName | None:
        name, self._zero_timer = self._zero_timer, None
        return name

    def on_timer(self, name: TimerName, now: float) -> None:
        raise NotImplementedError

    def on_transport_error(self, now: float) -> None:
        raise NotImplementedError

    @property
    def is_terminated(self) -> bool:
        raise NotImplementedError
