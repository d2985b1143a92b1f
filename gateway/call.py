"""One call: its dialog (RFC 3261 §12-§15), its offer/answer (RFC 3264) and its media.

This is the only place where SIP meets SDP. Inbound: INVITE → 180 → 200 (answer, or offer for a delayed-offer
INVITE) → ACK; CANCEL before our 200 → 487; re-INVITE/UPDATE for hold, codec change and RFC 4028 refresh; BYE
either way. Outbound: INVITE with an offer, digest retry on 401/407, CANCEL on ring timeout, ACK for 2xx.
Every task of the call lives in the call's own TaskGroup; SIP callbacks arrive synchronously from the UA.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import call_transfer
from gateway.assistants import AssistantError, parse_assistant
from gateway.call_assistant import CallConversation
from gateway.call_media import CallMedia
from gateway.call_outbound import IgnoreOwner, OutboundInvite
from gateway.call_types import SDP, CallState, CallTarget
from gateway.config import NumberRoute
from gateway.observability.logging import bind_call_context, get_logger
from gateway.recording import CallRecording, recording_paths
from gateway.routing import sip_variables, uri_user
from gateway.sdp import (
    CodecSpec,
    Direction,
    LocalSession,
    NegotiatedAudio,
    NoCommonCodec,
    SdpError,
    SessionDescription,
    parse_sdp,
    serialize_sdp,
)
from gateway.sdp.crypto import KEY_SALT_LENGTH, SrtpPolicy
from gateway.sdp.secure import secure_answer, secure_offer, secure_process_answer
from gateway.session_policy import SessionTimerPolicy, SessionTimerRole
from gateway.sip.auth import DigestClient
from gateway.sip.dialog import Dialog
from gateway.sip.errors import RemoteProtocolError
from gateway.sip.headers import NameAddr
from gateway.sip.message import Message, Request, Response, make_response
from gateway.sip.transaction import ClientTransactionId, ServerTransactionId
from gateway.sip.uri import SipUri
from gateway.transport.rtp_endpoint import PortPoolExhausted
from gateway.transport.sip_transport import Addr

if TYPE_CHECKING:
    from gateway.call_transfer import CallTransfer
    from gateway.calls import CallManager


# What speaks an error to a caller when no assistant can take the call: offline, no cloud key needed.
RTP_BIND_ATTEMPTS = 4  # ports tried for one call before it is refused with 503
ERROR_ASSISTANT = {
    "name": "error",
    "firstMessageMode": "assistant-waits-for-user",
    "model": {"provider": "rules", "rules": []},
    "voice": {"provider": "espeak", "voiceId": "en-us"},
    "transcriber": {"provider": "pocketsphinx", "language": "en"},
}


class Call:
    def __init__(
        self,
        manager: CallManager,
        *,
        direction: str,
        sip_call_id: str,
        transport: str,
        peer: Addr,
        target: CallTarget,
        rtp_port: int,
        local_tag: str,
        number: str | None = None,
    ) -> None:
        self.manager = manager
        self.ua = manager.ua
        self.id = str(uuid.uuid4())
        self.direction = direction
        self.sip_call_id = sip_call_id
        self.transport = transport
        self.peer = peer
        self.target = target
        self.local_tag = local_tag
        self.state = CallState.CALLING if direction == "outbound" else CallState.RINGING
        # Vapi's call.status: queued/ringing/in-progress/forwarding/ended (see update_status)
        self.status = "queued" if direction == "outbound" else "ringing"
        self.ended_reason: str | None = None
        self.variables: dict[str, Any] = {}
        self.customer_number: str | None = None  # the caller (inbound) or the number dialled (outbound)
        self.phone_number = number  # our DID the caller dialled (inbound) or the trunk used (outbound)
        self.route: NumberRoute | None = None  # inbound: the numbers: entry the INVITE reached
        self.created_at = time.time()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.setup_started = self.ua.now()
        # Lines logged from the SIP dispatch path (outside the call's tasks) carry the call's fields through
        # these bound loggers; lines from the call's tasks carry them through contextvars (see run()).
        self.log_fields: dict[str, str | None] = {
            "call_id": self.id, "sip_call_id": sip_call_id, "number": number, "direction": direction
        }
        self.log = get_logger("call").bind(**self.log_fields)
        host = manager.rtp_host
        self.media = CallMedia(
            host, rtp_port, echo=target.kind == "echo", metrics=manager.metrics, playout=manager.playout,
            log=get_logger("media").bind(**self.log_fields, rtp_port=rtp_port),
        )
        self._context: contextvars.Context | None = None
        self.rtp_port = rtp_port
        self.local_sdp = LocalSession(session_id=int(time.time()), address=manager.sdp_address)
        self.negotiated: NegotiatedAudio | None = None
        # SDES (RFC 4568): the policy (number route / trunk / rtp.srtp) and our keys, fresh per call from a CSPRNG.
        self.srtp = SrtpPolicy(manager.config.rtp.srtp)
        self._srtp_keys = (secrets.token_bytes(KEY_SALT_LENGTH), secrets.token_bytes(KEY_SALT_LENGTH))
        self.dialog: Dialog | None = None
        self._ended = asyncio.Event()
        self._children: set[asyncio.Task[None]] = set()
        self._tasks: asyncio.TaskGroup | None = None
        self._pending: dict[ClientTransactionId, Callable[[Response | None], None]] = {}
        self.session_timer: SessionTimerPolicy = manager.session_timer_policy
        self._session_task: asyncio.Task[None] | None = None
        self._session_interval: int | None = None
        self._we_refresh = False
        # inbound
        self.invite: Request | None = None
        self.invite_tx: ServerTransactionId | None = None
        self._pending_offer: SessionDescription | None = None  # our offer awaiting an answer in an ACK
        self._offer: SessionDescription | None = None  # the INVITE's offer (inbound)
        self._local_answer: SessionDescription | None = None  # our answer to it
        self.last_2xx: Response | None = None
        # outbound
        self.outbound: OutboundInvite | None = None
        # assistant
        self.conversation: CallConversation | None = None
        self._last_ack: Request | None = None
        self._offer_out: SessionDescription | None = None  # our offer in a refresh re-INVITE
        self._reinvite_out: ClientTransactionId | None = None
        # transfer (gateway.call_transfer): the one running, and where the call was sent (call.destination)
        self.transfer: CallTransfer | None = None
        self.transfer_destination: dict[str, Any] | None = None
        # recording (recordings: config): the stereo WAV and/or the PCAP; path and URL go in call.artifact
        self.recording: CallRecording | None = None
        self.recording_path: str | None = None
        self.recording_url: str | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def dialog_key(self) -> tuple[str, str, str] | None:
        if self.dialog is not None:
            d = self.dialog.id
            return (d.call_id, d.local_tag, d.remote_tag)
        return None

    async def run(self, start: Callable[[], None]) -> None:
        """Own the call's tasks until it ends; ``start`` sends the first SIP message."""
        # Every line logged from this task and the tasks it starts carries the call's fields (a task copies the
        # context at its creation); spawn() starts children in this context even when called from SIP dispatch.
        bind_call_context(call_id=self.id, sip_call_id=self.sip_call_id, number=self.phone_number,
                          direction=self.direction)
        self._context = contextvars.copy_context()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                try:
                    await self._open_media()
                except OSError as exc:
                    self._media_unavailable(exc)
                    return
                self._open_capture()
                start()
                await self._ended.wait()
                for task in list(self._children):
                    task.cancel()
        except* Exception as group:
            # A failure inside one call ends that call cleanly; it never reaches the server or other calls.
            self.log.error("call_failed", error=repr(group.exceptions[0]), exc_info=group.exceptions[0])
            if self.state is not CallState.ENDED:
                if self.state is CallState.RINGING and self.direction == "inbound" and self.invite is not None:
                    # Never leave an INVITE without a final response (§8.2.6 / §13.3.1).
                    self.ua.respond(self.invite, 500, to_tag=self.local_tag)
                if self.dialog is not None and self.state is CallState.CONFIRMED:
                    bye = self.dialog.new_request("BYE", via=self.ua.make_via(self.transport))
                    destination = self.manager.destination_for(self.dialog.next_hop(), fallback=self.peer)
                    self.ua.send_request(bye, destination, self.transport, IgnoreOwner())
                self.finish("pipeline-error")
        finally:
            self._tasks = None
            self.media.close()
            await self._close_recording()
            self.manager.release(self)
            # The report is taken: the conversation (which points back at this call) lets go of it all.
            conversation, self.conversation = self.conversation, None
            if conversation is not None:
                conversation.release()

    async def _open_media(self) -> None:
        """Bind the call's RTP port. The pool cannot know about ports other processes hold, so a taken port is
        swapped for the next free one (a few times) before the call is refused; the SDP is built after this and
        names the port actually bound."""
        for attempt in range(RTP_BIND_ATTEMPTS):
            try:
                await self.media.open()
                return
            except OSError as exc:
                if attempt == RTP_BIND_ATTEMPTS - 1:
                    raise
                try:
                    port = self.manager.swap_port(self.rtp_port)
                except PortPoolExhausted:
                    raise exc from None
                self.log.warning("rtp_port_taken", port=self.rtp_port, next_port=port, error=str(exc))
                self.rtp_port = port
                self.media.endpoint.port = port
                if self._offer is not None:
                    # the inbound answer was built when the INVITE arrived: build it again for the new port
                    self._local_answer, self.negotiated = self._answer(self._offer)

    def _media_unavailable(self, exc: OSError) -> None:
        """The call's RTP port could not be bound (taken by another process): refuse cleanly."""
        self.log.warning("rtp_bind_failed", port=self.rtp_port, error=str(exc))
        if self.direction == "inbound" and self.invite is not None and self.state is CallState.RINGING:
            # (already counted as an accepted INVITE: the calls-ended counter shows the reason)
            self.ua.respond(self.invite, 503, "Media port unavailable", to_tag=self.local_tag,
                            headers=[("Retry-After", "5")])
        self.finish("call.start.error-get-transport")

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine inside the call's TaskGroup; it is cancelled when the call ends."""
        if self._tasks is None or self.state is CallState.ENDED:
            coro.close()
            return
        context = self._context.copy() if self._context is not None else None
        task = self._tasks.create_task(coro, context=context)
        self._children.add(task)
        task.add_done_callback(self._children.discard)

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def update_status(self, status: str) -> None:
        """Vapi's ``call.status`` changed: observers send ``status-update``."""
        if status == self.status:
            return
        self.status = status
        self.manager.notify_status(self, status)

    def finish(self, reason: str) -> None:
        if self.state is CallState.ENDED:
            return
        answered = self.answered_at is not None
        self.state = CallState.ENDED
        self.ended_reason = reason
        self.ended_at = time.time()
        if self.dialog is not None:
            self.dialog.terminate()
        self.log.info("call_ended", reason=reason, answered=answered)
        if self.conversation is not None:
            self.conversation.stop(reason)
        self.manager.on_call_ended(self)
        self.update_status("ended")
        self._ended.set()

    def hangup(self, reason: str = "assistant-ended-call") -> None:
        """Our side ends the call: BYE when confirmed, CANCEL or a final error before that."""
        if reason == "assistant-forwarded-call" and self.transfer is not None and self.transfer.bridged:
            return  # the assistant handed the caller to a bridge, which now owns the leg
        match self.state:
            case CallState.CONFIRMED:
                self.send_bye(reason)
            case CallState.ANSWERED:
                # §15: the callee MUST NOT send a BYE before the ACK arrives (or the transaction times out).
                self._bye_after_ack = reason
            case CallState.RINGING if self.direction == "inbound":
                assert self.invite is not None
                self.ua.respond(self.invite, 480, to_tag=self.local_tag)
                self.finish(reason)
            case CallState.CALLING | CallState.RINGING if self.outbound is not None:
                self.outbound.cancel(self, reason)
            case CallState.TERMINATING | CallState.ENDED:
                pass

    _bye_after_ack: str | None = None

    # ------------------------------------------------------------------ inbound

    def start_inbound(self, request: Request, server_tx: ServerTransactionId, offer: SessionDescription | None) -> None:
        """Validate the offer and ring. Raises RemoteProtocolError (488/422/...) to reject the INVITE."""
        self.invite = request
        self.invite_tx = server_tx
        self.variables = sip_variables(request)
        self.customer_number = uri_user(request.from_.uri)
        self._local_answer = None
        self._offer = offer
        if offer is not None:
            self._local_answer, self.negotiated = self._answer(offer)
        st = self.session_timer.negotiate_uas(request)
        if st.reject_status is not None:
            raise RemoteProtocolError("Session interval too small", status_code=st.reject_status,
                                      extra_headers=tuple(st.response_headers))
        self._st_headers = st.response_headers
        self._session_interval = st.interval
        self._we_refresh = st.role is SessionTimerRole.REFRESHER

    def ring(self) -> None:
        assert self.invite is not None
        self.ua.respond(self.invite, 180, to_tag=self.local_tag, headers=[("Contact", str(self.contact()))])
        if self.target.kind == "request":
            # assistant-request: the caller hears ringing while the number's server picks the assistant.
            self.spawn(self._resolve_then_answer())
        elif self.manager.config.sip.answer_delay > 0:
            self.spawn(self._answer_later(self.manager.config.sip.answer_delay))
        else:
            self._send_200()

    async def _resolve_then_answer(self) -> None:
        target = await self.manager.resolve_target(self)
        if target is None or self.state is not CallState.RINGING:
            return  # rejected (the manager answered the INVITE) or cancelled meanwhile
        self.target = target
        self.media.echo = target.kind == "echo"
        self._send_200()

    async def _answer_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.state is CallState.RINGING:
            self._send_200()

    def _send_200(self) -> None:
        assert self.invite is not None
        if self._local_answer is not None:
            body = serialize_sdp(self._local_answer)
        else:
            # Delayed offer (§13.2.1 / RFC 3264 §5): our offer goes in the 200, the answer comes in the ACK.
            self._pending_offer = self.make_offer()
            body = serialize_sdp(self._pending_offer)
        headers = [
            ("Contact", str(self.contact())),
            *self.ua.common_headers(),
            *self._st_headers,
            ("Content-Type", SDP),
        ]
        response = self._respond_with_body(self.invite, 200, headers, body)
        self.last_2xx = response
        self.dialog = Dialog.create_uas(self.invite, response, local_contact=self.contact())
        key = self.dialog_key
        assert key is not None
        self.ua.register_dialog(key, self)
        self.state = CallState.ANSWERED
        self.answered_at = time.time()
        self.manager.metrics.call_setup_seconds.labels(self.direction).observe(self.ua.now() - self.setup_started)
        if self.negotiated is not None:
            self.media.apply(self.negotiated)

    def _respond_with_body(self, request: Request, status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
        to_tag = self.local_tag if request.to.tag is None else None
        response = make_response(request, status, to_tag=to_tag, headers=headers, body=body)
        self.ua.send_response(response)
        self.capture_sip(response, received=False)
        return response

    def on_cancel(self, server_tx: ServerTransactionId) -> None:
        # §9.2: if a final response was already sent the CANCEL has no effect on the INVITE.
        if self.state is CallState.RINGING and self.invite is not None:
            self.ua.respond(self.invite, 487, to_tag=self.local_tag)
            self.ua.unregister_invite_server(server_tx)
            self.finish("customer-ended-call-before-answer")

    def on_ack(self, request: Request) -> None:
        if self.state is CallState.ANSWERED:
            if self.invite_tx is not None:
                self.ua.unregister_invite_server(self.invite_tx)
            if self._pending_offer is not None and not self._apply_answer_from_ack(request):
                return
            self.state = CallState.CONFIRMED
            self.log.info("call_confirmed", codec=self.negotiated.codec if self.negotiated else None)
            self._start_session_timer()
            self.connected()
            if self._bye_after_ack is not None:
                self.send_bye(self._bye_after_ack)
        elif self._pending_offer is not None:
            self._apply_answer_from_ack(request)  # ACK to a delayed-offer re-INVITE

    def _apply_answer_from_ack(self, request: Request) -> bool:
        assert self._pending_offer is not None
        offer, self._pending_offer = self._pending_offer, None
        if not request.body:
            self.log.warning("sip_ack_without_answer")
            self.state = CallState.CONFIRMED
            self.send_bye("sip-ack-without-sdp-answer")
            return False
        try:
            self.negotiated = self.read_answer(offer, parse_sdp(request.body))
        except SdpError as exc:
            self.log.warning("sdp_bad_answer_in_ack", reason=exc.reason)
            self.state = CallState.CONFIRMED
            self.send_bye("sip-bad-sdp-answer")
            return False
        self.media.apply(self.negotiated)
        return True

    def on_ack_timeout(self) -> None:
        # §13.3.1.4: "If the server retransmits the 2xx response for 64*T1 seconds without receiving an ACK,
        # the dialog is confirmed, but the session SHOULD be terminated" with a BYE.
        self.log.warning("sip_ack_timeout")
        if self.state is CallState.ANSWERED:
            self.state = CallState.CONFIRMED
            self.send_bye("sip-ack-timeout")

    def make_offer(self, direction: Direction = Direction.SENDRECV) -> SessionDescription:
        """Our offer: RTP/SAVP with a=crypto when this call's SRTP policy is allow or require."""
        policy = self.srtp
        if policy is SrtpPolicy.ALLOW and self.negotiated is not None and self.negotiated.srtp is None:
            policy = SrtpPolicy.OFF  # a re-offer keeps the plain RTP/AVP the call settled on
        return secure_offer(
            self.manager.capabilities, policy=policy, keys=self._srtp_keys,
            local_host=self.manager.sdp_address, local_port=self.rtp_port, session=self.local_sdp,
            direction=direction,
        )

    def read_answer(self, offer: SessionDescription, answer: SessionDescription) -> NegotiatedAudio:
        return secure_process_answer(offer, answer, policy=self.srtp)

    def _answer(self, offer: SessionDescription) -> tuple[SessionDescription, NegotiatedAudio]:
        try:
            return secure_answer(
                offer, self.manager.capabilities, policy=self.srtp, local_key=self._srtp_keys[0],
                local_host=self.manager.sdp_address, local_port=self.rtp_port, session=self.local_sdp,
            )
        except NoCommonCodec as exc:
            raise RemoteProtocolError(
                "Not Acceptable Here", status_code=488,
                extra_headers=(("Warning", f'{exc.warning_code} {self.ua.announced[0]} "{exc.reason}"'),),
            ) from None
        except SdpError as exc:
            raise RemoteProtocolError(
                "Not Acceptable Here", status_code=488,
                extra_headers=(("Warning", f'399 {self.ua.announced[0]} "Malformed SDP: {exc.reason}"'),),
            ) from None

    # ------------------------------------------------------------------ in-dialog requests

    def on_request(self, request: Request, server_tx: ServerTransactionId) -> None:
        assert self.dialog is not None
        self.capture_sip(request, received=True)
        try:
            self.dialog.receive_request(request)
        except RemoteProtocolError as exc:
            self.ua.respond(request, exc.status_code, exc.reason, headers=exc.extra_headers)
            return
        match request.method:
            case "BYE":
                self.ua.respond(request, 200)
                bridged = self.transfer is not None and self.transfer.bridged
                self.finish("assistant-forwarded-call" if bridged else "customer-ended-call")
            case "NOTIFY":
                call_transfer.on_notify(self, request)  # RFC 3515 §2.4.4: reports on our REFER
            case "INVITE" | "UPDATE":
                self._on_offer_request(request)
            case "INFO":
                self.ua.respond(request, 200)
                self.media.on_info(request.content_type, request.body)
            case "OPTIONS":
                self.ua.respond(request, 200, headers=self.ua.common_headers())
            case _:
                # REFER included: a peer may not make the gateway dial out (toll fraud); RFC 3515 §2.4.2
                # lets a UA that does not accept REFER answer it like any method it does not allow.
                self.ua.respond(request, 405, headers=self.ua.common_headers())

    def _on_offer_request(self, request: Request) -> None:
        """re-INVITE or UPDATE (RFC 3311): hold/unhold, codec change, session refresh."""
        if self._reinvite_out is not None:
            # §14.2 glare: "a UAS that receives an INVITE on a dialog while an INVITE it had sent on that
            # dialog is in progress MUST return a 491 (Request Pending)".
            self.ua.respond(request, 491)
            return
        st = self.session_timer.negotiate_uas(request)
        if st.reject_status is not None:
            self.ua.respond(request, st.reject_status, headers=st.response_headers)
            return
        headers: list[tuple[str, str]] = [("Contact", str(self.contact())), *self.ua.common_headers(),
                                          *st.response_headers]
        body = b""
        if request.body:
            try:
                offer = parse_sdp(request.body)
                answer, negotiated = self._answer(offer)
            except SdpError as exc:
                self.ua.respond(request, 488, headers=[("Warning", f'399 {self.ua.announced[0]} "{exc.reason}"')])
                return
            except RemoteProtocolError as exc:
                self.ua.respond(request, exc.status_code, headers=exc.extra_headers)
                return
            self.negotiated = negotiated
            self.media.apply(negotiated)
            body = serialize_sdp(answer)
            self.log.info("media_renegotiated", codec=negotiated.codec, media_direction=negotiated.direction.name)
        elif request.method == "INVITE":
            # re-INVITE without an offer: we offer in the 2xx, the answer comes in the ACK.
            self._pending_offer = self.make_offer(
                self.negotiated.direction if self.negotiated else Direction.SENDRECV
            )
            body = serialize_sdp(self._pending_offer)
        if body:
            headers.append(("Content-Type", SDP))
        self._respond_with_body(request, 200, headers, body)
        self._session_interval = st.interval
        self._we_refresh = st.role is SessionTimerRole.REFRESHER
        self._start_session_timer()

    # ------------------------------------------------------------------ session timer (RFC 4028)

    def _start_session_timer(self) -> None:
        if self._session_task is not None:
            self._session_task.cancel()
            self._session_task = None
        if self._session_interval is None or self.state is not CallState.CONFIRMED:
            return
        self.spawn(self._session_timer_loop(self._session_interval, self._we_refresh))

    async def _session_timer_loop(self, interval: int, we_refresh: bool) -> None:
        self._session_task = asyncio.current_task()  # type: ignore[assignment]
        try:
            if we_refresh:
                # §10: "the refresher SHOULD send a refresh ... at half the session interval"
                await asyncio.sleep(interval / 2)
                self._send_refresh()
            else:
                # §10: with no refresh, BYE "before the session expiration ... the minimum of 32 seconds and
                # one third of the session interval" ahead of expiry.
                await asyncio.sleep(interval - min(32, interval / 3))
                self.log.warning("session_timer_expired", interval=interval)
                self.send_bye("sip-session-timer-expired")
        finally:
            # The call must not keep its ended timer task: a task cancelled at call end keeps its CancelledError,
            # whose traceback holds this frame and so the call (call -> task -> traceback -> frame -> call), a
            # cycle only a full garbage collection would free (issue 7: minutes apart under load). (No local
            # names the task either: the frame would then hold the task and close the same loop.)
            if self._session_task is asyncio.current_task():
                self._session_task = None

    def _send_refresh(self) -> None:
        if self.dialog is None or self.state is not CallState.CONFIRMED:
            return
        allow = self._peer_allows_update()
        method = "UPDATE" if allow else "INVITE"
        assert self._session_interval is not None
        headers = [*self.session_timer.refresh_headers(self._session_interval), *self.ua.common_headers()]
        body = b""
        if method == "INVITE":
            # The refresh re-INVITE repeats our current SDP; the version is unchanged (RFC 3264 §8).
            offer = self.make_offer(self.negotiated.direction if self.negotiated else Direction.SENDRECV)
            self._offer_out = offer
            body = serialize_sdp(offer)
        request = self.dialog.new_request(
            method, via=self.ua.make_via(self.transport), headers=headers, body=body,
            content_type=SDP if body else None,
        )
        tx = self._send_in_dialog(request, lambda r: self._on_refresh_response(request, r))
        if method == "INVITE":
            self._reinvite_out = tx

    def _peer_allows_update(self) -> bool:
        source = self.invite if self.direction == "inbound" else self.last_2xx
        if source is None:
            return False
        return "UPDATE" in {m.upper() for m in source.headers.get_list("Allow")}

    def _on_refresh_response(self, request: Request, response: Response | None) -> None:
        if request.method == "INVITE":
            self._reinvite_out = None
        if response is None or response.status_code in (408, 481):
            # RFC 4028 §10: a refresh that fails with 408/481 (or times out) ends the session.
            self.send_bye("sip-session-refresh-failed")
            return
        if 200 <= response.status_code < 300:
            if request.method == "INVITE":
                self.ack_2xx(request, response)
                if self._offer_out is not None and response.body:
                    with contextlib.suppress(SdpError):
                        self.negotiated = self.read_answer(self._offer_out, parse_sdp(response.body))
                        self.media.apply(self.negotiated)
            interval, we_refresh = self.session_timer.on_refresh_response(response, self._session_interval)
            self._session_interval, self._we_refresh = interval, we_refresh
            self.log.info("session_refreshed", method=request.method, interval=interval)
            self._start_session_timer()
        elif response.status_code >= 300 and request.method == "INVITE" and response.status_code != 491:
            # Any other failure leaves the session as it was (§14.1); try again later.
            self._start_session_timer()

    # ------------------------------------------------------------------ BYE / CANCEL

    def send_bye(self, reason: str) -> None:
        if self.dialog is None or self.state in (CallState.TERMINATING, CallState.ENDED):
            self.finish(reason)
            return
        self.state = CallState.TERMINATING
        request = self.dialog.new_request("BYE", via=self.ua.make_via(self.transport))
        self._send_in_dialog(request, lambda _r: self.finish(reason))

    def _send_in_dialog(self, request: Request, on_done: Callable[[Response | None], None]) -> ClientTransactionId:
        assert self.dialog is not None
        destination = self.manager.destination_for(self.dialog.next_hop(), fallback=self.peer)
        tx = self.ua.send_request(request, destination, self.transport, self)
        self.capture_sip(request, received=False, peer=destination)
        self._pending[tx] = on_done
        return tx

    # ClientOwner
    def on_response(self, tx: ClientTransactionId, response: Response) -> None:
        self.capture_sip(response, received=True)
        if self.outbound is not None and tx == self.outbound.tx:
            self.outbound.on_response(self, response)
            return
        if response.status_code < 200:
            return  # the UA keeps us as owner until the final response
        callback = self._pending.pop(tx, None)
        if callback is not None:
            callback(response)

    def on_transaction_timeout(self, tx: ClientTransactionId) -> None:
        if self.outbound is not None and tx == self.outbound.tx:
            self.outbound.on_timeout(self)
            return
        callback = self._pending.pop(tx, None)
        if callback is not None:
            callback(None)

    # ------------------------------------------------------------------ outbound

    def start_outbound(
        self,
        target: SipUri,
        destination: Addr,
        *,
        from_user: str,
        display_name: str | None,
        auth: DigestClient | None,
        extra_headers: list[tuple[str, str]],
    ) -> None:
        self.outbound = OutboundInvite(destination, auth)
        self.outbound.start(self, target, from_user=from_user, display_name=display_name, extra_headers=extra_headers)

    def start_session_timer_from(self, negotiated: tuple[int | None, bool]) -> None:
        self._session_interval, self._we_refresh = negotiated
        self._start_session_timer()

    def connected(self) -> None:
        """The call is confirmed: watch the media and, for an assistant, start the conversation."""
        self.update_status("in-progress")
        self.spawn(self.media.watch_timeout(self.manager.config.rtp.media_timeout, self._on_media_timeout))
        if self.target.kind == "echo" and self.manager.config.recordings.echo:
            self._record_audio()
        if self.conversation is not None or self._bye_after_ack is not None:
            return
        if self.target.kind == "assistant":
            try:
                assistant = self.manager.assistant_for(self.target)
            except AssistantError as exc:
                self.log.error("assistant_not_valid", assistant=self.target.name, error=str(exc))
                self.send_bye("assistant-not-valid")
                return
            if assistant is None:
                self.log.error("assistant_not_found", assistant=self.target.name)
                self.send_bye("assistant-not-found")
                return
            self.conversation = CallConversation(self, assistant, variable_values=self.target.variable_values)
            self.conversation.start()
            if assistant.is_recording_enabled():
                self._record_audio()
        elif self.target.kind == "transfer" and self.target.destination is not None:
            # assistant-request answered with a destination: transfer at once, no assistant.
            self.spawn(self._transfer_at_once(self.target.destination))
        elif self.target.kind == "bridge":
            call_transfer.leg_connected(self)  # the gateway's own leg of a transfer answered
        elif self.target.kind == "error":
            # Speak the error in the local voice, then hang up (assistant-request error or failure).
            self.conversation = CallConversation(
                self, parse_assistant(ERROR_ASSISTANT),
                end_with=(self.target.ended_reason or "assistant-request-failed", self.target.message or ""),
            )
            self.conversation.start()

    async def _transfer_at_once(self, destination: dict[str, Any]) -> None:
        result = await call_transfer.transfer(self, destination, source="assistant-request")
        self.log.info("transfer_result", ok=result.ok, result=result.result, detail=result.detail)

    def ack_2xx(self, invite: Request, response: Response) -> None:
        """§13.2.2.4: the ACK for a 2xx is built by the dialog and sent outside any transaction."""
        assert self.dialog is not None
        ack = self.dialog.ack_for_2xx(invite, response, via=self.ua.make_via(self.transport))
        self._last_ack = ack
        destination = self.manager.destination_for(self.dialog.next_hop(), fallback=self.peer)
        self.ua.send_stateless(ack, destination, self.transport)

    def on_2xx_retransmission(self, response: Response) -> None:
        # §13.2.2.4: "the UAC core ... MUST ... pass the ACK to the transport layer for retransmission" for each 2xx.
        if self._last_ack is not None and self.dialog is not None:
            destination = self.manager.destination_for(self.dialog.next_hop(), fallback=self.peer)
            self.ua.send_stateless(self._last_ack, destination, self.transport)

    # ------------------------------------------------------------------ recording (gateway.recording)

    def _open_capture(self) -> None:
        """``recordings.pcap``: the call's PCAP starts with its INVITE, then its RTP/RTCP and the SIP messages
        the call handles (responses it sends with a body, in-dialog requests and responses both ways)."""
        cfg = self.manager.config.recordings
        if cfg.path is None or not cfg.pcap:
            return
        _, pcap = recording_paths(Path(cfg.path), self.id, self.created_at)
        self.recording = CallRecording(wav_path=None, pcap_path=pcap, log=self.log)
        self.media.capture = self.recording
        if self.invite is not None:
            self.capture_sip(self.invite, received=True)

    def _record_audio(self) -> None:
        """Start the stereo WAV (caller left, assistant right) from this tick on."""
        cfg = self.manager.config.recordings
        if cfg.path is None or self.media.recorder is not None:
            return
        wav, _ = recording_paths(Path(cfg.path), self.id, self.created_at)
        if self.recording is None:
            self.recording = CallRecording(wav_path=wav, pcap_path=None, log=self.log)
        else:
            self.recording.wav_path = wav
        self.media.recorder = self.recording
        self.recording_path = str(wav)
        base = cfg.public_url or f"http://{self.manager.config.http.listen}"
        self.recording_url = f"{base.rstrip('/')}/call/{self.id}/stereo-recording"
        self.log.info("recording_started", path=str(wav))

    def capture_sip(self, message: Message, *, received: bool, peer: Addr | None = None) -> None:
        """Put a SIP message of this call in its PCAP (when one is written)."""
        recording = self.recording
        if recording is None or recording.pcap_path is None:
            return
        other = peer or self.peer
        local = self.ua.local_addr
        recording.packet(message.serialize(), other if received else local, local if received else other)

    async def _close_recording(self) -> None:
        """Finalize the files before the call is released, so the end-of-call report points at a whole WAV."""
        recording = self.recording
        if recording is None:
            return
        self.media.recorder = self.media.capture = None
        await recording.close()

    # ------------------------------------------------------------------ helpers

    def contact(self) -> NameAddr:
        return self.ua.contact(self.transport)

    def _on_media_timeout(self) -> None:
        if self.state is CallState.CONFIRMED:
            self.log.warning("rtp_media_timeout", seconds=self.manager.config.rtp.media_timeout)
            self.send_bye("sip-media-timeout")


def codec_specs(capabilities: list[tuple[str, int, int | None]]) -> list[CodecSpec]:
    specs = [CodecSpec(name, rate, pt) for name, rate, pt in capabilities]
    return [s if s.name != "telephone-event" else CodecSpec(s.name, s.clock_rate, s.static_pt, fmtp="0-16")
            for s in specs]
