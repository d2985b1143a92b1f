"""Load shedding past the knee (gateway.admission.LoadMonitor): each overload signal trips on a sustained
condition and not on one stall, the episode holds for ``overload_hold_seconds`` after the last bad observation,
and the playout scheduler feeds its per-tick lateness through ``on_tick``. A fake clock throughout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.admission import LoadMonitor, OverloadLimits, OverloadSignal, OverloadStarted
from gateway.config import SecurityConfig
from gateway.transport.playout import PlayoutScheduler

TICK = 0.02
BUFFER = 212992  # Linux's default net.core.rmem_default


def monitor(**limits: Any) -> LoadMonitor:
    return LoadMonitor(OverloadLimits(**limits))


def feed_ticks(m: LoadMonitor, start: float, lateness: list[float]) -> tuple[float, list[OverloadStarted]]:
    """One tick every 20 ms from ``start``; returns the next tick time and the episodes started."""
    started = []
    now = start
    for late in lateness:
        event = m.observe_playout_tick(late, 0, now)
        if event is not None:
            started.append(event)
        now += TICK
    return now, started


# ---------------------------------------------------------------- defaults


def test_defaults_come_from_the_security_config() -> None:
    limits = OverloadLimits.from_config(SecurityConfig())
    assert (limits.lag_threshold, limits.hold) == (0.1, 5.0)
    assert (limits.playout_late, limits.playout_late_share, limits.playout_window) == (0.02, 0.5, 50)
    assert limits.sip_backlog_fill == 0.5
    tuned = OverloadLimits.from_config(SecurityConfig(overload_playout_late_seconds=0.005,
                                                      overload_playout_late_share=0.2,
                                                      overload_sip_backlog_fill=0.8, overload_hold_seconds=2))
    assert (tuned.playout_late, tuned.playout_late_share, tuned.sip_backlog_fill, tuned.hold) == (0.005, 0.2, 0.8, 2)


# ---------------------------------------------------------------- playout lateness


def test_playout_sheds_when_most_ticks_of_a_second_leave_late_and_reports_the_share() -> None:
    m = monitor(hold=5.0)
    now, started = feed_ticks(m, 10.0, [0.002] * 50)  # a healthy second: 2 ms late
    assert started == [] and not m.overloaded(now)
    now, started = feed_ticks(m, now, [0.06] * 30)  # the 400-call picture: every send 60 ms late
    assert len(started) == 1  # one episode, reported once
    assert started[0].signal is OverloadSignal.PLAYOUT_LATENESS
    assert started[0].value == 25 / 50 and started[0].threshold == 0.5
    assert m.overloaded(now)


def test_playout_does_not_shed_on_one_stall_or_a_minority_of_late_ticks() -> None:
    m = monitor()
    # a GC pause: ten consecutive ticks 80 ms late, then back to normal
    now, started = feed_ticks(m, 0.0, [0.002] * 20 + [0.08] * 10 + [0.002] * 100)
    assert started == [] and not m.overloaded(now)
    # one late tick in three, for ten seconds: under the share
    now, started = feed_ticks(m, now, [0.03, 0.001, 0.001] * 170)
    assert started == [] and not m.overloaded(now)


def test_playout_skipped_ticks_count_as_late_even_when_the_send_itself_is_on_time() -> None:
    m = monitor()
    now = 0.0
    for _ in range(24):  # a loop that keeps falling more than max_catch_up ticks behind
        assert m.observe_playout_tick(0.0, 4, now) is None
        now += 5 * TICK
    event = m.observe_playout_tick(0.0, 4, now)
    assert event is not None and event.signal is OverloadSignal.PLAYOUT_LATENESS


def test_playout_episode_holds_after_the_last_late_tick_then_releases() -> None:
    m = monitor(hold=5.0)
    now, _ = feed_ticks(m, 0.0, [0.05] * 25)
    assert m.overloaded(now)
    now, started = feed_ticks(m, now, [0.001] * 50)  # recovered: the window drains within a second
    assert started == []
    # the window still held 25 late ticks of 50 at the 25th good tick (tick 49): the hold runs from there
    last_overloaded = 49 * TICK
    assert m.overloaded(last_overloaded + 4.9)
    assert not m.overloaded(last_overloaded + 5.1)


def test_playout_ticks_before_an_idle_gap_are_forgotten() -> None:
    m = monitor()
    now, started = feed_ticks(m, 0.0, [0.05] * 24)  # one short of tripping, then the last call ends
    assert started == []
    now += 30.0  # no calls: the scheduler stopped; a new call restarts it
    _, started = feed_ticks(m, now, [0.05] * 2)
    assert started == []


def test_playout_share_knob_sets_the_number_of_late_ticks() -> None:
    m = monitor(playout_late_share=0.1)
    _, started = feed_ticks(m, 0.0, [0.001] * 45 + [0.05] * 5)
    assert len(started) == 1


# ---------------------------------------------------------------- SIP receive backlog


def test_sip_backlog_sheds_when_the_receive_queue_stays_half_full() -> None:
    m = monitor(hold=5.0)
    now = 0.0
    for _ in range(20):  # normal load: a few datagrams waiting at each probe
        assert m.observe_sip_backlog(3 * 2304, BUFFER, 0, now) is None
        now += 0.1
    events = [m.observe_sip_backlog(BUFFER * 3 // 4, BUFFER, 0, now + i * 0.1) for i in range(5)]
    assert events[:4] == [None] * 4
    event = events[4]
    assert event is not None and event.signal is OverloadSignal.SIP_BACKLOG
    assert event.value == (BUFFER * 3 // 4) / BUFFER and event.threshold == 0.5


def test_sip_backlog_kernel_drops_count_as_full_samples() -> None:
    m = monitor()
    drops = 0
    started = []
    for i in range(10):
        drops += 7  # the queue overflows between probes although it reads half empty when sampled
        started.append(m.observe_sip_backlog(BUFFER // 4, BUFFER, drops, i * 0.1))
    assert [e is not None for e in started] == [False] * 5 + [True] + [False] * 4  # the first sample sets a base


def test_sip_backlog_ignores_drops_from_before_the_first_sample_and_one_burst() -> None:
    m = monitor()
    assert m.observe_sip_backlog(0, BUFFER, 1000, 0.0) is None  # drops before we looked
    assert m.observe_sip_backlog(BUFFER, BUFFER, 1010, 0.1) is None  # one burst filled it
    for i in range(2, 30):
        assert m.observe_sip_backlog(2304, BUFFER, 1010, i * 0.1) is None
    assert not m.overloaded(3.0)


def test_sip_backlog_releases_after_the_hold() -> None:
    m = monitor(hold=2.0)
    for i in range(5):
        m.observe_sip_backlog(BUFFER, BUFFER, 0, i * 0.1)
    assert m.overloaded(0.4)
    for i in range(5, 30):
        m.observe_sip_backlog(0, BUFFER, 0, i * 0.1)
    # the window of ten still held the five full samples at 0.9 s, the last overloaded observation
    assert m.overloaded(0.9 + 1.9)
    assert not m.overloaded(0.9 + 2.1)


def test_assistant_request_waits_do_not_trip_any_signal() -> None:
    """Calls ringing while their number's server picks an assistant (seconds each) hold no datagram in the SIP
    receive queue and no playout tick: the loop and the queue stay idle, so nothing sheds however many wait."""
    m = monitor()
    now = 0.0
    for _ in range(100):  # ten seconds with hundreds of INVITEs parked on a slow webhook
        assert m.observe_lag(0.001, now) is None
        assert m.observe_sip_backlog(0, BUFFER, 0, now) is None
        now += 0.1
    assert not m.overloaded(now)


# ---------------------------------------------------------------- one episode, any signal


def test_one_episode_whichever_signal_trips_and_the_hold_restarts_with_each_bad_observation() -> None:
    m = monitor(hold=5.0)
    for i in range(5):
        m.observe_lag(0.3, i * 0.1)
    assert m.overloaded(0.5)
    # the playout signal trips during the episode: no second start, but the hold runs from its last late tick
    _, started = feed_ticks(m, 1.0, [0.05] * 40)
    assert started == []
    assert m.overloaded(1.0 + 39 * TICK + 4.9)
    assert not m.overloaded(1.0 + 39 * TICK + 5.1)


# ---------------------------------------------------------------- the playout scheduler's hook


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Callable[..., object]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Any:
        self.timers.append((when, callback))
        return _Handle()

    def run_next(self, late: float = 0.0) -> None:
        self.timers.sort(key=lambda t: t[0])
        when, callback = self.timers.pop(0)
        self.now = max(self.now, when + late)
        callback()


class _Handle:
    def cancel(self) -> None:
        pass


class Silent:
    def prepare(self, tick: int, now: float) -> None:
        pass

    def send(self, tick: int) -> None:
        pass


def test_scheduler_reports_each_ticks_lateness_and_the_ticks_skipped_before_it() -> None:
    loop = FakeLoop()
    heard: list[tuple[float, int, float]] = []
    scheduler = PlayoutScheduler(loop, on_tick=lambda late, skipped, now: heard.append((late, skipped, now)))
    scheduler.add(Silent())
    loop.run_next()  # prepare tick 0
    loop.run_next(late=0.004)  # send tick 0, 4 ms late
    loop.run_next(late=0.21)  # prepare tick 1 fires 210 ms late: ten ticks skipped
    loop.run_next()  # send the tick it jumped to (5 ms late: its deadline had passed too)
    loop.run_next()
    loop.run_next()  # the next tick, on time
    assert [(round(late, 6), skipped) for late, skipped, _ in heard] == [(0.004, 0), (0.005, 10), (0.0, 0)]
    assert heard[-1][2] == loop.now  # the loop's clock, the one overloaded(now) is asked with
    assert scheduler.skipped == 10


def test_scheduler_feeding_a_monitor_sheds_when_every_tick_runs_late() -> None:
    loop = FakeLoop()
    m = monitor()
    started: list[OverloadStarted] = []

    def on_tick(late: float, skipped: int, now: float) -> None:
        event = m.observe_playout_tick(late, skipped, now)
        if event is not None:
            started.append(event)

    scheduler = PlayoutScheduler(loop, on_tick=on_tick)
    scheduler.add(Silent())
    for _ in range(40):  # healthy: sends on the grid
        loop.run_next()
        loop.run_next()
    assert started == [] and not m.overloaded(loop.now)
    for _ in range(25):  # every send phase 25 ms late
        loop.run_next()
        loop.run_next(late=0.025)
    assert [e.signal for e in started] == [OverloadSignal.PLAYOUT_LATENESS]
    assert m.overloaded(loop.now)
