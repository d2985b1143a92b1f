"""The outbound leg of a call (RFC 3261 §13.2): our INVITE with an offer, digest retry on 401/407
(RFC 8760), CANCEL on ring timeout (§9.1, including the race with a 2xx), ACK for 2xx, and forked 2xx."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gateway.call_types import SDP, CallState
from gateway.sdp import SdpError, SessionDescription, parse_sdp, serialize_sdp
from gateway.sip.auth import DigestClient
from gateway.sip.dialog import Dialog
from gateway.sip.errors import SipError
from gateway.sip.headers import CSeq, Headers, NameAddr
from gateway.sip.message import Request, Response
from gateway.sip.transaction import ClientTransactionId
from gateway.sip.uri import SipUri
from gateway.transport.sip_transport import Addr

if TYPE_CHECKING:
    from gateway.call import Call


class OutboundInvite:
    """Our INVITE transaction(s) for one outbound call; the call delegates their responses here, handing itself
    in with each one. It keeps no reference to the call: the call holds this object, and a reference back would
    be a cycle that only a full garbage collection frees once the call has ended (issue 7)."""

    def __init__(self, destination: Addr, auth: DigestClient | None) -> None:
        self.destination = destination
        self.auth = auth
        self.request: Request | None = None
        self.tx: ClientTransactionId | None = None
        self.offer: SessionDescription | None = None
        self._auth_tried = False
        self._cancel_reason: str | None = None

    def start(self, call: Call, target: SipUri, *, from_user: str, display_name: str | None,
              extra_headers: list[tuple[str, str]]) -> None:
        ua = call.ua
        self.offer = call.make_offer()
        host = ua.announced[0]
        from_uri = SipUri(host=host if ":" not in host else f"[{host}]", user=from_user)
        headers = Headers(
            [
                ("Via", str(ua.make_via(call.transport))),
                ("Max-Forwards", "70"),
                ("From", str(NameAddr(uri=from_uri, display_name=display_name, params={"tag": call.local_tag}))),
                ("To", str(NameAddr(uri=target))),
                ("Call-ID", call.sip_call_id),
                ("CSeq", str(CSeq(1, "INVITE"))),
                ("Contact", str(call.contact())),
                *ua.common_headers(),
                *call.session_timer.offer_headers(),
                *extra_headers,
                ("Content-Type", SDP),
            ]
        )
        self.request = Request(method="INVITE", uri=target, headers=headers, body=serialize_sdp(self.offer))
        self.tx = ua.send_request(self.request, self.destination, call.transport, call)
        call.spawn(self._ring_timeout(call, call.manager.config.sip.ring_timeout))

    async def _ring_timeout(self, call: Call, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if call.state in (CallState.CALLING, CallState.RINGING):
            call.log.info("outbound_ring_timeout", seconds=seconds)
            self.cancel(call, "customer-did-not-answer")

    def cancel(self, call: Call, reason: str) -> None:
        """§9.1: CANCEL the pending INVITE (the transaction layer holds it until a provisional arrives)."""
        self._cancel_reason = reason
        if self.tx is not None:
            call.ua.cancel(self.tx)

    def on_timeout(self, call: Call) -> None:
        call.finish("customer-did-not-answer" if call.state is CallState.RINGING else "sip-outbound-timeout")

    def on_response(self, call: Call, response: Response) -> None:
        code = response.status_code
        if code < 200:
            if code > 100 and call.state is CallState.CALLING:
                call.state = CallState.RINGING
                call.update_status("ringing")
            return
        if code < 300:
            self._answered(call, response)
            return
        self.tx = None
        if code in (401, 407) and self.auth is not None and not self._auth_tried:
            self._auth_tried = True
            self._retry_with_auth(call, response)
            return
        call.log.info("outbound_call_failed", status=code, reason_phrase=response.reason)
        call.finish(_ended_reason_for_failure(code, self._cancel_reason))

    def _retry_with_auth(self, call: Call, challenge: Response) -> None:
        assert self.request is not None and self.auth is not None
        proxy = challenge.status_code == 407
        values = challenge.headers.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        previous = self.request
        headers = previous.headers.copy()
        headers.set("Via", str(call.ua.make_via(call.transport)))
        headers.set("CSeq", str(CSeq(previous.cseq.seq + 1, "INVITE")))
        try:
            name, value = self.auth.authorization("INVITE", str(previous.uri), values, proxy=proxy)
        except SipError as exc:  # no challenge we can answer
            call.log.warning("outbound_auth_unusable", error=str(exc))
            call.finish("sip-auth-failed")
            return
        headers.set(name, value)
        self.request = Request(method="INVITE", uri=previous.uri, headers=headers, body=previous.body)
        self.tx = call.ua.send_request(self.request, self.destination, call.transport, call)

    def _answered(self, call: Call, response: Response) -> None:
        assert self.request is not None
        if call.dialog is not None:
            # A 2xx from a second fork (§13.2.2.4): ACK it, then BYE that dialog. We keep the first.
            if response.to.tag != call.dialog.id.remote_tag:
                self._ack_and_bye_fork(call, response)
            return
        call.last_2xx = response
        call.dialog = Dialog.create_uac(self.request, response)
        key = call.dialog_key
        assert key is not None
        call.ua.register_dialog(key, call)
        call.ack_2xx(self.request, response)
        call.answered_at = time.time()
        call.manager.metrics.call_setup_seconds.labels(call.direction).observe(call.ua.now() - call.setup_started)
        if self._cancel_reason is not None:
            # The CANCEL lost the race against the 2xx (§9.1): the call exists now, so end it with a BYE.
            call.state = CallState.CONFIRMED
            call.send_bye(self._cancel_reason)
            return
        try:
            assert self.offer is not None
            call.negotiated = call.read_answer(self.offer, parse_sdp(response.body))
        except SdpError as exc:
            call.log.warning("sdp_bad_answer", reason=exc.reason)
            call.state = CallState.CONFIRMED
            call.send_bye("sip-bad-sdp-answer")
            return
        call.media.apply(call.negotiated)
        call.state = CallState.CONFIRMED
        call.log.info("call_confirmed", codec=call.negotiated.codec)
        call.start_session_timer_from(call.session_timer.on_uac_2xx(response))
        call.connected()

    def _ack_and_bye_fork(self, call: Call, response: Response) -> None:
        assert self.request is not None
        fork = Dialog.create_uac(self.request, response)
        ack = fork.ack_for_2xx(self.request, response, via=call.ua.make_via(call.transport))
        destination = call.manager.destination_for(fork.next_hop(), fallback=call.peer)
        call.ua.send_stateless(ack, destination, call.transport)
        bye = fork.new_request("BYE", via=call.ua.make_via(call.transport))
        call.ua.send_request(bye, destination, call.transport, IgnoreOwner())


class IgnoreOwner:
    """Owner of requests whose outcome does not matter (BYE to a surplus fork, BYE of a failed call)."""

    def on_response(self, tx: ClientTransactionId, response: Response) -> None:
        pass

    def on_transaction_timeout(self, tx: ClientTransactionId) -> None:
        pass


def _ended_reason_for_failure(code: int, cancel_reason: str | None) -> str:
    if code == 487 and cancel_reason is not None:
        return cancel_reason
    if code in (486, 600):
        return "customer-busy"
    if code in (408, 480, 487):
        return "customer-did-not-answer"
    if code in (401, 407):
        return "sip-auth-failed"
    if code in (404, 484, 604):
        return "sip-outbound-number-invalid"
    return f"sip-outbound-call-failed-{code}"
