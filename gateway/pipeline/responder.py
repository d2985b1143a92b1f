"""One assistant reply: LLM stream → chunker/voice formatter → TTS → the call's speaker.

The LLM and the TTS run concurrently: while the model is still writing, the first chunk is already being
synthesised, and the TTS of chunk *n+1* starts when chunk *n*'s audio is queued. Tool calls go to the
session's tool runner (their ``request-*`` messages spoken at the right moments) and the model is asked
again with the results, up to ``max_tool_rounds``. Cancelling the responder (barge-in) cancels the LLM
request and the TTS request at once; the speaker has already dropped the audio.

:class:`TtsChain` is the voice with its ``fallbackPlan``: a voice that fails is skipped for the rest of
the call and the next one speaks, the local voice last, so the caller always hears something.

Faults: a model request that fails before any reply came is retried on the assistant's
``model.fallbackModels`` in order (Vapi); a reply that failed on every model is the session's to handle
(an apology and the next turn, or the end of the call when it keeps failing). A provider or tool runner
raising something other than :class:`ProviderError` is a bug of that stage, not of the call: the LLM's or
a voice's becomes a ``protocol`` failure of that provider, a tool runner's a failed tool result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.pipeline.chunker import Chunker, ChunkOptions
from gateway.pipeline.settings import DEFAULT_TOOL_FILLERS, ToolBehaviour, ToolMessageSpec
from gateway.providers.base import (
    ChatMessage,
    LlmDone,
    LlmEvent,
    LlmOptions,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolCallsDone,
    TtsOptions,
    TtsProvider,
)

if TYPE_CHECKING:
    from gateway.pipeline.session import ConversationSession, ToolOutcome
    from gateway.pipeline.speaker import Speaker

__all__ = ["Responder", "TtsChain"]

TTS_QUEUE_CHUNKS = 64
BLOCKING_MESSAGE_DEADLINE = 30.0  # a blocking request-start message is played within this


def _no_failure_callback(exc: ProviderError) -> None:
    """The failure callback of a released voice chain."""


class TtsChain:
    """The voice and its fallbacks (see module doc)."""

    def __init__(self, providers: Sequence[TtsProvider], options: Sequence[TtsOptions], *,
                 on_failure: Callable[[ProviderError], None], log: Any) -> None:
        if not providers:
            raise ValueError("at least one voice is needed")
        self._voices = list(zip(providers, _pad(options, len(providers)), strict=True))
        self._on_failure = on_failure
        self._log = log
        self.first_byte_at: float | None = None

    def release(self) -> None:
        """Forget the failure callback (the session's bound method: a cycle with the session)."""
        self._on_failure = _no_failure_callback

    async def speak(self, speaker: Speaker, utt: int, text: str, *, chunk: ChunkOptions | None = None,
                    timing: dict[str, Any] | None = None) -> None:
        """Synthesise ``text`` (chunked and voice-formatted when ``chunk`` is given) into utterance ``utt``."""
        if chunk is not None:
            chunker = Chunker(chunk)
            pieces = [*chunker.feed(text), *chunker.finish()]
        else:
            pieces = [text]
        for piece in pieces:
            await self.speak_chunk(speaker, utt, piece, timing=timing)

    async def speak_chunk(self, speaker: Speaker, utt: int, text: str, *,
                          timing: dict[str, Any] | None = None) -> None:
        loop = asyncio.get_running_loop()
        while self._voices:
            provider, options = self._voices[0]
            speaker.chunk(utt, text)
            if timing is not None and "tts_request_at" not in timing:
                timing["tts_request_at"] = loop.time()
            got_audio = False
            try:
                async for pcm in provider.synthesize(text, options):
                    if not pcm:
                        continue
                    if not got_audio and timing is not None and "tts_first_byte_at" not in timing:
                        timing["tts_first_byte_at"] = loop.time()
                    got_audio = True
                    speaker.feed(utt, pcm)
                return
            except Exception as exc:  # any failure of a voice is that voice's failure
                if not isinstance(exc, ProviderError):
                    self._log.error("tts_unexpected_error", provider=provider.name, exc_info=exc)
                    exc = unexpected(provider.name, exc)
                self._on_failure(exc)
                if got_audio:
                    return  # the caller heard part of it; do not repeat the chunk in another voice
                if self._voices[0][0] is not provider:
                    continue  # a concurrent utterance already gave this voice up
                if len(self._voices) > 1:
                    self._voices.pop(0)
                    self._log.warning("tts_fallback", failed=provider.name, next=self._voices[0][0].name)
                    continue
                raise exc

    @property
    def local_only(self) -> bool:
        return len(self._voices) == 1


def unexpected(provider: str, exc: BaseException) -> ProviderError:
    """A provider's bug (an exception that is not a :class:`ProviderError`) as its ``protocol`` failure."""
    return ProviderError(provider, "protocol", f"unexpected {type(exc).__name__}: {exc}")


def _first(group: BaseExceptionGroup[ProviderError]) -> ProviderError:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, ProviderError)
    return exc


