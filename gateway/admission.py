"""Admission policy at the SIP edge: who may talk to us, how fast, and whether we take one more call.

Time comes in as ``now`` (the loop's monotonic clock); nothing here does I/O (the app's event-loop probe,
gateway.observability.loop_monitor, feeds :class:`LoadMonitor` through the UA). The UA asks
:meth:`AdmissionPolicy.check_request` before a request reaches the transaction layer, in the spirit of
Kamailio's pike module (per-source rate) and its secfilter (scanner User-Agents):

- a source over its token bucket gets ``503`` with ``Retry-After`` (RFC 3261 §21.5.4: "The server is
  temporarily unable to process the request due to a temporary overloading") for ``reject_seconds``, then its
  excess is dropped silently: a flooder that ignores Retry-After is not worth a response;
- a request whose User-Agent names a known scanner is dropped silently (answering tells it a SIP server is here);
- an address that failed Digest ``ban_failures`` times within ``ban_window`` is dropped silently for ``ban_seconds``;
- trusted sources (``security.trusted_sources`` and the trunks' hosts) are never rate-limited.

Memory is bounded: at most ``max_sources`` sources and as many bans are kept, least recently seen evicted first,
and a source idle for ``idle_seconds`` is forgotten.

Load shedding (:class:`LoadMonitor`): past the knee a new INVITE gets ``503`` + ``Retry-After`` (RFC 3261
§21.5.4) rather than every call degrading. Three signals, any one of them enough, each a share of bad observations
over a short window so that one stall does not shed:

- *event-loop lag*: the app's 100 ms probe wakes ``overload_lag_seconds`` late in 5 of the last 10 probes;
- *playout lateness*: the playout scheduler's send phase runs at least ``overload_playout_late_seconds`` behind
  its 20 ms grid (with the RTP pacer: hands its batch over that late; 0 when in time) (or follows skipped ticks) in ``overload_playout_late_share`` of the last 50 ticks (1 s). This is
  what callers hear: at 400 echo calls on one core the loop probe stayed under 50 ms while every tick's packets
  left 60-98 ms late;
- *SIP backlog*: the SIP UDP socket's kernel receive queue is ``overload_sip_backlog_fill`` full, or the kernel
  dropped a datagram for lack of room, in 5 of the last 10 probes. Chosen over an INVITE-to-answer delay, which
  an assistant-request webhook (seconds of legitimate ringing) or ``answer_delay`` lengthens without any load,
  and over a datagram-receipt-to-handling stamp in the process, which is near zero (the UA handles a datagram in
  the callback that reads it): past the signalling knee the queue builds in the kernel, in front of the reader
  (at 300 INVITE/s setups queued for seconds while the loop probe stayed under its threshold). A
  webhook wait never holds that queue: it happens in the call's task after the INVITE was read. The monitor
  gets the numbers; the transport reads them (Linux ``SO_MEMINFO``; elsewhere this signal is silent).

Shedding is proportional, not all-or-nothing (:class:`AdmitRate`, AIMD as in TCP congestion control, RFC 5681
§3.1, and SIP overload control, RFC 7339 §5.10 "rate-based"): an episode admits new INVITEs at ``admit_share`` of
the rate admitted in the seconds before it, multiplies that rate by ``admit_decrease`` for each control interval
in which a signal still trips, and adds ``admit_increase`` of it for each interval without one, so the gateway
keeps serving near its capacity and refuses only the excess. Refusing everything for the whole hold served 62 of
300 offered calls/s on a gateway that completes 250/s.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.config import SecurityConfig

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A gap this long between playout ticks means the scheduler sat idle (no calls): its old ticks are forgotten.
_PLAYOUT_IDLE_SECONDS = 1.0


class Action(enum.Enum):
    ACCEPT = "accept"
    REJECT = "503"  # answer 503 + Retry-After
    DROP = "drop"  # no answer at all


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    action: Action
    reason: str = ""  # rate_limit, scanner, banned
    # True on the first decision of a new state (source started being limited, switched to drops...): the
    # caller logs these only, never one line per dropped packet.
    notable: bool = False


ACCEPT = Decision(action=Action.ACCEPT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    rate: float = 50.0
    burst: int = 100
    reject_seconds: float = 10.0
    max_sources: int = 10000
    idle_seconds: float = 120.0
    ban_failures: int = 5
    ban_window: float = 60.0
    ban_seconds: float = 600.0

    @classmethod
    def from_config(cls, security: SecurityConfig) -> Limits:
        return cls(
            rate=security.rate, burst=security.burst, reject_seconds=security.reject_seconds,
            max_sources=security.max_sources, idle_seconds=security.source_idle_seconds,
            ban_failures=security.ban_failures, ban_window=security.ban_window_seconds,
            ban_seconds=security.ban_seconds,
        )


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; a request takes one."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    @property
    def full(self) -> bool:
        return self.tokens >= self.burst


@dataclass(slots=True)
class _Source:
    bucket: TokenBucket
    last_seen: float
    limited_since: float | None = None
    dropping: bool = False
    failures: deque[float] = field(default_factory=deque)


def parse_networks(texts: Iterable[str]) -> list[IpNetwork]:
    return [ipaddress.ip_network(text.strip(), strict=False) for text in texts]


def is_scanner(user_agent: str | None, patterns: Iterable[str]) -> bool:
    """Whether ``user_agent`` contains one of ``patterns`` (case-insensitive)."""
    if not user_agent:
        return False
    lowered = user_agent.lower()
    return any(p.lower() in lowered for p in patterns if p)


class AdmissionPolicy:
    """Per-source limits, bans, scanner filter and the trusted-source ACL (see the module docstring)."""

    def __init__(
        self,
        limits: Limits,
        *,
        trusted: Iterable[IpNetwork] = (),
        scanner_user_agents: Iterable[str] = (),
    ) -> None:
        self.limits = limits
        self._trusted: list[IpNetwork] = list(trusted)
        self._scanners = tuple(p.lower() for p in scanner_user_agents if p)
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._bans: OrderedDict[str, float] = OrderedDict()  # address -> banned until
        self._trusted_seen: dict[str, bool] = {}  # is_trusted per address: no ip_address() per request

    @classmethod
    def from_config(cls, security: SecurityConfig, trunk_hosts: Iterable[str] = ()) -> AdmissionPolicy:
        policy = cls(
            Limits.from_config(security),
            trusted=parse_networks(security.trusted_sources),
            scanner_user_agents=security.scanner_user_agents,
        )
        policy.trust(trunk_hosts)
        return policy

    # ----------------------------------------------------------------- ACL

    def trust(self, addresses: Iterable[str]) -> None:
        """Add addresses (IP literals; anything else is ignored) to the trusted set."""
        for address in addresses:
            try:
                self._trusted.append(ipaddress.ip_network(address.strip("[]"), strict=False))
            except ValueError:
                continue
        self._trusted_seen.clear()

    @property
    def has_trusted(self) -> bool:
        return bool(self._trusted)

    def is_trusted(self, address: str) -> bool:
        seen = self._trusted_seen.get(address)
        if seen is None:
            if len(self._trusted_seen) >= self.limits.max_sources:
                self._trusted_seen.clear()
            seen = self._trusted_seen[address] = self._match_trusted(address)
        return seen

    def _match_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self._trusted)

    # ----------------------------------------------------------------- per request

    def check_request(self, address: str, user_agent: str | None, now: float, *, in_dialog: bool = False) -> Decision:
        """The verdict on one request from ``address``. ``in_dialog``: it belongs to a live dialog of ours
        (never limited: a caller can always hang up)."""
        if self._scanners and is_scanner(user_agent, self._scanners):
            return Decision(action=Action.DROP, reason="scanner")
        trusted = self.is_trusted(address)
        if not trusted and self.is_banned(address, now):
            return Decision(action=Action.DROP, reason="banned")
        if trusted or in_dialog:
            return ACCEPT
        source = self._source(address, now)
        bucket = source.bucket
        if source.limited_since is not None:
            bucket.refill(now)
            if bucket.full:  # quiet long enough: a fresh start
                source.limited_since = None
                source.dropping = False
        if bucket.take(now):
            return ACCEPT
        notable = source.limited_since is None
        if source.limited_since is None:
            source.limited_since = now
        if now - source.limited_since < self.limits.reject_seconds:
            return Decision(action=Action.REJECT, reason="rate_limit", notable=notable)
        notable = not source.dropping
        source.dropping = True
        return Decision(action=Action.DROP, reason="rate_limit", notable=notable)

    def _source(self, address: str, now: float) -> _Source:
        self._expire(now)
        source = self._sources.get(address)
        if source is None:
            limits = self.limits
            source = _Source(TokenBucket(limits.rate, float(limits.burst), float(limits.burst), now), now)
            self._sources[address] = source
            while len(self._sources) > limits.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(address)
            source.last_seen = now
        return source

    def _expire(self, now: float) -> None:
        idle = self.limits.idle_seconds
        while self._sources:
            address, oldest = next(iter(self._sources.items()))
            if now - oldest.last_seen < idle:
                break
            del self._sources[address]
        while self._bans:
            address, until = next(iter(self._bans.items()))
            if until > now:
                break
            del self._bans[address]

    @property
    def tracked_sources(self) -> int:
        return len(self._sources)

    # ----------------------------------------------------------------- bans

    def record_auth_failure(self, address: str, now: float) -> bool:
        """A failed Digest answer from ``address``; True when this failure bans it."""
        if self.is_trusted(address):
            return False
        source = self._source(address, now)
        window = self.limits.ban_window
        failures = source.failures
        failures.append(now)
        while failures and now - failures[0] > window:
            failures.popleft()
        if len(failures) < self.limits.ban_failures:
            return False
        failures.clear()
        self._bans.pop(address, None)
        self._bans[address] = now + self.limits.ban_seconds  # bans expire in insertion order
        while len(self._bans) > self.limits.max_sources:
            self._bans.popitem(last=False)
        return True

    def is_banned(self, address: str, now: float) -> bool:
        until = self._bans.get(address)
        return until is not None and until > now

    def banned_count(self, now: float) -> int:
        self._expire(now)
        return len(self._bans)


class OverloadSignal(enum.Enum):
    """What told us the gateway is past its knee (the ``signal`` of ``overload_started``)."""

    EVENT_LOOP_LAG = "event_loop_lag"
    PLAYOUT_LATENESS = "playout_lateness"
    SIP_BACKLOG = "sip_backlog"


@dataclass(frozen=True, slots=True, kw_only=True)
class OverloadStarted:
    """A new overload episode: ``signal`` tripped with ``value`` (seconds of lag, share of late ticks, fill of the
    SIP receive queue) against ``threshold`` of the same unit."""

    signal: OverloadSignal
    value: float
    threshold: float


class _Window:
    """The last ``size`` yes/no observations with a running count: O(1) per observation, no scan per probe."""

    __slots__ = ("_recent", "count")

    def __init__(self, size: int) -> None:
        self._recent: deque[bool] = deque(maxlen=max(1, size))
        self.count = 0

    def push(self, bad: bool) -> int:
        recent = self._recent
        if len(recent) == recent.maxlen and recent[0]:
            self.count -= 1
        recent.append(bad)
        if bad:
            self.count += 1
        return self.count

    def clear(self) -> None:
        self._recent.clear()
        self.count = 0

    def __len__(self) -> int:
        return len(self._recent)


@dataclass(frozen=True, slots=True, kw_only=True)
class OverloadLimits:
    """When :class:`LoadMonitor` calls the gateway overloaded (``security.overload_*``)."""

    hold: float = 5.0
    # event loop: the 100 ms probe woke this late in late_samples of the last lag_window probes
    lag_threshold: float = 0.1
    lag_window: int = 10
    lag_late_samples: int = 5
    # playout: a send phase this late (or a tick after skipped ones) in this share of the last playout_window ticks
    playout_late: float = 0.02
    playout_late_share: float = 0.5
    playout_window: int = 50
    # SIP: the UDP receive queue this full (or a datagram dropped by the kernel) in most of the last probes
    sip_backlog_fill: float = 0.5
    sip_window: int = 10
    sip_late_samples: int = 5
    # proportional shedding (AdmitRate): the share of the admitted-INVITE rate measured over rate_window seconds
    # before an episode that it admits at first; each admit_interval still overloaded multiplies the rate by
    # admit_decrease, each calm one adds admit_increase of the measured rate (at least admit_floor a second).
    # Below admit_floor INVITEs a second nothing is admitted.
    admit_share: float = 0.9
    admit_decrease: float = 0.8
    admit_increase: float = 0.05
    admit_interval: float = 1.0
    admit_floor: float = 1.0
    rate_window: int = 3

    def __post_init__(self) -> None:
        if self.admit_interval <= 0:
            raise ValueError("admit_interval must be positive")

    @classmethod
    def from_config(cls, security: SecurityConfig) -> OverloadLimits:
        return cls(
            hold=security.overload_hold_seconds, lag_threshold=security.overload_lag_seconds,
            playout_late=security.overload_playout_late_seconds,
            playout_late_share=security.overload_playout_late_share,
            sip_backlog_fill=security.overload_sip_backlog_fill,
        )


class AdmitRate:
    """Admitted-INVITE rate during an overload episode, additive increase / multiplicative decrease (see the
    module docstring). Outside an episode it only counts admitted INVITEs per second over the last
    ``rate_window`` seconds; :meth:`start` turns that measure into a limit enforced by a token bucket of a
    quarter interval's worth (at least one), :meth:`step` adjusts it once per ``admit_interval``."""

    __slots__ = ("_base", "_bucket", "_counts", "_limits", "_next_step", "rate")

    def __init__(self, limits: OverloadLimits) -> None:
        self._limits = limits
        self._counts: deque[list[int]] = deque()  # [whole second, INVITEs admitted in it], oldest first
        self._base = 0.0  # the rate measured before the episode
        self.rate: float | None = None  # INVITEs a second while limiting, None outside an episode
        self._bucket: TokenBucket | None = None
        self._next_step = 0.0

    def _count(self, now: float) -> None:
        second = math.floor(now)
        counts = self._counts
        if counts and counts[-1][0] == second:
            counts[-1][1] += 1
            return
        counts.append([second, 1])
        while counts[0][0] < second - self._limits.rate_window:
            counts.popleft()

    def measured(self, now: float) -> float:
        """INVITEs admitted a second over the last ``rate_window`` whole seconds (the current one excluded)."""
        second = math.floor(now)
        window = max(1, self._limits.rate_window)
        return sum(n for s, n in self._counts if second - window <= s < second) / window

    def start(self, now: float) -> None:
        limits = self._limits
        self._base = self.measured(now)
        self._set(limits.admit_share * self._base, now)
        self._next_step = now + limits.admit_interval

    def stop(self) -> None:
        self.rate = None
        self._bucket = None

    def step(self, overloaded: bool, now: float) -> None:
        """One control interval ended: ``overloaded`` if a signal tripped in it."""
        limits = self._limits
        assert self.rate is not None
        if overloaded:
            rate = self.rate * limits.admit_decrease
        else:
            rate = max(self.rate, 0.0) + max(limits.admit_floor, limits.admit_increase * self._base)
        self._set(rate, now)

    def _set(self, rate: float, now: float) -> None:
        self.rate = rate
        if self._bucket is None:
            self._bucket = TokenBucket(rate, 1.0, 0.0, now)
        else:
            self._bucket.refill(now)
        self._bucket.rate = rate
        self._bucket.burst = max(1.0, rate * self._limits.admit_interval / 4)

    def due(self, now: float) -> bool:
        return self.rate is not None and now >= self._next_step

    def advance(self) -> float:
        """The control interval that :meth:`due` said ended; returns when it ended."""
        ended = self._next_step
        self._next_step += self._limits.admit_interval
        return ended

    def admit(self, now: float) -> bool:
        bucket = self._bucket
        if bucket is not None:
            assert self.rate is not None
            if self.rate < self._limits.admit_floor or not bucket.take(now):
                return False
        self._count(now)
        return True


