"""Tools inside real calls: ``voicegw serve`` with an assistant on the OpenAI fake.

1. A function tool round trip over SIP: a real phone (baresip) speaks, the model calls the tool, the
   loopback tool server receives the signed ``tool-calls`` message with the arguments, the model's second
   request carries the result, and the caller hears the reply.
2. The dtmf tool: the model presses "12#"; a SIPp caller whose SDP points its audio at a UDP socket of the
   test receives RFC 4733 telephone-events on the answered payload type, decoded back to the digits.
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

from gateway.rtp.dtmf import DtmfReceiver
from gateway.rtp.packet import RtpPacket, RtpParseError
from gateway.util.signing import verify
from tests.fakes.elevenlabs_server import tone_seconds
from tests.fakes.openai_server import FakeToolCall, Reply, TextReply, ToolCallsReply
from tests.fakes.tool_server import Answer, ToolServer, tool_server_thread
from tests.helpers.baresip import RATE, call, read_wav, speech_wav, voiced_segments, write_wav
from tests.helpers.fake_vendors import fake_vendors
from tests.integration.harness import free_port, run_sipp, sipp_failure, start_gateway

pytestmark = pytest.mark.integration

SECRET = "tool-secret"
CALLER_SAYS = "Book me in for Monday."
START = "Let me check."

CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
log: {level: info}
assistants:
  booking:
    firstMessage: "Hello."
    firstMessageMode: FIRST_MODE
    model:
      provider: openai
      model: gpt-4o-mini
      messages: [{role: system, content: "You book appointments."}]
      tools: TOOLS
    voice: {provider: 11labs, voiceId: test-voice}
    transcriber: {provider: deepgram, model: nova-3}
    startSpeakingPlan: {waitSeconds: 0}
numbers:
  - {number: "*", assistant: booking}
"""


def config(tools: list[dict[str, Any]], first_mode: str = "assistant-speaks-first") -> str:
    return CONFIG.replace("TOOLS", json.dumps(tools)).replace("FIRST_MODE", first_mode)


def last_tool_result(body: dict[str, Any]) -> str | None:
    last = body["messages"][-1]
    return str(last["content"]) if last.get("role") == "tool" else None


def test_function_tool_round_trip_in_a_conversation(tmp_path: Path) -> None:
    server = ToolServer(lambda m: Answer(body={"results": [
        {"toolCallId": m["toolCallList"][0]["id"], "result": "Monday at ten is booked."}]}))

    def model(body: dict[str, Any]) -> Reply:
        result = last_tool_result(body)
        if result is None:
            return ToolCallsReply(calls=(FakeToolCall(name="book", arguments='{"day": "monday"}'),))
        return TextReply(text=f"Done. {result}")

    with fake_vendors(transcripts=[CALLER_SAYS], openai_script=model) as vendors, \
            tool_server_thread(server) as tool_url:
        tools = [{"type": "function", "function": {
            "name": "book", "description": "Book an appointment",
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}},
            "server": {"url": f"{tool_url}/book", "secret": SECRET, "timeoutSeconds": 5},
            "messages": [{"type": "request-start", "content": START}]}]
        gw = start_gateway(tmp_path, config(tools) + vendors.providers_yaml())
        try:
            chunks = [np.zeros(2 * RATE), read_wav(speech_wav("Book me in for Monday", tmp_path / "s.wav")),
                      np.zeros(8 * RATE)]
            play = tmp_path / "caller.wav"
            write_wav(play, np.concatenate(chunks))
            result = call(f"sip:+15550001111@127.0.0.1:{gw.sip_port}", play=play, tmp_path=tmp_path, duration=11.0)
            logged = gw.wait_for_log("tool_call", timeout=5)
        finally:
            gw.stop()
        assert result.established, result.log
        # the tool server got one signed tool-calls message with the model's arguments
        (request,) = server.requests
        assert request.path == "/book"
        assert verify(SECRET, request.body, request.headers["x-voicegw-timestamp"],
                      request.headers["x-voicegw-signature"], time.time())
        message = request.message
        assert message["type"] == "tool-calls"
        assert message["toolCallList"][0]["function"] == {"name": "book", "arguments": {"day": "monday"}}
        assert logged["result"] == "ok" and logged["tool"] == "book"
        # the model's second request carries the tool's result after its own tool call
        first, second = vendors.openai.requests[:2]
        assert first["messages"][-1] == {"role": "user", "content": CALLER_SAYS}
        assert second["messages"][-1]["role"] == "tool"
        assert second["messages"][-1]["content"] == "Monday at ten is booked."
        assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "book"
        # spoken: the greeting, the tool's request-start, then the reply with the result
        texts = [r.text for r in vendors.elevenlabs.requests]
        assert texts[0] == "Hello." and texts[1] == START
        assert " ".join(texts[2:]) == "Done. Monday at ten is booked."
        # ... and heard by the phone after it spoke: the reply's tone lasts as long as its text
        heard = voiced_segments(result.recording)
        speech_end = voiced_segments(play)[0][1]
        after = [seg for seg in heard if seg[0] > speech_end]
        assert after, heard
        total = sum(tone_seconds(t) for t in texts[1:])
        assert sum(e - s for s, e in after) == pytest.approx(total, abs=0.5)


SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="call, listen for DTMF at [rtp_port], hang up">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio [rtp_port] RTP/AVP 0 96
      a=rtpmap:0 PCMU/8000
      a=rtpmap:96 telephone-event/8000
      a=fmtp:96 0-15
      a=ptime:20

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <pause milliseconds="5000"/>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="200"/>
</scenario>
"""


class RtpSink:
    """The caller's ears: a UDP socket that keeps every RTP packet with its arrival time."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port(also_tcp=False)))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.packets: list[tuple[float, RtpPacket]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            try:
                self.packets.append((time.monotonic(), RtpPacket.parse(data)))
            except RtpParseError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_dtmf_tool_sends_rfc4733_digits_to_the_peer(tmp_path: Path) -> None:
    def model(body: dict[str, Any]) -> Reply:
        if last_tool_result(body) is None:
            return ToolCallsReply(calls=(FakeToolCall(name="dtmf", arguments='{"dtmf": "12#"}'),))
        return TextReply(text="Done.")

    sink = RtpSink()
    scenario = tmp_path / "dtmf_listen.xml"
    scenario.write_text(SCENARIO)
    try:
        with fake_vendors(openai_script=model) as vendors:
            gw = start_gateway(tmp_path, config(
                [{"type": "dtmf", "messages": [{"type": "request-start", "content": "Pressing."}]}],
                "assistant-speaks-first-with-model-generated-message") + vendors.providers_yaml())
            try:
                result = run_sipp(["-sf", str(scenario), f"127.0.0.1:{gw.sip_port}", "-s", "ivr", "-i", "127.0.0.1",
                                   "-m", "1", "-key", "rtp_port", str(sink.port), "-trace_err"],
                                  cwd=tmp_path, timeout=30)
                sent = gw.wait_for_log("dtmf_sent", timeout=5)
                tool = gw.wait_for_log("tool_call", timeout=5)
            finally:
                gw.stop()
    finally:
        sink.close()
    assert result.returncode == 0, sipp_failure(result, tmp_path)
    assert sent == {**sent, "digits": "12#", "method": "rfc4733"}
    assert tool["type"] == "dtmf" and tool["result"] == "ok"
    events = [(t, p) for t, p in sink.packets if p.payload_type == 96]
    receiver = DtmfReceiver(96)
    for t, p in events:
        receiver.receive_packet(p, t)
    receiver.handle_timer(time.monotonic() + 10)
    digits = receiver.pop_events()
    assert "".join(d.digit for d in digits) == "12#"
    assert not any(d.ended_by_timeout for d in digits)
    # one RTP stream: the events share the audio's SSRC and sequence numbers
    audio = [p for _, p in sink.packets if p.payload_type == 0]
    assert audio and {p.ssrc for _, p in events} == {audio[0].ssrc}
    seqs = [p.sequence_number for _, p in sink.packets]
    assert len(set(seqs)) == len(seqs)
    # the model was told the keys were pressed, and answered
    second = vendors.openai.requests[1]
    assert second["messages"][-1]["role"] == "tool" and "12#" in second["messages"][-1]["content"]
