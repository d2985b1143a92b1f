"""`voicegw check-config` and `config-schema` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _voicegw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60, check=False)


def test_check_config_accepts_the_example() -> None:
    result = _voicegw("check-config", "config/voicegw.example.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "numbers" in result.stdout


def test_check_config_rejects_with_key_and_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rtp: {port_min: 5}\n")
    result = _voicegw("check-config", str(bad))
    assert result.returncode == 2
    assert "rtp.port_min" in result.stderr


def test_serve_refuses_an_invalid_config_before_binding(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("numbers: [{number: '1', assistant: nobody}]\n")
    result = _voicegw("serve", "--config", str(bad))
    assert result.returncode == 2
    assert "numbers.0.assistant" in result.stderr


def test_schema_matches_the_committed_one() -> None:
    result = _voicegw("config-schema")
    assert result.returncode == 0
    committed = json.loads((REPO / "config" / "voicegw.schema.json").read_text())
    assert json.loads(result.stdout) == committed, "regenerate: voicegw config-schema > config/voicegw.schema.json"
