"""The SIP transaction layer, sans-IO: RFC 3261 §17 (matching §17.1.3 and §17.2.3, timers Table 4), §9.1-9.2
(CANCEL), §18.2.1-18.2.2 (Via on receipt, where responses go), RFC 3581 (rport) and RFC 6026 (Accepted).

Messages and ``now`` go in through :meth:`TransactionLayer.receive`, ``send_*`` and :meth:`handle_timer`;
bytes to send come out of :meth:`datagrams_to_send` and TU events out of :meth:`events`. One heap serves
the timers of every transaction; a terminated transaction is forgotten at once.
"""

from __future__ import annotations

import collections
import heapq
import ipaddress
from collections.abc import Callable

from gateway.sip.errors import LocalProtocolError, RemoteProtocolError
from gateway.sip.headers import Headers, Via, split_header_list
from gateway.sip.message import Message, Request, Response, make_response
from gateway.sip.tx_client import ClientTransaction, InviteClientTransaction, NonInviteClientTransaction
from gateway.sip.tx_common import TimerName, Transaction
from gateway.sip.tx_events import (
    AckReceived,
    AckTimeout,
    Addr,
    ClientTransactionId,
    ClientTransactionTimeout,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    ServerTransactionId,
    TimerConfig,
    TransactionEvent,
    is_reliable,
)
from gateway.sip.tx_server import InviteServerState, ServerTransaction
from gateway.sip.uri import uri_equal

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "AckTimeout",
    "Addr",
    "ClientTransactionId",
    "ClientTransactionTimeout",
    "Outgoing",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransactionId",
    "TimerConfig",
    "TransactionEvent",
    "TransactionLayer",
]

MAGIC_COOKIE = "z9hG4bK"  # §8.1.1.7

# (Call-ID, CSeq number, From tag, To tag of the 2xx): finds the Accepted INVITE server transaction an ACK
# for a 2xx belongs to. That ACK carries a new branch (§13.2.2.4), so §17.2.3 matching cannot find it.
_AckKey = tuple[str, int, str | None, str | None]
# (deadline, sequence, transaction, timer); an entry is current while transaction.timers[timer] == sequence.
_HeapEntry = tuple[float, int, Transaction, TimerName]
_DEFAULT_TIMERS = TimerConfig()


def is_rfc3261_branch(branch: str | None) -> bool:
    """§17.2.3: the branch is RFC 3261 style when it begins with the magic cookie. A bare "z9hG4bK" carries
    no transaction identifier (RFC 4475 §3.2.1) and falls back to RFC 2543 matching."""
    return branch is not None and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE)


def _default_port(via: Via) -> int:
    return 5061 if via.transport.upper() in ("TLS", "WSS") else 5060


def _sent_by(via: Via) -> str:
    return f"{via.host.lower()}:{via.port or _default_port(via)}"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _server_tx_id(message: Message, method: str) -> tuple[ServerTransactionId, bool]:
    """§17.2.3 key for ``message`` as a request of ``method`` (ACK and CANCEL map onto INVITE where the
    caller asks). Returns the key and whether it is an RFC 2543 fallback key, which the caller must confirm
    by comparing the Request-URI and To tag (not part of the key: a response has no Request-URI)."""
    via = message.top_via
    branch = via.branch
    if is_rfc3261_branch(branch):
        return ServerTransactionId(f"{branch}|{_sent_by(via)}|{method}"), False
    from_tag = message.from_.tag or ""
    key = f"rfc2543|{branch or ''}|{message.call_id}|{message.cseq.seq}|{from_tag}|{_sent_by(via)}|{method}"
    return ServerTransactionId(key), True


