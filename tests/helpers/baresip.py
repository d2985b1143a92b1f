"""A real SIP phone for integration tests: baresip 1.0 (Debian ``baresip-core``) driven headless.

:func:`call` starts baresip with a private config directory (``-f``), dials a ``sip:`` URI once, speaks a
WAV file as its microphone and returns what it heard. No audio device and no registration are involved:

- microphone: the ``aufile`` source playing ``play``, converted to 8 kHz mono 16-bit and padded with
  silence to the end of the run (baresip 1.0 hangs the call up when its aufile source reaches the end
  of the file, so an early end of the speech must become silence, not a hang-up);
- speaker: baresip 1.0's ``aufile`` has no player, and a player with no sound card has no clock, so the
  phone's ears are the wire: its media flows through a loopback :class:`~tests.helpers.impairment.MediaRelay`
  (the SIP :class:`~tests.helpers.impairment.SdpRelay` steers the SDP of both sides there) and the
  recording is rebuilt from the RTP the gateway sent, placed by RTP timestamp (RFC 3550 5.1: the
  timestamp reflects the sampling instant, so silences the gateway did not send stay silences). baresip's
  own decoded stream is kept as well (``sndfile`` filter; received frames back to back, gaps closed up);
- control: the ``ctrl_tcp`` module (netstring-framed JSON commands ``dial``/``hangup``/``quit`` and
  ``CALL_*`` events) on a free loopback port; the account line has ``regint=0`` (no REGISTER) and lists
  only the requested G.711 codec.

The recording and ``play`` share one time axis: time 0 is the instant the phone sent its first RTP
packet, which carries the first sample of ``play``. :func:`voiced_segments` reads either file.

Loopback only: the gateway must be reachable on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from gateway.codecs.g711 import alaw_decode, ulaw_decode
from tests.helpers.impairment import MediaRelay, SdpRelay

MODULE_PATH = Path("/usr/lib/baresip/modules")
RATE = 8000
CODECS = {"PCMU": 0, "PCMA": 8}
DECODERS = {0: ulaw_decode, 8: alaw_decode}
READY_TIMEOUT = 10.0
TEARDOWN_TIMEOUT = 5.0
# A packet whose timestamp places it further than this from its arrival time starts a new anchor (a new
# stream after a re-INVITE, a timestamp jump): arrival time is then the only clock left.
REANCHOR_SECONDS = 0.5
_URI = re.compile(r"^(?P<head>sip:(?:[^@;]*@)?)(?P<host>[0-9.]+)(?::(?P<port>\d+))?(?P<rest>[;?].*)?$")
_STATUS_LINE = re.compile(r"\[\d+:\d\d:\d\d\] audio=[^\r\n]*?\(bit/s\) *")


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneResult:
    """One call of the phone.

    ``recording``: 8 kHz mono 16-bit WAV of what reached the phone, on the time axis of ``play`` (see the
    module doc), from time 0 to the end of the call. ``established``: the call was answered (200 OK,
    ACK). ``closed_by_remote``: the far end ended or refused the call (BYE, or a final error response)
    before the phone hung up. ``close_reason``: baresip's text for it (e.g. ``"Connection reset by
    peer"`` for a BYE, ``"404 Not Found"``), empty if the phone hung up. ``call_seconds``: from answer to
    the end of the call. ``decoded``: baresip's own decoded receive stream (gaps closed up), if any.
    ``log``: baresip's output followed by the control events.
    """

    recording: Path
    established: bool
    closed_by_remote: bool
    log: str
    call_seconds: float
    close_reason: str = ""
    decoded: Path | None = None


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: `make install` installs the Debian package {package}")
    return path


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_sip_port() -> int:
    """A port free for both UDP and TCP (baresip listens for SIP on both)."""
    for _ in range(50):
        port = _free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port for SIP")


def speech_wav(text: str, path: Path) -> Path:
    """Synthetic speech (espeak-ng) as an 8 kHz mono 16-bit WAV at ``path`` (via sox); returns ``path``."""
    espeak = _require("espeak-ng", "espeak-ng")
    sox = _require("sox", "sox")
    raw = path.with_name(path.stem + ".espeak.wav")
    subprocess.run([espeak, "-w", str(raw), text], check=True, capture_output=True, timeout=60)
    subprocess.run([sox, str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(path)],
                   check=True, capture_output=True, timeout=60)
    raw.unlink()
    return path


def read_wav(path: Path) -> np.ndarray:
    """The samples of a 16-bit PCM mono WAV as float64."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: not 16-bit mono PCM")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def voiced_segments(
    wav: Path, *, threshold_dbfs: float = -40.0, frame: float = 0.02, merge_gap: float = 0.3
) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of the stretches of ``wav`` whose 20 ms RMS is above ``threshold_dbfs``;
    stretches separated by less than ``merge_gap`` are one segment."""
    with wave.open(str(wav), "rb") as w:
        rate = w.getframerate()
    samples = read_wav(wav)
    size = max(1, round(rate * frame))
    count = len(samples) // size
    if count == 0:
        return []
    rms = np.sqrt(np.mean(samples[: count * size].reshape(count, size) ** 2, axis=1))
    loud = rms > 32768.0 * 10 ** (threshold_dbfs / 20)
    segments: list[tuple[float, float]] = []
    start: int | None = None
    for index, on in enumerate([*loud.tolist(), False]):
        if on and start is None:
            start = index
        elif not on and start is not None:
            begin, end = start * size / rate, index * size / rate
            if segments and begin - segments[-1][1] < merge_gap:
                segments[-1] = (segments[-1][0], end)
            else:
                segments.append((begin, end))
            start = None
    return segments


def write_wav(path: Path, samples: np.ndarray) -> None:
    """``samples`` (clipped to 16 bits) as an 8 kHz mono 16-bit WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())


def _prepare_microphone(play: Path, out: Path, seconds: float) -> None:
    """``play`` as aufile wants it (8 kHz mono s16, the codec's own rate: baresip 1.0 does not resample
    the source), padded with silence to ``seconds`` so the source never runs out during the call."""
    sox = _require("sox", "sox")
    subprocess.run([sox, str(play), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(out)],
                   check=True, capture_output=True, timeout=60)
    pad = seconds - wav_seconds(out)
    if pad > 0:
        padded = out.with_name(out.stem + ".padded.wav")
        subprocess.run([sox, str(out), str(padded), "pad", "0", f"{pad:.3f}"], check=True, capture_output=True,
                       timeout=60)
        padded.replace(out)


def _config(*, sip_port: int, ctrl_port: int, microphone: Path, dumps: Path, call_timeout: int) -> str:
    return "\n".join([
        "poll_method\t\tepoll",
        f"sip_listen\t\t127.0.0.1:{sip_port}",
        f"call_local_timeout\t{call_timeout}",
        "call_max_calls\t\t1",
        # the player is needed for the call to start; nothing drives it without a sound card (see the
        # module doc): the recording comes from the wire
        "audio_player\t\taubridge,speaker",
        f"audio_source\t\taufile,{microphone}",
        "audio_alert\t\taubridge,alert",
        "audio_level\t\tno",
        "ausrc_format\t\ts16",
        "auplay_format\t\ts16",
        "auenc_format\t\ts16",
        "audec_format\t\ts16",
        "audio_buffer\t\t20-160",
        "rtp_tos\t\t\t0",
        # below both the ephemeral range and the harness's gateway RTP range (30000+)
        "rtp_ports\t\t10000-29999",
        "rtcp_mux\t\tno",
        "jitter_buffer_delay\t1-4",
        "rtp_stats\t\tno",
        # an address, not an interface name: baresip 1.0 does not list "lo"
        "net_interface\t\t127.0.0.1",
        f"module_path\t\t{MODULE_PATH}",
        "module\t\t\tg711.so",
        "module\t\t\taufile.so",
        "module\t\t\taubridge.so",
        "module\t\t\tsndfile.so",
        "module\t\t\tctrl_tcp.so",
        "module_app\t\taccount.so",
        "module_app\t\tmenu.so",
        f"snd_path\t\t{dumps}",
        f"ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}",
        "",
    ])


