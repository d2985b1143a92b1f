"""The one composition root: builds the gateway from a config and runs it until SIGINT/SIGTERM.

SIGHUP re-reads the config file (gateway.reload): new numbers, assistants and trunks apply to calls that arrive
afterwards, calls in progress are not touched.

SIGTERM drains: OPTIONS and new INVITEs get 503, calls in progress continue up to the grace period, then
are ended with a BYE; trunk registrations are removed (REGISTER with Expires: 0) before exit. The HTTP API
answers throughout the drain (``/readyz`` says 503) and stops after the calls; the store closes last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.api import ApiServer, CallRecorder, create_app
from gateway.calls import CallManager
from gateway.config import GatewayConfig
from gateway.observability.logging import configure_logging, get_logger
from gateway.observability.loop_monitor import monitor_event_loop
from gateway.observability.metrics import Metrics
from gateway.pipeline.factory import ProviderPool
from gateway.registration import Registrations
from gateway.reload import Reloader
from gateway.store import Store, StoreError
from gateway.transport.pacer import Pacer
from gateway.transport.playout import PlayoutScheduler
from gateway.ua import AnnouncedAddressError, UserAgent
from gateway.webhooks import Webhooks

DRAIN_GRACE_SECONDS = 30.0
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Allocations between two young-generation collections (CPython default 700): a call set-up allocates
# thousands of short-lived objects, and every young collection that runs adds to the count that triggers a
# full one (which walks every live SIP transaction held for Timer J).
GC_YOUNG_THRESHOLD = 10_000
GC_PAUSE_LOG = 0.02  # a collection at least this long is logged (gc_pause): a playout tick's worth of standstill
# Seconds a thread may hold the GIL while another waits for it (CPython default 0.005), with the RTP pacer.
PACER_SWITCH_INTERVAL = 0.001
# How long before each 20 ms deadline the calls' frames are prepared: 5 ms. Handed to the pacer, a batch must
# reach it before its deadline even when the prepare timer itself ran late behind a burst of received packets
# (one from every call, ~3 ms at 400 calls): the scheduler then prepares 10 ms ahead until 10 s of ticks would
# have made it at 5 ms again (the shorter lead leaves less audio to play out after a barge-in).
SEND_LEAD = 0.005
PACED_MAX_LEAD = 0.010


def ephemeral_overlap(port_min: int, port_max: int, source: Path = EPHEMERAL_PORTS) -> tuple[int, int] | None:
    """The part of the RTP range inside the kernel's ephemeral port range, or None. Any outgoing connection
    of any process (webhooks, provider sockets, a sidecar) may hold a port there, and a call that draws it
    is refused with 503; operators should move one range or the other."""
    try:
        low, high = (int(v) for v in source.read_text().split()[:2])
    except (OSError, ValueError):
        return None
    start, end = max(port_min, low), min(port_max, high)
    return (start, end) if start <= end else None


@dataclass
class Gateway:
    """The running pieces, for tests and the API: built by :func:`serve`."""

    config: GatewayConfig
    metrics: Metrics
    ua: UserAgent
    calls: CallManager
    registrations: Registrations
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    drain_grace: float = DRAIN_GRACE_SECONDS
    webhooks: Webhooks | None = None
    store: Store | None = None
    api: ApiServer | None = None

    def request_stop(self, *, drain: bool = True) -> None:
        if not drain:
            self.drain_grace = 0.0
        self.stop_event.set()


async def serve(config: GatewayConfig, *, ready: asyncio.Future[Gateway] | None = None) -> None:
    """Run the gateway until ``request_stop``; ``ready`` receives the Gateway once sockets are bound."""
    log = get_logger("app")
    metrics = Metrics()
    async with asyncio.TaskGroup() as tasks:
        ua = UserAgent(config, metrics, tasks)
        pacer = Pacer.create(asyncio.get_running_loop())
        playout = PlayoutScheduler(asyncio.get_running_loop(), metrics=metrics, precise_clock=time.monotonic,
                                   on_tick=ua.on_playout_tick, pacer=pacer, lead=SEND_LEAD,
                                   max_lead=PACED_MAX_LEAD if pacer is not None else None)
        providers = ProviderPool(config.providers)
        providers.warm()
        calls = CallManager(config, ua, metrics, tasks, playout=playout, providers=providers)
        registrations = Registrations(config, ua, metrics, tasks)
        # Server messages: the outbox lives in the storage file; the dispatcher watches every call.
        webhooks = Webhooks.open(config, metrics)
        calls.observers.append(webhooks.dispatcher)
        # Assistants created over the API and call records: open before the first INVITE can arrive.
        store = Store(config.storage.path)
        try:
            await store.open()
        except StoreError as exc:
            log.error("store_open_failed", path=config.storage.path, error=str(exc))
            webhooks.outbox.close()
            raise
        recorder = CallRecorder(store)
        calls.assistant_store = store
        calls.observers.append(recorder)
        gateway = Gateway(config=config, metrics=metrics, ua=ua, calls=calls, registrations=registrations,
                          webhooks=webhooks, store=store)
        try:
            addr = await ua.start()
        except OSError as exc:
            event = "announced_address_unknown" if isinstance(exc, AnnouncedAddressError) else "sip_bind_failed"
            log.error(event, listen=config.sip.listen, error=str(exc))
            webhooks.outbox.close()
            await store.close()
            raise
        app = create_app(calls, store, metrics=metrics, recorder=recorder, api_key=config.http.api_key,
                         is_ready=lambda: not ua.draining, is_draining=lambda: ua.draining)
        try:
            api = ApiServer(app, config.http.listen)
        except OSError as exc:
            log.error("http_bind_failed", listen=config.http.listen, error=str(exc))
            webhooks.outbox.close()
            await ua.close()
            await store.close()
            raise
        gateway.api = api
        api_task = tasks.create_task(api.serve())
        tasks.create_task(webhooks.run())
        loop_probe = tasks.create_task(monitor_event_loop(metrics, clock=ua.now, on_lag=ua.on_loop_probe))
        log.info(
            "gateway_started",
            sip=f"{addr[0]}:{addr[1]}",
            announced=f"{ua.announced[0]}:{ua.announced[1]}",
            http=f"{api.address[0]}:{api.address[1]}",
            rtp_ports=f"{config.rtp.port_min}-{config.rtp.port_max}",
            numbers=len(config.numbers),
            trunks=len(config.trunks),
        )
        for warning in config.warnings:
            log.warning("config_warning", detail=warning)
        overlap = ephemeral_overlap(config.rtp.port_min, config.rtp.port_max)
        if overlap is not None:
            log.warning(
                "rtp_ports_overlap_ephemeral",
                overlap=f"{overlap[0]}-{overlap[1]}",
                detail="calls drawing a port another socket holds are refused with 503: move rtp.port_min/max "
                "outside net.ipv4.ip_local_port_range (or narrow that range)",
            )
        registrations.start()
        if ready is not None and not ready.done():
            ready.set_result(gateway)
        await gateway.stop_event.wait()
        log.info("gateway_draining", calls=len(calls.calls), grace=gateway.drain_grace)
        await calls.drain(gateway.drain_grace)
        await webhooks.stop()  # after the calls: their end-of-call reports are in the outbox by now
        api.stop()  # after the calls too: /readyz said 503 and GET /call answered during the drain
        await api_task
        loop_probe.cancel()
        playout.close()
        await registrations.stop()
        await providers.aclose()
        await ua.close()
        await store.close()  # last: the released calls' records are written by now
        log.info("gateway_stopped")


def _settle_garbage_collector(started: asyncio.Future[Gateway]) -> None:
    """Once the gateway has started (in the ``voicegw serve`` process only: the settings are process-wide), what
    start-up built (modules, config, schemas, clients) lives as long as the process: it is moved out of the
    collector's reach, so that a full collection walks only what calls allocated (one walked every object and
    stalled the loop up to 0.3 s at 200 setups/s), and young collections run every GC_YOUNG_THRESHOLD
    allocations.

    The collection after the freeze resets a baseline: CPython runs a full collection only once the objects
    promoted to the oldest generation since the last one exceed a quarter of what that one left there, and
    before the freeze that was every start-up object (~10^5), which now never takes part. Collecting the
    emptied generation sets it to what calls allocate. (Full collections are still at least 100 young ones
    apart, ~8 minutes at 90 conversational calls: nothing of an ended call should wait for one, see
    ``ConversationSession.release``.)"""
    if started.cancelled() or started.exception() is not None:
        return
    gc.collect()
    gc.freeze()
    gc.collect()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class GcTimer:
    """Times every garbage collection (a ``gc.callbacks`` entry): ``voicegw_gc_pause_seconds`` by generation, and
    a ``gc_pause`` line for one that held the process GC_PAUSE_LOG or longer (the loop and the media stood still:
    the cause of a playout or loop-lag spike that no profile of the loop shows)."""

    def __init__(self, metrics: Metrics, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self._observe = [metrics.gc_pause_seconds.labels(str(g)).observe for g in range(3)]
        self._clock = clock
        self._started = 0.0
        self._log = get_logger("app")

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        pause = self._clock() - self._started
        generation = info.get("generation", 2)
        self._observe[min(max(generation, 0), 2)](pause)
        if pause >= GC_PAUSE_LOG:
            self._log.info("gc_pause", generation=generation, ms=round(1000 * pause, 1),
                           collected=info.get("collected", 0))


def _time_garbage_collections(started: asyncio.Future[Gateway]) -> None:
    """``voicegw serve`` only (gc.callbacks are process-wide): a :class:`GcTimer` on the gateway's metrics."""
    if started.cancelled() or started.exception() is not None:
        return
    gc.callbacks.append(GcTimer(started.result().metrics))


