"""The supervisor of ``mss run`` with ``[callback] workers`` > 1: N worker processes, one service.

Each worker is ``python -m mss run --config PATH --worker i``, started by fork and exec (not
``multiprocessing``): a fresh interpreter with its own event loop and nothing inherited but the
command line and the environment, the same code path as a single ``mss run`` (the worker derives its
share of the config itself, :func:`mss.workers.worker_config`), and ``ps`` names each one. The
supervisor holds no journal, no call and no IIF socket: it

* opens the journal once before the workers (creates or upgrades the file, so that they never race
  to), then starts worker 0..N-1;
* serves ``[control] socket`` (a second ``mss run`` on the same config stops there, as before
  workers) by asking each worker on its own socket (``<socket>.i``) and summing up: ``mss status``
  adds the workers' calls and says ``starting`` until every worker serves; ``mss calls`` lists every
  worker's callbacks; ``mss hangup ID`` asks each worker until one has it. The asks are blocking
  (:data:`ASK_TIMEOUT` each): the supervisor has nothing else to do meanwhile;
* is the workers' service manager: their ``$NOTIFY_SOCKET`` is a socket of the supervisor, which
  tells systemd ``READY=1`` once every worker said it (each after its first REGISTER's answer),
  and passes on ``STOPPING=1``. Under a unit with ``WatchdogSec`` the supervisor sends systemd
  ``WATCHDOG=1`` itself and watches each worker's in turn: a worker whose event loop sent none for
  the whole ``WatchdogSec`` is killed and started again (the others keep their calls);
* stops everything and exits 1 when a worker's first start fails (before mss was ready), as a single
  mss that cannot start does; restarts a worker that died later (not while stopping), after
  :class:`mss.workers.Backoff`'s delay, with a log line saying how it died; the new process
  settles what the dead one left (:meth:`mss.desk.CallbackDesk.recover`: its interrupted callbacks
  get their RESPONSE, its claims on kept RESPONSEs are released);
* forwards SIGTERM and SIGINT (the drain: each worker drains as a single mss does; a second signal
  releases at once) and SIGHUP (each worker re-reads the config), and exits 0 when every worker
  exited 0, else 1. A worker still running :data:`KILL_AFTER` seconds after the drain's grace is
  killed.

Workers run in their own session (and process group), so that a Ctrl-C reaches them once, through
the supervisor; each asks the kernel for SIGTERM should the supervisor die (:func:`die_with_parent`).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from mss import __version__
from mss.aio.control import ControlServer
from mss.aio.control_client import ask
from mss.aio.sdnotify import Notifier
from mss.config import Config
from mss.control import ControlError, ControlRequest, encode_answer
from mss.journal import Journal
from mss.workers import Backoff, worker_socket

__all__ = ["ASK_TIMEOUT", "KILL_AFTER", "SUPERVISOR_PID", "Supervisor", "die_with_parent", "run"]

log = logging.getLogger("mss.supervisor")

#: Seconds a worker has to answer one control request of the supervisor (a worker's answer takes
#: milliseconds; a stuck one must not hold ``mss status`` long).
ASK_TIMEOUT = 2.0

#: Seconds beyond ``drain_grace`` a worker gets to exit after SIGTERM before it is killed: the
#: release of its calls, its last RESPONSEs and its journal's close (the service's RELEASE_WAIT and
#: FLUSH_WAIT, with room to spare).
KILL_AFTER = 30.0

#: Bytes of one notification datagram a worker sends at most (READY=1 and a STATUS= line).
MAX_NOTIFY = 4096

#: Linux prctl option: a signal for this process when its parent dies.
_PR_SET_PDEATHSIG = 1


#: The environment variable naming the supervisor's pid to its workers.
SUPERVISOR_PID = "MSS_SUPERVISOR_PID"


def die_with_parent(parent: int) -> None:
    """In a worker: ask the kernel for SIGTERM when the supervisor ``parent`` dies (Linux; best
    effort), so that a killed supervisor does not leave workers holding the ports."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass(slots=True)
class _Worker:
    """One worker slot: the process running in it now, if any."""

    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    ready: bool = False
    last_ping: float = 0.0
    """Monotonic time of its last READY=1 or WATCHDOG=1."""
    restarts: int = 0
    backoff: Backoff = field(default_factory=Backoff)
    restart_timer: asyncio.TimerHandle | None = None


