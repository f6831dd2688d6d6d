"""systemd's notify protocol (sd_notify(3)) over ``$NOTIFY_SOCKET``, with the standard library alone.

A unit with ``Type=notify`` learns from these datagrams that mss is ready (``READY=1``), stopping
(``STOPPING=1``), what it is doing (``STATUS=...``, shown by ``systemctl status``) and that its event
loop still runs (``WATCHDOG=1``, when the unit sets ``WatchdogSec``). Without ``$NOTIFY_SOCKET`` (not
run by systemd) every call does nothing.

The socket is a unix datagram socket named by a path, or by an abstract name when the variable starts
with ``@``. A send never blocks and never raises: a lost notification is logged once, rate-limited.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from mss.ratelog import RateLimitedLog

__all__ = ["MAX_STATUS", "Notifier"]

log = logging.getLogger("mss.sdnotify")

#: Characters of a STATUS= text at most: one line for ``systemctl status``.
MAX_STATUS = 200


class Notifier:
    """Sends notifications to the service manager named by ``env`` (the process's environment)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        name = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        """Where notifications go: a path, or an abstract name starting with NUL; None: nowhere."""
        if name.startswith("@"):
            self.address = "\0" + name[1:]
        elif name.startswith("/"):
            self.address = name
        elif name:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an @abstract name: not notifying", name)
        self.watchdog_interval: float | None = _watchdog(env)
        """Seconds between two ``WATCHDOG=1`` (half of ``WatchdogSec``), or None when not asked."""
        self._sock: socket.socket | None = None
        self._log = RateLimitedLog(log)

    @property
    def enabled(self) -> bool:
        """True when run under a service manager that listens."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``READY=1``, ``STATUS=...``) in one datagram; True when sent."""
        if self.address is None:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            self._log.warning("send", "cannot notify the service manager at %r: %s",
                              self.address.replace("\0", "@"), exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        """``READY=1`` with a status line."""
        return self.notify("READY=1", _status(status))

    def stopping(self, status: str) -> bool:
        """``STOPPING=1`` with a status line."""
        return self.notify("STOPPING=1", _status(status))

    def reloading(self, status: str) -> bool:
        """``RELOADING=1`` (a SIGHUP is being applied); follow with :meth:`ready`."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000  # systemd 253+ wants it with RELOADING
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", _status(status))

    def status(self, text: str) -> bool:
        """A status line alone."""
        return self.notify(_status(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the loop still runs."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())[:MAX_STATUS]


def _watchdog(env: Mapping[str, str]) -> float | None:
    """Half the watchdog timeout systemd asked for, when it asked this process (sd_watchdog_enabled)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
