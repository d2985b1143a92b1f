"""The pure parts of the load benchmarks: SIPp statistics, percentiles, /proc, /metrics parsing, result files.

No load runs here; the benchmarks themselves run from `make bench`.
"""

from __future__ import annotations

import math
import os
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.bench_echo import EchoStep, median_step
from benchmarks.bench_signalling import Step as SignallingStep
from benchmarks.bench_signalling import median_step as signalling_median
from benchmarks.bench_soak import Sample, growth
from benchmarks.harness import (
    bucket_delta,
    bucket_quantile,
    cpu_seconds,
    histogram_buckets,
    markdown_table,
    metric_value,
    open_fds,
    parse_sipp_rtt,
    parse_sipp_stats,
    percentile,
    plot_cdf,
    plot_lines,
    rss_bytes,
    write_result,
)
from benchmarks.wire import rtp_port_range, send_interval_jitter

# The head of a SIPp 3.6.1 -trace_stat file (a subset of its ~80 columns, same layout: ';' after every field).
STAT_CSV = (
    "StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);TargetRate;CallRate(P);CallRate(C);"
    "IncomingCall(P);IncomingCall(C);OutgoingCall(P);OutgoingCall(C);TotalCallCreated;CurrentCall;"
    "SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);\n"
    "2026-11-21\t21:30:00.000000\t1795296600.000000;2026-11-21\t21:30:00.000000\t1795296600.000000;"
    "2026-11-21\t21:30:00.000000\t1795296600.000000;00:00:00:000000;00:00:00:000000;50;0;0;0;0;0;0;0;0;0;0;0;0;\n"
    "2026-11-21\t21:30:00.000000\t1795296600.000000;2026-11-21\t21:30:01.000000\t1795296601.000000;"
    "2026-11-21\t21:30:04.000000\t1795296604.000000;00:00:03:000000;00:00:04:000000;50;49.8;49.5;0;0;150;"
    "198;198;2;150;193;1;3;\n"
)

RTT_CSV = "Date_ms;response_time_ms;rtd_no\n1795296600123.5;4.250;1\n1795296600140.0;12.000;1\n"

METRICS = """# HELP voicegw_event_loop_lag_seconds Lateness of a periodic event-loop probe
# TYPE voicegw_event_loop_lag_seconds histogram
voicegw_event_loop_lag_seconds_bucket{le="0.001"} 90.0
voicegw_event_loop_lag_seconds_bucket{le="0.01"} 99.0
voicegw_event_loop_lag_seconds_bucket{le="0.1"} 100.0
voicegw_event_loop_lag_seconds_bucket{le="+Inf"} 100.0
voicegw_event_loop_lag_seconds_count 100.0
# TYPE voicegw_asyncio_tasks gauge
voicegw_asyncio_tasks 42.0
voicegw_calls_active{direction="inbound"} 7.0
voicegw_calls_active{direction="outbound"} 1.0
"""


def test_sipp_stat_csv_gives_the_last_cumulative_counts() -> None:
    rows = parse_sipp_stats(STAT_CSV)
    assert len(rows) == 2
    assert rows[-1]["SuccessfulCall(C)"] == "193"
    assert rows[-1]["FailedCall(C)"] == "3"
    assert parse_sipp_stats("header;only;\n") == []


def test_sipp_rtt_csv_skips_the_header() -> None:
    assert parse_sipp_rtt(RTT_CSV) == [4.25, 12.0]
    assert parse_sipp_rtt("") == []


@pytest.mark.parametrize(("q", "expected"), [(0.0, 1.0), (0.5, 50.0), (0.95, 95.0), (0.99, 99.0), (1.0, 100.0)])
def test_nearest_rank_percentile(q: float, expected: float) -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, q) == expected


