"""The call manager: admits inbound INVITEs (routing, offer, session timer, ports), places outbound calls,
keeps the set of live calls, and drains on shutdown."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Protocol

import httpx

from gateway.admission import CallRate
from gateway.assistant_request import request_assistant
from gateway.assistants import Assistant, AssistantError, merge_overrides, parse_assistant
from gateway.call import Call, codec_specs
from gateway.call_types import CallState, CallTarget
from gateway.codecs.registry import CodecRegistry
from gateway.config import GatewayConfig, TrunkConfig, is_ip_literal
from gateway.observability.logging import get_logger
from gateway.observability.metrics import Metrics
from gateway.pipeline.events import SessionEvent
from gateway.pipeline.factory import ProviderPool
from gateway.routing import RouteMatch, route_invite
from gateway.sdp import SdpError, SessionDescription, parse_sdp
from gateway.sdp.crypto import SrtpPolicy
from gateway.session_policy import SessionTimerPolicy
from gateway.sip.auth import DigestClient
from gateway.sip.errors import RemoteProtocolError
from gateway.sip.message import Request, make_response
from gateway.sip.transaction import ServerTransactionId
from gateway.sip.uri import SipUri, Uri
from gateway.transport.playout import PlayoutScheduler
from gateway.transport.rtp_endpoint import PortPool, PortPoolExhausted
from gateway.transport.sip_transport import Addr
from gateway.ua import UserAgent

RETRY_AFTER_SECONDS = "5"


class CallError(Exception):
    """An outbound call could not be placed (bad target, unknown trunk, no ports...)."""


class CallObserver(Protocol):
    """Told about every call (webhooks, the call store). Called synchronously on the loop: must not block;
    an observer's exception is logged and never reaches the call."""

    def call_status(self, call: Call, status: str) -> None:
        """``call.status`` changed (queued, ringing, in-progress, forwarding, ended)."""

    def call_event(self, call: Call, event: SessionEvent) -> None:
        """Its conversation emitted ``event`` (transcript, speech-update, user-interrupted...)."""

    def call_message(self, call: Call, message: dict[str, Any]) -> None:
        """A server message the call layer built itself (``transfer-update``, ``tool-calls``, ``hang``):
        ``message`` is Vapi's payload without the common ``call``/``timestamp`` fields."""

    def call_released(self, call: Call) -> None:
        """The call is over and everything it held is freed: time for the end-of-call report."""


class AssistantLookup(Protocol):
    """Assistants created over the API, by id (the API's store implements it)."""

    def get_assistant(self, assistant_id: str) -> dict[str, Any] | None: ...


