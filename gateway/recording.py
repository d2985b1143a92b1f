"""Call recordings: a stereo WAV of a call's audio and a per-call PCAP of its SIP messages and RTP/RTCP.

WAV: RIFF WAVE, ``WAVE_FORMAT_PCM`` (Microsoft/IBM "Multimedia Programming Interface and Data Specifications
1.0", §"WAVE Form Definition"), 2 channels, 8000 Hz, 16-bit little-endian: the caller on the left (channel 0),
the assistant (or the echo) on the right, one 20 ms frame per channel per media tick, silence written as
zeros so both channels stay aligned. The header's sizes are written when the recording is finalized.

PCAP: the classic libpcap file format (magic ``a1b2c3d4``, microsecond timestamps, ``LINKTYPE_RAW`` 101: each
record is an IPv4 header (RFC 791) and a UDP header (RFC 768) we build, then the datagram). It holds the
SIP messages of the call's Call-ID the user agent sent and received (transaction-layer retransmissions are
not seen) and the call's RTP/RTCP packets both ways, each stamped with the wall-clock time it was handled.

The hot path only appends to lists on the event loop; the files are written off the loop by one job at a time
in the default executor (every ~2 s of audio), so a slow disk never stalls the 20 ms tick. A write error
(full disk, permissions) logs ``recording_failed`` once, drops the rest of the recording, and the call goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "FRAME_BYTES",
    "CallRecording",
    "PcapFile",
    "WavFile",
    "interleave",
    "ipv4_udp",
    "recording_paths",
    "wav_header",
]

SAMPLE_RATE = 8000
CHANNELS = 2
SAMPLE_BITS = 16
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_BYTES = FRAME_SAMPLES * 2
FLUSH_FRAMES = 100  # ~2 s of audio per write
FLUSH_PACKETS = 200
MAX_BACKLOG_FRAMES = 3000  # 60 s not yet written (the disk is stuck): the recording gives up
MAX_BACKLOG_PACKETS = 30000
PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_RAW = 101
PCAP_SNAPLEN = 65535

Addr = tuple[str, int]
Frame = tuple[bytes | None, bytes | None]
Packet = tuple[float, bytes, Addr, Addr]


def recording_paths(directory: Path, call_id: str, created_at: float) -> tuple[Path, Path]:
    """``<directory>/<YYYY-MM-DD>/<call_id>.wav`` and ``.pcap`` (the UTC day the call started)."""
    day = time.strftime("%Y-%m-%d", time.gmtime(created_at))
    base = directory / day / call_id
    return base.with_suffix(".wav"), base.with_suffix(".pcap")


def wav_header(data_bytes: int, *, channels: int = CHANNELS, rate: int = SAMPLE_RATE,
               bits: int = SAMPLE_BITS) -> bytes:
    """The 44-byte RIFF/WAVE header of a PCM file with ``data_bytes`` of samples."""
    block_align = channels * bits // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE",
        b"fmt ", 16, 1, channels, rate, rate * block_align, block_align, bits,
        b"data", data_bytes,
    )


def _samples(frame: bytes | None) -> np.ndarray[Any, np.dtype[np.int16]] | None:
    if frame is None:
        return None
    if len(frame) != FRAME_BYTES:
        frame = frame[:FRAME_BYTES].ljust(FRAME_BYTES, b"\x00")
    return np.frombuffer(frame, dtype="<i2")


def interleave(frames: Sequence[Frame]) -> bytes:
    """Stereo 16-bit samples (L R L R ...) for ``frames`` of (left, right); None is 20 ms of silence."""
    out = np.zeros((len(frames), FRAME_SAMPLES, CHANNELS), dtype="<i2")
    for i, (left, right) in enumerate(frames):
        samples = _samples(left)
        if samples is not None:
            out[i, :, 0] = samples
        samples = _samples(right)
        if samples is not None:
            out[i, :, 1] = samples
    return out.tobytes()


class WavFile:
    """A stereo WAV written in chunks; :meth:`close` writes the header's sizes. Blocking: use off the loop."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.data_bytes = 0
        self._file: BinaryIO | None = path.open("wb")
        self._file.write(wav_header(0))

    def write_frames(self, frames: Sequence[Frame]) -> None:
        assert self._file is not None
        data = interleave(frames)
        self._file.write(data)
        self.data_bytes += len(data)

    def close(self) -> None:
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            f.seek(0)
            f.write(wav_header(self.data_bytes))
        finally:
            f.close()


def _ipv4_bytes(host: str) -> bytes:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return bytes(4)
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        return mapped.packed if mapped is not None else bytes(4)  # RAW IPv4 only: v6 peers show as 0.0.0.0
    return address.packed


def _checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: Addr, dst: Addr, payload: bytes, *, ident: int = 0) -> bytes:
    """An IPv4 packet (RFC 791, header checksum set) carrying a UDP datagram (RFC 768, checksum 0 = none)."""
    payload = payload[: PCAP_SNAPLEN - 28]
    udp = struct.pack("!HHHH", src[1] & 0xFFFF, dst[1] & 0xFFFF, 8 + len(payload), 0)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(payload), ident & 0xFFFF, 0x4000, 64, 17, 0,
        _ipv4_bytes(src[0]), _ipv4_bytes(dst[0]),
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp + payload


