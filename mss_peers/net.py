"""Loopback helpers of the end-to-end harness: free ports and a bounded wait.

``die_with_parent`` is a ``preexec_fn`` for peer processes: they get SIGTERM when the test
process dies, even when it is killed before its fixtures can stop them
(``parent_death_signal()`` picks it only on the main thread, see there).

``free_port(host)`` finds a port that is free for both UDP and TCP on ``host`` (a 127.0.0.0/8
address), below the kernel's ephemeral range, and never hands out the same port twice, neither
in one process nor to concurrent test runs (claim files in the temp dir), so fixtures do not
collide with each other or with port-0 binds.

``wait_until(predicate, timeout)`` polls with a bounded number of rounds and returns the first
true value, or raises ``WaitTimeout`` (an ``AssertionError``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import os
import random
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

__all__ = [
    "WaitTimeout",
    "check_loopback",
    "die_with_parent",
    "free_port",
    "parent_death_signal",
    "wait_until",
]

T = TypeVar("T")

# Ports handed out by this process, so two fixtures never get the same one.
_given: set[tuple[str, int]] = set()
_given_lock = threading.Lock()
# prctl option: the signal a child gets when its parent dies.
PR_SET_PDEATHSIG = 1
# How many candidate ports free_port tries before it gives up, and the lowest it draws (clear of
# the well-known SIP/IIF ports that configs use).
MAX_PORT_TRIES = 200
FREE_PORT_MIN = 15000
_random = random.Random()
# Cross-process claims on handed-out ports (one file per port), and ours, removed at exit.
_RESERVATIONS = Path(tempfile.gettempdir()) / "loopback-port-claims"
_claimed: list[Path] = []


def check_loopback(host: str) -> str:
    """Return ``host`` if it is an IPv4 loopback address; raise ``ValueError`` otherwise."""
    if not ipaddress.IPv4Address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address: tests only talk to 127.0.0.0/8")
    return host


def _try_port(host: str, port: int) -> int:
    """Bind UDP and TCP on (host, port); return the port bound (the kernel's choice when 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((host, port))
        port = udp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
    return port


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (where port-0 binds land)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _reserve(host: str, port: int) -> bool:
    """Claim (host, port) across processes: a file named after it holding our PID, created
    exclusively. A claim whose process is gone is taken over. False when another live process
    holds it."""
    _RESERVATIONS.mkdir(mode=0o1777, parents=True, exist_ok=True)
    path = _RESERVATIONS / f"{host}-{port}"
    for _ in range(2):  # at most one stale claim to clear
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(path.read_text() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        _claimed.append(path)
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@atexit.register
def _release_claims() -> None:
    for path in _claimed:
        path.unlink(missing_ok=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` that no user of this function (in this
    process or another one running now) has been handed.

    It is drawn below the kernel's ephemeral range, so a peer binding port 0 (a phone's SIP or
    RTP socket, a TCP client) cannot take it between this call and the bind of its user; a
    claim file in the temp dir keeps concurrent test runs apart. Claims are released when the
    process exits.
    """
    check_loopback(host)
    high = _ephemeral_low()
    low = min(FREE_PORT_MIN, high - 1000)
    for _ in range(MAX_PORT_TRIES):
        candidate = _random.randrange(low, high)
        with _given_lock:
            if (host, candidate) in _given:
                continue
            try:
                _try_port(host, candidate)
            except OSError:
                continue
            if not _reserve(host, candidate):
                continue
            _given.add((host, candidate))
        return candidate
    raise RuntimeError(f"no port free for both UDP and TCP on {host} after {MAX_PORT_TRIES} tries")


class WaitTimeout(AssertionError):
    """``wait_until`` ran out of time."""


def wait_until(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Call ``predicate`` until it returns a true value, and return that value.

    Raises ``WaitTimeout`` (an ``AssertionError``) when ``timeout`` seconds pass first; the
    number of rounds is bounded by ``timeout / interval + 1``.
    """
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise WaitTimeout(f"{what or 'condition'} not met within {timeout} s")


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies (Linux prctl), so a
    killed test run leaves no peer process behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def parent_death_signal() -> Callable[[], None] | None:
    """The ``preexec_fn`` for a peer process: ``die_with_parent`` when called from the main
    thread, else None. The kernel sends the signal when the *thread* that started the child
    ends, so a peer started from a short-lived helper thread would die with that thread."""
    return die_with_parent if threading.current_thread() is threading.main_thread() else None
