"""Provider and webhook faults over real SIP calls with ``voicegw serve`` (the pipeline's own handling is
unit-tested in tests/unit/test_provider_faults.py; this shows it from the caller's and the receiver's side):

1. Isolation: two concurrent calls on one gateway, the model failing for good for one assistant only; that
   call ends with ``pipeline-error-openai-llm-failed`` (the phone receives the BYE), the other goes on to
   its reply and ends when the caller hangs up; both end-of-call reports are delivered.
2. A tool server that refuses connections: the model is told the tool failed and answers, the caller
   hears the tool's ``request-failed`` message, and the call ends normally.
3. A webhook receiver down during the call and back while the same gateway keeps running: the report is
   delivered exactly once.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fakes.openai_server import FakeToolCall, Faults, Reply, TextReply, ToolCallsReply
from tests.fakes.webhook_server import WebhookReceiver
from tests.helpers.baresip import RATE, PhoneResult, call, read_wav, speech_wav, write_wav
from tests.helpers.fake_vendors import fake_vendors
from tests.helpers.http_thread import serve_in_thread
from tests.integration.harness import free_port, run_scenario, sipp_failure, start_gateway
from tests.integration.test_webhooks import config as webhook_config
from tests.integration.test_webhooks import place_call

pytestmark = pytest.mark.integration

DOOMED_PROMPT = "You take messages for the doomed line."
HEALTHY_PROMPT = "You book appointments."
CALLER_SAYS = "I would like to book an appointment."
REPLY = "Certainly. Which day suits you?"
LLM_ERROR = "Sorry, I could not answer that just now. Could you say it again?"
REQUEST_FAILED = "The booking system is not answering."
TOOL_REPLY = "I could not reach the booking system, please call back later."

ISOLATION_CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
log: {level: info}
storage: {path: "state/gw.sqlite3"}
webhooks: {initial_backoff_seconds: 0.2, max_backoff_seconds: 0.5, timeout_seconds: 2}
assistants:
  doomed:
    firstMessageMode: assistant-speaks-first-with-model-generated-message
    model:
      provider: openai
      model: gpt-4o-mini
      messages: [{role: system, content: "DOOMED_PROMPT"}]
    voice: {provider: 11labs, voiceId: test-voice}
    transcriber: {provider: deepgram, model: nova-3}
    startSpeakingPlan: {waitSeconds: 0}
    server: {url: "HOOK_URL"}
    serverMessages: [end-of-call-report]
  healthy:
    firstMessage: "Hello."
    model:
      provider: openai
      model: gpt-4o-mini
      messages: [{role: system, content: "HEALTHY_PROMPT"}]
    voice: {provider: 11labs, voiceId: test-voice}
    transcriber: {provider: deepgram, model: nova-3}
    startSpeakingPlan: {waitSeconds: 0}
    server: {url: "HOOK_URL"}
    serverMessages: [end-of-call-report]
numbers:
  - {number: "doomed", assistant: doomed}
  - {number: "*", assistant: healthy}
"""


def caller_wav(tmp_path: Path, name: str, text: str, *, before: float, after: float) -> Path:
    speech = read_wav(speech_wav(text, tmp_path / f"{name}-speech.wav"))
    path = tmp_path / f"{name}.wav"
    write_wav(path, np.concatenate([np.zeros(int(before * RATE)), speech, np.zeros(int(after * RATE))]))
    return path


def system_prompt(body: dict[str, Any]) -> str:
    first = body["messages"][0]
    return str(first.get("content")) if first.get("role") == "system" else ""