class LoadMonitor:
    """Overload signals for load shedding (see the module docstring): while any signal holds and for ``hold``
    seconds after its last bad observation, new INVITEs are admitted at an adaptive rate (:class:`AdmitRate`)
    and the excess refused; calls in progress are never touched.

    Each signal counts bad observations over a short window, so one stall (start-up, a GC pause) does not shed:
    it is one late probe, one late or skipped playout tick, one full read of the SIP socket."""

    def __init__(self, limits: OverloadLimits) -> None:
        self.limits = limits
        self._lag = _Window(limits.lag_window)
        self._playout = _Window(limits.playout_window)
        # ticks late in the window for the playout signal to trip (at least one)
        self._playout_trip = max(1, math.ceil(limits.playout_late_share * limits.playout_window))
        self._playout_last: float | None = None
        self._sip = _Window(limits.sip_window)
        self._sip_drops: int | None = None
        self._overloaded_at: float | None = None
        self._admit = AdmitRate(limits)
        # per signal (lag, playout, SIP): [bad, all] observations in the current control interval, and the share
        # of bad ones that makes the interval overloaded (the signal's own trip share, judged per interval and
        # not over its sliding window, which still holds the seconds before the rate changed)
        self._interval = [[0, 0], [0, 0], [0, 0]]
        self._shares = (
            limits.lag_late_samples / max(1, limits.lag_window), limits.playout_late_share,
            limits.sip_late_samples / max(1, limits.sip_window),
        )

    @property
    def hold(self) -> float:
        return self.limits.hold

    @property
    def admit_rate(self) -> float | None:
        """INVITEs a second admitted during the current episode (None: no episode, no limit)."""
        return self._admit.rate

    def overloaded(self, now: float) -> bool:
        return self._overloaded_at is not None and now - self._overloaded_at <= self.limits.hold

    def admit_invite(self, now: float) -> bool:
        """Whether a new INVITE is admitted now (False: answer 503 + Retry-After). Outside an episode always
        True; each admitted INVITE counts towards the rate the next episode starts from."""
        self._sync(now)
        return self._admit.admit(now)

    def _sync(self, now: float) -> None:
        """Close the control intervals that ended before ``now``: decrease after one that tripped, increase
        after a calm one, end the episode once the hold ran out."""
        admit = self._admit
        while admit.due(now):
            ended = admit.advance()
            if not self.overloaded(ended):
                admit.stop()
                break
            admit.step(self._interval_overloaded(), ended)
            for counts in self._interval:
                counts[0] = counts[1] = 0
        if admit.rate is not None and not self.overloaded(now):
            admit.stop()

    def _trip(self, signal: OverloadSignal, value: float, threshold: float, now: float) -> OverloadStarted | None:
        self._sync(now)
        started = not self.overloaded(now)
        self._overloaded_at = now
        if started:
            self._admit.start(now)
            for counts in self._interval:
                counts[0] = counts[1] = 0
        return OverloadStarted(signal=signal, value=value, threshold=threshold) if started else None

    def _interval_overloaded(self) -> bool:
        pairs = zip(self._interval, self._shares, strict=True)
        return any(all_ > 0 and bad >= share * all_ for (bad, all_), share in pairs)

    def _note(self, signal: int, bad: bool, now: float) -> None:
        """One observation of ``signal`` (index into self._interval) during an episode."""
        if self._admit.rate is None:
            return
        self._sync(now)
        counts = self._interval[signal]
        counts[1] += 1
        if bad:
            counts[0] += 1

    def observe_lag(self, lag: float, now: float) -> OverloadStarted | None:
        """One event-loop probe sample (seconds late); the new episode when this sample starts one."""
        limits = self.limits
        bad = lag >= limits.lag_threshold
        self._note(0, bad, now)
        if self._lag.push(bad) < limits.lag_late_samples:
            return None
        return self._trip(OverloadSignal.EVENT_LOOP_LAG, lag, limits.lag_threshold, now)

    def observe_playout_tick(self, lateness: float, skipped: int, now: float) -> OverloadStarted | None:
        """One playout tick: how late its send phase ran (seconds) and how many grid ticks were skipped just
        before it (each skipped tick is a packet every call did not send). O(1): called 50 times a second."""
        limits = self.limits
        if self._playout_last is not None and now - self._playout_last > _PLAYOUT_IDLE_SECONDS:
            self._playout.clear()  # the scheduler was idle (no calls): the old ticks say nothing about now
        self._playout_last = now
        bad = skipped > 0 or lateness >= limits.playout_late
        self._note(1, bad, now)
        late = self._playout.push(bad)
        if late < self._playout_trip:
            return None
        return self._trip(OverloadSignal.PLAYOUT_LATENESS, late / len(self._playout), limits.playout_late_share, now)

    def observe_sip_backlog(self, queued: int, capacity: int, drops: int, now: float) -> OverloadStarted | None:
        """One sample of the SIP UDP socket's kernel receive queue: bytes ``queued`` of ``capacity``, and the
        kernel's count of datagrams it ``drops`` because the queue was full (since the socket opened)."""
        limits = self.limits
        fill = queued / capacity if capacity > 0 else 0.0
        dropped = self._sip_drops is not None and drops > self._sip_drops
        self._sip_drops = drops
        bad = dropped or fill >= limits.sip_backlog_fill
        self._note(2, bad, now)
        if self._sip.push(bad) < limits.sip_late_samples:
            return None
        return self._trip(OverloadSignal.SIP_BACKLOG, fill, limits.sip_backlog_fill, now)


@dataclass(slots=True)
class CallRate:
    """New inbound calls per second (``security.max_calls_per_second``): a token bucket of one second's worth."""

    bucket: TokenBucket | None

    @classmethod
    def per_second(cls, rate: float | None, now: float) -> CallRate:
        if rate is None:
            return cls(None)
        return cls(TokenBucket(rate, max(1.0, rate), max(1.0, rate), now))

    def admit(self, now: float) -> bool:
        return self.bucket is None or self.bucket.take(now)
