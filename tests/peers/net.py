"""Loopback helpers of the end-to-end harness: free ports and a bounded wait.

``die_with_parent`` is a ``preexec_fn`` for peer processes: they get SIGTERM when the test
process dies, even when it is killed before its fixtures can stop them
(``parent_death_signal()`` picks it only on the main thread, see there).

``free_port(host)`` finds a port that is free for both UDP and TCP on ``host`` (a 127.0.0.0/8
address), below the kernel's ephemeral range, and never hands out the same port twice in one
process, so fixtures do not collide with each other or with port-0 binds.

``wait_until(predicate, timeout)`` polls with a bounded number of rounds and returns the first
true value, or raises ``WaitTimeout`` (an ``AssertionError``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import random
import signal
import socket
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


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` that this process has not handed out yet.

    It is drawn below the kernel's ephemeral range, so a peer binding port 0 (a phone's SIP or
    RTP socket, a TCP client) cannot take it between this call and the bind of its user.
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
            port = _try_port(host, candidate)
        except OSError:
            continue
        with _given_lock:
            if (host, port) in _given:
                continue
            _given.add((host, port))
        return port
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
