"""One assistant reply: LLM stream → chunker/voice formatter → TTS → the call's speaker.

The LLM and the TTS run concurrently: while the model is still writing, the first chunk is already being
synthesised, and the TTS of chunk *n+1* starts when chunk *n*'s audio is queued. Tool calls go to the
session's tool runner (their ``request-*`` messages spoken at the right moments) and the model is asked
again with the results, up to ``max_tool_rounds``. Cancelling the responder (barge-in) cancels the LLM
request and the TTS request at once; the speaker has already dropped the audio.

:class:`TtsChain` is the voice with its ``fallbackPlan``: a voice that fails is skipped for the rest of
the call and the next one speaks, the local voice last, so the caller always hears something.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gateway.pipeline.chunker import Chunker, ChunkOptions
from gateway.providers.base import (
    ChatMessage,
    LlmDone,
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
            except ProviderError as exc:
                self._on_failure(exc)
                if got_audio:
                    return  # the caller heard part of it; do not repeat the chunk in another voice
                if len(self._voices) > 1:
                    self._voices.pop(0)
                    self._log.warning("tts_fallback", failed=provider.name, next=self._voices[0][0].name)
                    continue
                raise

    @property
    def local_only(self) -> bool:
        return len(self._voices) == 1


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
        try:
            await self._run()
        except* ProviderError as group:
            error = _first(group)
        finally:
            s.speaker.end(self.utt)
        s.responder_done(self)
        if error is not None:
            # The LLM failed, or every voice did (a TTS failure first falls back to the next voice).
            s.speaker.cancel(self.utt, s.loop.time())
            if error.provider == s.providers.llm.name:
                s.llm_failed(error)
            else:
                s.fail("tts", error)

    async def _run(self) -> None:
        s = self.session
        settings = s.settings
        queue: asyncio.Queue[str | None] = asyncio.Queue(TTS_QUEUE_CHUNKS)
        end_call = False
        async with asyncio.TaskGroup() as tg:
            tts = tg.create_task(self._tts_worker(queue))
            try:
                for _round in range(settings.max_tool_rounds + 1):
                    chunker = Chunker(settings.chunk)
                    calls: tuple[ToolCall, ...] = ()
                    if self.timing is not None and "llm_request_at" not in self.timing:
                        self.timing["llm_request_at"] = s.loop.time()
                    async for event in s.providers.llm.stream(s.history, tools=settings.tools, options=settings.llm):
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
                    end_call = await self._run_tools(calls, queue) or end_call
                    if s.ending is not None:
                        break
            finally:
                await queue.put(None)
            await tts
        if end_call and s.ending is None:
            # The reply asked to end the call (endCall tool, or a rule): after it has been heard.
            message = settings.end_call_message
            if message:
                s.speaker.end(self.utt)
                s.end_after(s.say(message, kind="end-call", interruptible=False), "assistant-ended-call")
            else:
                s.end_after(self.utt, "assistant-ended-call")

    async def _tts_worker(self, queue: asyncio.Queue[str | None]) -> None:
        s = self.session
        while True:
            piece = await queue.get()
            if piece is None:
                return
            await s.tts.speak_chunk(s.speaker, self.utt, piece, timing=self.timing)

    async def _run_tools(self, calls: tuple[ToolCall, ...], queue: asyncio.Queue[str | None]) -> bool:
        """Run the model's tool calls; their results go into the history. True: end the call after."""
        s = self.session
        s.history.append(ChatMessage(role="assistant", content=None, tool_calls=calls))
        end_call = False
        for call in calls:
            behaviour = s.settings.tool_behaviour.get(call.name)
            if behaviour is not None and behaviour.kind == "endCall":
                s.history.append(ChatMessage(role="tool", tool_call_id=call.id, content="Ending the call."))
                end_call = True
                continue
            if behaviour is not None and behaviour.request_start:
                await queue.put(behaviour.request_start)
            outcome = await self._call_tool(call, behaviour, queue)
            s.history.append(ChatMessage(role="tool", tool_call_id=call.id, content=outcome.content))
            if behaviour is not None:
                message = behaviour.request_failed if outcome.failed else behaviour.request_complete
                if message:
                    await queue.put(message)
            end_call = end_call or outcome.end_call
        return end_call

    async def _call_tool(self, call: ToolCall, behaviour: Any, queue: asyncio.Queue[str | None]) -> ToolOutcome:
        from gateway.pipeline.session import ToolOutcome

        s = self.session
        runner = s.providers.tools
        if runner is None:
            return ToolOutcome(content=f"Tool {call.name!r} is not available.", failed=True)
        timeout = behaviour.timeout_seconds if behaviour is not None else 20.0
        delayed = behaviour.request_delayed if behaviour is not None else None
        s.tool_started()
        handle = None
        if delayed:
            # request-response-delayed: spoken if the tool is still running after a while.
            handle = s.loop.call_later(
                behaviour.delayed_after_seconds, lambda: None if queue.full() else queue.put_nowait(delayed)
            )
        try:
            async with asyncio.timeout(timeout):
                return await runner(call.name, call.arguments, call.id)
        except TimeoutError:
            s.log.warning("tool_timeout", tool=call.name, seconds=timeout)
            return ToolOutcome(content=f"Tool {call.name!r} timed out.", failed=True)
        except ProviderError as exc:
            return ToolOutcome(content=f"Tool {call.name!r} failed: {exc.message}", failed=True)
        finally:
            if handle is not None:
                handle.cancel()
            s.tool_finished()
