"""SIP dialogs, sans-IO (RFC 3261 §12; §13.2.2.4 ACK for 2xx; §15 BYE).

A :class:`Dialog` holds the state of §12: the dialog ID (Call-ID, local tag, remote tag), the
local and remote sequence numbers, the local and remote URIs, the remote target, the route set
and the secure flag. It builds in-dialog requests (§12.2.1.1, loose and strict routing), the ACK
for a 2xx (§13.2.2.4), and checks incoming requests (§12.2.2: CSeq ordering, target refresh).

Dialog states and their transitions (§12: "A dialog can also be in the 'early' state ... when it
is created with a provisional response, and then transition to the 'confirmed' state when a 2xx
final response arrives"; §12.3 and §15 for termination) are the single table ``_TRANSITIONS``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.sip.errors import LocalProtocolError, RemoteProtocolError
from gateway.sip.headers import Headers, NameAddr, Via, canonical_name
from gateway.sip.message import Message, Request, Response
from gateway.sip.uri import SipUri, Uri

__all__ = [
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogState",
    "incoming_dialog_id",
]

# Requests that refresh the remote target (§12.2: re-INVITE; RFC 3311 UPDATE; RFC 6665 §4.3
# SUBSCRIBE and NOTIFY; RFC 3515 REFER).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
# Header fields the dialog writes itself; callers may not pass them in ``headers``.
_MANAGED = frozenset({"via", "from", "to", "call-id", "cseq", "route", "max-forwards", "contact", "content-length"})
# §8.1.1.6: "A UAC MUST insert a Max-Forwards header field ... which SHOULD be 70".
DEFAULT_MAX_FORWARDS = 70


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class _Input(enum.Enum):
    CONFIRM = "2xx to the dialog-creating request"
    TERMINATE = "non-2xx final, BYE, 481/408, or the UA's decision"


# RFC 3261 §12.1 / §12.3. A late 2xx leaves a terminated dialog terminated (the UA still ACKs
# it and sends BYE, §15); nothing brings a dialog back to early.
_TRANSITIONS: dict[tuple[DialogState, _Input], DialogState] = {
    (DialogState.EARLY, _Input.CONFIRM): DialogState.CONFIRMED,
    (DialogState.EARLY, _Input.TERMINATE): DialogState.TERMINATED,
    (DialogState.CONFIRMED, _Input.CONFIRM): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, _Input.TERMINATE): DialogState.TERMINATED,
    (DialogState.TERMINATED, _Input.CONFIRM): DialogState.TERMINATED,
    (DialogState.TERMINATED, _Input.TERMINATE): DialogState.TERMINATED,
}


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: "A dialog is identified ... by a Call-ID, a local tag and a remote tag".

    An absent tag (RFC 2543 peers) is the empty string.
    """

    call_id: str
    local_tag: str
    remote_tag: str


def incoming_dialog_id(message: Message) -> DialogId:
    """The ID, from our side, of the dialog an incoming request or response belongs to.

    §12.2.2: for a request we receive, the local tag is the To tag and the remote tag the From
    tag; for a response to a request we sent, the local tag is the From tag and the remote tag
    the To tag.
    """
    if isinstance(message, Request):
        return DialogId(message.call_id, message.to.tag or "", message.from_.tag or "")
    return DialogId(message.call_id, message.from_.tag or "", message.to.tag or "")


def _without_tag(addr: NameAddr) -> NameAddr:
    out = addr.copy()
    out.params.pop("tag", None)
    return out


def _request_uri(uri: Uri) -> Uri:
    """A URI fit for the Request-URI: §19.1.1 Table 1 allows neither ``method`` nor headers there."""
    out = uri.copy()
    if isinstance(out, SipUri):
        out.params.pop("method", None)
        out.headers = None
    return out


def _is_loose(route: NameAddr) -> bool:
    return isinstance(route.uri, SipUri) and "lr" in route.uri.params


def _is_secure(request: Request) -> bool:
    # §12.1.1/§12.1.2: secure "if the request was sent over TLS, and the Request-URI contained
    # a SIPS URI".
    return isinstance(request.uri, SipUri) and request.uri.scheme == "sips" and request.top_via.transport == "TLS"


