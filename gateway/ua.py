"""The user agent core (RFC 3261 §8, §12): joins the transport, the transaction layer and the calls.

It performs the UAS checks of §8.2 in the RFC's order (method → header → content inspection), answers
out-of-dialog OPTIONS/REGISTER itself, routes in-dialog requests to their dialog (481 when unknown) and hands
new INVITEs to the call manager. One asyncio timer drives every SIP timer (the layer's ``get_timer``).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Protocol, assert_never

from gateway.admission import Action, AdmissionPolicy, LoadMonitor, OverloadLimits, OverloadStarted
from gateway.config import GatewayConfig, is_ip_literal
from gateway.observability.logging import get_logger, redact_sip_message
from gateway.observability.metrics import Metrics, status_class
from gateway.sdp.crypto import redact_crypto_keys
from gateway.sip.auth import DigestServer
from gateway.sip.errors import RemoteProtocolError
from gateway.sip.headers import NameAddr, Via
from gateway.sip.message import Message, Request, Response, make_response, make_response_from_error
from gateway.sip.parser import parse_message
from gateway.sip.transaction import (
    AckReceived,
    AckTimeout,
    ClientTransactionId,
    ClientTransactionTimeout,
    RequestReceived,
    ResponseReceived,
    ServerTransactionId,
    TimerConfig,
    TransactionEvent,
    TransactionLayer,
)
from gateway.sip.uri import SipUri
from gateway.transport.sip_transport import Addr, SipTransport
from gateway.transport.tls import client_context, server_context

# Methods we implement as a UA; anything else known is 405, anything unknown is 501 (§8.2.1).
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "INFO")
KNOWN_METHODS = frozenset(
    (*ALLOW, "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER")
)
SUPPORTED = ("timer",)
ACCEPT = ("application/sdp", "application/dtmf-relay", "application/dtmf", "multipart/mixed")
DIALOG_REQUIRED = frozenset(("BYE", "UPDATE", "INFO", "PRACK", "NOTIFY", "REFER"))
# voicegw_sip_invites{outcome} for the §8.2 checks' verdicts on an INVITE (one outcome per status).
_CHECK_OUTCOMES = {416: "unsupported_uri", 483: "too_many_hops", 420: "bad_extension",
                   415: "unsupported_media_type", 406: "not_acceptable", 501: "not_implemented"}


class ClientOwner(Protocol):
    """Whoever sent a request through :meth:`UserAgent.send_request` gets its outcome."""

    def on_response(self, tx: ClientTransactionId, response: Response) -> None: ...

    def on_transaction_timeout(self, tx: ClientTransactionId) -> None: ...


class DialogUser(Protocol):
    """A call (or other dialog user) that receives in-dialog traffic."""

    local_tag: str  # our To tag on the INVITE's responses

    def on_request(self, request: Request, server_tx: ServerTransactionId) -> None: ...

    def on_ack(self, request: Request) -> None: ...

    def on_ack_timeout(self) -> None: ...

    def on_cancel(self, server_tx: ServerTransactionId) -> None: ...

    def on_2xx_retransmission(self, response: Response) -> None: ...


class InviteHandler(Protocol):
    def on_invite(self, request: Request, server_tx: ServerTransactionId, source: Addr, transport: str) -> None: ...


DialogKey = tuple[str, str, str]  # (Call-ID, local tag, remote tag)

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
# A public address reached by the default route: a UDP connect() only picks the outgoing interface, no packet
# is sent.
_PROBE_TARGETS = {socket.AF_INET: "8.8.8.8", socket.AF_INET6: "2001:4860:4860::8888"}


class AnnouncedAddressError(OSError):
    """sip.listen binds all addresses, no public_address is set and no default route gives one."""


def default_route_address(listen_host: str, *, socket_factory: Callable[..., socket.socket] = socket.socket) -> str:
    """The local address of the interface the default route leaves by (same family as ``listen_host``).

    Raises :class:`AnnouncedAddressError` when there is none (no route, or the kernel answers a wildcard)."""
    family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
    try:
        with socket_factory(family, socket.SOCK_DGRAM) as probe:
            probe.connect((_PROBE_TARGETS[family], 9))
            host = str(probe.getsockname()[0])
    except OSError as exc:
        raise AnnouncedAddressError(
            f"sip.listen {listen_host or '*'} binds all addresses and no default route gives one to announce "
            f"({exc.strerror or exc}); set sip.public_address"
        ) from None
    if host in WILDCARD_HOSTS:
        raise AnnouncedAddressError(
            f"sip.listen {listen_host} binds all addresses and the default route has no address; "
            "set sip.public_address"
        )
    return host


class UserAgent:
    def __init__(
        self,
        config: GatewayConfig,
        metrics: Metrics,
        tasks: asyncio.TaskGroup,
        *,
        address_probe: Callable[[str], str] = default_route_address,
    ) -> None:
        self.config = config
        self._address_probe = address_probe
        self._guessed_host: str | None = None
        self.metrics = metrics
        t = config.sip.timers
        self.timers = TimerConfig(t1=t.t1, t2=t.t2, t4=t.t4)
        self.layer = TransactionLayer(
            self.timers, branch_factory=lambda: secrets.token_hex(8), force_rport=config.sip.force_rport
        )
        self.transport = SipTransport(self._on_datagram, self._on_transport_error, tasks)
        self.log = get_logger("sip")
        self.invite_handler: InviteHandler | None = None
        self.draining = False
        self._client_owners: dict[ClientTransactionId, ClientOwner] = {}
        self._dialogs: dict[DialogKey, DialogUser] = {}
        self._invite_servers: dict[ServerTransactionId, DialogUser] = {}
        self._timer: asyncio.Handle | None = None
        self._timer_deadline = 0.0
        self._pumping = False
        self.local_addr: Addr = config.sip.listen_addr
        self.tls_addr: Addr | None = None
        security = config.security
        self._tasks = tasks
        self.admission = AdmissionPolicy.from_config(
            security, [t.host for t in config.trunks if is_ip_literal(t.host)]
        )
        self.load = LoadMonitor(OverloadLimits.from_config(security))
        self._digest = (
            DigestServer(security.realm, secrets.token_bytes(32)) if security.digest_users else None
        )
        self._lag_probe: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> Addr:
        """Bind; raises OSError (:class:`AnnouncedAddressError` when there is no address to announce)."""
        host, port = self.config.sip.listen_addr
        if host in WILDCARD_HOSTS and not self.config.sip.public_address:
            # Via, Contact and SDP c= must name an address peers can reach, never 0.0.0.0 or ::.
            self._guessed_host = self._address_probe(host)
            self.log.info("announced_address_guessed", listen=self.config.sip.listen, announced=self._guessed_host)
        self.local_addr = await self.transport.start(host, port)
        await self._start_tls()
        await self._trust_trunk_hosts()
        return self.local_addr

    async def _start_tls(self) -> None:
        """The TLS listener (sip.tls) and the contexts for outbound TLS (trunks with transport tls, sips: URIs)."""
        tls = self.config.sip.tls

        def client(verify: bool) -> ssl.SSLContext:
            return client_context(ca_file=tls.ca_file if tls else None, verify=verify and (tls is None or tls.verify_server))

        server = None
        if tls is not None and tls.cert_file is not None and tls.key_file is not None:
            server = server_context(tls.cert_file, tls.key_file, ca_file=tls.ca_file, verify_clients=tls.verify_clients)
        host, port = tls.listen_addr if tls is not None else ("", 0)
        self.tls_addr = await self.transport.start_tls(host, port, server, client)

    def port_for(self, transport: str) -> int:
        """The port announced in Via/Contact for ``transport``: TLS has its own listener (§19.1: 5061)."""
        if transport == "tls" and self.tls_addr is not None:
            return self.tls_addr[1]
        return self.announced[1]

    async def _trust_trunk_hosts(self) -> None:
        """Trunks named by host name: their addresses join the trusted sources (resolved once, at start)."""
        loop = asyncio.get_running_loop()
        for trunk in self.config.trunks:
            if is_ip_literal(trunk.host):
                continue
            try:
                infos = await asyncio.wait_for(loop.getaddrinfo(trunk.host, trunk.port, type=socket.SOCK_DGRAM), 5)
            except (OSError, TimeoutError) as exc:
                self.log.warning("trunk_host_unresolved", trunk=trunk.name, host=trunk.host, error=str(exc))
                continue
            self.admission.trust(str(info[4][0]) for info in infos)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.transport.close()

    def on_loop_probe(self, lag: float, now: float) -> None:
        """The app's 100 ms loop probe: its lag and the SIP receive queue feed load shedding."""
        self._overload(self.load.observe_lag(lag, now))
        backlog = self.transport.receive_backlog()
        if backlog is not None:
            self._overload(self.load.observe_sip_backlog(backlog.queued, backlog.capacity, backlog.drops, now))

    def on_playout_tick(self, lateness: float, skipped: int, now: float) -> None:
        """One playout tick (from the playout scheduler) for load shedding."""
        started = self.load.observe_playout_tick(lateness, skipped, now)
        if started is not None:
            self._overload(started)

    def _overload(self, started: OverloadStarted | None) -> None:
        if started is None:
            return
        signal = started.signal.value
        self.metrics.overload_episodes.labels(signal).inc()
        self.log.warning("overload_started", signal=signal, value=round(started.value, 4),
                         threshold=started.threshold, hold_seconds=self.load.hold)

    @property
    def announced(self) -> Addr:
        """Host and port written into Via and Contact (sip.public_address, else the bound address)."""
        if self.config.sip.public_address:
            return self.config.sip.announced_addr
        if self._guessed_host is not None:
            return self._guessed_host, self.local_addr[1]
        return self.local_addr

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # ----------------------------------------------------------------- building blocks

    def new_tag(self) -> str:
        return secrets.token_hex(6)

    def new_call_id(self) -> str:
        return f"{secrets.token_hex(12)}@{self.announced[0]}"

    def make_via(self, transport: str) -> Via:
        host, port = self.announced[0], self.port_for(transport)
        return Via(
            host=_host_for_uri(host),
            port=port,
            transport=transport.upper(),
            params={"branch": self.layer.new_branch(), "rport": None},
        )

    def contact(self, transport: str, user: str | None = None) -> NameAddr:
        host, port = self.announced[0], self.port_for(transport)
        params: dict[str, str | None] = {} if transport == "udp" else {"transport": transport}
        return NameAddr(uri=SipUri(host=_host_for_uri(host), port=port, user=user, params=params))

    def common_headers(self) -> list[tuple[str, str]]:
        return [("Allow", ", ".join(ALLOW)), ("Supported", ", ".join(SUPPORTED))]

    # ----------------------------------------------------------------- registries

    def register_dialog(self, key: DialogKey, user: DialogUser) -> None:
        self._dialogs[key] = user

    def unregister_dialog(self, key: DialogKey) -> None:
        self._dialogs.pop(key, None)

    def register_invite_server(self, tx: ServerTransactionId, user: DialogUser) -> None:
        self._invite_servers[tx] = user

    def unregister_invite_server(self, tx: ServerTransactionId) -> None:
        self._invite_servers.pop(tx, None)

    def forget_client(self, tx: ClientTransactionId) -> None:
        self._client_owners.pop(tx, None)

    @property
    def dialog_count(self) -> int:
        return len(self._dialogs)

    # ----------------------------------------------------------------- sending

    def send_request(
        self, request: Request, destination: Addr, transport: str, owner: ClientOwner
    ) -> ClientTransactionId:
        tx = self.layer.send_request(request, destination=destination, transport=transport, now=self.now())
        self._client_owners[tx] = owner
        self._pump()
        return tx

    def send_response(self, response: Response) -> None:
        self.layer.send_response(response, now=self.now())
        self.metrics.sip_responses_sent.labels(response.cseq.method, status_class(response.status_code)).inc()
        self._pump()

    def respond(
        self,
        request: Request,
        status_code: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        to_tag: str | None = None,
    ) -> Response:
        """Answer a request through its server transaction."""
        if to_tag is None and request.to.tag is None and status_code > 100:
            to_tag = self.new_tag()  # §8.2.6.2: a UAS MUST add a To tag (not for 100)
        response = make_response(request, status_code, reason, to_tag=to_tag, headers=headers)
        self.send_response(response)
        return response

    def send_stateless(self, message: Message, destination: Addr, transport: str) -> None:
        self.layer.send_stateless(message, destination=destination, transport=transport)
        self._pump()

    def cancel(self, tx: ClientTransactionId) -> None:
        self.layer.cancel(tx, now=self.now())
        self._pump()

    # ----------------------------------------------------------------- receiving

    def _on_transport_error(self, reason: str, peer: Addr, transport: str) -> None:
        self.metrics.sip_messages_dropped.labels("transport_error").inc()
        self.log.warning("sip_transport_error", reason=reason, peer=f"{peer[0]}:{peer[1]}", transport=transport)
        # §17.1.1.2 / §17.1.2.2: a transport failure ends the transactions to that peer like a timeout.
        self.layer.transport_error(destination=peer, transport=transport, now=self.now())
        self._pump()

    def _on_datagram(self, data: bytes, source: Addr, transport: str) -> None:
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626 §3.5.1)
        try:
            message = parse_message(data)
        except RemoteProtocolError as err:
            self._on_malformed(err, source, transport)
            return
        self._trace("sip_recv", data, source, transport)
        if isinstance(message, Request):
            self.metrics.sip_requests_received.labels(_method_label(message.method)).inc()
            if not self._admit(message, source, transport):
                return
        else:
            self.metrics.sip_responses_received.labels(
                _method_label(message.cseq.method), status_class(message.status_code)
            ).inc()
        self.layer.receive(message, source=source, transport=transport, now=self.now())
        self._pump()

    def _admit(self, request: Request, source: Addr, transport: str) -> bool:
        """Per-source limits, bans and the scanner filter, before any transaction exists (gateway.admission)."""
        in_dialog = request.to.tag is not None and _dialog_key_of_request(request) in self._dialogs
        decision = self.admission.check_request(
            source[0], request.headers.get("User-Agent"), self.now(), in_dialog=in_dialog
        )
        if decision.action is Action.ACCEPT:
            return True
        peer = f"{source[0]}:{source[1]}"
        if request.method == "INVITE":
            self.metrics.invites.labels(decision.reason).inc()
        if decision.reason == "rate_limit":
            self.metrics.sip_requests_limited.labels(decision.action.value).inc()
            if decision.notable:
                self.log.warning("sip_source_limited", peer=peer, action=decision.action.value,
                                 rate=self.admission.limits.rate, burst=self.admission.limits.burst)
        else:
            self.metrics.sip_messages_dropped.labels(decision.reason).inc()
        if decision.action is Action.REJECT and request.method != "ACK":
            # RFC 3261 §21.5.4: 503 "MAY indicate when the client should retry the request in a Retry-After".
            # Stateless: a flood must not fill the transaction table.
            response = make_response(request, 503, None, to_tag=request.to.tag or self.new_tag(),
                                     headers=[("Retry-After", str(self.config.security.retry_after))])
            self.send_stateless(response, source, transport)
            self.metrics.sip_responses_sent.labels(_method_label(request.method), "5xx").inc()
        return False

    def _on_malformed(self, err: RemoteProtocolError, source: Addr, transport: str) -> None:
        if err.is_response:
            self.metrics.sip_messages_dropped.labels("malformed_response").inc()
            self.log.info("sip_malformed_response_dropped", reason=err.reason, peer=f"{source[0]}:{source[1]}")
            return
        self.metrics.sip_messages_dropped.labels("malformed_request").inc()
        self.log.info(
            "sip_malformed_request", reason=err.reason, status=err.status_code, peer=f"{source[0]}:{source[1]}"
        )
        response = make_response_from_error(err)
        if response is None:
            return  # an ACK (never answered, §17), or not even Call-ID, CSeq, From and To to copy
        # Stateless answer (§8.2): no transaction exists for a request we could not parse.
        self.layer.send_stateless(response, destination=source, transport=transport)
        self.metrics.sip_responses_sent.labels("other", status_class(response.status_code)).inc()
        self._pump()

    def _pump(self) -> None:
        """Drain events (which may produce more), flush datagrams, re-arm the one timer."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while True:
                events = self.layer.events()
                if not events:
                    break
                for event in events:
                    self._dispatch(event)
            for out in self.layer.datagrams_to_send():
                self._trace("sip_send", out.data, out.destination, out.transport)
                self.transport.send(out.data, out.destination, out.transport)
        finally:
            self._pumping = False
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.layer.get_timer()
        if self._timer is not None:
            # Compare with the deadline we armed, not ``handle.when()``: uvloop's call_at returns a plain Handle
            # (no when()) for a deadline already past, which a loaded loop produces.
            if deadline is not None and self._timer_deadline == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)
            self._timer_deadline = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self.layer.handle_timer(self.now())
        self._pump()

    def _dispatch(self, event: TransactionEvent) -> None:
        match event:
            case RequestReceived():
                self._on_request(event)
            case AckReceived(request=request):
                user = self._dialogs.get(_dialog_key_of_request(request))
                if user is None:
                    self.metrics.sip_messages_dropped.labels("ack_no_dialog").inc()
                else:
                    user.on_ack(request)
            case ResponseReceived(response=response, client_tx=tx):
                owner = self._client_owners.get(tx)
                if owner is not None:
                    if response.status_code >= 200:
                        del self._client_owners[tx]
                    owner.on_response(tx, response)
                elif response.cseq.method == "INVITE" and 200 <= response.status_code < 300:
                    # A retransmitted 2xx after we saw the first: the dialog re-sends its ACK (§13.2.2.4).
                    dialog = self._dialogs.get(_dialog_key_of_response(response))
                    if dialog is not None:
                        dialog.on_2xx_retransmission(response)
            case ClientTransactionTimeout(client_tx=tx):
                owner = self._client_owners.pop(tx, None)
                if owner is not None:
                    owner.on_transaction_timeout(tx)
            case AckTimeout(response=response, server_tx=stx):
                self._invite_servers.pop(stx, None)
                user = self._dialogs.get(_dialog_key_of_sent_response(response))
                if user is not None:
                    user.on_ack_timeout()
            case _:
                assert_never(event)

    def _on_request(self, event: RequestReceived) -> None:
        request, stx = event.request, event.server_tx
        method = request.method
        if method == "CANCEL":
            target = self._invite_servers.get(event.cancels) if event.cancels is not None else None
            if target is None:
                self.respond(request, 481)  # §9.2: no matching transaction
                return
            # §9.2: the CANCEL itself is answered 200 at once; "The To tag of the response to the CANCEL and
            # the response to the original request SHOULD be the same."
            self.respond(request, 200, to_tag=target.local_tag)
            assert event.cancels is not None
            target.on_cancel(event.cancels)
            return
        verdict = self.check_request(request)
        if verdict is not None:
            status, reason, headers = verdict
            self.respond(request, status, reason, headers=headers)
            if method == "INVITE":
                self.metrics.invites.labels(_CHECK_OUTCOMES.get(status, "rejected")).inc()
            return
        to_tag = request.to.tag
        if to_tag is not None:
            user = self._dialogs.get(_dialog_key_of_request(request))
            if user is None:
                self.respond(request, 481)  # §12.2.2: request within an unknown dialog
                return
            user.on_request(request, stx)
            return
        match method:
            case "INVITE":
                if self.draining:
                    self.respond(request, 503, headers=[("Retry-After", "30")])
                    self.metrics.invites.labels("draining").inc()
                elif self.invite_handler is None:
                    self.respond(request, 503)
                    self.metrics.invites.labels("unavailable").inc()
                elif not self._source_may_call(request, event.source):
                    return
                else:
                    self.invite_handler.on_invite(request, stx, event.source, event.transport)
            case "OPTIONS":
                if self.draining:
                    self.respond(request, 503, headers=[("Retry-After", "30")])
                else:
                    self.respond(
                        request,
                        200,
                        headers=[*self.common_headers(), ("Accept", ", ".join(ACCEPT)), ("Accept-Language", "en")],
                    )
            case _ if method in DIALOG_REQUIRED:
                self.respond(request, 481)
            case _:
                # REGISTER, MESSAGE, SUBSCRIBE, PUBLISH...: we are no registrar or presence server.
                self.respond(request, 405, headers=self.common_headers())

    def untrusted_policy(self) -> str:
        """What INVITEs from sources outside the trusted set get: reject, challenge or allow."""
        mode = self.config.security.untrusted
        if mode != "auto":
            return mode
        if self._digest is not None:
            return "challenge"
        return "reject" if self.admission.has_trusted else "allow"

    def _source_may_call(self, request: Request, source: Addr) -> bool:
        """Inbound ACL (security.trusted_sources, trunks) and the Digest challenge for other sources (RFC 3261
        §22.2: "the UAS MAY ... challenge the originator to provide credentials by rejecting the request with a
        401"). Answers the INVITE itself and returns False when it may not go on to routing."""
        address = source[0]
        if self.admission.is_trusted(address):
            return True
        policy = self.untrusted_policy()
        if policy == "allow":
            return True
        if policy == "reject" or self._digest is None:
            self.respond(request, 403)
            self.metrics.invites.labels("forbidden").inc()
            return False
        now = self.now()
        credentials = request.headers.get("Authorization")
        if credentials is None:
            self.respond(request, 401, headers=[("WWW-Authenticate", v) for v in self._digest.challenge(now)])
            self.metrics.invites.labels("challenged").inc()
            return False
        users = self.config.security.digest_users
        try:
            result = self._digest.verify("INVITE", credentials, now=now, body=request.body,
                                         lookup_password=lambda user, _realm: users.get(user))
        except RemoteProtocolError as exc:
            self.respond(request, 400, exc.reason)
            self.metrics.invites.labels("auth_failed").inc()
            return False
        if result.ok:
            return True
        if not result.stale and self.admission.record_auth_failure(address, now):
            self.metrics.sip_bans.inc()
            self.log.warning("sip_source_banned", peer=address, seconds=self.config.security.ban_seconds,
                             failures=self.config.security.ban_failures)
        self.metrics.sip_banned_sources.set(self.admission.banned_count(now))
        self.metrics.invites.labels("auth_failed").inc()
        self.respond(request, 401, headers=[
            ("WWW-Authenticate", v) for v in self._digest.challenge(now, stale=result.stale)
        ])
        return False

    def check_request(self, request: Request) -> tuple[int, str | None, list[tuple[str, str]]] | None:
        """RFC 3261 §8.2.1-§8.2.3 checks, in order. Returns (status, reason, headers) to reject, else None."""
        method = request.method
        # §8.2.1 method inspection
        if method not in KNOWN_METHODS:
            return 501, None, self.common_headers()
        # §8.2.2.1 To and Request-URI: we only serve sip:/sips: URIs
        if not isinstance(request.uri, SipUri):
            return 416, None, []
        # RFC 3261 §16.3 step 2 applies to us as a B2BUA: a request that may not travel further (OPTIONS may
        # still be answered by its final recipient).
        if request.max_forwards == 0 and method not in ("OPTIONS", "ACK", "BYE", "CANCEL"):
            return 483, None, []
        # §8.2.2.3 Require: "the UAS MUST respond with 420 (Bad Extension)" listing what it does not support.
        if method not in ("ACK", "CANCEL"):
            unsupported = [opt for opt in request.headers.get_list("Require") if opt.lower() not in SUPPORTED]
            if unsupported:
                return 420, None, [("Unsupported", ", ".join(unsupported))]
        # §8.2.3 content processing
        if request.body and method in ("INVITE", "UPDATE", "ACK"):
            ctype = request.content_type
            if ctype not in ("application/sdp", "multipart/mixed"):
                return 415, None, [("Accept", "application/sdp")]
        if method == "INVITE" and "Accept" in request.headers:
            accepted = [a.split(";")[0].strip().lower() for a in request.headers.get_list("Accept")]
            if accepted and not {"application/sdp", "application/*", "*/*"} & set(accepted):
                # §21.4.7: we can only answer with SDP.
                return 406, None, [("Accept", "application/sdp")]
        return None

    def _trace(self, event: str, data: bytes, peer: Addr, transport: str) -> None:
        """``log.sip_trace``: one line per SIP message as it went on (or came off) the wire, retransmissions
        included, with the peer and transport; credentials redacted."""
        if self.config.log.sip_trace:
            self.log.info(
                event,
                peer=f"{peer[0]}:{peer[1]}",
                transport=transport,
                size=len(data),
                message=redact_crypto_keys(redact_sip_message(data.decode("utf-8", "replace"))),
            )


def _method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def _host_for_uri(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _dialog_key_of_request(request: Request) -> DialogKey:
    # A request received from the peer: our tag is in To, theirs in From.
    return (request.call_id, request.to.tag or "", request.from_.tag or "")


def _dialog_key_of_response(response: Response) -> DialogKey:
    # A response to our request: our tag is in From, theirs in To.
    return (response.call_id, response.from_.tag or "", response.to.tag or "")


def _dialog_key_of_sent_response(response: Response) -> DialogKey:
    # A response we sent: our tag is in To.
    return (response.call_id, response.to.tag or "", response.from_.tag or "")
