"""The CLI against a real gateway: `voicegw call create` places a call through the API to a SIPp callee and
prints its progress until answered, `call list` shows it, `call end` hangs it up, `logs calls` shows its event
log, and `assistant create/list` stores an assistant — each as a user runs them (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.integration.harness import REPO, sipp_failure, start_gateway
from tests.integration.test_api import CONFIG, KEY, sipp_pool, start_callee  # noqa: F401 (fixture)


def voicegw(gw_port: int, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gateway", *args, "--api", f"http://127.0.0.1:{gw_port}", "--api-key", KEY]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60, check=False)


def test_call_create_follows_the_call_then_list_end_and_logs(tmp_path: Path, sipp_pool: ThreadPoolExecutor) -> None:  # noqa: F811
    port, sipp = start_callee(sipp_pool, tmp_path)
    gw = start_gateway(tmp_path, CONFIG.replace("SIPP_PORT", str(port)))
    try:
        created = voicegw(gw.http_port, "call", "create", "--assistant-id", "demo", "--number", "+15550002222",
                          "--trunk", "sipp")
        assert created.returncode == 0, created.stderr
        progress = [line for line in created.stdout.splitlines() if line.startswith("call ")]
        assert progress[-1].endswith(": in-progress"), created.stdout
        call_id = progress[0].split()[1].rstrip(":")

        listed = voicegw(gw.http_port, "call", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [c["status"] for c in json.loads(listed.stdout) if c["id"] == call_id] == ["in-progress"]

        ended = voicegw(gw.http_port, "call", "end", call_id)
        assert ended.returncode == 0, ended.stderr
        gw.wait_for_log("call_ended", reason="manually-canceled")

        logs = voicegw(gw.http_port, "logs", "calls", call_id)
        assert logs.returncode == 0, logs.stderr
        kinds = [line.split()[1] for line in logs.stdout.splitlines()]
        assert "status-update" in kinds and kinds[-1] == "call-ended", logs.stdout

        missing = voicegw(gw.http_port, "call", "get", "no-such-call")
        assert missing.returncode == 1 and "HTTP 404" in missing.stderr
        result = sipp.result(timeout=30)
        assert result.returncode == 0, sipp_failure(result, tmp_path)
    finally:
        gw.stop()


def test_assistant_create_then_list(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, CONFIG.replace("SIPP_PORT", "5060"))
    try:
        spec = tmp_path / "support.yaml"
        spec.write_text("name: Support line\nfirstMessage: Hi\nmodel: {provider: rules}\n")
        made = voicegw(gw.http_port, "assistant", "create", "--file", str(spec), "--json")
        assert made.returncode == 0, made.stderr
        assistant_id = json.loads(made.stdout)["id"]
        listed = voicegw(gw.http_port, "assistant", "list")
        assert listed.returncode == 0, listed.stderr
        assert any(line.startswith(assistant_id) and "Support line" in line for line in listed.stdout.splitlines())
        bad = tmp_path / "bad.yaml"
        bad.write_text("model: {provider: nope}\n")
        refused = voicegw(gw.http_port, "assistant", "create", "--file", str(bad))
        assert refused.returncode == 1 and "HTTP 422" in refused.stderr and "model" in refused.stderr
    finally:
        gw.stop()
