"""Call transfers: Vapi's ``transferCall`` destinations (``TransferDestinationNumber``/``Sip`` with their
``transferPlan``) carried out on any SIP trunk.

- **Toll-fraud guard first**: a destination outside ``transfers.allow`` is refused and reported.
- **Blind** (``transferPlan.mode`` absent or ``blind-transfer*``; ``sipVerb`` ``refer``, the default): the
  destination's message (or the tool's request-start) is spoken and heard, then REFER (RFC 3515) with
  Referred-By (RFC 3892) goes out in the call's dialog and the NOTIFY ``message/sipfrag`` reports are
  followed to the end (gateway.sip.refer). Success: our leg ends with ``assistant-forwarded-call``. A
  failure report: the assistant takes the caller back. REFER refused (405, 501, 403...) or unanswered: the
  **fallback bridge**: the gateway dials the destination itself and joins the two legs' media.
- ``sipVerb: dial``: no REFER, straight to the gateway's own dial and bridge. ``sipVerb: bye``: the trunk
  is expected to act on our BYE (Vapi's meaning): the leg ends with ``assistant-forwarded-call``.
- **Warm** (``warm-transfer-say-message``, ``warm-transfer-say-summary``, their ``...-wait-for-operator-to-
  speak-first-and-then-...`` variants; ``warm-transfer-experimental`` is handled as say-summary): the
  gateway dials the operator, says the message or an LLM summary of the transcript to them (the
  assistant's voice, espeak when there is none), then bridges. Works on any trunk: no REFER involved.
- Every step emits a ``transfer-update`` server message (Vapi's ``type``/``destination`` plus
  ``transferType``, ``status`` and, when known, ``reason``/``sipStatusCode``), logs ``transfer_*`` and
  counts ``transfers{mode,result}``.

While a transfer runs, the caller's assistant is paused (``Hold``): it says nothing, hears nothing, and its
idle/silence timers are held. Once bridged, the assistant's session stops; the legs stay up until one of
them hangs up, then the other is hung up too. Not done: ``extension`` (DTMF after the answer), Vapi's
``assistant`` destinations (squads), ``warm-transfer-twiml`` (Twilio only).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from gateway.assistants.tools import NumberDestination, SipDestination, TransferCallTool, TransferDestination
from gateway.call_bridge import Announcer, Hold, MediaBridge, Tap
from gateway.call_types import CallState, CallTarget
from gateway.config import TrunkConfig
from gateway.pipeline.session import ConversationSession, ToolOutcome
from gateway.providers.base import ChatMessage, LlmOptions, ProviderError, TextDelta, TtsOptions, TtsProvider
from gateway.providers.espeak import EspeakTts
from gateway.sip.errors import LocalProtocolError, RemoteProtocolError
from gateway.sip.message import Request, Response
from gateway.sip.refer import (
    ReferAccepted,
    ReferFailed,
    ReferProgress,
    ReferRejected,
    ReferState,
    ReferSucceeded,
    ReferTransfer,
    is_refer_event,
    number_uri,
    refer_to_value,
    referred_by_value,
)
from gateway.sip.uri import SipUri, parse_uri

if TYPE_CHECKING:
    from gateway.call import Call

__all__ = [
    "CallTransfer",
    "TransferResult",
    "leg_connected",
    "on_notify",
    "transfer",
    "transfer_from_tool",
]

NOTIFY_TIMEOUT = 32.0  # a final sipfrag must follow the 202 within this (RFC 3515 §2.4.7 leaves it open)
ANNOUNCE_DEADLINE = 60.0
OPERATOR_SPEAKS_WITHIN = 10.0
SUMMARY_DEADLINE = 15.0
DEFAULT_TOOL_MESSAGE = "Transferring the call now."  # Vapi's default when neither message is given
FAILED_MESSAGE = "Sorry, I could not transfer your call."
# Vapi's default summaryPlan messages
SUMMARY_MESSAGES = (
    {"role": "system", "content": "You are an expert note-taker. You will be given a transcript of a call. "
     "Summarize the call in 2-3 sentences, if applicable."},
    {"role": "user", "content": "Here is the transcript:\n\n{{transcript}}\n\n"},
)
_DESTINATION = TypeAdapter(TransferDestination)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferResult:
    """How a transfer ended for the caller's assistant. ``result`` is the metric's label: ``completed``
    (REFER succeeded), ``bridged`` (the gateway joined the legs), ``failed``, ``refused-destination``."""

    ok: bool
    mode: str  # "blind" | "warm"
    result: str
    detail: str


class _Failed(Exception):
    def __init__(self, detail: str, ended_reason: str = "call.in-progress.error-transfer-failed") -> None:
        super().__init__(detail)
        self.detail = detail
        self.ended_reason = ended_reason


def _text(message: Any) -> str | None:
    """A destination's ``message``: a string or a CustomMessage ``{content}``; blank means say nothing."""
    if isinstance(message, dict):
        message = message.get("content")
    return message.strip() or None if isinstance(message, str) else None