class PcapFile:
    """A classic pcap file of raw IPv4/UDP records. Blocking: use off the loop."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.records = 0
        self._file: BinaryIO | None = path.open("wb")
        self._file.write(struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, PCAP_SNAPLEN, LINKTYPE_RAW))

    def write_packets(self, packets: Sequence[Packet]) -> None:
        assert self._file is not None
        parts = []
        for ts, payload, src, dst in packets:
            frame = ipv4_udp(src, dst, payload, ident=self.records)
            seconds = int(ts)
            micros = min(999_999, round((ts - seconds) * 1e6))
            parts.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)))
            parts.append(frame)
            self.records += 1
        self._file.write(b"".join(parts))

    def close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            f.close()


class CallRecording:
    """One call's recording: the WAV (when ``wav_path``) and the PCAP (when ``pcap_path``).

    On the loop: :meth:`add_frame` once per media tick, :meth:`packet` per datagram, then ``await``
    :meth:`close` at call end (or :meth:`close_now` when the loop cannot wait). Files are opened lazily by the
    first write, so a call that never had media still gets a valid (empty) WAV at close.
    """

    def __init__(
        self,
        *,
        wav_path: Path | None,
        pcap_path: Path | None,
        log: Any,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.wav_path = wav_path
        self.pcap_path = pcap_path
        self.log = log
        self._wall_clock = wall_clock
        self._frames: list[Frame] = []
        self._packets: list[Packet] = []
        self._wav: WavFile | None = None
        self._pcap: PcapFile | None = None
        self._job: asyncio.Future[None] | None = None
        self.failed = False
        self.closed = False

    # -- on the loop (hot path) --------------------------------------------------------------------

    def add_frame(self, caller: bytes | None, assistant: bytes | None) -> None:
        """This tick's 20 ms of caller and assistant audio (None: silence)."""
        if self.wav_path is None or self.closed:
            return
        frames = self._frames
        frames.append((caller, assistant))
        if len(frames) >= FLUSH_FRAMES:
            self._kick()

    def packet(self, data: bytes, src: Addr, dst: Addr) -> None:
        """A datagram of the call (SIP, RTP or RTCP) sent from ``src`` to ``dst`` now."""
        if self.pcap_path is None or self.closed:
            return
        packets = self._packets
        packets.append((self._wall_clock(), data, src, dst))
        if len(packets) >= FLUSH_PACKETS:
            self._kick()

    def withdraw_assistant_frame(self) -> None:
        """The assistant side of the last :meth:`add_frame` was not sent (withdrawn before its send time):
        silence in the WAV, unless that frame has already gone to the writer."""
        frames = self._frames
        if frames:
            frames[-1] = (frames[-1][0], None)

    def withdraw_packet(self, data: bytes) -> None:
        """The datagram ``data`` given to :meth:`packet` was not sent after all: out of the PCAP, unless it has
        already gone to the writer."""
        packets = self._packets
        for i in range(len(packets) - 1, max(-1, len(packets) - 8), -1):
            if packets[i][1] is data:
                del packets[i]
                return

    # -- writing off the loop ---------------------------------------------------------------------

    def _kick(self) -> None:
        if self.failed:
            self._frames.clear()
            self._packets.clear()
            return
        if self._job is not None:
            if len(self._frames) > MAX_BACKLOG_FRAMES or len(self._packets) > MAX_BACKLOG_PACKETS:
                self._fail(OSError("the recording's writes are too slow (backlog full)"))
            return
        frames, self._frames = self._frames, []
        packets, self._packets = self._packets, []
        job = asyncio.get_running_loop().run_in_executor(None, self._write, frames, packets, False)
        self._job = job
        job.add_done_callback(self._written)

    def _written(self, job: asyncio.Future[None]) -> None:
        self._job = None
        exc = None if job.cancelled() else job.exception()
        if exc is not None:
            self._fail(exc)
        elif not self.closed and (len(self._frames) >= FLUSH_FRAMES or len(self._packets) >= FLUSH_PACKETS):
            # Once closing, close() writes the rest itself: a chunk started here would run in another executor
            # thread beside the final write, which closes the files under it.
            self._kick()

    def _fail(self, exc: BaseException) -> None:
        if not self.failed:
            self.failed = True
            self.log.error("recording_failed", error=str(exc), wav=str(self.wav_path), pcap=str(self.pcap_path))
        self._frames.clear()
        self._packets.clear()

    def _write(self, frames: list[Frame], packets: list[Packet], final: bool) -> None:
        """Blocking: append to the files (opening them on first use); ``final`` also finalizes them."""
        try:
            if self.wav_path is not None and (frames or final):
                if self._wav is None:
                    self._wav = WavFile(self.wav_path)
                if frames:
                    self._wav.write_frames(frames)
            if self.pcap_path is not None and (packets or final):
                if self._pcap is None:
                    self._pcap = PcapFile(self.pcap_path)
                if packets:
                    self._pcap.write_packets(packets)
        finally:
            if final:
                for f in (self._wav, self._pcap):
                    if f is not None:
                        f.close()

    async def close(self) -> None:
        """Write what is left and finalize the files (off the loop). Never raises for a write error."""
        if self.closed:
            return
        self.closed = True
        if self._job is not None:
            with contextlib.suppress(Exception):  # its failure was reported by _written
                await asyncio.shield(self._job)
        if self.failed:
            self._close_files()
            return
        frames, self._frames = self._frames, []
        packets, self._packets = self._packets, []
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._write, frames, packets, True)
        except OSError as exc:
            self._fail(exc)
            self._close_files()

    def close_now(self) -> None:
        """:meth:`close` on the loop (blocking), when the loop is going away."""
        if self.closed and self._job is None:
            return
        self.closed = True
        frames, self._frames = self._frames, []
        packets, self._packets = self._packets, []
        try:
            self._write([] if self.failed else frames, [] if self.failed else packets, True)
        except OSError as exc:
            self._fail(exc)
            self._close_files()

    def _close_files(self) -> None:
        for f in (self._wav, self._pcap):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass

