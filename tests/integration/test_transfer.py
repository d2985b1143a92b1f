"""Call transfers end to end: a `voicegw serve` process, a customer's assistant-request server on loopback
answering with a transfer ``destination``, and SIPp as the caller and as the transfer destination.

(a) blind transfer with REFER accepted and NOTIFY sipfrag 200: our leg ends with assistant-forwarded-call;
(b) REFER refused (405): the gateway dials the destination itself and the caller's RTP reaches it;
(c) a destination outside ``transfers.allow`` is refused, nothing is dialled;
(d) warm transfer: the operator hears the briefing (RTP) before the legs are bridged."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.assistant_server import Answer, AssistantServer
from tests.helpers.http_thread import serve_in_thread
from tests.integration.harness import (
    SIPP_DIR,
    GatewayProcess,
    SippResult,
    free_port,
    run_scenario,
    run_sipp,
    sipp_failure,
    start_gateway,
)
from tests.integration.test_echo import make_wav

pytestmark = pytest.mark.integration

CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
transfers: {allow: ["sip:*@127.0.0.1:{DEST_PORT}", "+1555123*"]}
numbers:
  - number: "+15550007000"
    server: {url: "{URL}/assistant", timeoutSeconds: 2.0}
    on_failure: reject
log: {level: info}
"""
NUMBER = "+15550007000"


class RtpCounter:
    """A UDP socket standing in for the destination's media port: counts RTP packets and voiced ones."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.packets = 0
        self.voiced = 0  # packets whose mu-law payload is not all silence
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) > 12 and data[0] >> 6 == 2 and data[1] & 0x7F == 0:
                self.packets += 1
                if len(set(data[12:])) > 4:
                    self.voiced += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Uas:
    """SIPp as the transfer destination, running in a thread while the caller's SIPp runs."""

    def __init__(self, tmp_path: Path, rtp_port: int) -> None:
        self.port = free_port()
        self.cwd = tmp_path / "uas"
        self.cwd.mkdir(exist_ok=True)
        self.rtp_port = rtp_port
        self.result: SippResult | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.result = run_sipp(
            ["-sf", str(SIPP_DIR / "uas_transfer_destination.xml"), "-i", "127.0.0.1", "-p", str(self.port), "-m", "1",
             "-key", "rtp_port", str(self.rtp_port), "-trace_msg", "-trace_err"], cwd=self.cwd, timeout=60)

    def wait(self) -> SippResult:
        self._thread.join(70)
        assert self.result is not None
        return self.result


@pytest.fixture
def server() -> Iterator[tuple[AssistantServer, str]]:
    srv = AssistantServer()
    with serve_in_thread(srv.app) as url:
        yield srv, url


@pytest.fixture
def media() -> Iterator[RtpCounter]:
    counter = RtpCounter()
    yield counter
    counter.close()


@pytest.fixture
def uas(tmp_path: Path, media: RtpCounter) -> Uas:
    return Uas(tmp_path, media.port)


@pytest.fixture
def gateway(tmp_path: Path, server: tuple[AssistantServer, str], uas: Uas) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path, CONFIG.replace("{URL}", server[1]).replace("{DEST_PORT}", str(uas.port)))
    try:
        yield gw
    finally:
        gw.stop()


def destination(uas: Uas, **extra: Any) -> dict[str, Any]:
    return {"type": "sip", "sipUri": f"sip:operator@127.0.0.1:{uas.port}", **extra}


def failure(result: SippResult, cwd: Path, gw: GatewayProcess) -> str:
    lines = [line for line in gw.logs() if line.get("event") not in ("sip_message",)][-25:]
    return sipp_failure(result, cwd) + "\n--- gateway\n" + "\n".join(map(str, lines))


def updates(gw: GatewayProcess) -> list[str]:
    return [str(line["event"]) for line in gw.logs() if str(line.get("event", "")).startswith("transfer_")]


def test_blind_transfer_by_refer_ends_our_leg_as_forwarded(
    tmp_path: Path, server: tuple[AssistantServer, str], gateway: GatewayProcess, uas: Uas
) -> None:
    server[0].answer = Answer({"destination": {"type": "number", "number": "+15551230000",
                                               "message": "Connecting you to sales."}})
    result = run_scenario("uac_refer_accept.xml", cwd=tmp_path, target=gateway.sip_addr, service=NUMBER, timeout=40)
    assert result.returncode == 0, failure(result, tmp_path, gateway)
    refer = gateway.wait_for_log("transfer_refer_sent")
    assert str(refer["refer_to"]).startswith("sip:+15551230000@127.0.0.1:")  # the caller's side dials it
    gateway.wait_for_log("transfer_completed", how="refer", status=200)
    ended = gateway.wait_for_log("call_ended")
    assert ended["reason"] == "assistant-forwarded-call"
    assert "transfer_progress" in updates(gateway)
    assert not gateway.logs("transfer_dialing")  # nothing dialled by the gateway


