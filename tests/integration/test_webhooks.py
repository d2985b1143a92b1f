"""Server messages from a running gateway (`voicegw serve`) to a real HTTP receiver on loopback, for calls
placed by SIPp: the messages of a call in order and signed; the end-of-call report surviving a receiver
that is down for the whole call and a gateway restart; a 500 retried and logged with the call id."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from gateway.util.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.fakes.webhook_server import Received, WebhookReceiver
from tests.helpers.http_thread import serve_in_thread
from tests.integration.harness import (
    GatewayProcess,
    free_port,
    run_sipp,
    sipp_failure,
    start_gateway,
)

pytestmark = pytest.mark.integration

FIRST_MESSAGE = "Hello from the gateway."
SECRET = "whsec-test"

CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
log: {level: info}
storage: {path: "state/gw.sqlite3"}
webhooks: {initial_backoff_seconds: 0.2, max_backoff_seconds: 0.5, timeout_seconds: 2}
assistants:
  hooked:
    firstMessage: "FIRST_MESSAGE"
    model: {provider: rules}
    silenceTimeoutSeconds: 600
    server: {url: "HOOK_URL", secret: "SECRET"}
    serverMessages: SERVER_MESSAGES
numbers:
  - {number: "service", assistant: hooked}
"""

ALL = "[status-update, transcript, conversation-update, speech-update, end-of-call-report]"

# A caller that answers, stays PAUSE_MS on the line (the assistant speaks its first message), then hangs up.
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="call, wait, hang up">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15551234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtp_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15551234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="PAUSE_MS"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15551234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def config(hook_url: str, server_messages: str = ALL) -> str:
    return (CONFIG.replace("FIRST_MESSAGE", FIRST_MESSAGE).replace("HOOK_URL", hook_url)
            .replace("SECRET", SECRET).replace("SERVER_MESSAGES", server_messages))


def place_call(gw: GatewayProcess, tmp_path: Path, *, seconds: float) -> str:
    """One SIPp call to ``service`` that hangs up after ``seconds``; returns the gateway's call id."""
    scenario = tmp_path / "call_wait_bye.xml"
    scenario.write_text(SCENARIO.replace("PAUSE_MS", str(int(seconds * 1000))))
    result = run_sipp(["-sf", str(scenario), "-i", "127.0.0.1", "-m", "1", "-key", "rtp_port",
                       str(free_port(also_tcp=False)), "-trace_msg", "-trace_err",
                       f"{gw.sip_addr[0]}:{gw.sip_addr[1]}", "-s", "service"], cwd=tmp_path, timeout=30)
    assert result.returncode == 0, sipp_failure(result, tmp_path)
    ended = gw.wait_for_log("call_ended", reason="customer-ended-call")
    return str(ended["call_id"])


def signed(request: Received) -> bool:
    return verify(SECRET, request.body, request.headers.get(TIMESTAMP_HEADER.lower()),
                  request.headers.get(SIGNATURE_HEADER.lower()), time.time())


def statuses(receiver: WebhookReceiver) -> list[str]:
    return [str(r.message["status"]) for r in receiver.of_type("status-update")]


def test_a_call_sends_its_messages_in_order_and_one_signed_report(tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    with serve_in_thread(receiver.app) as base:
        gw = start_gateway(tmp_path, config(base + "/vapi"))
        try:
            call_id = place_call(gw, tmp_path, seconds=4.0)
            receiver.wait_for(lambda r: r.of_type("end-of-call-report"), timeout=15)
        finally:
            gw.stop()  # nothing more can arrive after this
    got = receiver.received
    assert all(r.path == "/vapi" and r.call_id == call_id and signed(r) for r in got), [
        (r.type, r.call_id, signed(r)) for r in got]
    assert statuses(receiver) == ["ringing", "in-progress", "ended"]
    assert receiver.of_type("status-update")[-1].message["endedReason"] == "customer-ended-call"
    spoken = [r.message for r in receiver.of_type("transcript") if r.message["role"] == "assistant"]
    assert spoken and spoken[0]["transcriptType"] == "final" and spoken[0]["transcript"] == FIRST_MESSAGE
    updates = receiver.of_type("conversation-update")
    assert updates and any(m.get("message") == FIRST_MESSAGE for m in updates[-1].message["messages"])
    assert ("assistant", "started") in [(r.message["role"], r.message["status"])
                                        for r in receiver.of_type("speech-update")]
    (report,) = receiver.of_type("end-of-call-report")
    assert got[-1] is report  # the report comes last, after every message of the call
    message = report.message
    assert message["endedReason"] == "customer-ended-call"
    assert message["call"]["id"] == call_id and message["customer"] == {"number": "+15551234567"}
    assert f"AI: {FIRST_MESSAGE}" in message["transcript"]
    assert 3.0 < message["durationSeconds"] < 10.0
    assert message["cost"] == 0 and message["analysis"] == {}
    # the order the gateway produced them in: timestamps never go backwards
    stamps = [r.message["timestamp"] for r in got]
    assert stamps == sorted(stamps)


def test_the_report_survives_a_receiver_down_and_a_gateway_restart(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_STREAM, also_tcp=False)  # nobody listens here during the call
    text = config(f"http://127.0.0.1:{port}/vapi")
    gw = start_gateway(tmp_path, text, name="first")
    try:
        call_id = place_call(gw, tmp_path, seconds=1.5)
        gw.wait_for_log("webhook_report_queued", call_id=call_id)
        failed = gw.wait_for_log("webhook_delivery_failed", call_id=call_id)
        assert str(failed["error"]).startswith("ConnectError")
    finally:
        assert gw.stop() == 0  # SIGTERM: drain, then stop
    assert not gw.logs("webhook_delivered")

    receiver = WebhookReceiver()
    with serve_in_thread(receiver.app, port=port):
        second = start_gateway(tmp_path, text, name="second")
        try:
            second.wait_for_log("webhook_outbox_resumed")
            receiver.wait_for(lambda r: r.of_type("end-of-call-report"), timeout=15)
        finally:
            second.stop()
    reports = receiver.of_type("end-of-call-report")
    assert len(reports) >= 1 and {r.call_id for r in reports} == {call_id}
    assert reports[0].message["endedReason"] == "customer-ended-call" and signed(reports[0])
    # the rest of the call was kept too, and still arrives before its report
    assert statuses(receiver) == ["ringing", "in-progress", "ended"]
    assert receiver.received[-1].type == "end-of-call-report"


def test_a_500_is_retried_and_the_retry_is_logged_with_the_call_id(tmp_path: Path) -> None:
    receiver = WebhookReceiver(responses=[500])
    with serve_in_thread(receiver.app) as base:
        gw = start_gateway(tmp_path, config(base + "/vapi", "[end-of-call-report]"))
        try:
            call_id = place_call(gw, tmp_path, seconds=1.0)
            receiver.wait_for(lambda r: r.of_type("end-of-call-report"), timeout=15)
            failed = gw.wait_for_log("webhook_delivery_failed", call_id=call_id)
        finally:
            gw.stop()
    assert [(r.type, r.status) for r in receiver.received] == [("end-of-call-report", 500),
                                                               ("end-of-call-report", 200)]
    assert receiver.received[0].body == receiver.received[1].body
    assert (failed["type"], failed["status"], failed["attempt"]) == ("end-of-call-report", 500, 1)
    assert 0 < float(str(failed["next_retry_seconds"])) <= 0.5
