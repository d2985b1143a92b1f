"""The HTTP API in-process for unit tests: ``create_app`` over a fake call manager (real assistant lookup,
real SQLite store in memory), driven with httpx through ASGITransport. No sockets, no SIP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from gateway.api import CallRecorder, create_app
from gateway.assistants import Assistant
from gateway.call_types import CallState, CallTarget
from gateway.calls import CallError, CallManager
from gateway.config import GatewayConfig
from gateway.observability.metrics import Metrics
from gateway.store import Store
from gateway.transport.rtp_endpoint import PortPool

CONFIG = {
    "assistants": {"demo": {"name": "demo", "firstMessage": "Hello", "model": {"provider": "rules"}}},
    "trunks": [{"name": "pstn", "host": "127.0.0.1", "port": 5099}],
    "security": {"outbound_allow": ["*"]},
}


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeSession:
    running: asyncio.Event = field(default_factory=asyncio.Event)
    ending: str | None = None
    said: list[str] = field(default_factory=list)
    end_after_calls: list[tuple[int, str]] = field(default_factory=list)
    added: list[tuple[str, str]] = field(default_factory=list)
    muted: bool = False
    history: list[Any] = field(default_factory=list)
    responses: int = 0  # replies triggered by add-message (triggerResponseEnabled)

    def say(self, text: str) -> int:
        self.said.append(text)
        return len(self.said)

    def end_after(self, utterance: int, reason: str) -> None:
        self.end_after_calls.append((utterance, reason))

    def add_message(self, role: str, content: str) -> None:
        self.added.append((role, content))

    def respond(self) -> bool:
        self.responses += 1
        return True

    def mute(self, muted: bool) -> None:
        self.muted = muted

    def end(self, reason: str, message: str | None = None) -> None:
        self.ending = reason


@dataclass
class FakeConversation:
    session: FakeSession | None
    messages: list[dict[str, Any]] = field(default_factory=list)


class FakeCall:
    """What ``call_record.call_object`` and the routes read of a ``gateway.call.Call``."""

    def __init__(self, manager: FakeCalls, target: CallTarget, customer: str | None, trunk: str | None) -> None:
        self.manager = manager
        self.id = str(uuid.uuid4())
        self.direction = "outbound"
        self.status = "queued"
        self.state = CallState.CALLING
        self.target = target
        self.created_at = manager.clock()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.ended_reason: str | None = None
        self.sip_call_id = f"{self.id}@test"
        self.customer_number = customer
        self.phone_number = trunk
        self.conversation: FakeConversation | None = None
        self.hangups: list[str] = []

    def update_status(self, status: str) -> None:
        self.status = status
        self.manager.notify("call_status", self, status)

    def answer(self, *, conversation: bool = True) -> FakeSession | None:
        self.state = CallState.CONFIRMED
        self.answered_at = self.manager.clock()
        self.update_status("in-progress")
        if not conversation:
            return None
        session = FakeSession()
        session.running.set()
        self.conversation = FakeConversation(session)
        return session

    def hangup(self, reason: str) -> None:
        self.hangups.append(reason)

    def end(self, reason: str) -> None:
        """The call is over and released (as ``Call.finish`` then ``CallManager.release``)."""
        self.state = CallState.ENDED
        self.ended_reason = reason
        self.ended_at = self.manager.clock()
        self.update_status("ended")
        self.manager.calls.pop(self.id, None)
        self.manager.notify("call_released", self)


class FakeCalls:
    """The part of CallManager the API uses; assistant lookup is CallManager's own."""

    def __init__(self, config: GatewayConfig, clock: FakeClock) -> None:
        self.config = config
        self.clock = clock
        self.calls: dict[str, FakeCall] = {}
        self.ports = PortPool(40000, 40007)
        self.observers: list[Any] = []
        self.assistant_store: Store | None = None
        self.placed: list[dict[str, Any]] = []
        self.fail_with: str | None = None

    def notify(self, hook: str, call: FakeCall, *args: Any) -> None:
        for observer in self.observers:
            getattr(observer, hook)(call, *args)

    def get(self, call_id: str) -> FakeCall | None:
        return self.calls.get(call_id)

    def assistant_for(self, target: CallTarget) -> Assistant | None:
        return CallManager.assistant_for(self, target)  # type: ignore[arg-type]

    async def place_call(self, *, number: str | None = None, sip_uri: str | None = None, trunk: str | None = None,
                         target: CallTarget, from_user: str | None = None, display_name: str | None = None,
                         headers: Iterable[tuple[str, str]] = ()) -> FakeCall:
        self.placed.append({"number": number, "sip_uri": sip_uri, "trunk": trunk, "target": target})
        if self.fail_with is not None:
            raise CallError(self.fail_with)
        if trunk is not None and self.config.trunk(trunk) is None:
            raise CallError(f"no trunk named {trunk!r} to dial {number!r}")
        call = FakeCall(self, target, number if number is not None else sip_uri, trunk or "pstn")
        self.calls[call.id] = call
        self.notify("call_status", call, call.status)
        self.clock.advance(0.001)  # calls placed one after another have distinct createdAt
        return call


@dataclass
class Api:
    client: httpx.AsyncClient
    calls: FakeCalls
    store: Store
    metrics: Metrics
    clock: FakeClock
    state: dict[str, bool]


@contextlib.asynccontextmanager
async def api(*, api_key: str | None = None, store_path: str = ":memory:",
              config: dict[str, Any] | None = None) -> AsyncIterator[Api]:
    clock = FakeClock()
    ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))
    store = Store(store_path, clock=clock, new_id=lambda: next(ids))
    await store.open()
    calls = FakeCalls(GatewayConfig.model_validate(config or CONFIG), clock)
    calls.assistant_store = store
    recorder = CallRecorder(store)
    calls.observers.append(recorder)
    metrics = Metrics()
    state = {"ready": True, "draining": False}
    app = create_app(calls, store, metrics=metrics, recorder=recorder, api_key=api_key,
                     is_ready=lambda: state["ready"], is_draining=lambda: state["draining"])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            yield Api(client, calls, store, metrics, clock, state)
    finally:
        await store.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)