def _talking_caller(tmp_path: Path, gw: GatewayProcess, *, status: int, reason: str) -> SippResult:
    wav = make_wav(tmp_path, "mu-law")
    scenario = tmp_path / "caller.xml"
    scenario.write_text((SIPP_DIR / "uac_refer_reject.xml").read_text()
                        .replace("{WAV}", str(wav)).replace("{LOOPS}", "3").replace("{PAUSE_MS}", "9000")
                        .replace("{REFER_STATUS}", str(status)).replace("{REFER_REASON}", reason))
    return run_sipp(["-sf", str(scenario), f"{gw.sip_addr[0]}:{gw.sip_addr[1]}", "-s", NUMBER, "-i", "127.0.0.1",
                     "-p", str(free_port()), "-m", "1", "-mp", str(free_port(also_tcp=False) & ~1),
                     "-trace_msg", "-trace_err"], cwd=tmp_path, timeout=60)


@pytest.mark.parametrize(("status", "reason"), [(405, "Method Not Allowed"), (501, "Not Implemented")])
def test_refused_refer_falls_back_to_the_gateways_own_bridge(
    tmp_path: Path, server: tuple[AssistantServer, str], gateway: GatewayProcess, uas: Uas, media: RtpCounter,
    status: int, reason: str,
) -> None:
    server[0].answer = Answer({"destination": destination(uas)})
    result = _talking_caller(tmp_path, gateway, status=status, reason=reason)
    assert result.returncode == 0, failure(result, tmp_path, gateway)
    dest = uas.wait()
    assert dest.returncode == 0, failure(dest, uas.cwd, gateway)  # answered, then got our BYE
    gateway.wait_for_log("transfer_refer_refused", status=status)
    gateway.wait_for_log("transfer_bridged")
    # The caller's speech reached the destination through the gateway.
    assert media.voiced >= 50, (media.packets, media.voiced)
    caller_end = gateway.wait_for_log("call_ended", direction="inbound")
    assert caller_end["reason"] == "assistant-forwarded-call"
    gateway.wait_for_log("call_ended", direction="outbound")


def test_destination_outside_the_allow_list_is_refused(
    tmp_path: Path, server: tuple[AssistantServer, str], gateway: GatewayProcess
) -> None:
    server[0].answer = Answer({"destination": {"type": "sip", "sipUri": "sip:premium@203.0.113.9"}})
    result = run_scenario("uac_ring_answer_wait_bye.xml", cwd=tmp_path, target=gateway.sip_addr, service=NUMBER,
                          timeout=40)
    assert result.returncode == 0, failure(result, tmp_path, gateway)
    refused = gateway.wait_for_log("transfer_refused")
    assert refused["destination"] == "sip:premium@203.0.113.9"
    ended = gateway.wait_for_log("call_ended")
    assert ended["reason"] == "call.in-progress.error-transfer-failed"
    assert not gateway.logs("transfer_refer_sent") and not gateway.logs("transfer_dialing")


def test_warm_transfer_briefs_the_operator_before_the_bridge(
    tmp_path: Path, server: tuple[AssistantServer, str], gateway: GatewayProcess, uas: Uas, media: RtpCounter
) -> None:
    plan = {"mode": "warm-transfer-say-message", "message": "A caller needs help with an invoice."}
    server[0].answer = Answer({"destination": destination(uas, transferPlan=plan)})
    result = run_scenario("uac_pause_bye.xml", cwd=tmp_path, target=gateway.sip_addr, service=NUMBER, timeout=40,
                          extra=["-d", "8000"])
    assert result.returncode == 0, failure(result, tmp_path, gateway)
    dest = uas.wait()
    assert dest.returncode == 0, failure(dest, uas.cwd, gateway)
    gateway.wait_for_log("transfer_briefing_operator")
    gateway.wait_for_log("transfer_bridged")
    events = updates(gateway)
    assert events.index("transfer_briefing_operator") < events.index("transfer_bridged")
    assert "transfer_refer_sent" not in events  # warm transfers do not depend on the trunk taking REFER
    # The caller sent no audio: what the operator received is the briefing (about 2 s of speech).
    assert media.voiced >= 50, (media.packets, media.voiced)
