"""mss as a real process (for ``mss demo`` and end-to-end tests), and an AS that talks IIF to it.

``MssServer(workdir, pss=..., **config)`` writes a config.ini on free loopback ports, runs
``python -m mss run`` with it (stderr to ``mss.log``), waits until the IIF port answers, and stops
it with SIGTERM (then SIGKILL) — also when a test fails. ``AsClient`` is a blocking IIF client with
bounded waits: ``request()`` returns the ACK line, ``response(id)`` waits for the RESPONSE.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mss_peers.net import free_port, wait_until

__all__ = ["AsClient", "MssServer"]

class MssServer:
    """One ``mss run`` process on loopback."""

    def __init__(
        self,
        workdir: Path,
        *,
        pss: tuple[str, int],
        external_line: tuple[str, str] | None = ("mss", "secret"),
        default_caller: str = "5550100",
        transport: str = "udp",
        sip_port: int | None = None,
        callback: dict[str, Any] | None = None,
        rtp: dict[str, Any] | None = None,
        sip: dict[str, Any] | None = None,
        journal: dict[str, Any] | None = None,
        extra: str = "",
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.iif_port = free_port()
        self.sip_port = sip_port or free_port()
        # RTP ranges of 100 ports in 10000..14999: below the harness's free ports (15000 and up)
        # and the kernel's ephemeral ones; a taken port is skipped by the relay anyway.
        rtp_base = 10000 + (self.iif_port % 50) * 100
        cb = {
            "listen_host": "127.0.0.1",
            "listen_port": self.iif_port,
            "audio_codecs": "PCMU, PCMA, G729",
            "external_line_mode": "yes" if external_line else "no",
            "default_caller": "" if external_line else default_caller,
            "ring_timeout": 20,
            "extended_response": "yes",
            "drain_grace": 5,
        }
        cb.update(callback or {})
        media: dict[str, Any] = {
            "host": "127.0.0.1",
            "port_min": rtp_base,
            "port_max": rtp_base + 99,
            "inactivity_timeout": 30,
        }
        media.update(rtp or {})
        self.rtp_range = (int(media["port_min"]), int(media["port_max"]))
        workers = int(str(cb.get("workers", 1)))
        # With [callback] workers > 1 the supervisor says this once every worker is ready.
        self.ready_line = "mss ready" if workers == 1 else f"all {workers} workers ready"
        lines = [
            "[callback]",
            *(f"{k} = {v}" for k, v in cb.items()),
            "[sip]",
            *(f"{k} = {v}" for k, v in {
                "local_host": "127.0.0.1",
                "local_port": self.sip_port,
                "transport": transport,
                "pss_host": pss[0],
                "pss_port": pss[1],
                **(sip or {}),
            }.items()),
        ]
        if external_line:
            lines += [
                "[external_line]",
                f"username = {external_line[0]}",
                f"password = {external_line[1]}",
                "expires = 120",
            ]
        lines += [
            "[rtp]",
            *(f"{k} = {v}" for k, v in media.items()),
            "[peer_servers]",
            "as1 = 127.0.0.1",
            "[journal]",
            *(f"{k} = {v}" for k, v in {"path": "journal.sqlite3", **(journal or {})}.items()),
            "[log]",
            "level = debug",
            extra,
        ]
        self.config_path = workdir / "config.ini"
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log_path = workdir / "mss.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> MssServer:
        offset = len(self.log_text())  # a restart appends to the same log
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mss", "run", "--config", str(self.config_path)],
            cwd=self.workdir,
            stdout=log,
            stderr=log,
        )
        log.close()

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"mss exited with {self.process.returncode}:\n{self.log_tail()}")
            return self.ready_line in self.log_text()[offset:]

        wait_until(ready, timeout)
        return self

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until mss's log matches ``pattern``."""

        def found() -> re.Match[str] | None:
            return re.search(pattern, self.log_text())

        try:
            return wait_until(found, timeout)
        except AssertionError:
            raise AssertionError(f"mss log never matched {pattern!r}:\n{self.log_tail()}") from None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def rtp_ports_held(self) -> list[int]:
        """The ports of the RTP range that are bound now (by mss or anyone): [] once calls are freed."""
        held = []
        for port in range(self.rtp_range[0], self.rtp_range[1] + 1):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    held.append(port)
        return held

    def kill(self) -> None:
        """SIGKILL at once (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def __repr__(self) -> str:
        return f"mss (iif {self.iif_port}, sip {self.sip_port})"

    def describe(self) -> str:
        """The log tail, for failure reports."""
        return f"--- {self!r} log tail ---\n{self.log_tail()}"

    def client(self) -> AsClient:
        return AsClient(("127.0.0.1", self.iif_port))

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> MssServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsClient:
    """A blocking IIF client over TCP: what an AS does."""

    def __init__(
        self, address: tuple[str, int], timeout: float = 5.0, source_port: int | None = None
    ) -> None:
        if source_port is None:
            self.sock = socket.create_connection(address, timeout=timeout)
        else:  # the same source port again: the kernel's SO_REUSEPORT hash picks the same mss worker
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", source_port))
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        self._buffer = b""
        self.lines: list[str] = []
        """Lines received and not yet taken by a wait."""
        self.history: list[str] = []
        """Every line received, in order."""

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode("ascii") + b"\r\n")

    def request(self, cb_id: str, user1: str, user2: str, duration: int, timeout: float = 5.0) -> str:
        """Send a REQUEST; return its ACK line."""
        self.send(f"REQUEST: id={cb_id};user1={user1};user2={user2};duration={duration};")
        return self.wait_line(rf"^ACK: id={re.escape(cb_id)};", timeout)

    def cancel(self, cb_id: str, timeout: float = 5.0) -> str:
        self.send(f"CANCEL: id={cb_id};")
        return self.wait_line(rf"^ACK: id={re.escape(cb_id)};", timeout)

    def response(self, cb_id: str, timeout: float) -> dict[str, str]:
        """Wait for the RESPONSE of ``cb_id``; its parameters by name."""
        line = self.wait_line(rf"^RESPONSE: id={re.escape(cb_id)};", timeout)
        return dict(p.split("=", 1) for p in line.partition(":")[2].strip().rstrip(";").split(";"))

    def wait_line(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.lines):
                if re.search(pattern, line):
                    return self.lines.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; got {self.lines}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise AssertionError(f"mss closed the IIF connection; lines: {self.lines}")
            self._buffer += data
            *complete, self._buffer = self._buffer.split(b"\n")
            received = [c.decode("ascii").rstrip("\r") for c in complete]
            self.lines += received
            self.history += received

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> AsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
