"""Scale-out behind Kamailio: the shipped deploy/kamailio/ config in front of two `voicegw serve` instances.

Everything runs on 127.0.0.1: SIPp calls the ``echo`` number through Kamailio, whose dispatcher hashes the
Call-ID over both gateways, probes them with OPTIONS every second and fails an INVITE over to the other
instance on 503 or timeout. Record-Route keeps ACK and BYE on the instance that answered.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers.kamailio import KamailioProcess, start_kamailio
from tests.integration.harness import (
    BASE_CONFIG,
    SIPP_DIR,
    GatewayProcess,
    SippResult,
    free_port,
    free_rtp_range,
    run_sipp,
    sipp_binary,
    start_gateway,
)

CALLS = 200
RATE = 20  # calls per second: modest, so a loaded 2-core machine keeps up
SCENARIO = SIPP_DIR / "uac_echo_via_proxy.xml"  # answer, hold 2-3 s, BYE through the Route set
SIPP_TIMEOUT = 60


def _config(rtp_min: int, rtp_max: int, db: str) -> str:
    # Each instance has its own RTP ports and its own SQLite file, as on separate machines.
    return (
        BASE_CONFIG.replace("{RTP_MIN}", str(rtp_min)).replace("{RTP_MAX}", str(rtp_max))
        + f'storage: {{path: "{db}"}}\n'
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[KamailioProcess, GatewayProcess, GatewayProcess]]:
    a_min, a_max = free_rtp_range()
    b_min, b_max = free_rtp_range()  # another block: the two instances never contend for a port
    gw_a = start_gateway(tmp_path, _config(a_min, a_max, "a.sqlite3"), name="gw-a")
    gateways = [gw_a]
    kam: KamailioProcess | None = None
    try:
        gw_b = start_gateway(tmp_path, _config(b_min, b_max, "b.sqlite3"), name="gw-b")
        gateways.append(gw_b)
        kam = start_kamailio(
            tmp_path / "kamailio",
            free_port(),
            [f"sip:127.0.0.1:{gw.sip_port}" for gw in gateways],
            ping_interval=1,
            fr_timer_ms=1000,
            # One UDP worker relays the gateway's 180 and 200 in the order they came: with several, the 180
            # can reach SIPp after the 200, and SIPp (unlike a phone) aborts such a call.
            children=1,
        )
        yield kam, gw_a, gw_b
    finally:
        _stop_and_keep_logs(tmp_path, kam, gateways)


def _stop_and_keep_logs(tmp_path: Path, kam: KamailioProcess | None, gateways: list[GatewayProcess]) -> None:
    """Stop everything; keep the logs beside the SIPp traces for whoever reads a failure."""
    if kam is not None:
        kam.stop()
        (tmp_path / "kamailio.log").write_text("\n".join(kam.log()) + "\n")
    for gw in gateways:
        gw.stop()
        gw.config_path.with_suffix(".log").write_text("".join(json.dumps(line) + "\n" for line in gw.logs()))


def _sipp_through(kam: KamailioProcess, cwd: Path, calls: int = CALLS, rate: int = RATE) -> SippResult:
    cwd.mkdir(exist_ok=True)
    return run_sipp(
        ["-sf", str(SCENARIO), f"{kam.addr[0]}:{kam.addr[1]}", "-s", "echo", "-i", "127.0.0.1",
         "-m", str(calls), "-r", str(rate), "-l", "120",
         "-key", "rtp_port", str(free_port(also_tcp=False)), "-trace_err"],
        cwd=cwd,
        timeout=SIPP_TIMEOUT,
    )


def _explain(result: SippResult, kam: KamailioProcess, cwd: Path) -> str:
    errors = "".join(p.read_text(errors="replace")[-3000:] for p in sorted(cwd.glob("*_errors.log")))
    return (f"sipp exit {result.returncode} stats {result.stats}\n{result.stdout[-1500:]}\n{errors}\n"
            f"--- kamailio\n{kam.tail()}")


def _index_of(gw: GatewayProcess, event: str) -> int:
    lines = gw.logs()
    return next(i for i, line in enumerate(lines) if line.get("event") == event)


def test_two_instances_share_calls_and_one_drains_mid_run_without_a_failed_call(
    cluster: tuple[KamailioProcess, GatewayProcess, GatewayProcess], tmp_path: Path
) -> None:
    kam, gw_a, gw_b = cluster

    # Run 1: both instances healthy; the Call-ID hash spreads the calls over both.
    first = _sipp_through(kam, tmp_path / "run1")
    assert first.returncode == 0, _explain(first, kam, tmp_path / "run1")
    assert first.stats.get("SuccessfulCall(C)") == str(CALLS), first.stats
    assert first.stats.get("FailedCall(C)") == "0", first.stats
    took_a, took_b = len(gw_a.logs("call_incoming")), len(gw_b.logs("call_incoming"))
    assert took_a + took_b == CALLS, (took_a, took_b)
    # A hash over 200 Call-IDs splits about 100/100; 40 leaves room for chance, not for a stuck dispatcher.
    assert took_a >= 40 and took_b >= 40, (took_a, took_b)
    gw_a.wait_for_log("call_ended", count=took_a, timeout=10)
    gw_b.wait_for_log("call_ended", count=took_b, timeout=10)

    # Run 2: SIGTERM instance A while it holds calls. Its calls finish; new calls go to B.
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(_sipp_through, kam, tmp_path / "run2")
        gw_a.wait_for_log("call_incoming", count=took_a + 15, timeout=30)
        gw_a.proc.send_signal(signal.SIGTERM)
        # A's 503 takes it out of the set while A still runs (its calls last 2-3 s): either the next OPTIONS
        # probe (1 s interval) gets it, or an INVITE that raced the probe does and fails over to B.
        a_uri = f"sip:127.0.0.1:{gw_a.sip_port}"
        marked = kam.wait_for_log(f"voicegw instance {a_uri} down", f"{a_uri} failed (503)", timeout=10)
        a_was_running = gw_a.proc.poll() is None
        second = running.result(timeout=SIPP_TIMEOUT + 40)
    assert second.returncode == 0, _explain(second, kam, tmp_path / "run2")
    assert second.stats.get("SuccessfulCall(C)") == str(CALLS), second.stats
    assert second.stats.get("FailedCall(C)") == "0", second.stats

    assert a_was_running, f"A was taken out only after it exited, not for its 503: {marked}"
    # A drained with calls in progress, and every one of them ended by the caller's BYE, none by the drain.
    assert gw_a.proc.wait(timeout=40) == 0, gw_a.logs()[-10:]
    draining = gw_a.wait_for_log("gateway_draining")
    assert isinstance(draining["calls"], int) and draining["calls"] > 0, draining
    ended_a = gw_a.logs("call_ended")
    assert len(ended_a) == len(gw_a.logs("call_incoming")), (len(ended_a), len(gw_a.logs("call_incoming")))
    assert {line.get("reason") for line in ended_a} == {"customer-ended-call"}
    # No new call reached A once it was draining (503 to OPTIONS and INVITE sent them to B).
    after_drain = gw_a.logs()[_index_of(gw_a, "gateway_draining"):]
    assert [line for line in after_drain if line.get("event") == "call_incoming"] == []
    run2_a = len(gw_a.logs("call_incoming")) - took_a
    run2_b = len(gw_b.logs("call_incoming")) - took_b
    assert run2_a + run2_b == CALLS, (run2_a, run2_b)
    assert run2_b > run2_a, (run2_a, run2_b)
    gw_b.wait_for_log("call_ended", count=took_b + run2_b, timeout=10)
    assert {line.get("reason") for line in gw_b.logs("call_ended")} == {"customer-ended-call"}


@pytest.mark.parametrize("failure", ["refuses", "silent"])
def test_initial_invite_fails_over_to_the_next_instance(failure: str, tmp_path: Path) -> None:
    """The dispatcher has not probed yet (60 s interval): an INVITE hashed to an instance that answers 503
    (as a draining voicegw does) or does not answer at all is tried on the next one, and that instance is
    marked inactive; every call succeeds on the healthy gateway."""
    rtp_min, rtp_max = free_rtp_range()
    gw = start_gateway(tmp_path, _config(rtp_min, rtp_max, "gw.sqlite3"), name="gw")
    bad_port = free_port()
    refuser: subprocess.Popen[bytes] | None = None
    kam: KamailioProcess | None = None
    try:
        if failure == "refuses":
            refuser = subprocess.Popen(
                [sipp_binary(), "-sf", str(SIPP_DIR / "uas_503_draining.xml"), "-i", "127.0.0.1",
                 "-p", str(bad_port), "-nostdin", "-timeout", "60s"],
                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        kam = start_kamailio(tmp_path / "kamailio", free_port(),
                             [f"sip:127.0.0.1:{bad_port}", f"sip:127.0.0.1:{gw.sip_port}"],
                             ping_interval=60, fr_timer_ms=1000, children=1)
        result = _sipp_through(kam, tmp_path / "run", calls=20, rate=10)
        assert result.returncode == 0, _explain(result, kam, tmp_path / "run")
        assert result.stats.get("SuccessfulCall(C)") == "20", result.stats
        assert len(gw.logs("call_incoming")) == 20
        # Every INVITE sent to the bad instance was failed over; once the first failure marked it inactive,
        # no new call was sent there (calls already in flight to a silent one each wait for their timeout).
        code = "503" if failure == "refuses" else "408"
        lines = kam.log()
        sent_to_bad = [i for i, line in enumerate(lines) if line.endswith(f" to sip:127.0.0.1:{bad_port}")]
        failed = [i for i, line in enumerate(lines) if f"sip:127.0.0.1:{bad_port} failed ({code})" in line]
        assert failed and len(failed) == len(sent_to_bad), kam.tail()
        assert max(sent_to_bad) < failed[0], kam.tail()
    finally:
        if refuser is not None:
            refuser.terminate()
            refuser.wait(10)
        _stop_and_keep_logs(tmp_path, kam, [gw])
