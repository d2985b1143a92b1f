"""The CLI's API commands as a user sees them: the request each command sends, the table or JSON it prints,
progress while a call rings, and errors (field paths from a 422, unreachable API) with exit status 1.
The API side is an httpx MockTransport here; tests/integration/test_cli_api.py runs them against a gateway."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest

from gateway.cli import build_parser
from gateway.cli_api import run


class Recorder:
    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.answers.pop(0)
        return httpx.Response(status, json=body)


def cli(argv: list[str], answers: list[tuple[int, Any]]) -> tuple[int, str, Recorder]:
    recorder = Recorder(answers)
    out = io.StringIO()
    args = build_parser().parse_args(argv)
    code = run(args, out=out, transport=httpx.MockTransport(recorder), sleep=lambda _s: None)
    return code, out.getvalue(), recorder


def call(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "c-1", "type": "outboundPhoneCall", "status": status, "customer": {"number": "+15550001111"},
            "assistantId": "demo", "createdAt": "2026-11-21T10:00:00.000Z", **extra}


def test_call_create_sends_vapis_body_and_prints_progress_until_answered() -> None:
    code, out, rec = cli(
        ["call", "create", "--assistant-id", "demo", "--number", "+15550001111", "--trunk", "carrier",
         "--var", "name=Ada", "--api", "http://gw:8080", "--api-key", "k"],
        [(201, call("queued")), (200, call("ringing")), (200, call("ringing")), (200, call("in-progress"))],
    )
    assert code == 0
    first = rec.requests[0]
    assert (first.method, first.url.path) == ("POST", "/call")
    assert first.headers["authorization"] == "Bearer k"
    assert json.loads(first.content) == {
        "assistantId": "demo", "customer": {"number": "+15550001111"}, "phoneNumberId": "carrier",
        "assistantOverrides": {"variableValues": {"name": "Ada"}},
    }
    lines = out.splitlines()
    assert lines[:3] == ["call c-1: queued", "call c-1: ringing", "call c-1: in-progress"]
    assert all(r.url.path == "/call/c-1" for r in rec.requests[1:])


def test_call_create_json_keeps_stdout_one_document_and_reports_the_end() -> None:
    code, out, _ = cli(
        ["call", "create", "--assistant-id", "demo", "--sip-uri", "sip:bob@127.0.0.1", "--json"],
        [(201, call("queued")), (200, call("ended", endedReason="customer-busy"))],
    )
    assert code == 0
    assert json.loads(out)["endedReason"] == "customer-busy"


def test_call_list_prints_a_table() -> None:
    code, out, rec = cli(["call", "list", "--limit", "5"], [(200, [call("ended", endedReason="customer-ended-call")])])
    assert code == 0 and rec.requests[0].url.params["limit"] == "5"
    header, row = out.splitlines()[:2]
    assert header.split()[:4] == ["ID", "TYPE", "STATUS", "CUSTOMER"]
    assert row.split()[:4] == ["c-1", "outboundPhoneCall", "ended", "+15550001111"]
    assert "customer-ended-call" in row


def test_validation_errors_name_the_field_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    detail = [{"loc": ["body", "customer", "number"], "msg": "Field required", "type": "missing"}]
    code, _, _ = cli(["call", "create", "--assistant-id", "demo", "--number", "x", "--no-wait"], [(422, {"detail": detail})])
    assert code == 1
    assert "HTTP 422: customer.number: Field required" in capsys.readouterr().err


def test_unknown_call_is_a_clear_404(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = cli(["call", "get", "nope"], [(404, {"detail": "call nope not found"})])
    assert code == 1 and "HTTP 404: call nope not found" in capsys.readouterr().err


def test_unreachable_api_says_where_it_looked(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["call", "list", "--api", "http://127.0.0.1:9"])
    assert run(args, out=io.StringIO()) == 1
    assert "cannot reach the gateway API at http://127.0.0.1:9" in capsys.readouterr().err


def test_assistant_create_reads_yaml_and_logs_print_one_line_per_event(tmp_path: Any) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("name: Support\nmodel: {provider: rules}\n")
    code, out, rec = cli(["assistant", "create", "--file", str(f)],
                         [(201, {"id": "a-1", "name": "Support", "model": {"provider": "rules"}})])
    assert code == 0 and json.loads(rec.requests[0].content) == {"name": "Support", "model": {"provider": "rules"}}
    assert "a-1" in out and "Support" in out
    code, out, rec = cli(["logs", "calls", "c-1"], [(200, {"callId": "c-1", "events": [
        {"time": "2026-11-21T10:00:00.000Z", "type": "status-update", "status": "ringing"},
        {"time": "2026-11-21T10:00:01.000Z", "type": "transcript", "role": "assistant", "transcript": "Hi"},
    ]})])
    assert code == 0 and rec.requests[0].url.path == "/call/c-1/logs"
    assert out.splitlines() == [
        "2026-11-21T10:00:00.000Z  status-update      status=ringing",
        "2026-11-21T10:00:01.000Z  transcript         role=assistant transcript=Hi",
    ]
