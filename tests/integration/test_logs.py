"""The JSON log lines of `voicegw serve` while two SIPp echo calls and one assistant call (offline providers) run at
once: every line of a call carries its call_id, SIP Call-ID, number and direction, whichever subsystem wrote it
(call and SIP dispatch, media, the conversation, SIP messages sent from the call's own tasks), never another
call's; the SIP trace shows whole messages both ways with peer and transport."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.integration.harness import BASE_CONFIG, SippResult, run_scenario, sipp_failure, start_gateway

pytestmark = pytest.mark.integration

CALL_FIELDS = ("call_id", "sip_call_id", "number", "direction")
CONFIG = BASE_CONFIG.replace(
    "log: {level: info}", "log: {level: info, sip_trace: true}"
)


def test_every_line_of_a_call_carries_its_fields_and_only_its_own(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, CONFIG)
    try:
        results: dict[str, SippResult] = {}

        def run(name: str, service: str, calls: int) -> None:
            cwd = tmp_path / name
            cwd.mkdir()
            results[name] = run_scenario(
                "uac_pause_bye.xml", cwd=cwd, target=gateway.sip_addr, service=service, calls=calls, timeout=40,
                extra=["-d", "5000", "-l", str(calls), "-r", str(calls)],
            )

        threads = [threading.Thread(target=run, args=("echo", "echo", 2)),
                   threading.Thread(target=run, args=("assistant", "service", 1))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        for name, result in results.items():
            assert result.returncode == 0, sipp_failure(result, tmp_path / name)
        assert set(results) == {"echo", "assistant"}
        gateway.wait_for_log("media_stats", count=3, timeout=15)
        gateway.wait_for_log("call_ended", count=3, timeout=15)
        lines = list(gateway.log_lines)
    finally:
        gateway.stop()

    incoming = [line for line in lines if line.get("event") == "call_incoming"]
    assert len(incoming) == 3
    calls = {str(line["call_id"]): {f: line[f] for f in CALL_FIELDS} for line in incoming}
    assert sorted(str(c["number"]) for c in calls.values()) == ["echo", "echo", "service"]
    assert {c["direction"] for c in calls.values()} == {"inbound"}
    assert len({c["sip_call_id"] for c in calls.values()}) == 3

    # The two echo calls overlapped (and the assistant call with them): each was answered before any ended.
    events = [str(line.get("event")) for line in lines]
    assert max(i for i, e in enumerate(events) if e == "call_confirmed") < events.index("call_ended")

    by_call: dict[str, list[dict[str, object]]] = {call_id: [] for call_id in calls}
    for line in lines:
        if not any(f in line for f in CALL_FIELDS):
            continue
        # A line with any call field has all four, and they are those of one call (never mixed).
        assert all(f in line for f in CALL_FIELDS), line
        call_id = str(line["call_id"])
        assert call_id in calls, line
        assert {f: line[f] for f in CALL_FIELDS} == calls[call_id], line
        by_call[call_id].append(line)

    for call_id, fields in calls.items():
        subsystems = {str(line.get("subsystem")) for line in by_call[call_id]}
        logged = {str(line["event"]) for line in by_call[call_id]}
        # "sip": the UA's own logger, unbound: its lines from the call's tasks get the fields from the context
        assert {"call", "media", "sip"} <= subsystems, (fields, subsystems)
        assert {"call_incoming", "call_confirmed", "media_stats", "call_ended"} <= logged, logged
        if fields["number"] == "service":
            assert {"transcript", "conversation_ended"} <= logged, logged  # the conversation's lines

    # log.sip_trace: whole messages, both ways, with peer and transport.
    received = [line for line in lines if line.get("event") == "sip_recv"]
    sent = [line for line in lines if line.get("event") == "sip_send"]
    invites = [line for line in received if str(line["message"]).startswith("INVITE ")]
    assert len(invites) >= 3
    for line in invites:
        message = str(line["message"])
        assert line["transport"] == "udp" and str(line["peer"]).startswith("127.0.0.1:")
        assert "\r\n\r\nv=0\r\n" in message and "Call-ID: " in message  # start line, headers and the SDP body
    answers = [line for line in sent if str(line["message"]).startswith("SIP/2.0 200 ") and "INVITE" in
               str(line["message"]).split("CSeq:", 1)[1].split("\r\n", 1)[0]]
    assert len(answers) >= 3 and all("\r\n\r\nv=0\r\n" in str(line["message"]) for line in answers)
