"""assistant-request end to end: a `voicegw serve` process, a customer's HTTP server on loopback, and SIPp
callers. The caller hears 180 Ringing while the server decides; each of Vapi's answer shapes is honoured;
a slow or failing server falls back (fallback assistant, spoken error, or 503 as configured)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.util.signing import verify
from tests.fakes.assistant_server import Answer, AssistantServer
from tests.helpers.http_thread import serve_in_thread
from tests.integration.harness import GatewayProcess, run_scenario, sipp_failure, start_gateway

OFFLINE = "model: {provider: rules}, voice: {provider: espeak}, transcriber: {provider: pocketsphinx}"

CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
assistants:
  known: {firstMessage: "Hello {{name}}, this is known.", OFFLINE, silenceTimeoutSeconds: 600}
  backup: {firstMessage: "This is the backup assistant.", OFFLINE, silenceTimeoutSeconds: 600}
numbers:
  - number: "+15550001000"
    server: {url: "{URL}/assistant", secret: "s3cret", timeoutSeconds: 1.0}
    fallback_assistant: backup
  - number: "+15550002000"
    server: {url: "{URL}/assistant", timeoutSeconds: 1.0}
    error_message: "Sorry, nobody can take your call."
  - number: "+15550003000"
    server: {url: "{URL}/assistant", timeoutSeconds: 1.0}
    on_failure: reject
""".replace("OFFLINE", OFFLINE)


@pytest.fixture
def server() -> Iterator[tuple[AssistantServer, str]]:
    srv = AssistantServer()
    with serve_in_thread(srv.app) as url:
        yield srv, url


@pytest.fixture
def gateway(tmp_path: Path, server: tuple[AssistantServer, str]) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path, CONFIG.replace("{URL}", server[1]))
    try:
        yield gw
    finally:
        gw.stop()


def call(gw: GatewayProcess, tmp_path: Path, number: str, scenario: str = "uac_ring_answer_bye.xml") -> None:
    result = run_scenario(scenario, cwd=tmp_path, target=gw.sip_addr, service=number, timeout=40)
    assert result.returncode == 0, sipp_failure(result, tmp_path)


def spoken(gw: GatewayProcess, text: str, timeout: float = 15) -> None:
    gw.wait_for_log("transcript", timeout=timeout, role="assistant", text=text)


def test_assistant_id_with_overrides_is_used_and_the_request_is_vapis_signed_message(
    tmp_path: Path, server: tuple[AssistantServer, str], gateway: GatewayProcess
) -> None:
    srv, _ = server
    srv.answer = Answer({"assistantId": "known", "assistantOverrides": {"variableValues": {"name": "Ada"}}},
                        delay=0.3)
    call(gateway, tmp_path, "+15550001000")
    spoken(gateway, "Hello Ada, this is known.")
    # The number's server also receives the call's server messages (status-update...): pick the request.
    (request,) = [r for r in srv.requests() if r.message["type"] == "assistant-request"]
    message = request.message
    assert message["type"] == "assistant-request"
    assert message["call"]["type"] == "inboundPhoneCall" and message["call"]["status"] == "ringing"
    assert message["customer"] == {"number": "sipp"}
    assert message["phoneNumber"] == {"number": "+15550001000"}
    assert request.headers["x-vapi-secret"] == "s3cret"
    assert verify("s3cret", request.body, request.headers["x-voicegw-timestamp"],
                  request.headers["x-voicegw-signature"], time.time())
    line = gateway.wait_for_log("assistant_request_answered")
    assert line["assistant"] == "known"


def test_inline_assistant_sees_the_invite_headers_as_variables(
    tmp_path: Path, server: tuple[AssistantServer, str], gateway: GatewayProcess
) -> None:
    srv, _ = server
    srv.answer = Answer({"assistant": {"firstMessage": "Account {{account}} from {{sip.fromUser}}.",
                                       "model": {"provider": "rules"}, "voice": {"provider": "espeak"},
                                       "transcriber": {"provider": "pocketsphinx"}}})
    call(gateway, tmp_path, "+15550001000")
    spoken(gateway, "Account acme-corp from sipp.")


def test_a_slow_server_times_out_to_the_fallback_assistant(
    tmp_path: Path, server: tuple[AssistantServer, str], gateway: GatewayProcess
) -> None:
    srv, _ = server
    srv.answer = Answer({"assistantId": "known"}, delay=3.0)
    call(gateway, tmp_path, "+15550001000")
    spoken(gateway, "This is the backup assistant.")
    line = gateway.wait_for_log("assistant_request_failed")
    assert line["reason"] == "assistant-request-failed" and "no answer within 1 s" in str(line["detail"])


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer({"error": "x"}, status=500), "assistant-request-failed"),
        (Answer(raw=b"<html>oops"), "assistant-request-returned-invalid-assistant"),
        (Answer({"squadId": "sq-1"}), "assistant-request-returned-invalid-assistant"),
        (Answer({"assistantId": "nobody"}), "assistant-request-returned-no-assistant"),
        (Answer({"assistant": {"model": {"provider": "nope"}}}), "assistant-request-returned-invalid-assistant"),
    ],
    ids=["http-500", "garbage", "squad", "unknown-id", "invalid-assistant"],
)
def test_a_failing_server_speaks_the_numbers_error_then_hangs_up(
    tmp_path: Path, server: tuple[AssistantServer, str], gateway: GatewayProcess, answer: Answer, reason: str
) -> None:
    srv, _ = server
    srv.answer = answer
    call(gateway, tmp_path, "+15550002000", "uac_ring_answer_wait_bye.xml")
    spoken(gateway, "Sorry, nobody can take your call.")
    ended = gateway.wait_for_log("call_ended", timeout=10)
    assert ended["reason"] == reason


def test_an_error_answer_is_spoken_then_the_call_ends(
    tmp_path: Path, server: tuple[AssistantServer, str], gateway: GatewayProcess
) -> None:
    srv, _ = server
    srv.answer = Answer({"error": "This line is closed today."})
    call(gateway, tmp_path, "+15550001000", "uac_ring_answer_wait_bye.xml")
    spoken(gateway, "This line is closed today.")
    assert gateway.wait_for_log("call_ended", timeout=10)["reason"] == "assistant-request-returned-error"


def test_reject_policy_answers_503(
    tmp_path: Path, server: tuple[AssistantServer, str], gateway: GatewayProcess
) -> None:
    srv, _ = server
    srv.answer = Answer({"error": "x"}, status=502)
    call(gateway, tmp_path, "+15550003000", "uac_expect_503.xml")
    assert gateway.wait_for_log("call_ended", timeout=10)["reason"] == "assistant-request-failed"
