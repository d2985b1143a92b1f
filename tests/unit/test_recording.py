"""The recording writers: the stereo WAV (header after finalize, caller left / assistant right, silence as
zeros) and the per-call PCAP (classic libpcap, raw IPv4/UDP records a reader takes apart again)."""

from __future__ import annotations

import asyncio
import struct
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np

from gateway.recording import (
    FLUSH_FRAMES,
    FRAME_BYTES,
    CallRecording,
    Frame,
    Packet,
    PcapFile,
    WavFile,
    interleave,
    recording_paths,
)
from tests.helpers.pcap import read_udp


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def _frame(value: int) -> bytes:
    return np.full(FRAME_BYTES // 2, value, dtype="<i2").tobytes()


def test_interleave_puts_the_caller_left_and_the_assistant_right() -> None:
    data = np.frombuffer(interleave([(_frame(100), _frame(-7)), (None, _frame(5)), (_frame(3), None)]), "<i2")
    stereo = data.reshape(-1, 2)
    assert stereo.shape == (480, 2)
    assert (stereo[:160, 0] == 100).all() and (stereo[:160, 1] == -7).all()
    assert (stereo[160:320, 0] == 0).all() and (stereo[160:320, 1] == 5).all()
    assert (stereo[320:, 0] == 3).all() and (stereo[320:, 1] == 0).all()


def test_wav_header_is_right_after_finalize(tmp_path: Path) -> None:
    path = tmp_path / "day" / "call.wav"
    wav = WavFile(path)
    wav.write_frames([(_frame(1000), None)] * 30)
    wav.write_frames([(None, _frame(-1000))] * 20)
    wav.close()
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        assert w.getnframes() == 50 * 160  # one second
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert (samples[: 30 * 160, 0] == 1000).all() and (samples[30 * 160 :, 1] == -1000).all()
    assert (samples[: 30 * 160, 1] == 0).all() and (samples[30 * 160 :, 0] == 0).all()
    riff_size = struct.unpack_from("<I", path.read_bytes(), 4)[0]
    assert riff_size == path.stat().st_size - 8


def test_pcap_records_parse_back_with_addresses_and_times(tmp_path: Path) -> None:
    path = tmp_path / "call.pcap"
    pcap = PcapFile(path)
    pcap.write_packets([
        (1700000000.25, b"INVITE sip:x SIP/2.0\r\n\r\n", ("192.0.2.1", 5062), ("127.0.0.1", 5060)),
        (1700000000.5, b"\x80\x00" + bytes(170), ("127.0.0.1", 30000), ("192.0.2.1", 4000)),
    ])
    pcap.close()
    assert path.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"  # a1b2c3d4 written little-endian
    got = read_udp(path)
    assert [(d.src, d.dst) for d in got] == [
        (("192.0.2.1", 5062), ("127.0.0.1", 5060)), (("127.0.0.1", 30000), ("192.0.2.1", 4000))]
    assert got[0].payload.startswith(b"INVITE ") and len(got[1].payload) == 172
    assert [d.time for d in got] == [1700000000.25, 1700000000.5]


def test_recording_paths_are_dated_by_the_utc_day() -> None:
    wav, pcap = recording_paths(Path("/rec"), "abc", 1700000000.0)  # 2023-11-14T22:13:20Z
    assert wav == Path("/rec/2023-11-14/abc.wav") and pcap == Path("/rec/2023-11-14/abc.pcap")


def test_call_recording_writes_off_the_loop_and_finalizes(tmp_path: Path) -> None:
    async def run() -> CallRecording:
        rec = CallRecording(wav_path=tmp_path / "a.wav", pcap_path=tmp_path / "a.pcap", log=_Log(),
                            wall_clock=lambda: 1700000000.0)
        for i in range(250):  # 5 s: two chunks while running and the rest at close
            rec.add_frame(_frame(i), None if i % 2 else _frame(-i))
            rec.packet(b"rtp%d" % i, ("127.0.0.1", 30000), ("127.0.0.1", 4000))
            await asyncio.sleep(0)
        await rec.close()
        return rec

    rec = asyncio.run(run())
    assert not rec.failed
    with wave.open(str(tmp_path / "a.wav"), "rb") as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert len(samples) == 250 * 160
    left = samples[::160, 0]
    right = samples[::160, 1]
    assert list(left) == list(range(250))  # in order, nothing lost or repeated across chunks
    assert list(right) == [0 if i % 2 else -i for i in range(250)]
    assert [d.payload for d in read_udp(tmp_path / "a.pcap")] == [b"rtp%d" % i for i in range(250)]


def test_a_write_error_is_logged_once_and_the_call_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    log = _Log()

    async def run() -> CallRecording:
        rec = CallRecording(wav_path=blocker / "a.wav", pcap_path=None, log=log)
        for _ in range(500):
            rec.add_frame(_frame(1), _frame(2))
            await asyncio.sleep(0)
        await rec.close()
        return rec

    rec = asyncio.run(run())
    assert rec.failed
    assert [event for event, _ in log.lines] == ["recording_failed"]


def test_a_chunk_finishing_while_closing_leaves_the_rest_to_the_final_write(tmp_path: Path) -> None:
    """A chunk write that finishes after close() began must not start another chunk: it would run in a second
    executor thread beside the final write, which closes the files under it (seen as a failed recording)."""
    release = threading.Event()
    writes: list[tuple[int, bool, bool]] = []  # (frames, final, closing already)

    async def run() -> CallRecording:
        rec = CallRecording(wav_path=tmp_path / "a.wav", pcap_path=None, log=_Log())
        real_write = rec._write

        def write(frames: list[Frame], packets: list[Packet], final: bool) -> None:
            writes.append((len(frames), final, rec.closed))
            if not final:
                release.wait(5)
            real_write(frames, packets, final)

        rec._write = write  # type: ignore[method-assign]
        for i in range(2 * FLUSH_FRAMES):  # the first chunk is in flight, a second chunk's worth is pending
            rec.add_frame(_frame(i), None)
        closing = asyncio.create_task(rec.close())
        await asyncio.sleep(0.05)
        release.set()
        await closing
        return rec

    rec = asyncio.run(run())
    assert not rec.failed
    assert writes == [(FLUSH_FRAMES, False, False), (FLUSH_FRAMES, True, True)]
    with wave.open(str(tmp_path / "a.wav"), "rb") as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert list(samples[::160, 0]) == list(range(2 * FLUSH_FRAMES))
