"""The composition root: config → journal, desk, engine, IIF server; run until SIGTERM, then drain.

Shutdown (SPEC.md, ``mss run``): on SIGTERM or SIGINT mss stops taking requests (the IIF listener
closes; REQUESTs on open connections get ``code=fail``), lets calls in progress run for up to
``drain_grace`` seconds, then releases the rest, sends every RESPONSE and exits 0. A second signal
releases at once.

Operations (docs/operations.md): ``[metrics] listen`` serves ``/metrics`` and ``/healthz``
(:mod:`mss.aio.metrics`); ``[control] socket`` answers ``mss status``, ``calls`` and ``hangup``
(:mod:`mss.aio.control`); under systemd the service manager hears ``READY=1`` once mss listens and
the first REGISTER is answered (at once in server-to-server mode), ``STOPPING=1`` when the drain
begins, a ``STATUS=`` line every :data:`STATUS_INTERVAL` seconds and ``WATCHDOG=1`` when the unit
asks for it (:mod:`mss.aio.sdnotify`). SIGHUP re-reads the config file: ``[log] level`` and the
``[peer.NAME]`` limits of the peers listed take effect at once; any other change is logged as
needing a restart.

Workers (``[callback] workers`` > 1): ``mss run`` is then a supervisor (:mod:`mss.aio.supervisor`)
and each worker a :class:`Service` with ``worker=i`` and its share of the config
(:func:`mss.workers.worker_config`): the IIF listeners take SO_REUSEPORT, the journal is shared (its
rows name their worker), and every :data:`~mss.desk.OWED_POLL_INTERVAL` seconds the desk looks for
RESPONSEs other workers kept for the peers connected here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from typing import Protocol

import uvloop

from mss import __version__
from mss.aio import iif_server, sip_transport
from mss.aio.calls import CallEngine
from mss.aio.commit_pacer import CommitPacer
from mss.aio.control import ControlServer
from mss.aio.iif_server import IIFServer
from mss.aio.loop_probe import LoopProbe
from mss.aio.metrics import MetricsServer, ServiceView
from mss.aio.sdnotify import Notifier
from mss.config import Config, PeerServer, check
from mss.control import ControlError, ControlRequest, StatusInfo, encode_answer
from mss.desk import OWED_POLL_INTERVAL, CallbackDesk, Engine
from mss.errors import JournalError, MssError
from mss.journal import PRUNE_BATCH, Journal, JournalStore
from mss.load import LoadGauge
from mss.workers import worker_config

__all__ = ["Service", "run"]

log = logging.getLogger("mss")

#: Seconds between journal heartbeats: the talk time a crash may cost a RESPONSE, at most.
HEARTBEAT_INTERVAL = 1.0

#: Seconds released calls get to send their BYEs and RESPONSEs before mss exits anyway.
RELEASE_WAIT = 10.0

#: Seconds the last RESPONSEs get to leave the socket buffers before the connections close.
FLUSH_WAIT = 2.0

#: Seconds a stop waits for the journal's commits in flight (a database server's answer) before it
#: goes on without writing the answers that wait for them.
SETTLE_WAIT = 5.0

#: Seconds between two retention passes at most; shorter for a keep_days of minutes (tests, soaks).
PRUNE_INTERVAL = 60.0

#: Shortest time between two retention passes.
PRUNE_MIN_INTERVAL = 0.5

#: Seconds between two batches of one retention pass: REQUESTs are served in between.
PRUNE_PAUSE = 0.05

#: Young-generation threshold of the cyclic garbage collector: CPython's default, on purpose. A young
#: collection's pause grows with it (measured at 150 callbacks/s: 700 -> under 1 ms; 20,000 -> up to
#: 25 ms), and a larger one also fills the middle generation faster (5,000 -> a 53 ms collection of it).
GC_GEN0_THRESHOLD = 700

#: Young collections between two collections of the middle generation (CPython's default; under 10 ms
#: measured at 150 callbacks/s and at 2,000 callbacks in progress).
GC_GEN1_THRESHOLD = 10

#: Middle-generation collections before a full one: high enough that the collector never starts one
#: by itself. A full collection scans every live object and, the call path making no cycles, frees
#: nothing: 180-370 ms measured at 100-150 callbacks/s and at 2,000 callbacks in progress before
#: start-up's objects were frozen; 20 ms for the SIP and call-flow objects of 2,000 bridged
#: callbacks alone after.
GC_GEN2_THRESHOLD = 1_000_000_000

#: Seconds between two looks at whether a full collection is due (run on the loop, see :class:`Service`).
GC_FULL_CHECK = 30.0

#: Callbacks in progress at most for a full collection to run: it then scans little.
GC_FULL_IDLE_CALLS = 20

#: Seconds after which a full collection runs even when mss is never that idle: rare cycles (an
#: exception kept with its traceback, a library's) are still freed, at the price of one stall.
GC_FULL_MAX_INTERVAL = 3600.0

#: Seconds READY=1 waits at most for the first REGISTER's answer (its transaction times out after
#: 64·T1 = 32 s, and that counts as an answer too).
READY_WAIT = 40.0

#: Seconds between two STATUS= lines to the service manager (``systemctl status`` shows the last).
STATUS_INTERVAL = 5.0

#: The config sections behind each field of :class:`~mss.config.Config`, for the reload's log line.
_SECTIONS = {"callback": "[callback]", "sip": "[sip]", "external_line": "[external_line]", "rtp": "[rtp]",
             "peer_servers": "[peer_servers] / [peer.*]", "journal": "[journal]",
             "operations": "[metrics] / [control] / [log] format"}

#: File descriptors one callback holds: the relay's 2 legs × (2 RTP sockets + 1 RTCP socket).
FDS_PER_CALLBACK = 6

#: Descriptors of the process itself: stdio, the event loop, the relay's ring and wake-up, the IIF and
#: SIP listening sockets, the journal (database, WAL, shared memory), a few for libraries.
FDS_BASE = 64

#: Descriptors kept for everything but the callbacks: the process itself, and every IIF and SIP TCP
#: connection the limits allow.
FDS_RESERVED = FDS_BASE + iif_server.MAX_CONNECTIONS + sip_transport.MAX_CONNECTIONS


def _addresses(config: Config) -> list[tuple[str, str, int | None]]:
    """Who the peers are (name, host, port): a reload may change their limits, not these."""
    return [(p.name, p.host, p.port) for p in config.peer_servers]


def _limits(peer: PeerServer) -> str:
    """A peer's limits for the reload's log line."""
    calls = "-" if peer.max_calls is None else str(peer.max_calls)
    rate = "-" if peer.max_rate is None else f"{peer.max_rate:g}/s"
    return f"{peer.name}: max_calls {calls}, max_rate {rate}, events {'yes' if peer.events else 'no'}"


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def callbacks_within(nofile: int) -> int:
    """Concurrent callbacks the open-file limit ``nofile`` leaves room for."""
    if nofile == resource.RLIM_INFINITY:
        return 1 << 30
    return max(0, (nofile - FDS_RESERVED) // FDS_PER_CALLBACK)


def effective_max_calls(config: Config) -> int:
    """[callback] max_calls, lowered to what the open-file limit allows (said in the log).

    Raises :class:`MssError` when the limit leaves room for no callback at all.
    """
    wanted = config.callback.max_calls
    nofile = raise_nofile_limit()
    room = callbacks_within(nofile)
    if room < 1:
        raise MssError(
            f"the open-file limit (RLIMIT_NOFILE {nofile}) leaves no room for a callback: mss keeps "
            f"{FDS_RESERVED} descriptors for connections and itself and needs {FDS_PER_CALLBACK} a callback"
        )
    if room < wanted:
        log.warning(
            "max_calls lowered from %d to %d: the open-file limit (RLIMIT_NOFILE %d) holds %d descriptors "
            "for callbacks at %d each after %d kept for connections and mss itself",
            wanted, room, nofile, nofile - FDS_RESERVED, FDS_PER_CALLBACK, FDS_RESERVED,
        )
        return room
    return wanted


class ServiceEngine(Engine, Protocol):
    """An engine with a lifetime: opened before the IIF server starts, closed after it stops."""

    async def open(self) -> None:
        """Bind sockets, start registering, start the relay."""
        ...

    async def close(self) -> None:
        """Release what is left and free every resource."""
        ...


EngineFactory = Callable[[Config, CallbackDesk], ServiceEngine]


def tune_gc() -> None:
    """Set mss's garbage-collector policy; call once, after start-up (see :class:`Service`).

    Collects what start-up left, moves every object alive now (modules, config, the layers) to the
    permanent generation with :func:`gc.freeze` so that no collection scans them again, and sets the
    thresholds: the young generations as CPython has them, no automatic full collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)


