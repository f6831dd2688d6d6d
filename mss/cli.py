"""The ``mss`` command: ``run``, ``check-config``, ``callback``, ``demo``, and for operators ``status``,
``calls``, ``hangup ID`` (through the control socket) and ``cdr`` (from the journal).

Exit status: 0 success; 1 a callback refused or failed (``callback``), a runtime failure (``run``),
or a control command that failed (mss not running, permission denied, no such callback); 2 bad usage
or an invalid config.ini (or one with the control socket off).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mss import __version__

if TYPE_CHECKING:
    from mss.config import Config

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mss", description="SIP callback server and media relay")
    parser.add_argument("--version", action="version", version=f"mss {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the server in the foreground, logging to stderr")
    run.add_argument("--config", default="config.ini", help="config file (default: config.ini)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                     help="override [log] level")
    run.add_argument("--worker", type=int, metavar="I", help=argparse.SUPPRESS)  # the supervisor's children

    check = sub.add_parser("check-config", help="validate config.ini: exit 0 if valid, else 2")
    check.add_argument("--config", default="config.ini", help="config file (default: config.ini)")

    demo = sub.add_parser("demo", help="one whole callback on this machine: Kamailio, two phones, mss")
    demo.add_argument("--duration", type=int, default=5, help="the callback's duration (default: 5)")
    demo.add_argument("--transport", choices=["udp", "tcp"], default="udp", help="SIP transport")
    demo.add_argument("--keep", action="store_true", help="keep the logs and recordings")

    cb = sub.add_parser("callback", help="order one callback as an AS would; print ACK and RESPONSE")
    cb.add_argument("--server", required=True, metavar="HOST:PORT", help="the mss IIF address")
    cb.add_argument("--id", help="callback id (default: a fresh one)")
    cb.add_argument("--udp", action="store_true", help="use UDP instead of TCP")
    cb.add_argument("--timeout", type=float, metavar="SECONDS",
                    help="give up waiting for the RESPONSE (default: duration + 300)")
    cb.add_argument("user1", help="called first")
    cb.add_argument("user2", help="called when user1 answers")
    cb.add_argument("duration", type=int, help="longest talk, in seconds")

    status = sub.add_parser("status", help="uptime, registration, callbacks in progress and load of mss")
    calls = sub.add_parser("calls", help="each callback in progress: id, peer, state, users, ports, packets")
    hangup = sub.add_parser("hangup", help="release a callback in progress, as an AS's CANCEL does")
    hangup.add_argument("id", help="the callback's id (as the AS gave it)")
    for command in (status, calls, hangup):
        command.add_argument("--config", default="config.ini", help="config file naming [control] socket "
                             "(default: config.ini)")
        command.add_argument("--json", action="store_true", help="print the answer as JSON, for scripts")
        command.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                             help="wait at most this long for mss (default: 10)")

    cdr = sub.add_parser("cdr", help="export call detail records from the journal (CSV or JSON lines)")
    cdr.add_argument("--config", default="config.ini", help="config file naming [journal] path "
                     "(default: config.ini)")
    cdr.add_argument("--since", metavar="ISO8601", help="only callbacks ordered at or after this time "
                     "(e.g. 2026-01-31 or 2026-01-31T08:00:00+01:00; UTC when no offset is given)")
    cdr.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="output format (default: csv)")
    return parser


LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


#: :data:`LOG_FORMAT` of a worker process (``[callback] workers`` > 1): the line names the worker.
WORKER_LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s worker=%(worker)s %(name)s: %(message)s"


class _WorkerField(logging.Filter):
    """Gives every record the ``worker`` attribute (the text format and the JSON lines show it)."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


class LogFormatter(logging.Formatter):
    """:data:`LOG_FORMAT` with the date text made once a second, not once a line (mss logs a few INFO
    lines per callback, and ``strftime`` was a fifth of a line's cost)."""

    def __init__(self, fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt, LOG_DATE_FORMAT)
        self._second = -1
        self._date = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._date = time.strftime(datefmt or LOG_DATE_FORMAT, self.converter(second))
            self._second = second
        return self._date


