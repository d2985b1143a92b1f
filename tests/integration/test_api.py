"""The HTTP API of a real ``voicegw serve`` process: an outbound call placed with ``POST /call`` that a SIPp
callee answers, followed with ``GET /call/{id}``, steered and hung up over the API; an assistant created
with ``POST /assistant`` talking on that call; the call record after a restart; and SIGTERM still draining
with the API up (uvicorn does not take the signal)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import (
    GatewayProcess,
    SippResult,
    free_port,
    run_scenario,
    sipp_failure,
    start_gateway,
)

KEY = "integration-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}", api_key: "integration-key"}
assistants:
  demo: {firstMessage: "Hello", model: {provider: rules}, silenceTimeoutSeconds: 600}
trunks:
  - {name: sipp, host: 127.0.0.1, port: SIPP_PORT}
security: {outbound_allow: ["*"]}
log: {level: info}
"""
DEADLINE = 20.0


@pytest.fixture
def sipp_pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def start_callee(pool: ThreadPoolExecutor, tmp_path: Path) -> tuple[int, Future[SippResult]]:
    """SIPp as the callee behind the trunk; returns its port once it listens."""
    port = free_port()
    result = pool.submit(run_scenario, "uas_answer_wait_bye.xml", cwd=tmp_path, timeout=90,
                         extra=["-p", str(port)])
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and not result.done():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return port, result
        time.sleep(0.05)
    raise AssertionError(f"SIPp did not listen on {port}: {result.result() if result.done() else 'timeout'}")


def client(gw: GatewayProcess) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{gw.http_port}", headers=AUTH, timeout=10)


def wait_for(what: str, probe: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def call_status(api: httpx.Client, call_id: str, status: str) -> dict[str, Any] | None:
    r = api.get(f"/call/{call_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body if body["status"] == status else None


def test_post_call_to_a_sipp_callee_then_hang_up_and_read_it_after_a_restart(
    tmp_path: Path, sipp_pool: ThreadPoolExecutor
) -> None:
    port, sipp = start_callee(sipp_pool, tmp_path)
    config = CONFIG.replace("SIPP_PORT", str(port))
    gw = start_gateway(tmp_path, config)
    try:
        with client(gw) as api:
            assert httpx.get(f"http://127.0.0.1:{gw.http_port}/call").status_code == 401
            r = api.post("/assistant", json={"name": "made-over-api", "firstMessage": "Hello from the API",
                                             "model": {"provider": "rules"}, "silenceTimeoutSeconds": 600})
            assert r.status_code == 201, r.text
            assistant_id = r.json()["id"]
            r = api.post("/call", json={"assistantId": assistant_id, "phoneNumberId": "sipp", "name": "renewal",
                                        "customer": {"number": "+15550002222"}})
            assert r.status_code == 201, r.text
            call = r.json()
            # SIPp on loopback may have answered before the response left: anything but ended.
            assert call["status"] in ("queued", "ringing", "in-progress") and call["assistantId"] == assistant_id
            call_id = call["id"]
            wait_for("in-progress", lambda: call_status(api, call_id, "in-progress"))
            # The stored assistant converses: live control reaches its running session.
            wait_for("a running conversation", lambda: api.post(
                f"/call/{call_id}/control", json={"type": "say", "content": "Still there?"}).status_code == 200)
            r = api.delete(f"/call/{call_id}")
            assert r.status_code == 200, r.text
            ended = wait_for("ended", lambda: call_status(api, call_id, "ended"))
            assert ended["endedReason"] == "manually-canceled"
            events = api.get(f"/call/{call_id}/logs").json()["events"]
            assert [e["status"] for e in events if e["type"] == "status-update"][-2:] == ["in-progress", "ended"]
            assert events[-1]["type"] == "call-ended"
        result = sipp.result(timeout=30)
        assert result.returncode == 0, sipp_failure(result, tmp_path)
    finally:
        gw.stop()

    gw = start_gateway(tmp_path, config)  # same config directory: same database
    try:
        with client(gw) as api:
            listed = api.get("/call", params={"limit": 10}).json()
            assert [(c["id"], c["status"], c["name"]) for c in listed] == [(call_id, "ended", "renewal")]
            record = api.get(f"/call/{call_id}").json()
            assert record["endedReason"] == "manually-canceled" and "artifact" in record
            assert api.get(f"/call/{call_id}/logs").json()["events"][-1]["type"] == "call-ended"
            assert api.get(f"/assistant/{assistant_id}").json()["name"] == "made-over-api"
    finally:
        gw.stop()


def test_sigterm_drains_while_the_api_answers(tmp_path: Path, sipp_pool: ThreadPoolExecutor) -> None:
    port, sipp = start_callee(sipp_pool, tmp_path)
    gw = start_gateway(tmp_path, CONFIG.replace("SIPP_PORT", str(port)))
    try:
        with client(gw) as api:
            assert api.get("/readyz").status_code == 200
            r = api.post("/call", json={"assistantId": "demo", "customer": {"sipUri": f"sip:callee@127.0.0.1:{port}"}})
            assert r.status_code == 201, r.text
            call_id = r.json()["id"]
            wait_for("in-progress", lambda: call_status(api, call_id, "in-progress"))

            gw.proc.send_signal(signal.SIGTERM)
            gw.wait_for_log("gateway_draining")
            r = api.get("/readyz")
            assert r.status_code == 503 and r.json() == {"status": "draining"}
            assert api.get("/healthz").status_code == 200
            assert call_status(api, call_id, "in-progress")  # the call goes on through the drain
            r = api.post("/call", json={"assistantId": "demo", "customer": {"number": "+15550003333"},
                                        "phoneNumberId": "sipp"})
            assert r.status_code == 503 and r.headers["retry-after"]
            assert gw.proc.poll() is None

            assert api.delete(f"/call/{call_id}").status_code == 200
        assert gw.proc.wait(DEADLINE) == 0  # the last call ended: the drain is over
        gw.wait_for_log("gateway_stopped")
        result = sipp.result(timeout=30)
        assert result.returncode == 0, sipp_failure(result, tmp_path)
    finally:
        gw.stop()
