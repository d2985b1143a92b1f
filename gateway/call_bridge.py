"""Media for transfers: what a call's media is connected to while a transfer runs. Each class implements
:class:`gateway.call_media.Conversation` (``on_voice_frame``, ``on_tick``, ``next_frame``) and is set as
``call.media.conversation``; the call's 20 ms playout tick drives it (RFC 3550 timing stays the call's).

- :class:`MediaBridge`: two legs joined back to back. Each tick, leg A's decoded caller frame (after its
  jitter buffer and concealment) goes into leg B's bounded queue and is sent in B's next packet, and vice
  versa; the codecs of the two legs may differ (PCM in between). A queue holds a few frames of slack for
  the two legs' ticks not being in phase; when it is full the oldest frame is dropped and counted.
- :class:`Hold`: the caller waits while the transfer is being set up. The assistant's session keeps its
  transcriber stream alive with silence but hears nothing, says nothing (silence out: no RTP is sent).
- :class:`Tap`: passes everything through to the session and notes when it last sent speech, so a
  transfer can wait until its announcement has been heard.
- :class:`Announcer`: plays synthesised speech to one leg (the operator of a warm transfer) and notices
  when the far end speaks.
"""

from __future__ import annotations

import asyncio
import audioop
from collections import deque

from gateway.call_media import Conversation
from gateway.observability.metrics import Metrics

__all__ = ["BRIDGE_SLACK_FRAMES", "Announcer", "BridgeEnd", "Hold", "MediaBridge", "Tap"]

FRAME_BYTES = 320  # 20 ms of 8 kHz 16-bit mono
BRIDGE_SLACK_FRAMES = 5  # 100 ms: ticks of two calls share the server's playout clock, so 1-2 suffice
VOICE_RMS = 300  # a frame this loud counts as speech for "the operator spoke first"
VOICE_FRAMES = 5  # 100 ms of it


class BridgeEnd:
    """One leg's side of a :class:`MediaBridge`."""

    def __init__(self, bridge: MediaBridge, name: str) -> None:
        self.bridge = bridge
        self.name = name
        self.queue: deque[bytes] = deque()
        self.peer: BridgeEnd | None = None
        self.frames_in = 0  # frames this leg received and handed to its peer
        self.frames_out = 0  # frames of the peer's audio sent on this leg
        self.dropped = 0

    def on_voice_frame(self, pcm: bytes, now: float) -> None:
        pass  # the jitter buffer's ordered frames (on_tick) are what crosses the bridge

    def on_tick(self, encoded: bytes | None, encoding: str, pcm: bytes | None, now: float) -> None:
        if pcm is None or self.peer is None:
            return
        self.frames_in += 1
        self.peer.push(pcm)

    def push(self, pcm: bytes) -> None:
        q = self.queue
        if len(q) >= BRIDGE_SLACK_FRAMES:
            q.popleft()
            self.dropped += 1
            if self.bridge.metrics is not None:
                self.bridge.metrics.pipeline_frames_dropped.labels("bridge_queue_full").inc()
        q.append(pcm)

    def next_frame(self, now: float) -> bytes | None:
        if not self.queue:
            return None
        self.frames_out += 1
        return self.queue.popleft()


class MediaBridge:
    """Two legs' media joined (see module doc): set ``a`` and ``b`` as the legs' ``media.conversation``."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.a = BridgeEnd(self, "a")
        self.b = BridgeEnd(self, "b")
        self.a.peer, self.b.peer = self.b, self.a


class Hold:
    """The caller on hold while the transfer is set up (see module doc): ``session`` (the assistant's
    conversation, if any) keeps its STT stream fed with silence frames and its speech waits."""

    def __init__(self, session: Conversation | None) -> None:
        self.session = session

    def on_voice_frame(self, pcm: bytes, now: float) -> None:
        pass

    def on_tick(self, encoded: bytes | None, encoding: str, pcm: bytes | None, now: float) -> None:
        if self.session is not None:
            self.session.on_tick(None, encoding, None, now)

    def next_frame(self, now: float) -> bytes | None:
        return None


class Tap:
    """Pass-through to ``session`` noting when speech was last sent (see module doc)."""

    def __init__(self, session: Conversation) -> None:
        self.session = session
        self.frames_out = 0
        self.last_out: float | None = None

    def on_voice_frame(self, pcm: bytes, now: float) -> None:
        self.session.on_voice_frame(pcm, now)

    def on_tick(self, encoded: bytes | None, encoding: str, pcm: bytes | None, now: float) -> None:
        self.session.on_tick(encoded, encoding, pcm, now)

    def next_frame(self, now: float) -> bytes | None:
        frame = self.session.next_frame(now)
        if frame is not None:
            self.frames_out += 1
            self.last_out = now
        return frame

    async def wait_quiet(self, *, expect_speech: bool, quiet: float = 0.4, first_within: float = 5.0,
                         deadline: float = 60.0) -> None:
        """Return once speech went out and then ``quiet`` seconds passed without any; when no speech is
        expected, once nothing went out for ``quiet`` seconds. Waits for the first frame at most
        ``first_within`` seconds and for everything at most ``deadline`` seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        seen = self.frames_out
        while True:
            now = loop.time()
            if now - start >= deadline:
                return
            spoke = self.frames_out > seen
            if spoke or not expect_speech:
                last = self.last_out if self.last_out is not None and spoke else start
                if now - max(last, start) >= quiet:
                    return
            elif now - start >= first_within:
                return
            await asyncio.sleep(0.05)


class Announcer:
    """Speech for one leg: ``feed`` PCM (any length), ``finish`` when there is no more; ``played`` is set
    once all of it went out. ``voice_heard`` is set once the far end spoke (``VOICE_FRAMES`` loud frames
    in a row)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._finished = False
        self.played = asyncio.Event()
        self.voice_heard = asyncio.Event()
        self.frames_out = 0
        self._loud = 0

    def feed(self, pcm: bytes) -> None:
        self._buf += pcm

    def finish(self) -> None:
        self._finished = True
        if not self._buf:
            self.played.set()

    def on_voice_frame(self, pcm: bytes, now: float) -> None:
        if audioop.rms(pcm, 2) >= VOICE_RMS:
            self._loud += 1
            if self._loud >= VOICE_FRAMES:
                self.voice_heard.set()
        else:
            self._loud = 0

    def on_tick(self, encoded: bytes | None, encoding: str, pcm: bytes | None, now: float) -> None:
        pass

    def next_frame(self, now: float) -> bytes | None:
        buf = self._buf
        if not buf:
            if self._finished:
                self.played.set()
            return None
        frame = bytes(buf[:FRAME_BYTES])
        del buf[:FRAME_BYTES]
        if len(frame) < FRAME_BYTES:
            frame += bytes(FRAME_BYTES - len(frame))
        self.frames_out += 1
        return frame