class _Control:
    """baresip's ctrl_tcp socket: netstring-framed JSON both ways; events and responses land in a queue."""

    def __init__(self, port: int, deadline: float, proc: subprocess.Popen[bytes]) -> None:
        self.messages: queue.Queue[dict[str, object]] = queue.Queue()
        self.transcript: list[str] = []
        self._token = 0
        while True:
            try:
                self._sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="baresip-ctrl", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while True:
                length, colon, rest = buffer.partition(b":")
                if not colon or not length.isdigit() or len(rest) < int(length) + 1:
                    break
                size = int(length)
                body, buffer = rest[:size], rest[size + 1 :]
                text = body.decode("utf-8", "replace")
                self.transcript.append(text)
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    self.messages.put(message)

    def send(self, command: str, params: str = "") -> None:
        self._token += 1
        body = json.dumps({"command": command, "params": params, "token": str(self._token)}).encode()
        self.transcript.append(f">>> {body.decode()}")
        with contextlib.suppress(OSError):
            self._sock.sendall(str(len(body)).encode() + b":" + body + b",")

    def next_event(self, until: float) -> dict[str, object] | None:
        """The next event message before monotonic time ``until`` (responses are skipped), or None."""
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            try:
                message = self.messages.get(timeout=left)
            except queue.Empty:
                return None
            if message.get("event"):
                return message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(2)


