"""The RTP pacer (gateway/transport/pacer.py, _pacer.c): a tick's datagrams leave at its deadline from a thread,
the playout scheduler hands them over at prepare time, and the endpoint packs each destination once."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import struct
import time
from typing import Any

import pytest

from gateway import native
from gateway.call_media import CallMedia
from gateway.observability.metrics import Metrics
from gateway.rtp.packet import RtpPacket
from gateway.rtp.rtcp import RtcpSenderReport, parse_compound
from gateway.sdp.crypto import SUITE_80, SrtpKeying
from gateway.transport.pacer import Datagram, Pacer
from gateway.transport.playout import PlayoutScheduler
from gateway.transport.rtp_endpoint import RtpEndpoint
from tests.unit.test_call_media import FakeTransport, params
from tests.unit.test_playout import FakeLoop

PYTHON_ONLY = os.environ.get("VOICEGW_NATIVE") == "0"


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_the_pacer_runs_with_the_compiled_media_path_only() -> None:
    async def main() -> Pacer | None:
        return Pacer.create(asyncio.get_running_loop())

    pacer = asyncio.run(main())
    try:
        if PYTHON_ONLY or native.STATUS != "compiled":
            assert pacer is None
        else:
            assert pacer is not None
    finally:
        if pacer is not None:
            pacer.close()


@pytest.fixture
def pacer() -> Any:
    if native.STATUS != "compiled":
        pytest.skip("the pacer is part of the compiled media path (VOICEGW_NATIVE=0 runs without it)")
    loop = asyncio.new_event_loop()
    created = Pacer.create(loop)
    assert created is not None
    yield created, loop
    created.close()
    loop.close()


def test_a_batch_leaves_at_its_deadline_not_before(pacer: Any) -> None:
    p, _ = pacer
    sender, receiver = _udp(), _udp()
    receiver.settimeout(2.0)
    addr = p.sockaddr(*receiver.getsockname())
    deadline = time.monotonic() + 0.05
    p.submit(deadline, [(sender.fileno(), b"first", addr), (sender.fileno(), b"second", addr)])
    got = [receiver.recv(100), receiver.recv(100)]
    arrived = time.monotonic()
    assert got == [b"first", b"second"]  # in the order handed over
    assert arrived >= deadline  # the thread slept until the deadline: never early
    sender.close()
    receiver.close()


def test_refused_datagrams_are_counted_by_errno_on_the_loop(pacer: Any) -> None:
    p, loop = pacer
    sender, receiver = _udp(), _udp()
    receiver.settimeout(2.0)
    good = p.sockaddr(*receiver.getsockname())
    v6 = p.sockaddr("::1", 9)  # an IPv6 destination through an IPv4 socket: EAFNOSUPPORT
    p.submit(time.monotonic(), [(sender.fileno(), b"x", v6), (sender.fileno(), b"ok", good)])
    assert receiver.recv(100) == b"ok"  # one refusal does not stop the rest of the batch

    async def settle() -> None:
        for _ in range(100):
            if p.failed:
                return
            await asyncio.sleep(0.01)

    loop.run_until_complete(settle())
    assert p.failed == {"EAFNOSUPPORT": 1}
    sender.close()
    receiver.close()


def test_a_datagram_withdrawn_before_the_deadline_is_not_sent(pacer: Any) -> None:
    p, _ = pacer
    sender, receiver = _udp(), _udp()
    receiver.settimeout(0.3)
    addr = p.sockaddr(*receiver.getsockname())
    withdrawn = bytearray(3)
    p.submit(time.monotonic() + 0.05, [(sender.fileno(), b"a", addr), (sender.fileno(), b"b", addr),
                                       (sender.fileno(), b"c", addr)], withdrawn)
    withdrawn[1] = 1  # written after the hand-over, while the pacer thread sleeps towards the deadline
    assert [receiver.recv(100), receiver.recv(100)] == [b"a", b"c"]
    with pytest.raises(TimeoutError):
        receiver.recv(100)
    sender.close()
    receiver.close()


def test_sockaddr_takes_ip_literals_only(pacer: Any) -> None:
    p, _ = pacer
    assert p.sockaddr("127.0.0.1", 5004) is not None and p.sockaddr("::1", 5004) is not None
    assert p.sockaddr("sip.example.net", 5004) is None
    assert p.sockaddr("127.0.0.1", 70000) is None


class FakePacer:
    def __init__(self) -> None:
        self.submitted: list[tuple[float, list[Datagram]]] = []
        self.withdrawn: list[bytearray | None] = []
        self.closed = False
        self.released: list[int] = []

    def release(self, fd: int) -> None:
        self.released.append(fd)
        os.close(fd)

    def submit(self, deadline: float, datagrams: list[Datagram], withdrawn: bytearray | None = None) -> None:
        self.submitted.append((deadline, datagrams))
        self.withdrawn.append(withdrawn)

    def sockaddr(self, host: str, port: int) -> bytes | None:
        return f"{host}:{port}".encode() if host[0].isdigit() else None

    def close(self) -> None:
        self.closed = True


class BatchStream:
    def __init__(self, scheduler: PlayoutScheduler, name: bytes) -> None:
        self.scheduler = scheduler
        self.name = name

    def prepare(self, tick: int, now: float) -> None:
        pass

    def send(self, tick: int) -> None:
        assert self.scheduler.batch is not None  # sends happen only while the scheduler collects them
        self.scheduler.batch.append((3, self.name + str(tick).encode(), b""))


def test_with_a_pacer_the_scheduler_hands_each_tick_over_at_prepare_time() -> None:
    loop = FakeLoop()
    fake = FakePacer()
    ticks: list[float] = []
    scheduler = PlayoutScheduler(loop, lead=0.005, pacer=fake,  # type: ignore[arg-type]
                                 on_tick=lambda lateness, skipped, now: ticks.append(lateness))
    scheduler.add(BatchStream(scheduler, b"a"))
    scheduler.add(BatchStream(scheduler, b"b"))
    loop.run_until(loop.now + 0.1)
    assert len(fake.submitted) >= 4
    for tick, (deadline, batch) in enumerate(fake.submitted):
        assert deadline == pytest.approx(scheduler.tick_time(tick))
        assert [d[1] for d in batch] == [b"a%d" % tick, b"b%d" % tick]
    assert set(ticks) == {0.0}  # handed over before every deadline
    assert scheduler.batch is None
    # one timer per tick (the prepare): no send timer on the loop
    assert loop.timers_armed == len(fake.submitted) + 1
    scheduler.close()
    assert fake.closed


def test_the_endpoint_queues_paced_datagrams_and_packs_each_destination_once() -> None:
    async def main() -> None:
        fake = FakePacer()
        calls: list[tuple[str, int]] = []
        original = fake.sockaddr

        def counting(host: str, port: int) -> bytes | None:
            calls.append((host, port))
            return original(host, port)

        fake.sockaddr = counting  # type: ignore[method-assign]
        endpoint = RtpEndpoint("127.0.0.1", 0, on_rtp=lambda p, n: None, on_rtcp=lambda d, n: None)
        await endpoint.open()
        try:
            endpoint.set_remote(("127.0.0.1", 40000))
            batch: list[Datagram] = []
            assert endpoint.send(b"one", batch, fake)  # type: ignore[arg-type]
            assert endpoint.send(b"two", batch, fake)  # type: ignore[arg-type]
            assert [(d[1], d[2]) for d in batch] == [(b"one", b"127.0.0.1:40000"), (b"two", b"127.0.0.1:40000")]
            assert batch[0][0] > 2 and calls == [("127.0.0.1", 40000)]
            assert endpoint.counters["sent"] == 2
            paced_fd = batch[0][0]
            sock = endpoint._rtp.get_extra_info("socket")  # type: ignore[union-attr]
            assert paced_fd != sock.fileno()  # a duplicate the pacer closes, never the loop's own descriptor
        finally:
            endpoint.close()
        assert fake.released == [paced_fd]  # given back at close, for the pacer to close after pending sends
        batch = []
        assert not endpoint.send(b"late", batch, fake)  # type: ignore[arg-type]  # closed: nothing queued
        assert batch == []

    asyncio.run(main())


class LeadProbe(BatchStream):
    def __init__(self, scheduler: PlayoutScheduler) -> None:
        super().__init__(scheduler, b"x")
        self.leads: list[float] = []  # per tick: how far ahead of its deadline it was prepared

    def prepare(self, tick: int, now: float) -> None:
        self.leads.append(round(self.scheduler.tick_time(tick) - now, 6))


def test_the_lead_grows_when_a_batch_is_nearly_late_and_shrinks_after_calm_ticks() -> None:
    delays = {"prepare": 0.0}
    loop = FakeLoop(lag=lambda when: delays["prepare"])
    scheduler = PlayoutScheduler(loop, lead=0.005, max_lead=0.010, calm_ticks=10, pacer=FakePacer(),  # type: ignore[arg-type]
                                 precise_clock=loop.time)
    probe = LeadProbe(scheduler)
    scheduler.add(probe)
    loop.run_until(loop.now + 0.2)  # 10 ticks handed over at once: the short lead holds
    assert set(probe.leads) == {0.005}
    delays["prepare"] = 0.0045  # the prepare timer now runs 4.5 ms late: under a millisecond to spare at 5 ms
    loop.run_until(loop.now + 0.1)
    assert probe.leads[-1] == 0.010 and 0.005 in probe.leads[10:12]  # grown after the first near-late tick
    delays["prepare"] = 0.0
    loop.run_until(loop.now + 0.1)
    assert probe.leads[-1] == 0.010  # not yet 10 calm ticks
    loop.run_until(loop.now + 0.2)
    assert probe.leads[-1] == 0.005  # calm again: back to the short lead
    fake = scheduler.pacer
    assert isinstance(fake, FakePacer)
    # every tick was handed over once, with its own deadline, whatever the lead
    deadlines = [deadline for deadline, _ in fake.submitted]
    assert deadlines == [pytest.approx(scheduler.tick_time(i)) for i in range(len(deadlines))]


def test_without_max_lead_the_lead_never_moves() -> None:
    delays = {"prepare": 0.0045}
    loop = FakeLoop(lag=lambda when: delays["prepare"])
    scheduler = PlayoutScheduler(loop, lead=0.005, pacer=FakePacer(), precise_clock=loop.time)  # type: ignore[arg-type]
    probe = LeadProbe(scheduler)
    scheduler.add(probe)
    loop.run_until(loop.now + 0.2)
    assert set(probe.leads) == {0.005}


def test_a_released_descriptor_is_closed_only_after_the_batches_handed_over_before(pacer: Any) -> None:
    p, _ = pacer
    sender, receiver = _udp(), _udp()
    receiver.settimeout(2.0)
    fd = os.dup(sender.fileno())
    p.submit(time.monotonic() + 0.05, [(fd, b"pending", p.sockaddr(*receiver.getsockname()))])
    p.release(fd)  # the endpoint closed while its last packet waits for its deadline
    assert receiver.recv(100) == b"pending"  # still sent, on the descriptor it was handed over with
    for _ in range(200):
        try:
            os.fstat(fd)
        except OSError:
            break  # closed by the pacer thread after the send
        time.sleep(0.005)
    else:
        raise AssertionError("the released descriptor was not closed")
    sender.close()
    receiver.close()


def test_the_scheduler_withdraws_a_handed_over_datagram_only_while_its_deadline_is_ahead() -> None:
    loop = FakeLoop()
    fake = FakePacer()
    scheduler = PlayoutScheduler(loop, lead=0.005, pacer=fake)  # type: ignore[arg-type]
    scheduler.add(BatchStream(scheduler, b"a"))
    scheduler.add(BatchStream(scheduler, b"b"))
    loop.run_until(scheduler.tick_time(2) - 0.004)  # tick 2 handed over, its deadline 4 ms ahead
    mask = fake.withdrawn[2]
    assert mask == bytearray(2)
    assert not scheduler.withdraw(1, 0)  # an earlier tick's batch: gone already
    assert not scheduler.withdraw(2, 2)  # no such datagram
    assert scheduler.withdraw(2, 1) and mask == bytearray([0, 1])
    loop.run_until(scheduler.tick_time(3) - 0.0002)  # tick 3 handed over, 0.2 ms to its deadline
    assert not scheduler.withdraw(3, 0)  # too close: the pacer may be sending it
    assert fake.withdrawn[3] == bytearray(2)


class LoopPacer(FakePacer):
    """Sends each batch on the fake loop at its deadline, without the datagrams withdrawn by then."""

    def __init__(self, loop: FakeLoop) -> None:
        super().__init__()
        self.loop = loop
        self.sent: list[bytes] = []

    def submit(self, deadline: float, datagrams: list[Datagram], withdrawn: bytearray | None = None) -> None:
        super().submit(deadline, datagrams, withdrawn)
        self.loop.call_at(deadline, self._send, datagrams, withdrawn)

    def _send(self, datagrams: list[Datagram], withdrawn: bytearray | None) -> None:
        self.sent.extend(d[1] for i, d in enumerate(datagrams) if not (withdrawn and withdrawn[i]))


class SocketTransport(FakeTransport):
    """A fake transport whose socket the endpoint can duplicate for the pacer."""

    def __init__(self, loop: FakeLoop) -> None:
        super().__init__(loop)
        self.sock = _udp()

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None


class Talker:
    """The assistant side: a tone while ``talking``."""

    def __init__(self) -> None:
        self.talking = True

    def on_voice_frame(self, pcm: bytes, now: float) -> None:
        pass

    def on_tick(self, encoded: bytes | None, encoding: str, pcm: bytes | None, now: float) -> None:
        pass

    def next_frame(self, now: float) -> bytes | None:
        return struct.pack("<160h", *([3000, -3000] * 80)) if self.talking else None


class TalkingCall:
    """A call's media on a fake clock with a :class:`Talker` as its assistant, paced by a :class:`LoopPacer`
    (or sending from loop timers with ``paced=False``)."""

    def __init__(self, *, paced: bool = True) -> None:
        self.loop = FakeLoop()
        self.pacer = LoopPacer(self.loop) if paced else None
        metrics = Metrics()
        self.scheduler = PlayoutScheduler(self.loop, lead=0.005, pacer=self.pacer, metrics=metrics)  # type: ignore[arg-type]
        self.media = CallMedia("127.0.0.1", 20000, echo=False, metrics=metrics, playout=self.scheduler,
                               rng=random.Random(1), wall_clock=lambda: 1_700_000_000.0, clock=self.loop.time)
        self.rtp = SocketTransport(self.loop) if paced else FakeTransport(self.loop)
        self.rtcp = FakeTransport(self.loop)
        self.media.endpoint.attach(self.rtp, self.rtcp)  # type: ignore[arg-type]
        self.media.apply(params("PCMU", 0))
        self.talker = Talker()
        self.media.conversation = self.talker

    def sent(self) -> list[RtpPacket]:
        wire = self.pacer.sent if self.pacer is not None else [data for data, _ in self.rtp.sent]
        return [RtpPacket.parse(data) for data in wire]

    def close(self) -> None:
        self.media.close()
        if isinstance(self.rtp, SocketTransport):
            self.rtp.sock.close()


def test_a_barge_in_withdraws_the_frame_prepared_ahead_and_the_stream_stays_continuous() -> None:
    """What the caller hears stops at the barge-in, not a lead later: the assistant packet handed to the pacer
    ahead of its deadline is taken back; the next talk spurt takes its sequence number (no gap a receiver
    would count as loss) with the marker bit, and the RTCP sender report counts only what left."""
    call = TalkingCall()
    loop, media, scheduler = call.loop, call.media, call.scheduler
    try:
        assert not media.withdraw_audio()  # nothing prepared yet
        loop.run_until(scheduler.tick_time(4) - 0.003)  # ticks 0-3 sent, tick 4 handed over, 3 ms to go
        assert len(call.sent()) == 4
        assert media.withdraw_audio()  # the caller barged in: tick 4 is taken back
        assert not media.withdraw_audio()  # once
        call.talker.talking = False
        loop.run_until(scheduler.tick_time(7) - 0.006)
        call.talker.talking = True  # the next reply, from tick 7
        loop.run_until(scheduler.tick_time(9) + 0.001)
        call.talker.talking = False
        loop.run_until(loop.now + 0.5)
        packets = call.sent()
        assert len(packets) == 7  # ticks 0-3 and 7-9: tick 4 never left
        seqs = [p.sequence_number for p in packets]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))  # no gap at the withdrawal
        assert [p.marker for p in packets] == [True, False, False, False, True, False, False]
        assert (packets[4].timestamp - packets[3].timestamp) & 0xFFFFFFFF == 4 * 160  # the pause, on the grid
        assert media.endpoint.counters["sent"] == 7
        # the tick 4 deadline passed after the withdrawal: a later call withdraws nothing
        assert not media.withdraw_audio()
        loop.run_until(loop.now + 8.0)  # long enough for an RTCP report
        reports = [p for data, _ in call.rtcp.sent for p in parse_compound(data) if isinstance(p, RtcpSenderReport)]
        assert reports and reports[-1].packet_count == 7
        assert reports[-1].octet_count == 7 * 160
    finally:
        call.close()


def test_no_withdrawal_under_srtp() -> None:
    """An SRTP packet's index is spent once protected: reusing its sequence number would reuse keystream."""
    call = TalkingCall()
    call.media.endpoint.set_srtp(SrtpKeying(suite=SUITE_80, local_key=bytes(range(30)),
                                            remote_key=bytes(range(50, 80))))
    try:
        call.loop.run_until(call.scheduler.tick_time(4) - 0.003)
        assert not call.media.withdraw_audio()
        call.loop.run_until(call.scheduler.tick_time(4) + 0.001)
        assert len(call.pacer.sent) == 5  # type: ignore[union-attr]
    finally:
        call.close()


def test_without_a_pacer_the_prepared_packet_is_withdrawn_before_its_send_timer() -> None:
    call = TalkingCall(paced=False)
    loop, scheduler = call.loop, call.scheduler
    loop.run_until(scheduler.tick_time(2) - 0.002)  # tick 2 prepared, its send timer 2 ms away
    assert call.media.withdraw_audio()
    call.talker.talking = False
    loop.run_until(scheduler.tick_time(4))
    call.talker.talking = True
    loop.run_until(scheduler.tick_time(5) + 0.001)
    packets = call.sent()
    assert len(packets) == 3  # ticks 0, 1 and 5
    assert [p.sequence_number - packets[0].sequence_number for p in packets] == [0, 1, 2]
    assert packets[2].marker
    call.close()
