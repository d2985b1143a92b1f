"""Trunk registration (RFC 3261 §10.2) against SIPp acting as the registrar (tests/sipp/registrar*.xml),
with `voicegw serve` configured with a `register: true` trunk."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from tests.integration.harness import (
    BASE_CONFIG,
    SippResult,
    free_port,
    run_scenario,
    sipp_failure,
    start_gateway,
)

TRUNK = (
    "trunks:\n"
    "  - {{name: sipp, host: 127.0.0.1, port: {port}, username: gwuser, password: s3cret-pass, register: true}}\n"
)


class SippInBackground:
    """A UAS scenario running in a thread while the test drives the gateway."""

    def __init__(self, scenario: str, tmp_path: Path, *, timeout: float) -> None:
        self.port = free_port()
        self.result: SippResult | None = None
        self._thread = threading.Thread(
            target=self._run, args=(scenario, tmp_path, timeout), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not _udp_port_taken(self.port):
            assert time.monotonic() < deadline, "SIPp did not bind its port"
            time.sleep(0.05)

    def _run(self, scenario: str, tmp_path: Path, timeout: float) -> None:
        self.result = run_scenario(scenario, cwd=tmp_path, timeout=timeout, extra=["-p", str(self.port)])

    def wait(self, timeout: float) -> SippResult:
        self._thread.join(timeout)
        assert self.result is not None, "SIPp did not finish"
        return self.result


def _udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_register_with_digest_refresh_and_unregister(tmp_path: Path) -> None:
    registrar = SippInBackground("registrar.xml", tmp_path, timeout=40)
    gw = start_gateway(tmp_path, BASE_CONFIG + TRUNK.format(port=registrar.port))
    try:
        first = gw.wait_for_log("trunk_registered", timeout=10)
        assert first["expires"] == 4  # the registrar's grant, not the 3600 s we asked for
        # The refresh comes at half the granted 4 s (SIPp checked its Call-ID and CSeq).
        second = gw.wait_for_log("trunk_registered", count=2, timeout=10)
        assert second["expires"] == 600
    finally:
        gw.stop()
    result = registrar.wait(30)
    assert result.returncode == 0, sipp_failure(result, tmp_path)
    assert result.stats.get("SuccessfulCall(C)") == "1", result.stats
    assert [line.get("status") for line in gw.logs("trunk_unregistered")] == [200]


def test_register_refused_retries_with_backoff(tmp_path: Path) -> None:
    registrar = SippInBackground("registrar_forbidden.xml", tmp_path, timeout=30)
    gw = start_gateway(tmp_path, BASE_CONFIG + TRUNK.format(port=registrar.port))
    try:
        first = gw.wait_for_log("trunk_register_failed", timeout=10)
        assert "403" in str(first["error"])
        # It tries again after the back-off, and doubles the back-off after the second refusal.
        second = gw.wait_for_log("trunk_register_failed", count=2, timeout=15)
        assert float(str(second["retry_in"])) == 2 * float(str(first["retry_in"]))
        assert gw.proc.poll() is None  # a refusing registrar never takes the gateway down
        assert not gw.logs("trunk_registered")
    finally:
        gw.stop()
    result = registrar.wait(30)
    assert result.returncode == 0, sipp_failure(result, tmp_path)