class CallManager:
    def __init__(
        self,
        config: GatewayConfig,
        ua: UserAgent,
        metrics: Metrics,
        tasks: asyncio.TaskGroup,
        *,
        playout: PlayoutScheduler | None = None,
        providers: ProviderPool | None = None,
    ) -> None:
        self.config = config
        # STT/LLM/TTS clients shared by every call (connection pools live as long as the server)
        self.providers = providers if providers is not None else ProviderPool(config.providers)
        self.playout = playout  # the server's one 20 ms playout clock, shared by every call
        self.ua = ua
        self.metrics = metrics
        self._tasks = tasks
        self.log = get_logger("calls")
        self.ports = PortPool(config.rtp.port_min, config.rtp.port_max)
        metrics.rtp_port_pool_size.set(self.ports.capacity)
        self.capabilities = codec_specs(CodecRegistry().capabilities())
        self.session_timer_policy = SessionTimerPolicy(
            session_expires=config.sip.session_expires, min_se=config.sip.min_se
        )
        self.calls: dict[str, Call] = {}
        self.observers: list[CallObserver] = []
        self.assistant_store: AssistantLookup | None = None
        self._http: httpx.AsyncClient | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._call_rate = CallRate.per_second(config.security.max_calls_per_second, 0.0)
        ua.invite_handler = self

    @property
    def http(self) -> httpx.AsyncClient:
        """One HTTP client (connection pool) for assistant-requests, tool calls and transfers' lookups."""
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ------------------------------------------------------------------ observers

    def _observe(self, what: str, call: Call, *args: Any) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, what)(call, *args)
            except Exception as exc:  # an observer's bug must not take a call down
                call.log.error("call_observer_failed", observer=type(observer).__name__, hook=what,
                               error=repr(exc), exc_info=exc)

    def notify_status(self, call: Call, status: str) -> None:
        self._observe("call_status", call, status)

    def notify_event(self, call: Call, event: SessionEvent) -> None:
        self._observe("call_event", call, event)

    def notify_message(self, call: Call, message: dict[str, Any]) -> None:
        self._observe("call_message", call, message)

    # ------------------------------------------------------------------ addresses

    @property
    def rtp_host(self) -> str:
        """Where RTP sockets bind: the SIP listen host (0.0.0.0 binds all)."""
        return self.config.sip.listen_addr[0]

    @property
    def sdp_address(self) -> str:
        """The address written into SDP c= lines (rtp.public_address, else the announced SIP host)."""
        if self.config.rtp.public_address:
            return self.config.rtp.public_address
        # UserAgent.start replaced a wildcard listen host by the default route's address (or refused to start)
        return self.ua.announced[0]

    def destination_for(self, uri: Uri, *, fallback: Addr) -> Addr:
        """Where to send an in-dialog request: the URI's host when it is an IP literal, else ``fallback``."""
        if isinstance(uri, SipUri):
            host = uri.host.strip("[]")
            if is_ip_literal(host):
                maddr = uri.params.get("maddr")
                return (maddr or host, uri.port or 5060)
        return fallback

    # ------------------------------------------------------------------ inbound

    def route(self, request: Request) -> RouteMatch | None:
        """The ``numbers:`` entry this INVITE reaches (see gateway.routing)."""
        return route_invite(self.config.numbers, request)

    def on_invite(self, request: Request, server_tx: ServerTransactionId, source: Addr, transport: str) -> None:
        if self._over_capacity(request):
            return
        match = self.route(request)
        if match is None:
            self.metrics.invites.labels("not_found").inc()
            # security.hide_unknown_numbers: the answer any number gets from an untrusted source, so that a
            # scanner learns nothing from 404 versus 403 (no user enumeration).
            self.ua.respond(request, 403 if self.config.security.hide_unknown_numbers else 404)
            return
        route = match.route
        if route.max_calls is not None:
            busy = sum(1 for c in self.calls.values() if c.direction == "inbound" and c.route is route)
            if busy >= route.max_calls:
                self.metrics.invites.labels("number_busy").inc()
                self.ua.respond(request, 486)  # RFC 3261 §21.4.24 Busy Here
                return
        if route.server is not None:
            target = CallTarget("request")
        elif route.echo:
            target = CallTarget("echo")
        else:
            target = CallTarget("assistant", route.assistant)
        try:
            offer = self._extract_offer(request)
        except RemoteProtocolError as exc:
            self.metrics.invites.labels("bad_sdp").inc()
            self.ua.respond(request, exc.status_code, exc.reason, headers=exc.extra_headers)
            return
        try:
            port = self.ports.acquire()
        except PortPoolExhausted as exc:
            self.metrics.invites.labels("no_ports").inc()
            self.log.warning("rtp_port_pool_exhausted", error=str(exc))
            self.ua.respond(request, 503, "No media ports available", headers=[("Retry-After", RETRY_AFTER_SECONDS)])
            return
        call = Call(
            self,
            direction="inbound",
            sip_call_id=request.call_id,
            transport=transport,
            peer=source,
            target=target,
            rtp_port=port,
            local_tag=self.ua.new_tag(),
            number=match.number or None,
        )
        call.route = route
        call.srtp = SrtpPolicy(route.srtp or self.config.rtp.srtp)
        try:
            call.start_inbound(request, server_tx, offer)
        except RemoteProtocolError as exc:
            self.ports.release(port)
            self.metrics.invites.labels("rejected").inc()
            response = make_response(
                request, exc.status_code, None, to_tag=call.local_tag, headers=exc.extra_headers
            )
            self.ua.send_response(response)
            return
        self.metrics.invites.labels("accepted").inc()
        self._admit(call)
        self.notify_status(call, call.status)
        self.ua.register_invite_server(server_tx, call)
        self.ua.register_dialog((request.call_id, call.local_tag, request.from_.tag or ""), call)
        call.log.info("call_incoming", route=route.number, target=target.kind, peer=f"{source[0]}:{source[1]}")
        self._tasks.create_task(call.run(call.ring))

    def _over_capacity(self, request: Request) -> bool:
        """Load shedding and the global caps: 503 + Retry-After for a new call, calls in progress untouched
        (RFC 3261 §21.5.4: the server is "temporarily unable to process the request due to a temporary
        overloading"). Answers the INVITE and returns True when it is refused."""
        security = self.config.security
        now = self.ua.now()
        if not self.ua.load.admit_invite(now):
            outcome = "overloaded"
        elif security.max_calls is not None and len(self.calls) >= security.max_calls:
            outcome = "max_calls"
        elif not self._call_rate.admit(now):
            outcome = "call_rate"
        else:
            return False
        self.metrics.invites.labels(outcome).inc()
        self.ua.respond(request, 503, headers=[("Retry-After", str(security.retry_after))])
        return True

    def _extract_offer(self, request: Request) -> SessionDescription | None:
        if not request.body:
            return None
        body = request.body
        if request.content_type == "multipart/mixed":
            part = _sdp_part(request.headers.get("Content-Type") or "", request.body)
            if part is None:
                raise RemoteProtocolError("Unsupported Media Type", status_code=415,
                                          extra_headers=(("Accept", "application/sdp"),))
            body = part
        try:
            return parse_sdp(body)
        except SdpError as exc:
            raise RemoteProtocolError(
                "Not Acceptable Here", status_code=488,
                extra_headers=(("Warning", f'399 {self.ua.announced[0]} "Malformed SDP: {exc.reason}"'),),
            ) from None

    # ------------------------------------------------------------------ outbound

    async def place_call(
        self,
        *,
        number: str | None = None,
        sip_uri: str | None = None,
        trunk: str | None = None,
        target: CallTarget,
        from_user: str | None = None,
        display_name: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Call:
        """Dial ``number`` through a trunk or ``sip_uri`` directly. Returns once the INVITE is sent."""
        from gateway.sip.uri import parse_uri

        trunk_cfg: TrunkConfig | None = None
        if sip_uri is not None:
            try:
                uri = parse_uri(sip_uri)
            except RemoteProtocolError as exc:
                raise CallError(f"invalid sipUri {sip_uri!r}: {exc.reason}") from None
            if not isinstance(uri, SipUri):
                raise CallError(f"sipUri {sip_uri!r} must be a sip: or sips: URI")
            if trunk is not None:
                trunk_cfg = self.config.trunk(trunk)
        elif number is not None:
            trunk_cfg = self.config.trunk(trunk) if trunk else (self.config.trunks[0] if self.config.trunks else None)
            if trunk_cfg is None:
                raise CallError(f"no trunk {'named ' + repr(trunk) if trunk else 'configured'} to dial {number!r}")
            uri = SipUri(host=trunk_cfg.host, port=trunk_cfg.port if trunk_cfg.port != 5060 else None, user=number)
        else:
            raise CallError("either a number or a sipUri is required")
        transport: str
        if trunk_cfg is not None:
            dest_host, dest_port, transport = trunk_cfg.host, trunk_cfg.port, trunk_cfg.transport
        else:
            # RFC 3261 §26.2.2: a sips: URI means TLS on every hop; §19.1: its default port is 5061.
            secure = uri.scheme == "sips"
            dest_host, dest_port = uri.host.strip("[]"), uri.port or (5061 if secure else 5060)
            transport = "tls" if secure else (uri.transport or "udp")
        destination = await self._resolve(dest_host, dest_port)
        if transport == "tls":
            self.ua.transport.set_tls_peer(
                destination, dest_host, verify=trunk_cfg.tls_verify if trunk_cfg is not None else True
            )
        if self.ua.draining:
            raise CallError("the gateway is draining")
        try:
            port = self.ports.acquire()
        except PortPoolExhausted as exc:
            raise CallError(str(exc)) from None
        auth = None
        if trunk_cfg is not None and trunk_cfg.username and trunk_cfg.password:
            auth = DigestClient(trunk_cfg.username, trunk_cfg.password, cnonce_factory=_cnonce)
        call = Call(
            self,
            direction="outbound",
            sip_call_id=self.ua.new_call_id(),
            transport=transport,
            peer=destination,
            target=target,
            rtp_port=port,
            local_tag=self.ua.new_tag(),
            number=trunk_cfg.name if trunk_cfg is not None else None,
        )
        call.srtp = SrtpPolicy(trunk_cfg.srtp if trunk_cfg is not None else self.config.rtp.srtp)
        user = from_user or (trunk_cfg.from_user or trunk_cfg.username if trunk_cfg else None) or "voicegw"
        call.customer_number = number if number is not None else sip_uri
        self._admit(call)
        self.notify_status(call, call.status)
        call.log.info("call_outgoing", to=str(uri), destination=f"{destination[0]}:{destination[1]}")
        started = asyncio.Event()

        def start() -> None:
            call.start_outbound(
                uri, destination, from_user=user, display_name=display_name, auth=auth, extra_headers=list(headers)
            )
            started.set()

        self._tasks.create_task(call.run(start))
        await started.wait()
        return call

    async def _resolve(self, host: str, port: int) -> Addr:
        if is_ip_literal(host):
            return (host.strip("[]"), port)
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), timeout=5)
        except (OSError, TimeoutError) as exc:
            raise CallError(f"cannot resolve {host!r}: {exc}") from None
        addr = infos[0][4]
        return (str(addr[0]), int(addr[1]))

    # ------------------------------------------------------------------ bookkeeping

    def _admit(self, call: Call) -> None:
        self.calls[call.id] = call
        self._idle.clear()
        self.metrics.calls_active.labels(call.direction).inc()
        self.metrics.rtp_ports_in_use.set(self.ports.in_use)

    def on_call_ended(self, call: Call) -> None:
        self.metrics.calls_ended.labels(call.direction, call.ended_reason or "unknown").inc()
        if call.answered_at is not None and call.ended_at is not None:
            self.metrics.call_duration_seconds.labels(call.direction).observe(call.ended_at - call.answered_at)

    def swap_port(self, taken: int) -> int:
        """A new RTP port for a call whose ``taken`` one could not be bound; ``taken`` goes to the back of the
        pool (least recently used first), so the next calls do not draw it at once. Raises PortPoolExhausted."""
        port = self.ports.acquire()
        self.ports.release(taken)
        return port

    def release(self, call: Call) -> None:
        """Called once the call's TaskGroup has finished: free everything it held."""
        if self.calls.pop(call.id, None) is None:
            return
        self.ports.release(call.rtp_port)
        self.metrics.calls_active.labels(call.direction).dec()
        self.metrics.rtp_ports_in_use.set(self.ports.in_use)
        for key in {call.dialog_key, (call.sip_call_id, call.local_tag, call.invite.from_.tag or "")
                    if call.invite is not None else None}:
            if key is not None:
                self.ua.unregister_dialog(key)
        if call.invite_tx is not None:
            self.ua.unregister_invite_server(call.invite_tx)
        if not self.calls:
            self._idle.set()
        self._observe("call_released", call)

    def assistant_for(self, target: CallTarget) -> Assistant | None:
        """The assistant a call talks to: given inline, by config name, or by the id of an assistant created
        over the API; with the target's ``assistantOverrides`` merged in. None: no such assistant.
        Raises AssistantError when the assistant or its overrides are invalid."""
        assistant: Assistant | None = None
        if target.assistant is not None:
            assistant = parse_assistant(target.assistant, where="assistant")
        elif target.name is not None:
            try:
                assistant = self.config.assistant(target.name)
            except KeyError:
                stored = self.assistant_store.get_assistant(target.name) if self.assistant_store else None
                if stored is not None:
                    assistant = parse_assistant(stored, where=f"assistant {target.name}")
        if assistant is not None and target.overrides:
            assistant = merge_overrides(assistant, target.overrides)
        return assistant

    # ------------------------------------------------------------------ assistant-request

    async def resolve_target(self, call: Call) -> CallTarget | None:
        """assistant-request (while the caller hears ringing): what the number's server wants this call to
        reach. None when the INVITE was rejected here (the manager answered it and ended the call)."""
        route = call.route
        assert route is not None and route.server is not None
        message = self.assistant_request_message(call)
        started = time.monotonic()
        decision = await request_assistant(self.http, route.server, message, now=time.time())
        elapsed = round(time.monotonic() - started, 3)
        self.metrics.assistant_requests.labels(decision.kind).inc()
        self.metrics.assistant_request_seconds.observe(elapsed)
        if decision.kind == "assistant":
            target = CallTarget("assistant", decision.assistant_id, assistant=decision.assistant,
                                overrides=decision.overrides, variable_values=None)
            try:
                assistant = self.assistant_for(target)
            except AssistantError as exc:
                decision_detail = str(exc)
                assistant = None
            else:
                decision_detail = f"unknown assistantId {decision.assistant_id!r}"
            if assistant is not None:
                call.log.info("assistant_request_answered", seconds=elapsed,
                              assistant=decision.assistant_id or assistant.name or "inline")
                values = dict(decision.overrides.get("variableValues") or {}) if decision.overrides else {}
                return CallTarget("assistant", decision.assistant_id, assistant=decision.assistant,
                                  overrides=decision.overrides, variable_values=values or None)
            reason = ("assistant-request-returned-invalid-assistant" if decision.assistant is not None
                      else "assistant-request-returned-no-assistant")
            return self._request_failed(call, reason, decision_detail, elapsed)
        if decision.kind == "transfer":
            call.log.info("assistant_request_answered", seconds=elapsed, destination=decision.destination)
            return CallTarget("transfer", destination=decision.destination)
        if decision.kind == "error":
            call.log.warning("assistant_request_error", seconds=elapsed, error=decision.detail)
            if decision.message is None:
                return self._request_failed(call, decision.ended_reason or "assistant-request-returned-error",
                                            decision.detail, elapsed)
            return CallTarget("error", message=decision.message, ended_reason=decision.ended_reason)
        return self._request_failed(call, decision.ended_reason or "assistant-request-failed",
                                    decision.detail, elapsed)

    def _request_failed(self, call: Call, reason: str, detail: str, elapsed: float) -> CallTarget | None:
        route = call.route
        assert route is not None
        call.log.warning("assistant_request_failed", reason=reason, detail=detail, seconds=elapsed,
                         url=route.server.url if route.server else None, fallback=route.fallback_assistant,
                         on_failure=route.on_failure)
        if route.fallback_assistant is not None:
            return CallTarget("assistant", route.fallback_assistant)
        if route.on_failure == "error-message":
            return CallTarget("error", message=route.error_message, ended_reason=reason)
        if call.state is CallState.RINGING and call.invite is not None:
            self.ua.respond(call.invite, 503, "Assistant request failed", to_tag=call.local_tag,
                            headers=[("Retry-After", RETRY_AFTER_SECONDS)])
            call.finish(reason)
        return None

    def assistant_request_message(self, call: Call) -> dict[str, Any]:
        """Vapi's ``assistant-request`` payload (the ``message`` object)."""
        from gateway.call_record import call_object

        return {
            "type": "assistant-request",
            "timestamp": int(time.time() * 1000),
            "call": call_object(call),
            "customer": {"number": call.customer_number} if call.customer_number else {},
            "phoneNumber": {"number": call.phone_number} if call.phone_number else None,
        }

    def get(self, call_id: str) -> Call | None:
        return self.calls.get(call_id)

    async def drain(self, grace: float) -> None:
        """Stop taking calls; wait up to ``grace`` seconds for calls to end, then hang up the rest."""
        self.ua.draining = True
        try:
            await self._drain_calls(grace)
        finally:
            await self.aclose()

    async def _drain_calls(self, grace: float) -> None:
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            for call in list(self.calls.values()):
                call.hangup("gateway-shutdown")
            try:
                async with asyncio.timeout(max(2.0, self.config.sip.timers.t1 * 8)):
                    await self._idle.wait()
            except TimeoutError:
                for call in list(self.calls.values()):
                    if call.state is not CallState.ENDED:
                        call.finish("gateway-shutdown")


def _sdp_part(content_type_header: str, body: bytes) -> bytes | None:
    """The application/sdp part of a multipart/mixed body (RFC 5621), or None."""
    raw = b"Content-Type: " + content_type_header.encode("latin-1", "replace") + b"\r\n\r\n" + body
    message = BytesParser(policy=HTTP).parsebytes(raw)
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_content_type() == "application/sdp":
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else None
    return None


def _cnonce() -> str:
    import secrets

    return secrets.token_hex(8)
