"""Interpreting a server's answer to assistant-request (every Vapi shape), and the request signature."""

from __future__ import annotations

import time

import pytest

from gateway.assistant_request import decide
from gateway.util.signing import sign, signed_headers, verify


def test_assistant_id_and_overrides() -> None:
    d = decide({"assistantId": "a1", "assistantOverrides": {"variableValues": {"x": 1}}})
    assert (d.kind, d.assistant_id, d.overrides) == ("assistant", "a1", {"variableValues": {"x": 1}})


def test_inline_assistant_and_wrapped_message_response() -> None:
    d = decide({"messageResponse": {"assistant": {"firstMessage": "hi"}}})
    assert d.kind == "assistant" and d.assistant == {"firstMessage": "hi"}


def test_destination_wins_over_assistant_and_error_wins_over_everything() -> None:
    dest = {"type": "number", "number": "+15550001111"}
    assert decide({"destination": dest, "assistantId": "a"}).destination == dest
    d = decide({"error": " Closed today. ", "destination": dest, "assistantId": "a"})
    assert (d.kind, d.message, d.ended_reason) == ("error", "Closed today.", "assistant-request-returned-error")


@pytest.mark.parametrize(
    ("body", "reason", "detail"),
    [
        ({"squadId": "s"}, "assistant-request-returned-invalid-assistant", "squadId is not supported"),
        ({"workflow": {}}, "assistant-request-returned-invalid-assistant", "workflow is not supported"),
        ({}, "assistant-request-returned-no-assistant", "none of"),
        ([1, 2], "assistant-request-returned-invalid-assistant", "not a JSON object"),
        ({"assistant": "x"}, "assistant-request-returned-invalid-assistant", "must be an object"),
        ({"destination": {"type": "assistant"}}, "assistant-request-returned-invalid-assistant", "'number' or"),
        ({"assistantId": "a", "assistantOverrides": 3}, "assistant-request-returned-invalid-assistant",
         "assistantOverrides"),
    ],
)
def test_unusable_answers_fail_with_vapis_reason(body: object, reason: str, detail: str) -> None:
    d = decide(body)
    assert d.kind == "failed" and d.ended_reason == reason and detail in d.detail


def test_an_empty_error_is_unspeakable() -> None:
    d = decide({"error": "  "})
    assert d.kind == "error" and d.message is None
    assert d.ended_reason == "assistant-request-returned-unspeakable-error"


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"message":{"type":"assistant-request"}}'
    headers = dict(signed_headers(body, "k", 1_700_000_000))
    assert headers["X-Vapi-Secret"] == "k"
    ts, sig = headers["X-Voicegw-Timestamp"], headers["X-Voicegw-Signature"]
    assert verify("k", body, ts, sig, 1_700_000_010)
    assert not verify("k", body + b" ", ts, sig, 1_700_000_010)  # body altered
    assert not verify("other", body, ts, sig, 1_700_000_010)  # wrong key
    assert not verify("k", body, ts, sig, 1_700_000_000 + 301)  # replayed too late
    assert not verify("k", body, None, sig, time.time())
    assert sig == sign("k", 1_700_000_000, body) and sig.startswith("sha256=")
    assert dict(signed_headers(body, None, 1)) == {"Content-Type": "application/json"}