def test_a_model_failing_for_one_call_ends_only_that_call(tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    with fake_vendors(transcripts=[CALLER_SAYS], openai_script=lambda body: REPLY) as vendors, \
            serve_in_thread(receiver.app) as hook:
        # every request of the doomed assistant gets a 500, the healthy one is served
        vendors.openai.fault_rule = lambda body: Faults(status=500) if system_prompt(body) == DOOMED_PROMPT else None
        text = (ISOLATION_CONFIG.replace("DOOMED_PROMPT", DOOMED_PROMPT).replace("HEALTHY_PROMPT", HEALTHY_PROMPT)
                .replace("HOOK_URL", hook + "/vapi"))
        gw = start_gateway(tmp_path, text + vendors.providers_yaml())
        try:
            # the doomed call: the model-generated greeting fails (apology, the call goes on), then the
            # caller's turn fails too: two failed replies in a row end the call
            doomed_play = caller_wav(tmp_path, "doomed", "Please take a message", before=3.0, after=8.0)
            healthy_play = caller_wav(tmp_path, "healthy", "I would like to book an appointment", before=3.0,
                                      after=6.0)
            results: dict[str, PhoneResult] = {}

            def dial(name: str, user: str, play: Path, duration: float) -> None:
                results[name] = call(f"sip:{user}@127.0.0.1:{gw.sip_port}", play=play, tmp_path=tmp_path,
                                     duration=duration)

            threads = [threading.Thread(target=dial, args=("doomed", "doomed", doomed_play, 14.0)),
                       threading.Thread(target=dial, args=("healthy", "+15550001111", healthy_play, 10.0))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            receiver.wait_for(lambda r: len(r.of_type("end-of-call-report")) >= 2, timeout=15)
            ended = {str(line["reason"]) for line in gw.logs("call_ended")}
        finally:
            gw.stop()
    doomed, healthy = results["doomed"], results["healthy"]
    assert doomed.established, doomed.log
    assert healthy.established, healthy.log
    # the doomed call was ended by the gateway (BYE), well before the phone's own hang-up
    assert doomed.closed_by_remote, doomed.log
    assert doomed.call_seconds < 13.0
    # the healthy call ran to the caller's hang-up, and got its reply spoken
    assert not healthy.closed_by_remote, healthy.log
    spoken = " ".join(r.text for r in vendors.elevenlabs.requests)  # one request per sentence
    assert REPLY in spoken, spoken
    assert LLM_ERROR in spoken, spoken  # the doomed call's first failure: the conversation went on
    assert ended == {"pipeline-error-openai-llm-failed", "customer-ended-call"}, ended
    # the healthy assistant's requests all succeeded: its prompt never met a fault
    healthy_requests = [b for b in vendors.openai.requests if system_prompt(b) == HEALTHY_PROMPT]
    assert healthy_requests and healthy_requests[0]["messages"][-1] == {"role": "user", "content": CALLER_SAYS}
    reports = receiver.of_type("end-of-call-report")
    assert len(reports) == 2, [r.message.get("endedReason") for r in reports]
    by_reason = {str(r.message["endedReason"]): r.message for r in reports}
    assert set(by_reason) == {"pipeline-error-openai-llm-failed", "customer-ended-call"}
    assert REPLY in str(by_reason["customer-ended-call"]["transcript"])
    assert REPLY not in str(by_reason["pipeline-error-openai-llm-failed"]["transcript"])


TOOLS_CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
log: {level: info}
assistants:
  booking:
    firstMessageMode: assistant-speaks-first-with-model-generated-message
    model:
      provider: openai
      model: gpt-4o-mini
      messages: [{role: system, content: "You book appointments."}]
      tools: TOOLS
    voice: {provider: 11labs, voiceId: test-voice}
    transcriber: {provider: deepgram, model: nova-3}
    silenceTimeoutSeconds: 600
numbers:
  - {number: "*", assistant: booking}
"""


@pytest.mark.parametrize("request_failed", [True, False], ids=["request-failed-message", "model-answers"])
def test_a_tool_server_refusing_connections_fails_the_tool_not_the_call(tmp_path: Path, request_failed: bool) -> None:
    closed = free_port(socket.SOCK_STREAM, also_tcp=False)  # nobody listens here

    def model(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]
        if last.get("role") != "tool":
            return ToolCallsReply(calls=(FakeToolCall(name="book", arguments='{"day": "monday"}'),))
        return TextReply(text=TOOL_REPLY)

    tool: dict[str, Any] = {"type": "function", "function": {
        "name": "book", "description": "Book an appointment",
        "parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}},
        "server": {"url": f"http://127.0.0.1:{closed}/book", "timeoutSeconds": 3}}
    if request_failed:
        tool["messages"] = [{"type": "request-failed", "content": REQUEST_FAILED}]
    with fake_vendors(openai_script=model) as vendors:
        gw = start_gateway(tmp_path, TOOLS_CONFIG.replace("TOOLS", json.dumps([tool])) + vendors.providers_yaml())
        try:
            # the caller answers, listens 5 s, hangs up
            result = run_scenario("uac_pause_bye.xml", cwd=tmp_path, target=gw.sip_addr, service="booking",
                                  timeout=30, extra=["-d", "5000"])
            logged = gw.wait_for_log("tool_call", timeout=5)
            ended = gw.wait_for_log("call_ended", timeout=10)
        finally:
            gw.stop()
    assert result.returncode == 0, sipp_failure(result, tmp_path)
    assert logged["tool"] == "book" and logged["result"] != "ok", logged
    spoken = " ".join(r.text for r in vendors.elevenlabs.requests)  # one request per sentence
    if request_failed:
        # Vapi: a request-failed message is spoken instead of asking the model again
        assert REQUEST_FAILED in spoken, spoken
        assert len(vendors.openai.requests) == 1
    else:
        # the model is told the tool failed (after its own tool call), and its answer is spoken
        told = vendors.openai.requests[1]["messages"]
        assert told[-2]["tool_calls"][0]["function"]["name"] == "book"
        assert told[-1]["role"] == "tool" and told[-1]["content"], told[-1]
        assert TOOL_REPLY in spoken, spoken
    # the call went on to the caller's own hang-up
    assert ended["reason"] == "customer-ended-call"


def test_the_report_is_delivered_once_when_the_receiver_comes_back(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_STREAM, also_tcp=False)  # nobody listens here during the call
    gw = start_gateway(tmp_path, webhook_config(f"http://127.0.0.1:{port}/vapi", "[end-of-call-report]"))
    try:
        call_id = place_call(gw, tmp_path, seconds=1.0)
        failed = gw.wait_for_log("webhook_delivery_failed", call_id=call_id)
        assert str(failed["error"]).startswith("ConnectError")
        receiver = WebhookReceiver()
        with serve_in_thread(receiver.app, port=port):
            receiver.wait_for(lambda r: r.of_type("end-of-call-report"), timeout=15)
            # several retry periods (max back-off 0.5 s) later: nothing was sent again
            time.sleep(2.0)
            got = receiver.received
    finally:
        gw.stop()
    assert [(r.type, r.call_id) for r in got] == [("end-of-call-report", call_id)]
    assert got[0].message["endedReason"] == "customer-ended-call"