class Service:
    """One mss process: ``await Service(config).run()`` returns the exit status.

    Garbage collection: a finished callback is freed by reference counting (its objects make no
    reference cycles, checked by ``tests/test_gc.py``), so the cyclic collector only costs time. Once
    started (journal, layers and sockets ready, the previous process's RESPONSEs answered), ``mss
    run`` (``manage_gc``) calls :func:`tune_gc`: start-up's objects are frozen out of every later
    collection, young collections run as CPython's defaults have them (:data:`GC_GEN0_THRESHOLD`:
    larger ones measured longer pauses), and the collector never starts a full collection itself.
    The service runs one from the loop instead, every :data:`GC_FULL_CHECK` seconds when at most
    :data:`GC_FULL_IDLE_CALLS` callbacks are in progress, and after :data:`GC_FULL_MAX_INTERVAL`
    seconds whatever the load. Measured with
    ``bench/load`` (bench/README.md, "Stalls and memory").
    """

    def __init__(
        self, config: Config, *, engine_factory: EngineFactory | None = None, manage_gc: bool = False,
        config_path: str | None = None, notifier: Notifier | None = None, worker: int | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        """This process's worker number under the supervisor (``config`` is its share); None: the single
        process."""
        self.config_path = config_path
        """The file SIGHUP re-reads (None: SIGHUP only says it cannot)."""
        self.notifier = notifier if notifier is not None else Notifier()
        """systemd's notify socket (does nothing when not run by systemd)."""
        self.started = time.monotonic()
        self.metrics: MetricsServer | None = None
        self.control: ControlServer | None = None
        self._ops_timers: dict[str, asyncio.TimerHandle] = {}
        self._ready_task: asyncio.Task[None] | None = None
        self.manage_gc = manage_gc
        """True: set the process's garbage-collector policy once started (``mss run``; not in tests that
        run a service inside their own process)."""
        self._engine_factory = engine_factory
        self._stop = asyncio.Event()
        self._signals = 0
        self.iif: IIFServer | None = None
        self.desk: CallbackDesk | None = None
        self._pacer: CommitPacer | None = None  # the desk's commit schedule
        self.engine: ServiceEngine | None = None
        self.ready = asyncio.Event()
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._prune_timer: asyncio.TimerHandle | None = None
        self._gc_timer: asyncio.TimerHandle | None = None
        self._last_full_gc = 0.0
        self.pruned = 0
        """Callbacks the retention deleted from the journal so far."""
        self.load = LoadGauge()
        """The event loop's measured lag: admission refuses REQUESTs while it says overloaded."""
        self.loop_probe = LoopProbe(self.load)
        """Samples the loop's lag into :attr:`load` (and its observers) while the service runs."""

    def request_stop(self) -> None:
        """Begin the drain (what SIGTERM does); a second call releases calls at once."""
        self._signals += 1
        if self._signals == 1:
            log.info("stopping: no new requests; calls in progress get %ds", self.config.callback.drain_grace)
        elif self.engine is not None:
            log.info("second stop signal: releasing every call now")
            self.engine.release_all()
        self._stop.set()

    @property
    def draining(self) -> bool:
        """True once a stop signal began the drain."""
        return self._signals > 0

    async def run(self) -> int:
        """Run until stopped; returns the exit status (0 after a clean drain)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload)  # from the start: its default ends the process
        # SIGTERM and SIGINT too: a stop during start-up (a supervisor stopping its workers because one
        # could not start) must still close the control socket and the journal, not end the process.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._start_control()  # before the journal: a second mss on this config stops here
            journal = await self._open_journal()
            try:
                return await self._run(journal)
            finally:
                if self._pacer is not None:
                    self._pacer.cancel()  # no flush once the journal is closed (a stop flushed the desk)
                await self._close_journal(journal)
        finally:
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self._stop_operations()

    async def _open_journal(self) -> JournalStore:
        """[journal] backend: the sqlite file, or the PostgreSQL database shared by the nodes (this
        process being node ``[cluster] node``, or ``node.i`` as worker i)."""
        cfg = self.config
        if cfg.journal.backend == "sqlite":
            return Journal(cfg.journal.path, worker=self.worker, workers=cfg.callback.workers)
        from mss.aio.journal_pg import PgJournal  # the asyncpg import only where it is used

        assert cfg.journal.dsn is not None and cfg.cluster.node is not None  # the config checked
        node = cfg.cluster.node if self.worker is None else f"{cfg.cluster.node}.{self.worker}"
        journal = await PgJournal.open(cfg.journal.dsn, node=node, lease=cfg.cluster.lease,
                                       worker=self.worker or 0)  # it logs what was settled while down
        log.info("journal: PostgreSQL, node %s, lease %gs", node, cfg.cluster.lease)
        return journal

    @staticmethod
    async def _close_journal(journal: JournalStore) -> None:
        aclose = getattr(journal, "aclose", None)
        if aclose is not None:
            await aclose()
        elif isinstance(journal, Journal):
            journal.close()

    async def _settled(self, desk: CallbackDesk) -> None:
        """Wait (bounded) until every journal group given to the commit has had its answers written."""
        deadline = time.monotonic() + SETTLE_WAIT
        while desk.settling and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if desk.settling:
            log.error("journal: commits still unanswered after %.0fs; their answers are not written",
                      SETTLE_WAIT)

    async def _run(self, journal: JournalStore) -> int:
        cfg = self.config
        loop = asyncio.get_running_loop()
        pacer = self._pacer = CommitPacer(loop)
        desk = CallbackDesk(
            journal,
            max_calls=effective_max_calls(cfg),
            extended_response=cfg.callback.extended_response,
            udp_send=lambda data, addr: self.iif.send_datagram(data, addr) if self.iif else False,
            wall_clock=time.time,
            peers=cfg.peer_servers,
            schedule=pacer,  # group commit: the journal's writes of one loop iteration or a few ms, together
        )
        self.desk = desk
        desk.load = self.load
        idle = asyncio.Event()
        desk.on_idle = idle.set
        engine = (self._engine_factory or CallEngine)(cfg, desk)
        self.engine = engine
        desk.engine = engine
        self.iif = IIFServer(desk, cfg.peer_servers, max_duration=cfg.callback.max_duration)
        try:
            self.notifier.status("starting")
            await self._start_metrics(desk)
            await engine.open()
            self._say_relay_room(engine, desk.max_calls)
            # Bind, answer what a previous process left, and only then take new orders.
            await self.iif.start(cfg.callback.listen_host, cfg.callback.listen_port,
                                 reuse_port=self.worker is not None)
            desk.recover()
            await self.iif.serve()
            if self.worker is not None:
                log.info("worker %d of %d: SIP port %d, RTP ports %d..%d", self.worker, cfg.callback.workers,
                         cfg.sip.local_port, cfg.rtp.port_min, cfg.rtp.port_max)
            if desk.shared:
                self._poll_owed(desk)
            self._heartbeat(journal)
            if cfg.journal.keep_days > 0:  # 0: keep forever
                self._prune_timer = loop.call_later(self._prune_interval(), self._prune, journal)
            if self.manage_gc:
                tune_gc()
                self._last_full_gc = time.monotonic()
                self._gc_timer = loop.call_later(GC_FULL_CHECK, self._full_gc, desk)
            self.loop_probe.start()
            self.ready.set()
            log.info("mss ready")
            self._ready_task = loop.create_task(self._notify_ready(engine))
            self._status_line()
            if self.notifier.watchdog_interval is not None:
                self._watchdog()
            await self._stop.wait()
            self.notifier.stopping(f"draining: {len(desk.active)} callback(s) in progress")
            desk.accepting = False
            self.iif.stop_listening()
            desk.flush()  # REQUESTs taken before the stop are in progress too
            await self._settled(desk)
            await self._drain(desk, engine, idle)
        finally:
            self.loop_probe.stop()
            if self._ready_task is not None:
                self._ready_task.cancel()
            for timer in self._ops_timers.values():
                timer.cancel()
            if self._heartbeat_timer is not None:
                self._heartbeat_timer.cancel()
            if self._prune_timer is not None:
                self._prune_timer.cancel()
            if self._gc_timer is not None:
                self._gc_timer.cancel()
            desk.flush()
            await self._settled(desk)
            await self._flush()
            await self.iif.close()
            await engine.close()
            if self.ready.is_set():
                journal.heartbeat(time.time())
            desk.flush()  # what the engine's close ended, and the last heartbeat
            await self._settled(desk)
        log.info("mss stopped")
        return 0

    # --- operations: metrics, control socket, service manager, reload ----------------------------

    async def _start_control(self) -> None:
        """The control socket, first of all: it refuses to start a second mss on the same config."""
        path = self.config.operations.control_socket
        if path is not None:
            self.control = ControlServer(path, self._control)
            await self.control.start()

    async def _start_metrics(self, desk: CallbackDesk) -> None:
        """The metrics listener, before the engine registers or binds anything."""
        ops = self.config.operations
        if ops.metrics_listen is not None:
            view = ServiceView(
                desk=lambda: self.desk, engine=lambda: self.engine, draining=lambda: self.draining,
                ready=self.ready.is_set,
                external_line=self.config.callback.external_line_mode,
                peers=tuple(p.name for p in self.config.peer_servers),
            )
            self.metrics = MetricsServer(view)
            desk.on_bridged = self.metrics.setup_seconds.observe
            self.loop_probe.observers.append(self.metrics.loop_lag_seconds.observe)
            await self.metrics.start(*ops.metrics_listen)

    async def _stop_operations(self) -> None:
        if self.metrics is not None:
            await self.metrics.close()
        if self.control is not None:
            await self.control.close()
        self.notifier.close()

    def _control(self, request: ControlRequest) -> bytes:
        """Answer one control request (:mod:`mss.control`)."""
        engine = self.engine
        if request.cmd == "status":
            return encode_answer("status", self.status())
        if request.cmd == "calls":
            calls = engine.list_calls(time.time()) if isinstance(engine, CallEngine) else []
            return encode_answer("calls", calls)
        assert request.id is not None  # a hangup request always has one (ControlRequest checks)
        if not isinstance(engine, CallEngine) or not engine.hangup(request.id):
            raise ControlError(f"no callback {request.id} in progress")
        return encode_answer("hangup", request.id)

    def status(self) -> StatusInfo:
        """The server at a glance (``mss status``)."""
        desk, engine = self.desk, self.engine
        if not self.config.callback.external_line_mode:
            registration = "n/a"
        else:
            registered = isinstance(engine, CallEngine) and engine.registered
            registration = "registered" if registered else "not registered"
        relay = engine.relay if isinstance(engine, CallEngine) else None
        return StatusInfo(
            version=__version__, pid=os.getpid(), uptime=time.monotonic() - self.started,
            state="draining" if self.draining else "serving" if self.ready.is_set() else "starting",
            registration=registration,
            calls=len(desk.active) if desk is not None else 0,
            max_calls=desk.max_calls if desk is not None else self.config.callback.max_calls,
            relay_sessions=relay.session_count if relay is not None and not relay.closed else 0,
            loop_lag_ms=round(self.load.lag * 1000, 3), overloaded=self.load.overloaded,
        )

    def _status_text(self) -> str:
        s = self.status()
        line = "" if s.registration == "n/a" else f", line {s.registration}"
        return f"{s.state}: {s.calls} callback(s) in progress{line}"

    async def _notify_ready(self, engine: ServiceEngine) -> None:
        """READY=1 once the first REGISTER is answered (at once without registration)."""
        if isinstance(engine, CallEngine):
            try:
                await asyncio.wait_for(engine.registration_settled.wait(), READY_WAIT)
            except TimeoutError:
                log.warning("the first REGISTER has no answer after %.0fs; telling systemd mss is ready",
                            READY_WAIT)
        self.notifier.ready(self._status_text())

    def _status_line(self) -> None:
        if not self.notifier.enabled:
            return
        self.notifier.status(self._status_text())
        self._later("status", STATUS_INTERVAL, self._status_line)

    def _watchdog(self) -> None:
        """WATCHDOG=1 from the loop itself: a stuck loop stops them and systemd restarts mss."""
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        self.notifier.watchdog()
        self._later("watchdog", interval, self._watchdog)

    def _poll_owed(self, desk: CallbackDesk) -> None:
        """Workers and nodes sharing a journal: the RESPONSEs the others kept for the peers connected
        here, now and then again."""
        desk.poll_owed()
        self._later("owed", OWED_POLL_INTERVAL, lambda: self._poll_owed(desk))

    def _later(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._ops_timers[name] = asyncio.get_running_loop().call_later(delay, callback)

    def reload(self) -> None:
        """SIGHUP: re-read the config file; apply what can change while running (``[log] level``, and
        the ``[peer.NAME]`` limits and events of the peers listed) and log every other change as
        needing a restart. An invalid file changes nothing."""
        if self.config_path is None:
            log.warning("SIGHUP: no config file to re-read")
            return
        self.notifier.reloading(f"re-reading {self.config_path}")
        try:
            result = check(self.config_path)
            new = result.config
            if new is None:
                log.error("SIGHUP: %s not applied: %s", self.config_path,
                          "; ".join(str(e) for e in result.errors))
                return
            if self.worker is not None and new.callback.workers == self.config.callback.workers:
                new = worker_config(new, self.worker)
            if new.log_level != self.config.log_level:
                logging.getLogger().setLevel(getattr(logging, new.log_level.upper()))
                log.warning("SIGHUP: log level %s (was %s)", new.log_level, self.config.log_level)
                self.config = dataclasses.replace(self.config, log_level=new.log_level)
            if new.peer_servers != self.config.peer_servers and self.desk is not None \
                    and _addresses(new) == _addresses(self.config):
                self.desk.set_peer_limits(new.peer_servers)
                log.warning("SIGHUP: peer limits now %s", ", ".join(_limits(p) for p in new.peer_servers))
                self.config = dataclasses.replace(self.config, peer_servers=new.peer_servers)
            for f in dataclasses.fields(Config):
                if getattr(new, f.name) != getattr(self.config, f.name):
                    log.warning("SIGHUP: %s changed in %s; it takes effect after a restart",
                                _SECTIONS.get(f.name, f.name), self.config_path)
            log.info("SIGHUP: %s re-read", self.config_path)
        finally:
            self.notifier.ready(self._status_text())

    def _say_relay_room(self, engine: Engine, max_calls: int) -> None:
        """Log when the relay's port range holds fewer sessions than max_calls (the engine refuses more)."""
        if isinstance(engine, CallEngine) and engine.relay is not None and engine.relay.capacity < max_calls:
            rtp = self.config.rtp
            log.warning(
                "the RTP port range %d..%d holds %d relay sessions, fewer than max_calls = %d: REQUESTs "
                "beyond %d callbacks in progress get code=fail",
                rtp.port_min, rtp.port_max, engine.relay.capacity, max_calls, engine.relay.capacity,
            )

    async def _drain(self, desk: CallbackDesk, engine: Engine, idle: asyncio.Event) -> None:
        if desk.active:
            idle.clear()
            log.info("%d call(s) in progress", len(desk.active))
            try:
                await asyncio.wait_for(idle.wait(), self.config.callback.drain_grace)
            except TimeoutError:
                log.info("drain grace over: releasing %d call(s)", len(desk.active))
                engine.release_all()
                try:
                    await asyncio.wait_for(idle.wait(), RELEASE_WAIT)
                except TimeoutError:
                    log.error("%d call(s) did not end in %.0fs", len(desk.active), RELEASE_WAIT)

    async def _flush(self) -> None:
        """Give queued RESPONSEs a moment to reach the AS."""
        assert self.iif is not None
        deadline = time.monotonic() + FLUSH_WAIT
        while time.monotonic() < deadline and any(c.pending_bytes() for c in self.iif.connections):
            await asyncio.sleep(0.02)

    def _prune_interval(self) -> float:
        keep = self.config.journal.keep_days * 86400.0
        return min(PRUNE_INTERVAL, max(PRUNE_MIN_INTERVAL, keep / 10))

    def _prune(self, journal: JournalStore) -> None:
        """One retention batch ([journal] keep_days); the next one soon when this one was full, else
        after the interval. Runs on a timer, never on the REQUEST path."""
        horizon = time.time() - self.config.journal.keep_days * 86400.0
        try:
            deleted = journal.prune(before=horizon)
        except JournalError as exc:
            log.error("%s", exc)
            deleted = 0
        self.pruned += deleted
        if deleted:
            log.debug("journal: deleted %d callback(s) delivered more than %g day(s) ago", deleted,
                      self.config.journal.keep_days)
        delay = PRUNE_PAUSE if deleted >= PRUNE_BATCH else self._prune_interval()
        self._prune_timer = asyncio.get_running_loop().call_later(delay, self._prune, journal)

    def _full_gc(self, desk: CallbackDesk) -> None:
        """A full collection when few callbacks are in progress, or when the last one is long ago."""
        now = time.monotonic()
        if len(desk.active) <= GC_FULL_IDLE_CALLS or now - self._last_full_gc >= GC_FULL_MAX_INTERVAL:
            freed = gc.collect()
            self._last_full_gc = time.monotonic()
            log.debug("full garbage collection: %d objects freed in %.1f ms (%d callbacks in progress)",
                      freed, (self._last_full_gc - now) * 1000, len(desk.active))
        self._gc_timer = asyncio.get_running_loop().call_later(GC_FULL_CHECK, self._full_gc, desk)

    def _heartbeat(self, journal: JournalStore) -> None:
        try:
            journal.heartbeat(time.time())
        except Exception as exc:  # the journal logs; the heartbeat must keep going
            log.error("%s", exc)
        self._heartbeat_timer = asyncio.get_running_loop().call_later(
            HEARTBEAT_INTERVAL, self._heartbeat, journal
        )


def run(config: Config, config_path: str | None = None, worker: int | None = None) -> int:
    """Run mss on a uvloop event loop; returns the exit status. ``config_path`` is the file SIGHUP
    re-reads; ``worker``: this process is that worker of a supervisor (``config`` is the whole one)."""
    if worker is not None:
        from mss.aio.supervisor import SUPERVISOR_PID, die_with_parent

        parent = os.environ.get(SUPERVISOR_PID, "")
        if parent.isdigit():
            die_with_parent(int(parent))
        config = worker_config(config, worker)
    return uvloop.run(Service(config, manage_gc=True, config_path=config_path, worker=worker).run())