def test_percentile_of_nothing_is_nan_and_bad_quantiles_are_refused() -> None:
    assert math.isnan(percentile([], 0.5))
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_proc_figures_of_our_own_process() -> None:
    pid = os.getpid()
    before = cpu_seconds(pid)
    sum(i * i for i in range(200_000))  # burn a little CPU so the counter can move
    assert cpu_seconds(pid) >= before > 0
    assert rss_bytes(pid) > 10 * 2**20  # a Python interpreter with pytest loaded
    with open(__file__, encoding="utf-8"):
        held = open_fds(pid)
    assert held > open_fds(pid) - 1 >= 2


def test_metrics_exposition_values_and_histogram_quantiles() -> None:
    assert metric_value(METRICS, "voicegw_asyncio_tasks") == 42.0
    assert metric_value(METRICS, "voicegw_calls_active", {"direction": "outbound"}) == 1.0
    assert math.isnan(metric_value(METRICS, "voicegw_nonexistent"))
    buckets = histogram_buckets(METRICS, "voicegw_event_loop_lag_seconds")
    assert buckets[0] == (0.001, 90.0) and buckets[-1] == (math.inf, 100.0)
    assert bucket_quantile(buckets, 0.5) == 0.001
    assert bucket_quantile(buckets, 0.99) == 0.01
    assert bucket_quantile(buckets, 1.0) == 0.1
    earlier = [(0.001, 90.0), (0.01, 90.0), (0.1, 90.0), (math.inf, 90.0)]
    delta = bucket_delta(buckets, earlier)
    assert bucket_quantile(delta, 0.5) == 0.01  # all 10 new observations are above 1 ms
    assert math.isnan(bucket_quantile(bucket_delta(buckets, buckets), 0.5))