def _pad(options: Sequence[TtsOptions], n: int) -> list[TtsOptions]:
    out = list(options[:n])
    while len(out) < n:
        out.append(TtsOptions())
    return out


class Responder:
    """One reply of the assistant (see module doc)."""

    def __init__(self, session: ConversationSession, utt: int, timing: dict[str, Any] | None) -> None:
        self.session = session
        self.utt = utt
        self.timing = timing

    async def run(self) -> None:
        s = self.session
        error: ProviderError | None = None
        crash: BaseException | None = None
        try:
            await self._run()
        except* ProviderError as group:
            error = _first(group)
        except* Exception as group:
            crash = group.exceptions[0]
        finally:
            s.speaker.end(self.utt)
        s.responder_done(self)
        if crash is not None:
            # A bug of ours in this reply: this call ends (with an apology), no other call notices.
            s.speaker.cancel(self.utt, s.loop.time())
            s.internal_error("responder", crash)
        elif error is not None:
            # The LLM failed (on every model), or every voice did (a TTS failure first falls back).
            s.speaker.cancel(self.utt, s.loop.time())
            if error.provider == s.providers.llm.name:
                s.llm_failed(error)
            else:
                s.fail("tts", error)
        else:
            s.llm_succeeded()

    async def _run(self) -> None:
        s = self.session
        settings = s.settings
        queue: asyncio.Queue[_Item] = asyncio.Queue(TTS_QUEUE_CHUNKS)
        end_call = False
        end_message: str | None = None
        async with asyncio.TaskGroup() as tg:
            tts = tg.create_task(self._tts_worker(queue))
            try:
                for _round in range(settings.max_tool_rounds + 1):
                    chunker = Chunker(settings.chunk)
                    calls: tuple[ToolCall, ...] = ()
                    if self.timing is not None and "llm_request_at" not in self.timing:
                        self.timing["llm_request_at"] = s.loop.time()
                    async for event in self._llm_stream():
                        match event:
                            case TextDelta():
                                if self.timing is not None and "llm_first_token_at" not in self.timing:
                                    self.timing["llm_first_token_at"] = s.loop.time()
                                for piece in chunker.feed(event.text):
                                    await queue.put(piece)
                            case ToolCallsDone():
                                calls = event.calls
                            case LlmDone():
                                end_call = end_call or event.end_call
                    for piece in chunker.finish():
                        await queue.put(piece)
                    if not calls:
                        break
                    result = await self._run_tools(calls, queue)
                    end_call = end_call or result.end_call
                    end_message = end_message or result.end_message
                    if s.ending is not None or end_call or not result.ask_model:
                        break
            finally:
                await queue.put(None)
            await tts
        if end_call and s.ending is None:
            # The reply asked to end the call (endCall tool, or a rule): after it has been heard. The endCall
            # tool's request-start message is what is said last; else the assistant's endCallMessage.
            message = end_message if end_message is not None else settings.end_call_message
            if message:
                s.speaker.end(self.utt)
                s.end_after(s.say(message, kind="end-call", interruptible=False), "assistant-ended-call")
            else:
                s.end_after(self.utt, "assistant-ended-call")

    async def _llm_stream(self) -> AsyncIterator[LlmEvent]:
        """The reply's events from the model, else from ``fallbackModels`` in order: a model is given up for
        this request when it failed before sending anything (after that, the caller has heard part of it)."""
        s = self.session
        settings = s.settings
        llm = s.providers.llm
        models: list[LlmOptions] = [settings.llm]
        models += [dataclasses.replace(settings.llm, model=m) for m in settings.llm_fallback_models
                   if m != settings.llm.model]
        for i, options in enumerate(models):
            started = False
            try:
                async for event in llm.stream(s.history, tools=settings.tools, options=options):
                    started = True
                    yield event
                return
            except ProviderError as exc:
                error = exc
            except Exception as exc:  # a provider's bug is that provider's failure
                s.log.error("llm_unexpected_error", provider=llm.name, exc_info=exc)
                error = unexpected(llm.name, exc)
            if started or i == len(models) - 1:
                raise error
            s.provider_failed("llm", error)
            s.log.warning("llm_fallback", failed=options.model, next=models[i + 1].model)

    async def _tts_worker(self, queue: asyncio.Queue[_Item]) -> None:
        s = self.session
        while True:
            piece = await queue.get()
            if piece is None:
                return
            if isinstance(piece, asyncio.Event):
                piece.set()  # everything queued before it has been synthesised
                continue
            await s.tts.speak_chunk(s.speaker, self.utt, piece, timing=self.timing)

    async def _run_tools(self, calls: tuple[ToolCall, ...], queue: asyncio.Queue[_Item]) -> _ToolsResult:
        """Run the model's tool calls, their results into the history, their messages spoken (Vapi
        semantics: a request-complete/-failed message with role assistant is spoken *instead of* asking
        the model again; with role system it is a hint added for the model)."""
        s = self.session
        s.history.append(ChatMessage(role="assistant", content=None, tool_calls=calls))
        result = _ToolsResult()
        hints: list[str] = []
        for call in calls:
            behaviour = s.settings.tool_behaviour.get(call.name)
            arguments = _arguments(call.arguments)
            if behaviour is not None and behaviour.kind == "endCall":
                start = behaviour.messages_of("request-start", arguments)
                if start:
                    result.end_message = self._pick(start).content
            elif behaviour is not None and not behaviour.is_async:
                # Vapi request-start: "never triggered for async tools"; without one, a default filler.
                await self._say_start(behaviour, arguments, queue)
            outcome = await self._call_tool(call, behaviour, arguments, queue)
            s.history.append(ChatMessage(role="tool", tool_call_id=call.id, content=outcome.content))
            result.end_call = result.end_call or outcome.end_call
            if behaviour is None or behaviour.kind == "endCall":
                continue
            after = behaviour.messages_of("request-failed" if outcome.failed else "request-complete", arguments)
            if outcome.failed and behaviour.is_async:
                after = []  # request-failed: "never triggered for async tool calls"
            spoken = [m for m in after if m.role == "assistant"]
            hints += [m.content for m in after if m.role == "system"]
            if spoken:
                message = self._pick(spoken)
                await queue.put(message.content)
                if message.end_call_after_spoken:
                    result.end_call = True
            else:
                # "If this message is not provided, the model will be requested to respond."
                result.ask_model = True
        for hint in hints:
            s.history.append(ChatMessage(role="system", content=hint))
            result.ask_model = True
        return result

    def _pick(self, messages: list[ToolMessageSpec]) -> ToolMessageSpec:
        """Vapi: several messages of one type are variants; one is picked each time."""
        return messages[0] if len(messages) == 1 else self.session._rng.choice(messages)

    async def _say_start(self, behaviour: ToolBehaviour, arguments: dict[str, Any],
                         queue: asyncio.Queue[_Item]) -> None:
        s = self.session
        start = behaviour.messages_of("request-start", arguments)
        if start:
            message = self._pick(start)
        elif behaviour.default_fillers and not behaviour.has_start_message():
            message = ToolMessageSpec(type="request-start", content=s._rng.choice(DEFAULT_TOOL_FILLERS))
        else:
            return
        await queue.put(message.content)
        if message.blocking:
            # "the tool call will only trigger after the message is spoken": the reply so far (with the
            # message) is played to its end, and what follows the tool goes into a new utterance.
            synthesised = asyncio.Event()
            await queue.put(synthesised)
            async with asyncio.timeout(BLOCKING_MESSAGE_DEADLINE):
                await synthesised.wait()
                s.speaker.end(self.utt)
                while s.speaker.pending(self.utt):
                    await asyncio.sleep(0.02)
            self.utt = s.speaker.start("reply", interruptible=True)

    async def _call_tool(self, call: ToolCall, behaviour: ToolBehaviour | None, arguments: dict[str, Any],
                         queue: asyncio.Queue[_Item]) -> ToolOutcome:
        from gateway.pipeline.session import ToolOutcome

        s = self.session
        runner = s.providers.tools
        if runner is None:
            if behaviour is not None and behaviour.kind == "endCall":
                return ToolOutcome(content="Ending the call.", end_call=True)
            return ToolOutcome(content=f"Tool {call.name!r} is not available.", failed=True)
        timeout = behaviour.timeout_seconds if behaviour is not None else 20.0
        delayed = behaviour.messages_of("request-response-delayed", arguments) if behaviour is not None else []
        s.tool_started()
        handles = []
        # request-response-delayed: "same timing means variants; different timings mean staged updates".
        by_timing: dict[float, list[ToolMessageSpec]] = {}
        for m in delayed:
            by_timing.setdefault(m.timing_seconds or 1.0, []).append(m)
        for after, variants in by_timing.items():
            text = self._pick(variants).content
            handles.append(s.loop.call_later(after, _offer, queue, text))
        try:
            async with asyncio.timeout(timeout):
                return await runner(call.name, call.arguments, call.id)
        except TimeoutError:
            s.log.warning("tool_timeout", tool=call.name, seconds=timeout)
            return ToolOutcome(content=f"Tool {call.name!r} timed out.", failed=True)
        except ProviderError as exc:
            return ToolOutcome(content=f"Tool {call.name!r} failed: {exc.message}", failed=True)
        except Exception as exc:  # a tool runner's bug fails that tool, not the call
            s.log.error("tool_unexpected_error", tool=call.name, exc_info=exc)
            return ToolOutcome(content=f"Tool {call.name!r} failed.", failed=True)
        finally:
            for handle in handles:
                handle.cancel()
            s.tool_finished()


@dataclass(slots=True)
class _ToolsResult:
    ask_model: bool = False  # some result has no message of its own: the model speaks next
    end_call: bool = False
    end_message: str | None = None  # the endCall tool's request-start message


_Item = str | asyncio.Event | None  # text to speak, a marker set once reached, the end


def _offer(queue: asyncio.Queue[_Item], text: str) -> None:
    if not queue.full():
        queue.put_nowait(text)


def _arguments(text: str) -> dict[str, Any]:
    """The model's arguments as an object (for message conditions); anything else is no arguments."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