def _setup_logging(level: str, fmt: str = "text", worker: int | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from mss.logjson import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(LogFormatter(LOG_FORMAT if worker is None else WORKER_LOG_FORMAT))
    if worker is not None:
        handler.addFilter(_WorkerField(worker))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    # The format shows no caller, thread or process: do not gather them for every record (finding
    # the caller walks the stack). Half of a log line's cost.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _check_config(path: str) -> int:
    from mss.config import check

    result = check(path)
    for warning in result.warnings:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    for error in result.errors:
        print(f"{path}: error: {error}", file=sys.stderr)
    if result.config is None:
        return EXIT_USAGE
    print(f"{path}: ok")
    return EXIT_OK


def _run(path: str, log_level: str | None, worker: int | None = None) -> int:
    from mss.config import check
    from mss.errors import MssError

    result = check(path)
    _setup_logging(log_level or (result.config.log_level if result.config else "info"),
                   result.config.operations.log_format if result.config else "text", worker)
    log = logging.getLogger("mss")
    if worker is None:  # a worker's supervisor said these already
        for warning in result.warnings:
            log.warning("%s: %s", path, warning)
    if result.config is None:
        for error in result.errors:
            log.error("%s: %s", path, error)
        return EXIT_USAGE
    workers = result.config.callback.workers
    if worker is not None and not 0 <= worker < workers:
        log.error("%s: --worker %d: [callback] workers = %d", path, worker, workers)
        return EXIT_USAGE
    try:
        if worker is None and workers > 1:
            from mss.aio.supervisor import run as supervise

            return supervise(result.config, path, log_level)
        from mss.aio.service import run  # the call engine is loaded only for a valid config

        return run(result.config, config_path=path, worker=worker)
    except MssError as exc:
        log.error("%s", exc)
        return EXIT_FAILED


def _callback(args: argparse.Namespace) -> int:
    from mss.aio.iif_client import run_callback

    host, sep, port_text = args.server.rpartition(":")
    if not sep or not port_text.isdigit():
        print(f"mss callback: --server {args.server!r} is not HOST:PORT", file=sys.stderr)
        return EXIT_USAGE
    timeout = args.timeout if args.timeout is not None else args.duration + 300.0
    return run_callback(
        host.strip("[]"), int(port_text), args.user1, args.user2, args.duration,
        callback_id=args.id, udp=args.udp, timeout=timeout,
    )


def _config_or_exit(path: str, command: str) -> Config | int:
    """The valid config at ``path``, or the exit status after saying why not."""
    from mss.config import check

    result = check(path)
    if result.config is None:
        for error in result.errors:
            print(f"mss {command}: {path}: {error}", file=sys.stderr)
        return EXIT_USAGE
    return result.config


def _control(args: argparse.Namespace) -> int:
    from mss.aio.control_client import ask
    from mss.control import ControlError, ControlRequest, render_calls, render_status

    config = _config_or_exit(args.config, args.command)
    if isinstance(config, int):
        return config
    path = config.operations.control_socket
    if path is None:
        print(f"mss {args.command}: the control socket is off in {args.config} ([control] socket is empty)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        request = ControlRequest(cmd=args.command, id=getattr(args, "id", None))
    except ControlError as exc:
        print(f"mss {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        answer = ask(path, request, timeout=args.timeout)
    except ControlError as exc:
        print(f"mss {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(answer, indent=None if args.command == "hangup" else 2))
    elif args.command == "status":
        print(render_status(answer))
    elif args.command == "calls":
        print(render_calls(answer))
    else:
        print(f"callback {answer}: released; its RESPONSE goes to the AS")
    return EXIT_OK


def _cdr(args: argparse.Namespace) -> int:
    from mss.cdr import export, parse_since
    from mss.errors import MssError

    try:
        since = parse_since(args.since) if args.since is not None else None
    except MssError as exc:
        print(f"mss cdr: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = _config_or_exit(args.config, "cdr")
    if isinstance(config, int):
        return config
    try:
        export(config, since, args.format, sys.stdout)
        sys.stdout.flush()
    except MssError as exc:
        print(f"mss cdr: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `mss cdr | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mss`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "run":
        return _run(args.config, args.log_level, args.worker)
    if args.command == "demo":
        from mss.demo import main as demo

        return demo(duration=args.duration, transport=args.transport, keep=args.keep)
    if args.command in ("status", "calls", "hangup"):
        return _control(args)
    if args.command == "cdr":
        return _cdr(args)
    return _callback(args)
