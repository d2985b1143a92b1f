"""Proportional load shedding (gateway.admission.AdmitRate through LoadMonitor.admit_invite): past the knee the
gateway keeps admitting new INVITEs near its capacity and refuses only the excess, instead of refusing every
INVITE for the whole hold. A simulated gateway on a fake clock: INVITEs arrive at the offered rate into a bounded
receive queue, the gateway works through it at a fixed capacity (an admitted call costs one unit, a 503 a
fraction of one) and the queue's fill feeds the SIP backlog signal every 100 ms, as the transport does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.admission import LoadMonitor, OverloadLimits

DT = 0.002
PROBE = 0.1
QUEUE = 200  # INVITEs the kernel receive queue holds


@dataclass
class Run:
    monitor: LoadMonitor
    admitted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    drops: int = 0

    def admitted_per_second(self, start: float, end: float) -> float:
        return sum(1 for t in self.admitted if start <= t < end) / (end - start)


def simulate(
    offered: float, capacity: float, seconds: float, *, refuse_cost: float = 0.3, warm_up: float = 5.0,
    stall: tuple[float, float] | None = None, **limits: Any,
) -> Run:
    """``warm_up`` seconds at 200 INVITEs/s (below capacity), then ``offered``; ``stall``: (from, to) in which the
    gateway processes nothing (a GC pause, a blocked loop)."""
    run = Run(LoadMonitor(OverloadLimits(**limits)))
    queued = 0
    arrivals = budget = 0.0
    next_probe = 0.0
    for i in range(int(seconds / DT)):
        now = i * DT
        arrivals += (offered if now >= warm_up else 200.0) * DT
        while arrivals >= 1.0:
            arrivals -= 1.0
            if queued < QUEUE:
                queued += 1
            else:
                run.drops += 1
        if stall is None or not stall[0] <= now < stall[1]:
            budget = min(budget + capacity * DT, 2.0)
            while queued and budget > 0:
                queued -= 1
                if run.monitor.admit_invite(now):
                    budget -= 1.0
                    run.admitted.append(now)
                else:
                    budget -= refuse_cost
                    run.refused.append(now)
        if now >= next_probe:
            run.monitor.observe_sip_backlog(queued, QUEUE, run.drops, now)
            next_probe += PROBE
    return run


def sustainable(offered: float, capacity: float, refuse_cost: float = 0.3) -> float:
    """The most calls a second the simulated gateway can admit while answering the rest with 503."""
    return (capacity - refuse_cost * offered) / (1.0 - refuse_cost)


def test_below_the_knee_nothing_is_refused() -> None:
    run = simulate(240, 250, 20)
    assert not run.refused and run.drops == 0
    assert run.monitor.admit_rate is None


@pytest.mark.parametrize("offered", [300, 400])
def test_past_the_knee_the_admitted_rate_converges_near_capacity(offered: int) -> None:
    run = simulate(offered, 250, 40)
    best = sustainable(offered, 250)
    served = run.admitted_per_second(20, 40)
    assert 0.85 * best <= served <= best, (served, best)
    assert run.refused, "the excess is refused"
    assert all(t >= 5.0 for t in run.refused)
    # the queue never overflows: every INVITE gets an answer (no timeouts)
    assert run.drops == 0


def test_a_single_stall_sheds_little() -> None:
    """A 0.6 s stall at 200/s fills the queue past the threshold for a few probes: an episode starts, but it
    admits most INVITEs (all-or-nothing refused all of them for the hold: 1000 calls)."""
    run = simulate(200, 250, 15, stall=(6.0, 6.6))
    assert run.refused, "the stall did start an episode"
    assert len(run.refused) < 0.1 * (len(run.admitted) + len(run.refused))
    assert run.drops == 0


def test_the_rate_decreases_while_overloaded_and_recovers_when_calm() -> None:
    m = LoadMonitor(OverloadLimits(hold=5.0, admit_share=0.9, admit_decrease=0.5, admit_increase=0.1))
    now = 0.0
    for _ in range(300):  # 100 INVITEs a second admitted for 3 s
        assert m.admit_invite(now)
        now += 0.01
    for _ in range(5):
        m.observe_lag(0.5, now)
        now += 0.1
    assert m.admit_rate == pytest.approx(90.0)  # 0.9 of the measured 100/s
    for _ in range(10):  # still lagging through the first control interval
        m.observe_lag(0.5, now)
        now += 0.1
    m.admit_invite(now)
    assert m.admit_rate == pytest.approx(45.0)
    for _ in range(20):  # calm: +10 % of the measured rate each second, within the hold
        m.observe_lag(0.0, now)
        now += 0.1
    m.admit_invite(now)
    assert m.admit_rate == pytest.approx(65.0)
    now += 10.0  # the hold ran out: no limit any more
    assert m.admit_invite(now) and m.admit_rate is None


def test_an_episode_without_new_calls_before_it_admits_none() -> None:
    """Media overload with no INVITE in the seconds before: every new call would add to it; below one call a
    second (admit_floor) nothing is admitted until calm intervals raise the rate."""
    m = LoadMonitor(OverloadLimits(playout_late_share=0.02, hold=60.0))
    assert m.admit_invite(0.0)
    now = 1.0
    started = m.observe_playout_tick(0.05, 0, now)
    assert started is not None
    refused = 0
    for _ in range(250):  # 5 s of late ticks, an INVITE every 100 ms
        m.observe_playout_tick(0.05, 0, now)
        if now % 0.1 < 0.02:
            refused += not m.admit_invite(now)
        now += 0.02
    assert not any(m.admit_invite(now + k * 0.01) for k in range(50))
    assert refused > 0


def test_limits_reject_a_zero_control_interval() -> None:
    with pytest.raises(ValueError):
        OverloadLimits(admit_interval=0.0)
