"""/metrics of `voicegw serve` scraped before, during and after a SIPp run of calls to the echo line that play
speech with rtp_stream: the counters move by what SIPp did (calls, INVITEs, RTP packets, one setup time and one
jitter observation per call), and `promtool check metrics` accepts the exposition."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import SIPP_DIR, GatewayProcess, SippResult, free_port, run_sipp
from tests.integration.test_echo import CODECS, make_wav, wav_samples

CALLS = 3
PACKETS_PER_SECOND = 50  # 20 ms ptime

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gateway: GatewayProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.http_port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make install` installs it (Debian package prometheus)")
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                            timeout=30, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")


def poll(gateway: GatewayProcess, until: object, timeout: float) -> tuple[str, Samples]:
    """Scrape until ``until(samples)`` holds (or fail after ``timeout`` seconds)."""
    assert callable(until)
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(gateway)
        samples = parse(text)
        if until(samples):
            return text, samples
        if time.monotonic() > deadline:
            raise AssertionError(f"/metrics never reached the expected state:\n{text}")
        time.sleep(0.1)


def test_metrics_move_by_what_a_sipp_run_did(gateway: GatewayProcess, tmp_path: Path) -> None:
    pt, encoding, decode = CODECS["PCMU"]
    wav = make_wav(tmp_path, encoding)
    seconds = len(wav_samples(wav, decode)) / 8000
    pause_ms = int(seconds * 1000) + 1500
    scenario = tmp_path / "echo_call.xml"
    scenario.write_text(
        (SIPP_DIR / "echo_rtp_stream.xml").read_text().replace("{WAV}", str(wav)).replace("{LOOPS}", "1")
        .replace("{PT}", str(pt)).replace("{CODEC}", "PCMU").replace("{PAUSE_MS}", str(pause_ms))
    )
    rtp = yaml.safe_load(gateway.config_path.read_text())["rtp"]
    pool_size = len(range(rtp["port_min"] + rtp["port_min"] % 2, rtp["port_max"] + 1, 2))

    before_text = scrape(gateway)
    promtool_check(before_text)
    before = parse(before_text)
    assert value(before, "voicegw_calls_active", direction="inbound") == 0
    assert value(before, "voicegw_rtp_port_pool_size") == pool_size

    rtp_base = free_port(also_tcp=False) & ~1
    host, port = gateway.sip_addr
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            run_sipp,
            ["-sf", str(scenario), f"{host}:{port}", "-s", "echo", "-i", "127.0.0.1", "-m", str(CALLS),
             "-r", str(CALLS), "-l", str(CALLS), "-mp", str(rtp_base), "-trace_err"],
            cwd=tmp_path, timeout=seconds + 40,
        )
        # during: every call is up and the echo is flowing
        during_text, during = poll(
            gateway,
            lambda s: value(s, "voicegw_calls_active", direction="inbound") == CALLS
            and delta(before, s, "voicegw_rtp_packets_total", direction="out") > 0,
            timeout=20,
        )
        result: SippResult = run.result()
    promtool_check(during_text)
    assert value(during, "voicegw_rtp_ports_in_use") == CALLS
    assert value(during, "voicegw_rtp_port_pool_size") == pool_size
    assert delta(before, during, "voicegw_calls_ended_total", direction="inbound",
                 reason="customer-ended-call") == 0

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    successful = int(result.stats["SuccessfulCall(C)"])
    assert successful == CALLS, result.stats
    gateway.wait_for_log("media_stats", count=CALLS, timeout=15)
    # after: every call released (the gauge falls back once the call's tasks are done)
    after_text, after = poll(gateway, lambda s: value(s, "voicegw_calls_active", direction="inbound") == 0,
                             timeout=15)
    promtool_check(after_text)

    assert delta(before, after, "voicegw_calls_ended_total", direction="inbound",
                 reason="customer-ended-call") == successful
    assert delta(before, after, "voicegw_sip_invites_total", outcome="accepted") == CALLS
    for outcome in ("not_found", "bad_sdp", "no_ports", "rejected", "draining"):
        assert delta(before, after, "voicegw_sip_invites_total", outcome=outcome) == 0, outcome
    assert delta(before, after, "voicegw_call_setup_seconds_count", direction="inbound") == CALLS
    assert delta(before, after, "voicegw_call_duration_seconds_count", direction="inbound") == CALLS
    assert value(after, "voicegw_rtp_ports_in_use") == 0

    # RTP: SIPp plays the WAV once per call (seconds x 50 packets); the echo line sends back what it played
    # (concealed frames included), at most one packet per 20 ms tick of the call (pause before the BYE
    # included).
    sent_per_call = seconds * PACKETS_PER_SECOND
    rtp_in = delta(before, after, "voicegw_rtp_packets_total", direction="in")
    rtp_out = delta(before, after, "voicegw_rtp_packets_total", direction="out")
    assert CALLS * sent_per_call * 0.95 <= rtp_in <= CALLS * (sent_per_call + 5), (rtp_in, sent_per_call)
    assert CALLS * sent_per_call * 0.9 <= rtp_out <= CALLS * (pause_ms / 1000 + 1) * PACKETS_PER_SECOND, (
        rtp_out, sent_per_call)
    # bytes: every packet is a 12-byte RTP header and 160 bytes of G.711 (20 ms at 8 kHz); SIPp's rtp_stream
    # and the echo line send no CSRC, extension or padding.
    for direction, packets in (("in", rtp_in), ("out", rtp_out)):
        assert delta(before, after, "voicegw_rtp_bytes_total", direction=direction) == packets * (12 + 160), direction

    # receive quality: one observation per call, a clean loopback loses nothing
    assert delta(before, after, "voicegw_rtp_jitter_seconds_count") == CALLS
    assert delta(before, after, "voicegw_jitter_buffer_delay_seconds_count") == CALLS
    assert delta(before, after, "voicegw_call_mos_count") == CALLS
    assert delta(before, after, "voicegw_rtp_packets_lost_total") == 0
    assert delta(before, after, "voicegw_rtp_packets_duplicated_total") == 0
    jitter_mean = delta(before, after, "voicegw_rtp_jitter_seconds_sum") / CALLS
    assert 0 <= jitter_mean < 0.02, jitter_mean
    delay_mean = delta(before, after, "voicegw_jitter_buffer_delay_seconds_sum") / CALLS
    assert 0 < delay_mean < 0.2, delay_mean