class CallTransfer:
    """One transfer of ``call`` to ``destination`` (see module doc). ``call.transfer`` points to it while it
    runs, so the call hands it the NOTIFYs of the REFER and the bridge leg's answer."""

    def __init__(self, call: Call, destination: dict[str, Any], *, message: str | None, source: str,
                 expect_speech: bool = False) -> None:
        self.call = call
        self.raw = destination
        self.message = message
        self.source = source
        self.expect_speech = expect_speech  # the tool's request-start is being spoken
        self.mode = "warm" if str((destination.get("transferPlan") or {}).get("mode", "")).startswith("warm") \
            else "blind"
        self.refer: ReferTransfer | None = None
        self.leg: Call | None = None
        self.bridged = False
        self.result: asyncio.Future[TransferResult] = asyncio.get_running_loop().create_future()
        self._refer_changed = asyncio.Event()
        self._leg_answered = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._session = call.conversation.session if call.conversation is not None else None
        self._holding = False
        self.log = call.log.bind(transfer_mode=self.mode, transfer_source=source)

    # ------------------------------------------------------------------ reporting

    def _update(self, status: str, **fields: Any) -> None:
        message = {"type": "transfer-update", "destination": self.raw, "transferType": self.mode,
                   "status": status, **{k: v for k, v in fields.items() if v is not None}}
        self.call.manager.notify_message(self.call, message)

    def _decide(self, ok: bool, result: str, detail: str) -> None:
        self.call.manager.metrics.transfers.labels(self.mode, result).inc()
        if not self.result.done():
            self.result.set_result(TransferResult(ok=ok, mode=self.mode, result=result, detail=detail))

    # ------------------------------------------------------------------ the whole transfer

    async def run(self) -> None:
        call = self.call
        try:
            destination = self._parse()
        except _Failed as exc:
            self.log.warning("transfer_invalid_destination", detail=exc.detail)
            self._update("failed", reason=exc.detail)
            self._decide(False, "failed", exc.detail)
            self._resume(exc)
            return
        target = destination.number if isinstance(destination, NumberDestination) else destination.sip_uri
        if not call.manager.config.transfers.allows(target):
            # Toll-fraud guard: nothing is dialled, nothing is said to the destination.
            detail = f"destination {target} is not in transfers.allow"
            self.log.warning("transfer_refused", destination=target, reason="not-allowed")
            self._update("refused", reason=detail)
            self._decide(False, "refused-destination", detail)
            self._resume(_Failed(detail))
            return
        plan = destination.transfer_plan or {}
        verb = str(plan.get("sipVerb") or "refer").lower()
        call.transfer = self
        call.transfer_destination = self.raw
        if self._session is not None:
            self._session.tool_started()  # holds the idle and silence timers while the transfer runs
            self._holding = True
        self.log.info("transfer_started", destination=target, sip_verb=verb)
        self._update("started")
        try:
            await self._announce(destination)
            call.update_status("forwarding")
            if self.mode == "warm":
                await self._dial_and_bridge(destination, plan)
            elif verb == "bye":
                self._decide(True, "completed", "sipVerb bye: the trunk completes the transfer")
                self._update("completed")
                self.log.info("transfer_completed", how="bye")
                call.transfer = None
                call.hangup("assistant-forwarded-call")
            elif verb == "dial" or await self._blind(destination):
                await self._dial_and_bridge(destination, plan)
        except _Failed as exc:
            self.log.warning("transfer_failed", detail=exc.detail, ended_reason=exc.ended_reason)
            self._update("failed", reason=exc.detail)
            self._decide(False, "failed", exc.detail)
            self._resume(exc)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            leg = self.leg
            if leg is not None and leg.state is not CallState.ENDED:
                # The caller is gone (or the transfer was abandoned): the other leg goes too.
                leg.hangup("customer-ended-call-during-transfer" if not self.bridged else "customer-ended-call")
            if not self.result.done():
                self.result.set_result(TransferResult(ok=False, mode=self.mode, result="failed",
                                                      detail="the call ended during the transfer"))

    def _parse(self) -> NumberDestination | SipDestination:
        try:
            destination = _DESTINATION.validate_python(self.raw)
        except ValidationError as exc:
            raise _Failed(f"invalid destination: {exc.errors()[0]['msg']}") from None
        if not isinstance(destination, NumberDestination | SipDestination):
            raise _Failed("assistant destinations (squads) are not supported")
        mode = str((destination.transfer_plan or {}).get("mode") or "blind-transfer")
        if mode == "warm-transfer-twiml":
            raise _Failed("warm-transfer-twiml needs Twilio; use warm-transfer-say-message")
        return destination

    def _resume(self, exc: _Failed) -> None:
        """The transfer did not happen: the assistant takes the caller back (or, with none, the call ends)."""
        call = self.call
        call.transfer = None
        if call.state is not CallState.CONFIRMED:
            return
        session = self._session
        if session is None or call.conversation is None or session.ending is not None:
            call.hangup(exc.ended_reason)
            return
        call.media.conversation = session
        if self._holding:
            self._holding = False
            session.tool_finished()
        call.update_status("in-progress")
        if self.source != "tool":
            # The model learns what happened; the tool path tells it through the tool's result instead.
            session.add_message("system", f"The transfer of the call failed: {exc.detail}")
            session.say(FAILED_MESSAGE, kind="say")

    # ------------------------------------------------------------------ speaking to the caller

    async def _announce(self, destination: NumberDestination | SipDestination) -> None:
        call, session = self.call, self._session
        text = self.message if self.message is not None else _text(destination.message)
        if session is None:
            if text:
                announcer = Announcer()
                call.media.conversation = announcer
                await self._synthesize(announcer, text)
                await _within(announcer.played.wait(), ANNOUNCE_DEADLINE)
            call.media.conversation = Hold(None)
            return
        if self.source == "tool":
            # The responder is speaking the tool's request-start in its own utterance, which stays open
            # while the tool runs: wait until that went out, then add the destination's message to it.
            tap = Tap(session)
            call.media.conversation = tap
            if not self.expect_speech and text is None:
                text = DEFAULT_TOOL_MESSAGE
            await tap.wait_quiet(expect_speech=self.expect_speech)
            utt = session.speaker.current()
            if text and utt is not None:
                await session.tts.speak_chunk(session.speaker, utt, text)
                await tap.wait_quiet(expect_speech=True)
            elif text:
                await self._say(session, text)
        elif text:
            call.media.conversation = session
            await self._say(session, text)
        call.media.conversation = Hold(session)

    async def _say(self, session: ConversationSession, text: str) -> None:
        utt = session.say(text, kind="say", interruptible=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANNOUNCE_DEADLINE
        while session.speaker.pending(utt) and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def _synthesize(self, announcer: Announcer, text: str) -> None:
        """``text`` in the assistant's voice (its fallbacks, then espeak), into ``announcer``."""
        voices: list[tuple[TtsProvider, TtsOptions]] = []
        if self._session is not None:
            s = self._session
            voices = list(zip(s.providers.tts, s.settings.tts, strict=False))
        voices.append((EspeakTts(), TtsOptions()))
        for provider, options in voices:
            try:
                async with asyncio.timeout(ANNOUNCE_DEADLINE):
                    async for pcm in provider.synthesize(text, options):
                        announcer.feed(pcm)
                break
            except (ProviderError, TimeoutError) as exc:
                self.log.warning("transfer_tts_failed", provider=provider.name, error=str(exc))
        announcer.finish()

    # ------------------------------------------------------------------ blind: REFER

    def _refer_to(self, destination: NumberDestination | SipDestination) -> SipUri:
        if isinstance(destination, SipDestination):
            uri = _sip_uri(destination.sip_uri)
            return uri
        trunk = _trunk_of(self.call)
        host, port = (trunk.host, trunk.port if trunk.port != 5060 else None) if trunk is not None else \
            (self.call.peer[0], self.call.peer[1] if self.call.peer[1] != 5060 else None)
        try:
            return number_uri(destination.number, host, port)
        except LocalProtocolError as exc:
            raise _Failed(str(exc)) from None

    async def _blind(self, destination: NumberDestination | SipDestination) -> bool:
        """REFER and follow it; True: refused or unanswered, the gateway should bridge instead."""
        call = self.call
        assert call.dialog is not None
        target = self._refer_to(destination)
        headers = destination.sip_headers if isinstance(destination, SipDestination) else None
        local = call.dialog.local_uri
        request = call.dialog.new_request(
            "REFER", via=call.ua.make_via(call.transport),
            headers=[
                ("Refer-To", refer_to_value(target, headers or None)),
                *([("Referred-By", referred_by_value(local))] if isinstance(local, SipUri) else []),
                *call.ua.common_headers(),
            ],
        )
        loop = asyncio.get_running_loop()
        self.refer = ReferTransfer(now=loop.time(), notify_timeout=NOTIFY_TIMEOUT)
        self.log.info("transfer_refer_sent", refer_to=str(target))
        self._update("refer-sent")
        call._send_in_dialog(request, self._on_refer_response)
        refer = self.refer
        while not refer.done:
            await self._refer_changed.wait()
            self._refer_changed.clear()
        if refer.state is ReferState.SUCCEEDED:
            self._decide(True, "completed", "REFER succeeded")
            call.transfer = None
            call.hangup("assistant-forwarded-call")
            return False
        if refer.state is ReferState.REJECTED:
            self.call.manager.metrics.transfers.labels(self.mode, "refer-refused").inc()
            return True
        raise _Failed(self._refer_failure or "the transfer target did not answer")

    _refer_failure: str | None = None

    def _on_refer_response(self, response: Response | None) -> None:
        if self.refer is None:
            return
        loop = asyncio.get_running_loop()
        self.refer.on_refer_response(response.status_code if response else None,
                                     response.reason if response else "", now=loop.time())
        self._pump()

    def on_notify(self, request: Request) -> None:
        """A NOTIFY of our REFER's subscription: answer it and follow the report."""
        call = self.call
        if self.refer is None:
            call.ua.respond(request, 481)
            return
        verdict = self.refer.on_notify(
            event=request.headers.get("Event"), subscription_state=request.headers.get("Subscription-State"),
            content_type=request.content_type, body=request.body, now=asyncio.get_running_loop().time(),
        )
        call.ua.respond(request, verdict.status_code, verdict.reason)
        self._pump()

    def _pump(self) -> None:
        refer = self.refer
        assert refer is not None
        for event in refer.events():
            match event:
                case ReferAccepted():
                    self.log.info("transfer_refer_accepted", status=event.status_code)
                    self._update("refer-accepted", sipStatusCode=event.status_code)
                case ReferProgress():
                    self.log.info("transfer_progress", status=event.status_code, reason=event.reason)
                    self._update("progress", sipStatusCode=event.status_code, reason=event.reason or None)
                case ReferSucceeded():
                    self.log.info("transfer_completed", how="refer", status=event.status_code)
                    self._update("completed", sipStatusCode=event.status_code)
                case ReferFailed():
                    self._refer_failure = (f"the transfer target answered {event.status_code} {event.reason}"
                                           if event.status_code else event.reason)
                    self.log.warning("transfer_refer_failed", status=event.status_code, reason=event.reason)
                case ReferRejected():
                    self.log.info("transfer_refer_refused", status=event.status_code, reason=event.reason)
                    self._update("refer-refused", sipStatusCode=event.status_code, reason=event.reason or None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = refer.get_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)
        self._refer_changed.set()

    def _on_timer(self) -> None:
        self._timer = None
        if self.refer is not None:
            self.refer.handle_timer(asyncio.get_running_loop().time())
            self._pump()

    # ------------------------------------------------------------------ the gateway's own leg

    async def _dial_and_bridge(self, destination: NumberDestination | SipDestination,
                               plan: dict[str, Any]) -> None:
        from gateway.calls import CallError

        call = self.call
        caller_id = destination.caller_id or _dial_string(call.customer_number)
        try:
            if isinstance(destination, SipDestination):
                leg = await call.manager.place_call(
                    sip_uri=destination.sip_uri, target=CallTarget("bridge", name=call.id), from_user=caller_id,
                    headers=list(destination.sip_headers.items()))
            else:
                trunk = _trunk_of(call) or (call.manager.config.trunks[0] if call.manager.config.trunks else None)
                if trunk is not None:
                    leg = await call.manager.place_call(number=destination.number, trunk=trunk.name,
                                                        target=CallTarget("bridge", name=call.id),
                                                        from_user=caller_id)
                else:
                    uri = self._refer_to(destination)
                    leg = await call.manager.place_call(sip_uri=str(uri), target=CallTarget("bridge", name=call.id),
                                                        from_user=caller_id)
        except CallError as exc:
            raise _Failed(f"cannot dial the destination: {exc}") from None
        self.leg = leg
        self.log.info("transfer_dialing", leg_call_id=leg.id)
        self._update("dialing")
        ended = asyncio.ensure_future(leg.wait_ended())
        answered = asyncio.ensure_future(self._leg_answered.wait())
        try:
            await asyncio.wait({ended, answered}, timeout=call.manager.config.sip.ring_timeout + 30,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()
        if not self._leg_answered.is_set() or leg.state is not CallState.CONFIRMED:
            ended.cancel()
            if leg.state is not CallState.ENDED:
                leg.hangup("customer-did-not-answer")
            reason = _forwarding_reason(leg.ended_reason)
            raise _Failed(f"the destination did not take the call ({leg.ended_reason or 'no answer'})", reason)
        self.log.info("transfer_leg_answered", leg_call_id=leg.id)
        self._update("answered")
        if self.mode == "warm":
            await self._brief_operator(leg, plan)
            if leg.state is not CallState.CONFIRMED:
                raise _Failed("the operator hung up before the bridge", "call.forwarding.operator-busy")
        self._bridge(leg)
        # Until one side hangs up; if the caller does, this task is cancelled with the call.
        await ended
        if call.state is CallState.CONFIRMED:
            self.bridged = False
            call.transfer = None
            self.log.info("transfer_ended", by="destination")
            call.hangup("assistant-forwarded-call")

    def _bridge(self, leg: Call) -> None:
        call = self.call
        bridge = MediaBridge(call.manager.metrics)
        call.media.conversation = bridge.a
        leg.media.conversation = bridge.b
        self.bridged = True
        self.log.info("transfer_bridged", leg_call_id=leg.id)
        self._update("bridged")
        self._decide(True, "bridged", "the gateway bridged the caller to the destination")
        if self._session is not None:
            # The assistant's part is over; the call stays up (Call.hangup ignores the session's end
            # while bridged) and its transcriber stream is closed.
            self._session.stop("assistant-forwarded-call")

    async def _brief_operator(self, leg: Call, plan: dict[str, Any]) -> None:
        """Warm transfer: say the message or the summary to the operator before the bridge."""
        mode = str(plan.get("mode") or "")
        announcer = Announcer()
        leg.media.conversation = announcer
        if "wait-for-operator-to-speak-first" in mode:
            await _within(announcer.voice_heard.wait(), OPERATOR_SPEAKS_WITHIN)
        text = _text(plan.get("message"))
        if "summary" in mode or mode == "warm-transfer-experimental":
            text = await self._summary(plan) or text
        if not text:
            text = "You have a transferred call."
        self.log.info("transfer_briefing_operator", chars=len(text))
        self._update("briefing-operator")
        await self._synthesize(announcer, text)
        await _within(announcer.played.wait(), ANNOUNCE_DEADLINE)

    async def _summary(self, plan: dict[str, Any]) -> str | None:
        from gateway.call_record import transcript_text

        session = self._session
        conversation = self.call.conversation
        if session is None or conversation is None:
            return None
        summary_plan = plan.get("summaryPlan") or {}
        if summary_plan.get("enabled") is False:
            return None
        transcript = transcript_text(conversation.messages)
        messages = [ChatMessage(role="system" if m.get("role") == "system" else "user",
                                content=re.sub(r"\{\{\s*transcript\s*\}\}", transcript, str(m.get("content", ""))))
                    for m in (summary_plan.get("messages") or SUMMARY_MESSAGES)]
        parts: list[str] = []
        try:
            async with asyncio.timeout(summary_plan.get("timeoutSeconds") or SUMMARY_DEADLINE):
                async for event in session.providers.llm.stream(messages, options=session.settings.llm
                                                                 or LlmOptions()):
                    if isinstance(event, TextDelta):
                        parts.append(event.text)
        except (ProviderError, TimeoutError) as exc:
            self.log.warning("transfer_summary_failed", error=str(exc))
            return None
        return "".join(parts).strip() or None


# ---------------------------------------------------------------------------------------------- entry points


async def transfer(call: Call, destination: dict[str, Any], *, message: str | None = None,
                   source: str = "api", _expect_speech: bool = False) -> TransferResult:
    """Transfer ``call`` to a Vapi transfer destination (see module doc). Returns once the outcome for the
    caller's assistant is known: transferred (REFER succeeded or legs bridged), refused or failed. The
    transfer runs in the call's TaskGroup, so cancelling the caller of this function does not abort it."""
    mode = "warm" if str((destination.get("transferPlan") or {}).get("mode", "")).startswith("warm") else "blind"
    if call.state is not CallState.CONFIRMED or call.dialog is None:
        return TransferResult(ok=False, mode=mode, result="failed", detail="the call is not answered")
    if call.transfer is not None:
        return TransferResult(ok=False, mode=mode, result="failed", detail="a transfer is already in progress")
    job = CallTransfer(call, destination, message=message, source=source, expect_speech=_expect_speech)
    call.spawn(job.run())
    return await asyncio.shield(job.result)


async def transfer_from_tool(call: Call, tool: TransferCallTool, arguments: dict[str, Any],
                             tool_call_id: str) -> ToolOutcome:
    """The model called ``transferCall``: ``arguments["destination"]`` names one of ``tool.destinations`` (its
    number or SIP URI; with a single destination it may be omitted). The result is what the model sees."""
    wanted = arguments.get("destination")
    choices = [d for d in tool.destinations if isinstance(d, NumberDestination | SipDestination)]
    names = [d.number if isinstance(d, NumberDestination) else d.sip_uri for d in choices]
    if wanted is None and len(choices) == 1:
        chosen = choices[0]
    elif wanted in names:
        chosen = choices[names.index(wanted)]
    else:
        call.log.warning("transfer_unknown_destination", destination=wanted, tool_call_id=tool_call_id)
        return ToolOutcome(content=f"Unknown transfer destination {wanted!r}; choose one of {names}.", failed=True)
    request_start = any(m.type == "request-start" for m in tool.messages)
    result = await transfer(call, chosen.model_dump(by_alias=True, exclude_none=True), source="tool",
                            _expect_speech=request_start)
    if result.ok:
        return ToolOutcome(content="The call was transferred.")
    return ToolOutcome(content=f"The transfer failed: {result.detail}", failed=True)


def on_notify(call: Call, request: Request) -> None:
    """An in-dialog NOTIFY (the call has applied it to its dialog): ours if it reports on our REFER."""
    job = call.transfer
    if job is not None and job.refer is not None:
        job.on_notify(request)
    elif is_refer_event(request.headers.get("Event")):
        call.ua.respond(request, 200)  # a late report of a transfer already decided: acknowledged
    else:
        # RFC 6665 §4.1.3: a NOTIFY that matches no subscription gets 481.
        call.ua.respond(request, 481)


def leg_connected(leg: Call) -> None:
    """The gateway's own leg of a transfer answered (its target is ``bridge`` naming the caller's call)."""
    caller = leg.manager.get(leg.target.name or "")
    job = caller.transfer if caller is not None else None
    # The leg may answer before place_call() has returned it to the transfer (job.leg still None).
    if job is None or (job.leg is not None and job.leg is not leg):
        leg.log.info("transfer_leg_orphaned", caller_call_id=leg.target.name)
        leg.hangup("customer-ended-call-during-transfer")
        return
    job._leg_answered.set()


# ---------------------------------------------------------------------------------------------- helpers


async def _within(awaitable: Any, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        pass


def _sip_uri(text: str) -> SipUri:
    try:
        uri = parse_uri(text)
    except RemoteProtocolError as exc:
        raise _Failed(f"invalid sipUri: {exc.reason}") from None
    if not isinstance(uri, SipUri):
        raise _Failed("sipUri must be a sip: or sips: URI")
    return uri


def _trunk_of(call: Call) -> TrunkConfig | None:
    """The trunk a call came in on or went out through (by name, else by the peer's address)."""
    trunks = call.manager.config.trunks
    for trunk in trunks:
        if call.direction == "outbound" and trunk.name == call.phone_number:
            return trunk
    for trunk in trunks:
        if trunk.host == call.peer[0]:
            return trunk
    return None


def _dial_string(number: str | None) -> str | None:
    if number and re.fullmatch(r"\+?[0-9*#]+", number):
        return number
    return None


def _forwarding_reason(leg_reason: str | None) -> str:
    """Vapi's endedReason for a transfer whose destination did not take the call."""
    if leg_reason == "customer-busy":
        return "call.forwarding.operator-busy"
    if leg_reason == "customer-did-not-answer":
        return "call.forwarding.no-answer"
    return "call.in-progress.error-transfer-failed"