def _drain(stream: IO[bytes], lines: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        lines.append(raw.decode("utf-8", "replace"))


def place_rtp(packets: list[tuple[float, bytes]], t0: float, end: float) -> np.ndarray:
    """G.711 RTP packets ``(arrival, datagram)`` as one signal from ``t0`` to ``end`` (monotonic seconds).

    Each packet goes where its RTP timestamp puts it relative to an anchor: the arrival of the first
    packet of its SSRC (re-anchored if timestamp and arrival disagree by more than REANCHOR_SECONDS).
    Arrival alone would smear the audio with the scheduler's jitter; where nothing was sent is silence.
    """
    placed: list[tuple[int, np.ndarray]] = []
    anchors: dict[int, tuple[float, int]] = {}
    for arrival, data in packets:
        if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
            continue  # not RTP (RTCP shares nothing here, but be safe)
        first, second, _seq, timestamp, ssrc = struct.unpack_from("!BBHII", data)
        decode = DECODERS.get(second & 0x7F)
        if decode is None:
            continue  # telephone-event or comfort noise: not audio to record
        header = 12 + 4 * (first & 0x0F)
        if first & 0x10 and len(data) >= header + 4:  # RFC 3550 5.3.1 header extension
            header += 4 + 4 * struct.unpack_from("!H", data, header + 2)[0]
        payload = data[header:]
        if first & 0x20 and payload:  # padding: the last octet counts the padding octets
            payload = payload[: -payload[-1]]
        anchor = anchors.get(ssrc)
        if anchor is not None:
            delta = ((timestamp - anchor[1] + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            at = anchor[0] + delta / RATE
            if abs(at - arrival) > REANCHOR_SECONDS:
                anchor = None
        if anchor is None:
            anchors[ssrc] = anchor = (arrival, timestamp)
            at = arrival
        offset = round((at - t0) * RATE)
        if offset >= 0:
            placed.append((offset, np.frombuffer(decode(payload), dtype="<i2")))
    length = max([round((end - t0) * RATE), *(offset + len(s) for offset, s in placed)], default=0)
    out = np.zeros(max(0, length), dtype=np.int16)
    for offset, samples in placed:
        out[offset : offset + len(samples)] = samples
    return out


def call(
    uri: str,
    *,
    play: Path,
    tmp_path: Path,
    duration: float,
    codec: str = "PCMU",
    timeout: float | None = None,
) -> PhoneResult:
    """Dial ``uri`` once, speak ``play``, and return what the phone heard (see :class:`PhoneResult`).

    The phone hangs up ``duration`` seconds after the answer unless the far end ends the call first.
    ``timeout`` (default ``duration + 20``) bounds the whole run, ringing included; baresip is always
    stopped before this returns (``quit``, then SIGTERM, then SIGKILL).
    """
    binary = _require("baresip", "baresip-core")
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, not {codec!r}")
    match = _URI.match(uri)
    if match is None:
        raise ValueError(f"{uri!r}: expected sip:user@<IPv4>[:port]")
    gateway = (match["host"], int(match["port"] or 5060))
    total = duration + 20.0 if timeout is None else timeout
    started = time.monotonic()
    deadline = started + total

    home = tmp_path / f"baresip_{time.monotonic_ns()}"
    home.mkdir(parents=True)
    # baresip's sndfile module builds each dump's path in a 128-byte buffer and truncates a longer one (the
    # "-enc.wav"/"-dec.wav" suffix first, so both dumps become one file): under xdist, on a machine up for a
    # while (monotonic_ns above), the pytest path is too long. The dumps go to a short directory instead.
    dumps = Path(tempfile.mkdtemp(prefix="bsdump"))
    microphone = home / "microphone.wav"
    _prepare_microphone(play, microphone, total + 5.0)
    sip_port = _free_sip_port()
    ctrl_port = _free_port(socket.SOCK_STREAM)
    (home / "config").write_text(_config(sip_port=sip_port, ctrl_port=ctrl_port, microphone=microphone,
                                         dumps=dumps, call_timeout=max(1, int(total))))
    # regint=0: no REGISTER, the account only gives the calls a From (sip:phone@...) and a codec list
    (home / "accounts").write_text(f"<sip:phone@127.0.0.1:{sip_port}>;regint=0;answermode=manual;"
                                   f"audio_codecs={codec.lower()}\n")
    (home / "contacts").write_text("")

    lines: list[str] = []
    # -t: baresip quits on its own after the whole budget even if this process dies mid-run
    proc = subprocess.Popen([binary, "-f", str(home), "-t", str(int(total) + 10)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=home, start_new_session=True)
    drainer = threading.Thread(target=_drain, args=(proc.stdout, lines), name="baresip-out", daemon=True)
    drainer.start()
    established_at: float | None = None
    closed_at: float | None = None
    closed_by_remote = False
    close_reason = ""
    control: _Control | None = None
    media = MediaRelay().start()
    relay = SdpRelay(gateway, media).start()
    try:
        try:
            control = _Control(ctrl_port, min(deadline, started + READY_TIMEOUT), proc)
        except OSError as exc:
            _stop(proc)
            drainer.join(2)
            raise RuntimeError(f"baresip did not open its control port ({exc}):\n{''.join(lines)}") from exc
        # the same URI with the SIP relay's address in place of the far end's
        control.send("dial", f"{match['head']}127.0.0.1:{relay.port}{match['rest'] or ''}")
        hang_up_at = deadline
        while time.monotonic() < hang_up_at and proc.poll() is None:
            event = control.next_event(min(hang_up_at, time.monotonic() + 0.5))
            if event is None:
                continue
            kind = event.get("type")
            if kind == "CALL_ESTABLISHED" and established_at is None:
                established_at = time.monotonic()
                hang_up_at = min(deadline, established_at + duration)
            elif kind == "CALL_CLOSED":
                closed_at = time.monotonic()
                closed_by_remote = True
                close_reason = str(event.get("param", ""))
                break
        if closed_at is None:
            closed_at = time.monotonic()
            if proc.poll() is None:
                control.send("hangup")  # BYE, or CANCEL while still ringing
                control.next_event(closed_at + 2.0)  # its CALL_CLOSED
        control.send("quit")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(TEARDOWN_TIMEOUT)
    finally:
        _stop(proc)
        drainer.join(2)
        if control is not None:
            control.close()
        relay.close()
        media.close()

    end = closed_at if closed_at is not None else time.monotonic()
    recording = home / "recording.wav"
    t0 = media.up.first
    write_wav(recording, place_rtp(list(media.from_gateway), t0, end) if t0 is not None else np.zeros(0))
    dumped = next(iter(sorted(dumps.glob("*-dec.wav"))), None)
    decoded = Path(shutil.copy(dumped, home / "decoded.wav")) if dumped is not None else None
    shutil.rmtree(dumps, ignore_errors=True)
    output = _STATUS_LINE.sub("", "".join(lines))
    transcript = "\n".join(control.transcript) if control is not None else ""
    return PhoneResult(
        recording=recording,
        established=established_at is not None,
        closed_by_remote=closed_by_remote,
        log=f"{output}\n--- ctrl_tcp\n{transcript}",
        call_seconds=(end - established_at) if established_at is not None else 0.0,
        close_reason=close_reason,
        decoded=decoded,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Make sure baresip is gone: SIGTERM (it sends BYE for a live call), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TEARDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TEARDOWN_TIMEOUT)