class Supervisor:
    """Runs ``config.callback.workers`` workers of the config file ``config_path`` until stopped."""

    def __init__(self, config: Config, config_path: str, *, log_level: str | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.config_path = os.path.abspath(config_path)
        self.log_level = log_level
        self.notifier = notifier if notifier is not None else Notifier()
        self.workers = [_Worker(i) for i in range(config.callback.workers)]
        self.started = time.monotonic()
        self.stopping = False
        self.all_ready = False
        self._signals = 0
        self._exits: dict[int, int] = {}
        self._idle = asyncio.Event()
        self._control: ControlServer | None = None
        self._notify_dir: tempfile.TemporaryDirectory[str] | None = None
        self._notify_sock: socket.socket | None = None

    async def run(self) -> int:
        """Start the workers and supervise them until a stop signal; returns the exit status."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        try:
            path = self.config.operations.control_socket
            if path is not None:
                self._control = ControlServer(path, self._answer)
                await self._control.start()
            if self.config.journal.backend == "sqlite":  # created or upgraded once, before the workers
                Journal(self.config.journal.path, worker=0, workers=len(self.workers)).close()
            self._open_notify_socket()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            log.info("mss %s: starting %d workers", __version__, len(self.workers))
            self.notifier.status(f"starting {len(self.workers)} workers")
            for worker in self.workers:
                await self._start(worker)
            if self.notifier.watchdog_interval is not None:
                self._watchdog(self.notifier.watchdog_interval)
            await self._idle.wait()
            failed = {i: rc for i, rc in self._exits.items() if rc != 0}
            if failed:
                log.error("workers ended with status %s", ", ".join(f"{i}: {rc}" for i, rc in failed.items()))
            log.info("mss stopped")
            return 1 if failed else 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for worker in self.workers:
                if worker.restart_timer is not None:
                    worker.restart_timer.cancel()
                if worker.process is not None and worker.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
            if self._notify_sock is not None:
                loop.remove_reader(self._notify_sock.fileno())
                self._notify_sock.close()
            if self._notify_dir is not None:
                self._notify_dir.cleanup()
            if self._control is not None:
                await self._control.close()
            self.notifier.close()

    # --- the processes -------------------------------------------------------------------------

    def _command(self, index: int) -> list[str]:
        command = [sys.executable, "-m", "mss", "run", "--config", self.config_path, "--worker", str(index)]
        if self.log_level is not None:
            command += ["--log-level", self.log_level]
        return command

    def _environment(self) -> dict[str, str]:
        # WATCHDOG_USEC stays (without WATCHDOG_PID): the workers send WATCHDOG=1 to the supervisor.
        env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}
        env.pop("NOTIFY_SOCKET", None)
        env[SUPERVISOR_PID] = str(os.getpid())
        if self._notify_sock is not None:
            env["NOTIFY_SOCKET"] = self._notify_sock.getsockname()
        return env

    async def _start(self, worker: _Worker) -> None:
        worker.restart_timer = None
        if self.stopping:
            return
        worker.ready = False
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command(worker.index), stdin=asyncio.subprocess.DEVNULL, env=self._environment(),
                start_new_session=True,
            )
        except OSError as exc:
            log.error("worker %d: cannot start: %s", worker.index, exc)
            self._schedule_restart(worker, time.monotonic())
            return
        worker.process, worker.started = process, time.monotonic()
        worker.last_ping = worker.started
        log.info("worker %d started (pid %d)", worker.index, process.pid)
        asyncio.get_running_loop().create_task(self._watch(worker, process))

    async def _watch(self, worker: _Worker, process: asyncio.subprocess.Process) -> None:
        rc = await process.wait()
        died = time.monotonic()
        was_ready, worker.ready = worker.ready, False
        if not self.stopping and rc > 0 and worker.restarts == 0 and not was_ready and not self.all_ready:
            # Its first start failed (a port taken, the journal unusable...): mss does not start, as a
            # single mss would not; restarting it in a loop would only hide that.
            log.error("worker %d (pid %d) could not start (exit status %d); stopping mss", worker.index,
                      process.pid, rc)
            self._exits[worker.index] = rc
            self.request_stop()
            return
        if self.stopping:
            self._exits[worker.index] = rc
            log.info("worker %d (pid %d) exited with status %d", worker.index, process.pid, rc)
            self._check_idle()
            return
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with status {rc}"
        delay = worker.backoff.delay(worker.started, died)
        worker.restarts += 1
        log.error("worker %d (pid %d) %s after %.1fs; starting it again in %.1fs", worker.index,
                  process.pid, how, died - worker.started, delay)
        self._schedule_restart(worker, died, delay)

    def _schedule_restart(self, worker: _Worker, died: float, delay: float | None = None) -> None:
        if delay is None:
            delay = worker.backoff.delay(worker.started, died)
        loop = asyncio.get_running_loop()
        worker.restart_timer = loop.call_later(delay, lambda: loop.create_task(self._start(worker)))

    # --- signals -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """SIGTERM or SIGINT: the workers drain (a second signal: they release at once)."""
        self._signals += 1
        if self._signals == 1:
            self.stopping = True
            log.info("stopping: the workers drain")
            self.notifier.stopping("draining")
            for worker in self.workers:
                if worker.restart_timer is not None:
                    worker.restart_timer.cancel()
                    worker.restart_timer = None
            deadline = self.config.callback.drain_grace + KILL_AFTER
            asyncio.get_running_loop().call_later(deadline, self._kill_stragglers)
        self._forward(signal.SIGTERM)
        self._check_idle()

    def _forward(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:
            log.info("SIGHUP: passed on to the workers")
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    def _kill_stragglers(self) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                log.error("worker %d (pid %d) still running %.0fs after the stop; killing it", worker.index,
                          worker.process.pid, self.config.callback.drain_grace + KILL_AFTER)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()

    def _check_idle(self) -> None:
        if self.stopping and all(w.process is None or w.process.returncode is not None for w in self.workers):
            self._idle.set()

    # --- the workers' service manager ----------------------------------------------------------

    def _open_notify_socket(self) -> None:
        """A datagram socket the workers notify as if it were systemd's (with their pid attached)."""
        self._notify_dir = tempfile.TemporaryDirectory(prefix="mss-notify-")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        sock.bind(os.path.join(self._notify_dir.name, "notify"))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._notify_sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_notify)

    def _on_notify(self) -> None:
        assert self._notify_sock is not None
        ucred = struct.calcsize("3i")
        for _ in range(len(self.workers) * 4):  # bounded: the rest waits for the next wake-up
            try:
                data, ancillary, _flags, _addr = self._notify_sock.recvmsg(
                    MAX_NOTIFY, socket.CMSG_SPACE(ucred))
            except (BlockingIOError, InterruptedError):
                return
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= ucred:
                    pid = array.array("i", payload[:ucred])[0]
            worker = next((w for w in self.workers if w.process is not None and w.process.pid == pid), None)
            if worker is None:
                continue
            fields = data.split(b"\n")
            if b"READY=1" in fields or b"WATCHDOG=1" in fields:
                worker.last_ping = time.monotonic()
            if b"READY=1" in fields:
                self._worker_ready(worker)

    def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 to systemd every ``interval`` (half of WatchdogSec); a worker silent for the whole
        WatchdogSec is killed, and started again by :meth:`_watch`."""
        self.notifier.watchdog()
        now, limit = time.monotonic(), 2 * interval
        for worker in self.workers:
            process = worker.process
            if process is None or process.returncode is not None or self.stopping:
                continue
            if now - worker.last_ping > limit:
                log.error("worker %d (pid %d) sent no WATCHDOG=1 for %.0fs: its loop is stuck; killing it",
                          worker.index, process.pid, now - worker.last_ping)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        asyncio.get_running_loop().call_later(interval, self._watchdog, interval)

    def _worker_ready(self, worker: _Worker) -> None:
        if worker.ready:
            return
        worker.ready = True
        log.info("worker %d ready", worker.index)
        if not self.all_ready and all(w.ready for w in self.workers):
            self.all_ready = True
            log.info("all %d workers ready", len(self.workers))
            self.notifier.ready(f"serving: {len(self.workers)} workers")

    # --- the control socket --------------------------------------------------------------------

    def _ask_all(self, request: ControlRequest) -> list[Any | ControlError]:
        path = self.config.operations.control_socket
        assert path is not None
        answers: list[Any | ControlError] = []
        for worker in self.workers:
            try:
                answers.append(ask(worker_socket(path, worker.index), request, timeout=ASK_TIMEOUT))
            except ControlError as exc:
                answers.append(exc)
        return answers

    def _answer(self, request: ControlRequest) -> bytes:
        """Answer ``mss status``, ``calls`` and ``hangup`` from the workers' answers."""
        if request.cmd == "hangup":
            for answer in self._ask_all(request):
                if not isinstance(answer, ControlError):
                    return encode_answer("hangup", answer)
            raise ControlError(f"no callback {request.id} in progress")
        answers = self._ask_all(request)
        if request.cmd == "calls":
            calls: list[dict[str, Any]] = []
            for index, answer in enumerate(answers):
                if isinstance(answer, list):
                    calls.extend({**call, "worker": index} for call in answer)
            return encode_answer("calls", calls)
        return encode_answer("status", self.status(answers))

    def status(self, answers: list[Any | ControlError]) -> dict[str, Any]:
        """``mss status`` of the whole: the workers' figures summed, each worker's own under ``workers``."""
        ok = [a for a in answers if isinstance(a, dict)]
        states = {a.get("state") for a in ok}
        if self.stopping or "draining" in states:
            state = "draining"
        elif len(ok) == len(answers) and states == {"serving"}:
            state = "serving"
        else:
            state = "starting"
        registrations = {str(a.get("registration")) for a in ok}
        if len(registrations) == 1 and len(ok) == len(answers):
            registration = registrations.pop()
        else:  # a worker not answering, or some not registered
            registration = "n/a" if registrations == {"n/a"} else "not registered"
        return {
            "version": __version__, "pid": os.getpid(), "uptime": time.monotonic() - self.started,
            "state": state, "registration": registration,
            "calls": sum(int(a.get("calls", 0)) for a in ok),
            "max_calls": sum(int(a.get("max_calls", 0)) for a in ok),
            "relay_sessions": sum(int(a.get("relay_sessions", 0)) for a in ok),
            "loop_lag_ms": max((float(a.get("loop_lag_ms", 0.0)) for a in ok), default=0.0),
            "overloaded": any(bool(a.get("overloaded")) for a in ok),
            "workers": [
                {"worker": i, "error": str(a)} if isinstance(a, ControlError) else {"worker": i, **a}
                for i, a in enumerate(answers)
            ],
        }


def run(config: Config, config_path: str, log_level: str | None = None) -> int:
    """Run the supervisor on a uvloop event loop; returns the exit status."""
    import uvloop

    return uvloop.run(Supervisor(config, config_path, log_level=log_level).run())