def _first_contact(message: Message) -> NameAddr | None:
    contacts = message.contacts
    return contacts[0] if contacts else None


def _default_retry_after() -> int:
    # §12.2.2 demands the 500 but names no Retry-After value for an out-of-order request (§14.2's
    # "random between 0 and 10" is for overlapping INVITEs); a UA may inject its own source.
    return 5


class Dialog:
    """One dialog from our side. Build it with :meth:`create_uas` or :meth:`create_uac`."""

    __slots__ = (
        "_creating",
        "_initial_local_seq",
        "_retry_after",
        "_state",
        "id",
        "is_uac",
        "local_contact",
        "local_party",
        "local_seq",
        "remote_party",
        "remote_seq",
        "remote_target",
        "route_set",
        "secure",
    )

    def __init__(
        self,
        *,
        dialog_id: DialogId,
        state: DialogState,
        is_uac: bool,
        local_party: NameAddr,
        remote_party: NameAddr,
        local_seq: int | None,
        remote_seq: int | None,
        remote_target: Uri,
        route_set: list[NameAddr],
        local_contact: NameAddr,
        secure: bool,
        creating: tuple[int, str],
        initial_local_seq: int = 1,
        retry_after: Callable[[], int] = _default_retry_after,
    ) -> None:
        self.id = dialog_id
        self._state = state
        self.is_uac = is_uac
        self.local_party = local_party
        self.remote_party = remote_party
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_contact = local_contact
        self.secure = secure
        self._creating = creating  # (CSeq number, method) of the dialog-creating request
        self._initial_local_seq = initial_local_seq
        self._retry_after = retry_after

    # ------------------------------------------------------------------ creation (§12.1)

    @classmethod
    def create_uas(
        cls,
        request: Request,
        response: Response,
        *,
        local_contact: NameAddr,
        initial_local_seq: int = 1,
        retry_after: Callable[[], int] = _default_retry_after,
    ) -> Dialog:
        """The dialog a UAS creates by answering ``request`` with a 101-299 ``response`` (§12.1.1).

        ``initial_local_seq`` is the CSeq of our first request in the dialog ("the local sequence
        number MUST be empty" until then); ``retry_after`` gives the Retry-After seconds of the
        500 for out-of-order requests.
        """
        if not 101 <= response.status_code <= 299:
            raise LocalProtocolError(f"a {response.status_code} response does not create a dialog")
        local_tag = response.to.tag
        if not local_tag:
            # §12.1.1: "the UAS MUST add a tag to the To header field in the response"
            raise LocalProtocolError("our dialog-creating response has no To tag")
        contact = _first_contact(request)
        if contact is None:
            # §8.1.1.8: "The Contact header field MUST be present and contain exactly one SIP
            # or SIPS URI in any request that can result in the establishment of a dialog."
            raise RemoteProtocolError(f"{request.method} without Contact cannot create a dialog")
        return cls(
            dialog_id=DialogId(request.call_id, local_tag, request.from_.tag or ""),
            state=DialogState.CONFIRMED if response.status_code >= 200 else DialogState.EARLY,
            is_uac=False,
            local_party=_without_tag(request.to),
            remote_party=_without_tag(request.from_),
            local_seq=None,
            remote_seq=request.cseq.seq,
            remote_target=contact.uri.copy(),
            # "The route set MUST be set to the list of URIs in the Record-Route header field
            # from the request, taken in order and preserving all URI parameters."
            route_set=request.record_routes,
            local_contact=local_contact.copy(),
            secure=_is_secure(request),
            creating=(request.cseq.seq, request.method),
            initial_local_seq=initial_local_seq,
            retry_after=retry_after,
        )

    @classmethod
    def create_uac(
        cls,
        request: Request,
        response: Response,
        *,
        retry_after: Callable[[], int] = _default_retry_after,
    ) -> Dialog:
        """The dialog a 101-299 ``response`` with a To tag creates for our ``request`` (§12.1.2)."""
        if not 101 <= response.status_code <= 299:
            raise LocalProtocolError(f"a {response.status_code} response does not create a dialog")
        remote_tag = response.to.tag
        if remote_tag is None and response.status_code < 200:
            raise LocalProtocolError("a provisional response without To tag creates no dialog")
        local_tag = request.from_.tag
        if not local_tag:
            raise LocalProtocolError("our request has no From tag")
        local_contact = _first_contact(request)
        if local_contact is None:
            raise LocalProtocolError(f"our {request.method} has no Contact")
        contact = _first_contact(response)
        if contact is not None:
            remote_target = contact.uri.copy()
        elif response.status_code < 200:
            remote_target = request.uri.copy()  # early dialog without Contact: keep the R-URI
        else:
            raise RemoteProtocolError(f"{response.status_code} to {request.method} without Contact", is_response=True)
        return cls(
            # §12.1.2: "the remote tag MUST be set to the tag in the To field of the response"
            # (null for RFC 2543 peers that send none).
            dialog_id=DialogId(request.call_id, local_tag, remote_tag or ""),
            state=DialogState.CONFIRMED if response.status_code >= 200 else DialogState.EARLY,
            is_uac=True,
            local_party=_without_tag(request.from_),
            remote_party=_without_tag(request.to),
            local_seq=request.cseq.seq,
            remote_seq=None,
            remote_target=remote_target,
            # "The route set MUST be set to the list of URIs in the Record-Route header field
            # from the response, taken in reverse order and preserving all URI parameters."
            route_set=list(reversed(response.record_routes)),
            local_contact=local_contact,
            secure=_is_secure(request),
            creating=(request.cseq.seq, request.method),
            retry_after=retry_after,
        )

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> DialogState:
        return self._state

    @property
    def local_uri(self) -> Uri:
        return self.local_party.uri

    @property
    def remote_uri(self) -> Uri:
        return self.remote_party.uri

    def _fire(self, event: _Input) -> None:
        self._state = _TRANSITIONS[(self._state, event)]

    def terminate(self) -> None:
        self._fire(_Input.TERMINATE)

    # ------------------------------------------------------------------ sending (§12.2.1)

    def next_hop(self) -> Uri:
        """Where the next request goes (§8.1.2, §12.2.1.1).

        The first route when there is a route set: with a loose router it is the first Route;
        with a strict router it is the Request-URI itself. Otherwise the remote target.
        """
        if self.route_set:
            return self.route_set[0].uri.copy()
        return self.remote_target.copy()

    def _address(self, request_uri_out: list[Uri]) -> list[str]:
        """Request-URI and Route values per §12.2.1.1."""
        if not self.route_set:
            # "If the route set is empty, the UAC MUST place the remote target URI into the
            # Request-URI. The UAC MUST NOT add a Route header field to the request."
            request_uri_out.append(_request_uri(self.remote_target))
            return []
        if _is_loose(self.route_set[0]):
            # "If the route set is not empty, and the first URI in the route set contains the
            # lr parameter ..., the UAC MUST place the remote target URI into the Request-URI
            # and MUST include a Route header field containing the route set values in order"
            request_uri_out.append(_request_uri(self.remote_target))
            return [str(route) for route in self.route_set]
        # Strict router: "the UAC MUST place the first URI from the route set into the
        # Request-URI, stripping any parameters that are not allowed in a Request-URI. The UAC
        # MUST add a Route header field containing the remainder of the route set values in
        # order ... The UAC MUST then place the remote target URI into the Route header field
        # as the last value."
        request_uri_out.append(_request_uri(self.route_set[0].uri))
        rest = [str(route) for route in self.route_set[1:]]
        rest.append(str(NameAddr(uri=self.remote_target.copy())))
        return rest

    def _build(
        self,
        method: str,
        seq: int,
        via: Via,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
        *,
        contact: bool,
    ) -> Request:
        extra = list(headers)
        for name, _ in extra:
            if canonical_name(name.strip()).lower() in _MANAGED:
                raise LocalProtocolError(f"{name} is written by the dialog, not by the caller")
        if body and content_type is None and not any(canonical_name(n.strip()) == "Content-Type" for n, _ in extra):
            # §7.4.1: "If the body is not empty, the Content-Type header field MUST be present"
            raise LocalProtocolError("a body needs a Content-Type")
        uri_out: list[Uri] = []
        routes = self._address(uri_out)
        out = Headers()
        out.add("Via", str(via))
        for route in routes:
            out.add("Route", route)
        out.add("Max-Forwards", str(DEFAULT_MAX_FORWARDS))
        # "The URI in the To field of the request MUST be set to the remote URI from the
        # dialog state. The tag in the To header field of the request MUST be set to the remote
        # tag of the dialog ID. The From URI ... local URI ... local tag"
        to = self.remote_party.with_tag(self.id.remote_tag) if self.id.remote_tag else self.remote_party.copy()
        out.add("From", str(self.local_party.with_tag(self.id.local_tag)))
        out.add("To", str(to))
        out.add("Call-ID", self.id.call_id)
        out.add("CSeq", f"{seq} {method}")
        if contact:
            out.add("Contact", str(self.local_contact))
        for name, value in extra:
            out.add(name, value)
        if content_type is not None:
            out.set("Content-Type", content_type)
        return Request(method=method, uri=uri_out[0], headers=out, body=body)

    def new_request(
        self,
        method: str,
        *,
        via: Via,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A request within the dialog (§12.2.1.1); ACK for 2xx has :meth:`ack_for_2xx`.

        Increments the local sequence number: "Requests within a dialog MUST contain strictly
        monotonically increasing and contiguous CSeq sequence numbers (increasing-by-one) in
        each direction (excepting ACK and CANCEL of course)". CANCEL is built from the request
        it cancels (§9.1), not from the dialog.
        """
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"{method} is not built by new_request")
        if self._state is DialogState.TERMINATED:
            raise LocalProtocolError(f"dialog {self.id} is terminated")
        # "If the local sequence number is empty, it MUST be set to an initial value"
        seq = self._initial_local_seq if self.local_seq is None else self.local_seq + 1
        if seq >= 2**31:
            raise LocalProtocolError("CSeq would exceed 2**31 - 1")
        request = self._build(
            method,
            seq,
            via,
            headers,
            body,
            content_type,
            # "A UAC SHOULD include a Contact header field in any target refresh requests"
            contact=method in TARGET_REFRESH_METHODS,
        )
        self.local_seq = seq
        return request

    def ack_for_2xx(
        self,
        invite: Request,
        response: Response,
        *,
        via: Via,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """The ACK for a 2xx to our INVITE (§13.2.2.4), sent by the UA core, not a transaction.

        "The sequence number of the CSeq header field MUST be the same as the INVITE being
        acknowledged, but the CSeq method MUST be ACK. The ACK MUST contain the same credentials
        as the INVITE." Works in any state: a late 2xx to a terminated dialog is still ACKed.
        """
        if invite.method != "INVITE" or not 200 <= response.status_code <= 299:
            raise LocalProtocolError("ack_for_2xx needs our INVITE and a 2xx to it")
        if response.cseq.seq != invite.cseq.seq or response.call_id != invite.call_id:
            raise LocalProtocolError("the 2xx does not answer this INVITE")
        credentials = [
            (name, value) for name, value in invite.headers if name in ("Authorization", "Proxy-Authorization")
        ]
        return self._build("ACK", invite.cseq.seq, via, credentials, body, content_type, contact=False)

    # ------------------------------------------------------------------ receiving (§12.2.2)

    def _check_id(self, dialog_id: DialogId) -> None:
        if dialog_id != self.id:
            raise LocalProtocolError(f"message for {dialog_id} given to dialog {self.id}")

    def receive_request(self, request: Request) -> None:
        """Apply an in-dialog request we received (§12.2.2), before the UA acts on it.

        Raises ``RemoteProtocolError(481)`` for a terminated dialog and
        ``RemoteProtocolError(500, Retry-After)`` for a CSeq lower than the remote sequence
        number. ACK and CANCEL carry the CSeq of the request they belong to and are exempt.
        """
        self._check_id(incoming_dialog_id(request))
        if self._state is DialogState.TERMINATED:
            raise RemoteProtocolError("dialog terminated", status_code=481)
        method = request.method
        if method in ("ACK", "CANCEL"):
            return
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            # "If the remote sequence number was not empty, but the sequence number of the
            # request is lower than the remote sequence number, the request is out of order and
            # MUST be rejected with a 500 (Server Internal Error) response."
            raise RemoteProtocolError(
                f"CSeq {seq} lower than {self.remote_seq}",
                status_code=500,
                extra_headers=(("Retry-After", str(self._retry_after())),),
            )
        self.remote_seq = seq
        if method in TARGET_REFRESH_METHODS:
            # "When a UAS receives a target refresh request, it MUST replace the dialog's remote
            # target URI with the URI from the Contact header field in that request, if present."
            contact = _first_contact(request)
            if contact is not None:
                self.remote_target = contact.uri.copy()
        if method == "BYE":
            # §15.1.2: the UAS "MUST ... terminate the dialog" on a BYE it accepts.
            self._fire(_Input.TERMINATE)

    def send_response(self, request: Request, response: Response) -> None:
        """Note a final response we send to a request we received.

        As UAS of the dialog-creating request, a 2xx confirms the early dialog (§12.1.1) and a
        non-2xx final response ends it (§12.3); any final answer to a BYE ends the dialog.
        """
        self._check_id(DialogId(request.call_id, self.id.local_tag, request.from_.tag or ""))
        creating = not self.is_uac and (request.cseq.seq, request.method) == self._creating
        self._apply_final(request.method, response.status_code, creating=creating)

    def receive_response(self, request: Request, response: Response) -> None:
        """Apply a response to a request we sent in (or to create) this dialog (§12.1.2, §12.2.1.2)."""
        if response.call_id != request.call_id or response.cseq != request.cseq:
            raise LocalProtocolError("the response does not answer this request")
        status = response.status_code
        if status < 200:
            return
        creating = self.is_uac and (request.cseq.seq, request.method) == self._creating
        if 200 <= status <= 299:
            self._check_id(incoming_dialog_id(response))  # a 2xx from another fork is a new dialog
            if creating and self._state is DialogState.EARLY:
                # §13.2.2.4: on the 2xx "the dialog MUST be transitioned to the 'confirmed'
                # state, and the route set for the dialog MUST be recomputed based on the 2xx".
                self.route_set = list(reversed(response.record_routes))
            if request.method in TARGET_REFRESH_METHODS:
                # §12.2.1.2: "When a UAC receives a 2xx response to a target refresh request, it
                # MUST replace the dialog's remote target URI with the URI from the Contact".
                contact = _first_contact(response)
                if contact is not None:
                    self.remote_target = contact.uri.copy()
        elif not creating and status in (408, 481):
            # §12.2.1.2: "If the response for a request within a dialog is a 481 (Call/Transaction
            # Does Not Exist) or a 408 (Request Timeout), the UAC SHOULD terminate the dialog."
            self._fire(_Input.TERMINATE)
            return
        self._apply_final(request.method, status, creating=creating)

    def _apply_final(self, method: str, status: int, *, creating: bool) -> None:
        if status < 200:
            return
        if method == "BYE":
            # §15.1.1: the BYE's final response (whatever it is) ends the dialog.
            self._fire(_Input.TERMINATE)
        elif 200 <= status <= 299:
            if creating:
                self._fire(_Input.CONFIRM)
        elif creating and self._state is DialogState.EARLY:
            # §12.3: "if a request outside of a dialog generates a non-2xx final response, any
            # early dialogs created through provisional responses to that request are terminated"
            self._fire(_Input.TERMINATE)

    def __repr__(self) -> str:
        return (
            f"Dialog(id={self.id!r}, state={self._state.name}, local_seq={self.local_seq}, "
            f"remote_seq={self.remote_seq}, remote_target={self.remote_target}, "
            f"route_set={[str(r) for r in self.route_set]})"
        )