def test_soak_growth_compares_first_and_last_window() -> None:
    # The keep-alive pool grows from 10 to 22 connections; nothing else holds a descriptor more.
    samples = [Sample(t=float(t), rss_mb=100.0 + t / 10, fds=50 + t // 10, tasks=30.0, calls=5.0, pooled=10 + t // 10)
               for t in range(0, 121, 10)]
    first, last, pct = growth(samples, "rss_mb", 20.0)
    assert first == pytest.approx(101.0) and last == pytest.approx(111.0)
    assert pct == pytest.approx(100 * 10 / 101)
    assert growth(samples, "fds", 20.0)[2] > 15
    assert growth(samples, "fds_less_pool", 20.0)[2] == 0.0


def test_result_file_has_table_command_revision_machine_and_plots(tmp_path: Path) -> None:
    cdf = plot_cdf(tmp_path / "setup_cdf.png", {"50 cps": [1.0, 2.0, 3.0], "empty": []}, title="t", xlabel="ms")
    line = plot_lines(tmp_path / "plots" / "cpu.png", [50, 100], {"cpu": [0.4, 0.3]}, title="t", xlabel="calls",
                      ylabel="%")
    for png in (cdf, line):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = markdown_table(["calls", "failed"], [[50, 0], [100, 2]])
    out = write_result(tmp_path / "echo.md", title="Echo", sections=[table], plots=[cdf, line],
                       command=".venv/bin/python benchmarks/bench_echo.py --calls 50 100", revision="abc123+dirty",
                       machine="test machine")
    text = out.read_text()
    assert text.startswith("# Echo\n")
    assert "Single run" in text
    assert "`.venv/bin/python benchmarks/bench_echo.py --calls 50 100`" in text
    assert "abc123+dirty" in text and "test machine" in text
    assert "| calls | failed |\n|---:|---:|\n| 50 | 0 |\n| 100 | 2 |" in text
    assert "](setup_cdf.png)" in text and "](plots/cpu.png)" in text


# ---------------------------------------------------------------------------------------------- wire capture


def _pcap(path: Path, packets: list[tuple[float, int, int, int, int]], *, rtcp_at: float | None = None) -> Path:
    """A little-endian pcap (Ethernet link, as tcpdump writes for lo) of RTP packets
    (time, src port, dst port, sequence number, timestamp), plus an RTCP SR when ``rtcp_at`` is given."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))

    def frame(when: float, src: int, dst: int, payload: bytes) -> None:
        udp = struct.pack("!HHHH", src, dst, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([127, 0, 0, 1]),
                         bytes([127, 0, 0, 1])) + udp
        data = b"\x00" * 12 + b"\x08\x00" + ip
        sec = int(when)
        out.extend(struct.pack("<IIII", sec, round((when - sec) * 1e6), len(data), len(data)) + data)

    for when, src, dst, seq, timestamp in packets:
        frame(when, src, dst, struct.pack("!BBHII", 0x80, 0, seq, timestamp, 1) + b"\xff" * 160)
    if rtcp_at is not None:
        frame(rtcp_at, 20000, 30000, struct.pack("!BBHI", 0x80, 200, 6, 1) + b"\x00" * 20)
    path.write_bytes(bytes(out))
    return path


def test_send_interval_jitter_is_the_departure_interval_against_the_timestamp_interval(tmp_path: Path) -> None:
    # stream A: 20 ms apart except one packet 3 ms late (two pairs off by 3 ms); stream B: a 1 s pause
    # (timestamps jump with it) then a gap in sequence numbers, which is no pair
    a = [(0.000, 20000, 30000, 10, 1000), (0.020, 20000, 30000, 11, 1160), (0.043, 20000, 30000, 12, 1320),
         (0.060, 20000, 30000, 13, 1480)]
    b = [(0.001, 20002, 30002, 65535, 0), (1.021, 20002, 30002, 0, 8160), (1.061, 20002, 30002, 2, 8480)]
    pcap = _pcap(tmp_path / "rtp.pcap", sorted(a + b), rtcp_at=0.030)
    jitter = sorted(send_interval_jitter(pcap))
    assert jitter == pytest.approx([0.0, 0.0, 0.003, 0.003], abs=2e-6)


def test_rtp_port_range_reads_the_gateway_config(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("rtp: {port_min: 21000, port_max: 21399}\n")
    assert rtp_port_range(config) == (21000, 21399)


def test_a_repeated_echo_step_reports_medians_and_the_worst_failures() -> None:
    runs = [EchoStep(100, up=100, cpu_core_pct=30.0, send_p99_ms=2.0, setup_ms=[4.0]),
            EchoStep(100, up=100, failed=2, cpu_core_pct=20.0, send_p99_ms=math.nan, setup_ms=[8.0]),
            EchoStep(100, up=99, cpu_core_pct=25.0, send_p99_ms=3.0, error="SIPp did not finish in time")]
    step = median_step(runs)
    assert step.cpu_core_pct == 25.0 and step.cpu_per_call_pct == 0.25
    assert step.send_p99_ms == 2.5  # a run without the figure does not count as zero
    assert (step.failed, step.up, step.error) == (2, 99, "SIPp did not finish in time")  # the worst of the runs
    assert sorted(step.setup_ms) == [4.0, 8.0]


def test_a_repeated_signalling_rate_reports_its_median_run() -> None:
    runs = [SignallingStep(300, 10, succeeded=2900, achieved_cps=290.0, cpu_pct=90.0, signals="sip_backlog"),
            SignallingStep(300, 10, succeeded=2500, failed=500, shed=500, achieved_cps=250.0, cpu_pct=95.0),
            SignallingStep(300, 10, succeeded=2950, achieved_cps=295.0, cpu_pct=80.0, signals="playout_lateness")]
    step = signalling_median([runs[1], runs[2], runs[0]])
    # the counts are the median run's (one run's consistent set), not a mix of runs
    assert (step.achieved_cps, step.succeeded, step.failed, step.shed) == (290.0, 2900, 0, 0)
    assert step.cpu_pct == 90.0 and step.signals == "playout_lateness,sip_backlog"