class TransactionLayer:
    """All client and server transactions of one SIP endpoint."""

    def __init__(
        self, timers: TimerConfig = _DEFAULT_TIMERS, *, branch_factory: Callable[[], str], force_rport: bool = False
    ) -> None:
        self.timers = timers
        # Answer every UDP request at its source address and port, as if it carried ;rport (RFC 3581) -
        # what SBCs and PBXes do by default for peers behind NAT that forget to ask.
        self.force_rport = force_rport
        self.counters: collections.Counter[str] = collections.Counter()
        self._branch_factory = branch_factory
        self._clients: dict[ClientTransactionId, ClientTransaction] = {}
        self._servers: dict[ServerTransactionId, ServerTransaction] = {}
        self._ack_keys: dict[_AckKey, ServerTransactionId] = {}
        self._ack_keys_by_tx: dict[ServerTransactionId, list[_AckKey]] = {}
        self._heap: list[_HeapEntry] = []
        self._timer_seq = 0
        self._live_timers = 0
        self._outgoing: list[Outgoing] = []
        self._events: list[TransactionEvent] = []

    # ----------------------------------------------------------------------------------- public API

    def new_branch(self) -> str:
        """§8.1.1.7: "The branch ID inserted by an element compliant with this specification MUST always
        begin with the characters "z9hG4bK"."""
        return MAGIC_COOKIE + self._branch_factory()

    @property
    def live_transactions(self) -> int:
        return len(self._clients) + len(self._servers)

    def datagrams_to_send(self) -> list[Outgoing]:
        out, self._outgoing = self._outgoing, []
        return out

    def events(self) -> list[TransactionEvent]:
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and not self._current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._current(entry):
                continue
            _, _, tx, name = entry
            del tx.timers[name]
            self._live_timers -= 1
            tx.on_timer(name, now)

    def receive(self, message: Message, *, source: Addr, transport: str, now: float) -> None:
        """A parsed message from the network. A request's top Via gets ``received``/``rport`` in place
        (§18.2.1, RFC 3581) so the responses the TU builds from it carry them; a new request becomes a
        server transaction and a :class:`RequestReceived`; a response goes to its client transaction.
        Whatever matches nothing is counted in :attr:`counters` (and an unmatched ACK is passed up)."""
        transport = transport.lower()
        if isinstance(message, Response):
            self._receive_response(message, source=source, now=now)
        else:
            self._receive_request(message, source=source, transport=transport, now=now)

    def send_request(
        self, request: Request, *, destination: Addr, transport: str, now: float
    ) -> ClientTransactionId:
        """Start a client transaction: INVITE gets Figure 5, anything else Figure 6."""
        if request.method == "ACK":
            raise LocalProtocolError("ACK is not sent in a client transaction (use send_stateless)")
        try:
            branch = request.top_via.branch
            cseq = request.cseq
            _ = (request.from_, request.to, request.call_id)  # ACK and CANCEL copy them: check them now
        except RemoteProtocolError as err:
            raise LocalProtocolError(f"cannot send a malformed request: {err.reason}") from err
        if not is_rfc3261_branch(branch):
            raise LocalProtocolError(f"top Via branch {branch!r} was not made by new_branch()")
        if cseq.method != request.method:
            raise LocalProtocolError(f"CSeq method {cseq.method} differs from {request.method}")
        tx_id = ClientTransactionId(f"{branch}|{request.method}")
        if tx_id in self._clients:
            raise LocalProtocolError(f"client transaction {tx_id} exists already (branch reused)")
        kind = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        tx = kind(self, tx_id, request, destination=destination, transport=transport)
        self._clients[tx_id] = tx
        tx.start(now)
        return tx_id

    def send_response(self, response: Response, *, now: float) -> None:
        """Hand a response to the server transaction it answers (matched by top Via and CSeq method)."""
        try:
            method = response.cseq.method
            tx_id, _ = _server_tx_id(response, method)
            to_tag = response.to.tag
            ack_key: _AckKey = (response.call_id, response.cseq.seq, response.from_.tag, to_tag)
        except RemoteProtocolError as err:
            raise LocalProtocolError(f"cannot send a malformed response: {err.reason}") from err
        tx = self._servers.get(tx_id)
        if tx is None:
            raise LocalProtocolError(f"no server transaction for {response.status_code} to {method}")
        tx.send_response(response, now)
        if tx.is_invite and 200 <= response.status_code < 300 and not tx.is_terminated:
            self._ack_keys[ack_key] = tx_id
            self._ack_keys_by_tx.setdefault(tx_id, []).append(ack_key)

    def send_stateless(self, message: Message, *, destination: Addr, transport: str) -> None:
        """Send without a transaction: the ACK for a 2xx (§13.2.2.4), stateless error responses."""
        self.send(Outgoing(data=message.serialize(), destination=destination, transport=transport.lower()))

    def cancel(self, tx: ClientTransactionId, *, now: float) -> None:
        """§9.1: CANCEL the INVITE of client transaction ``tx`` (sent now, held until a provisional response,
        or not sent at all once a final response arrived)."""
        client = self._clients.get(tx)
        if client is None:
            # The transaction ended: a final response arrived or it timed out; either way nothing to cancel.
            self.counters["cancel_not_sent"] += 1
            return
        if not isinstance(client, InviteClientTransaction):
            raise LocalProtocolError(f"only INVITE client transactions are cancelled, not {tx}")
        if not client.request_cancel(now):
            self.counters["cancel_not_sent"] += 1

    def transport_error(self, *, destination: Addr, transport: str, now: float) -> None:
        """The edge could not deliver to ``destination`` (ICMP unreachable, connection refused or lost):
        every transaction sending there sees a transport error (Figures 5-8); client ones report a timeout."""
        transport = transport.lower()
        txs: list[Transaction] = [*self._clients.values(), *self._servers.values()]
        for tx in txs:
            if tx.destination == destination and tx.transport == transport and not tx.is_terminated:
                tx.on_transport_error(now)

    def response_destination(self, request: Request, *, source: Addr, transport: str) -> Addr:
        """§18.2.2 with RFC 3581 §4: where the responses to ``request`` go."""
        # "If the "sent-protocol" is a reliable transport protocol ..., the response MUST be sent using the
        # existing connection to the source of the original request".
        if is_reliable(transport):
            return source
        via = request.top_via
        maddr = via.params.get("maddr")
        if maddr:
            return (maddr, via.port or _default_port(via))
        # RFC 3581: "the response MUST be sent to the IP address listed in the "received" parameter, and
        # the port in the "rport" parameter" - i.e. back where the request came from.
        rport = via.rport
        if rport is not None or self.force_rport:
            return (source[0], int(rport) if rport is not None and rport.isdigit() else source[1])
        # "Otherwise, ... if the "received" parameter is present, send the response to the address in the
        # "received" parameter, using the port indicated in the "sent-by" value, or using port 5060".
        # The received address is the packet's source address (§18.2.1).
        return (source[0], via.port or _default_port(via))

    # ------------------------------------------------------------------------ TransactionHost protocol

    def send(self, outgoing: Outgoing) -> None:
        self._outgoing.append(outgoing)

    def emit(self, event: TransactionEvent) -> None:
        self._events.append(event)

    def schedule(self, tx: Transaction, name: TimerName, deadline: float) -> None:
        self._timer_seq += 1
        if name not in tx.timers:
            self._live_timers += 1
        tx.timers[name] = self._timer_seq
        heapq.heappush(self._heap, (deadline, self._timer_seq, tx, name))
        if len(self._heap) > 64 and len(self._heap) > 4 * self._live_timers:
            # Stopped timers leave stale entries behind; drop them so the heap tracks live timers.
            self._heap = [entry for entry in self._heap if self._current(entry)]
            heapq.heapify(self._heap)

    def unschedule(self, tx: Transaction, name: TimerName) -> None:
        if tx.timers.pop(name, None) is not None:
            self._live_timers -= 1

    def remove(self, tx: Transaction) -> None:
        self._live_timers -= len(tx.timers)
        tx.timers.clear()
        if isinstance(tx, ClientTransaction):
            self._clients.pop(tx.tx_id, None)
        elif isinstance(tx, ServerTransaction):
            self._servers.pop(tx.tx_id, None)
            for key in self._ack_keys_by_tx.pop(tx.tx_id, ()):
                if self._ack_keys.get(key) == tx.tx_id:
                    del self._ack_keys[key]

    def start_cancel(self, cancel: Request, *, destination: Addr, transport: str, now: float) -> None:
        self.send_request(cancel, destination=destination, transport=transport, now=now)

    # ----------------------------------------------------------------------------------- internals

    @staticmethod
    def _current(entry: _HeapEntry) -> bool:
        return entry[2].timers.get(entry[3]) == entry[1]

    def _receive_response(self, response: Response, *, source: Addr, now: float) -> None:
        try:
            via = response.top_via
            tx_id = ClientTransactionId(f"{via.branch}|{response.cseq.method}")
        except RemoteProtocolError:
            self.counters["response_malformed"] += 1
            return
        # §17.1.3: the branch of the top Via and the CSeq method identify the client transaction.
        tx = self._clients.get(tx_id)
        if tx is None:
            self.counters["response_unmatched"] += 1
            return
        # §18.1.2: "If the value of the sent-by parameter in that header field value does not correspond to
        # a value that the client transport is configured to insert into requests, the response MUST be
        # silently discarded."
        if _sent_by(via) != _sent_by(tx.request.top_via):
            self.counters["response_via_mismatch"] += 1
            return
        tx.on_response(response, source, now)

    def _receive_request(self, request: Request, *, source: Addr, transport: str, now: float) -> None:
        try:
            self._stamp_via(request, source)
            if request.cseq.method != request.method:
                self.counters["request_cseq_method_mismatch"] += 1
                return
            if request.method == "ACK":
                self._receive_ack(request, source=source, transport=transport, now=now)
                return
            tx_id, rfc2543 = _server_tx_id(request, request.method)
            cancels = self._find_cancelled(request) if request.method == "CANCEL" else None
            to_tag = request.to.tag
        except RemoteProtocolError:
            self.counters["request_malformed"] += 1
            return
        tx = self._servers.get(tx_id)
        if tx is not None:
            if rfc2543 and not (uri_equal(tx.request.uri, request.uri) and tx.request.to.tag == to_tag):
                self.counters["rfc2543_key_collision"] += 1
                return
            tx.on_request_retransmission(now)
            return
        destination = self.response_destination(request, source=source, transport=transport)
        tx = ServerTransaction(
            self, tx_id, request, source=source, destination=destination, transport=transport, rfc2543=rfc2543
        )
        self._servers[tx_id] = tx
        self.emit(
            RequestReceived(
                request=request, source=source, transport=transport, server_tx=tx_id, cancels=cancels
            )
        )
        if tx.is_invite:
            # §17.2.1: "The server transaction MUST generate a 100 (Trying) response unless it knows that the
            # TU will generate a provisional or final response within 200 ms" - we cannot know, so always.
            tx.send_response(make_response(request, 100), now)

    def _receive_ack(self, ack: Request, *, source: Addr, transport: str, now: float) -> None:
        # §17.2.3: an ACK matches the INVITE server transaction it acknowledges ("the method of the request
        # matches the one that created the transaction, except for ACK, where the method of the request
        # that created the transaction is INVITE").
        tx_id, rfc2543 = _server_tx_id(ack, "INVITE")
        tx = self._servers.get(tx_id)
        # RFC 2543 fallback: "the To tag of the ACK matches the To tag of the response sent by the server
        # transaction" (and the Request-URI matches).
        if (
            tx is not None
            and rfc2543
            and not (uri_equal(tx.request.uri, ack.uri) and ack.to.tag == tx.response_to_tag)
        ):
            tx = None
        if tx is None:
            # The ACK of a 2xx has its own branch (§13.2.2.4): find the Accepted transaction by dialog.
            accepted = self._ack_keys.get((ack.call_id, ack.cseq.seq, ack.from_.tag, ack.to.tag))
            tx = None if accepted is None else self._servers.get(accepted)
        if tx is None:
            self.counters["ack_unmatched"] += 1
            self.emit(AckReceived(request=ack, source=source, transport=transport, server_tx=None))
            return
        if tx.state is InviteServerState.PROCEEDING:
            self.counters["ack_before_final"] += 1
            return
        tx.on_ack(ack, source, transport, now)

    def _find_cancelled(self, cancel: Request) -> ServerTransactionId | None:
        """§9.2: apply §17.2.3 "assuming that the request method is anything but CANCEL or ACK"."""
        tx_id, rfc2543 = _server_tx_id(cancel, "INVITE")
        tx = self._servers.get(tx_id)
        if tx is None:
            return None
        if rfc2543 and not (uri_equal(tx.request.uri, cancel.uri) and tx.request.to.tag == cancel.to.tag):
            return None
        return tx_id

    def _stamp_via(self, request: Request, source: Addr) -> None:
        """§18.2.1 and RFC 3581 §4 on the top Via of a received request."""
        via = request.top_via
        changed = False
        asked_rport = via.rport == ""
        if asked_rport:
            # RFC 3581: "If this Via header field value contains an "rport" parameter with no value, it MUST
            # set the value of the parameter to the source port of the request."
            via.params["rport"] = str(source[1])
            changed = True
        # §18.2.1: "If the host portion of the "sent-by" field contains a domain name, or if it contains an
        # IP address that differs from the packet source address, the server MUST add a "received"
        # parameter"; RFC 3581: with rport, "the server MUST insert a "received" parameter ... even if it is
        # identical to the value of the "sent-by" component".
        # A source address is an IP literal: a sent-by spelled the same is that address (no parse needed).
        differs = via.host != source[0] and (_ip(via.host) is None or _ip(via.host) != _ip(source[0]))
        if (asked_rport or differs) and via.received != source[0]:
            via.params["received"] = source[0]
            changed = True
        if changed:
            request.headers = _with_top_via(request.headers, via)


def _with_top_via(headers: Headers, top: Via) -> Headers:
    """A copy of ``headers`` whose first Via value is ``top``, every other field and value untouched."""
    out = Headers()
    first = True
    for name, value in headers:
        if first and name == "Via":
            values = split_header_list(value)
            values[0] = str(top)
            value = ", ".join(values)
            first = False
        out.add(name, value)
    return out