def _settle_switch_interval(started: asyncio.Future[Gateway]) -> None:
    """With the RTP pacer (``voicegw serve`` process only: process-wide), the pacer thread needs the GIL briefly
    once per tick, between its batch being handed over and the tick's deadline (PACED_MAX_LEAD ahead at most): a busy
    loop thread must yield it sooner than CPython's default 5 ms switch interval."""
    if started.cancelled() or started.exception() is not None:
        return
    playout = started.result().calls.playout
    if playout is not None and playout.pacer is not None:
        sys.setswitchinterval(PACER_SWITCH_INTERVAL)


def run(config: GatewayConfig, config_path: str | Path | None = None) -> int:
    """Entry point of ``voicegw serve``: uvloop where available, SIGINT/SIGTERM wired to a graceful stop and
    SIGHUP to a reload of ``config_path`` (None: the embedded default config)."""
    configure_logging(config.log.level, levels=config.log.levels, log_format=config.log.format)
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Gateway] = loop.create_future()
        ready.add_done_callback(_settle_garbage_collector)
        ready.add_done_callback(_settle_switch_interval)
        ready.add_done_callback(_time_garbage_collections)
        server = asyncio.ensure_future(serve(config, ready=ready))
        stop_requests = 0

        def on_signal(sig: signal.Signals) -> None:
            nonlocal stop_requests
            stop_requests += 1
            if ready.done():
                # First signal drains gracefully; a second one stops at once.
                ready.result().request_stop(drain=stop_requests == 1 and sig is signal.SIGTERM)
            else:
                server.cancel()

        reloads: set[asyncio.Task[bool]] = set()
        reloader: Reloader | None = None

        def on_reload() -> None:
            nonlocal reloader
            if not ready.done():
                get_logger("app").warning("config_reload_skipped", reason="not started")
                return
            if reloader is None:
                reloader = Reloader(ready.result(), config_path)
            task = loop.create_task(reloader.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, on_reload)
        with contextlib.suppress(asyncio.CancelledError):
            await server

    failed = False
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())
    except* (OSError, StoreError):
        failed = True  # already logged (sip_bind_failed, announced_address_unknown, http_bind_failed, store_open_failed)
    return 1 if failed else 0
