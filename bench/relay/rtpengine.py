"""Drive rtpengine (Debian package ``rtpengine-daemon``) for the relay benchmark.

Starts the daemon in the foreground with userspace forwarding only (``--table=-1``), makes one call
per phone pair over the ng control protocol (bencode over UDP, RFC-less but documented by
rtpengine: ``<cookie> <bencoded dict>``): ``offer`` with leg a's SDP, ``answer`` with leg b's. The
port in the SDP returned by ``answer`` is where leg a must send; the one returned by ``offer`` is
where leg b must send.
"""

from __future__ import annotations

import itertools
import os
import re
import resource
import shutil
import socket
import subprocess
import time

__all__ = ["RtpEngine", "bdecode", "bencode"]


def bencode(value: object) -> bytes:
    """Encode ints, str/bytes, lists and dicts (keys sorted) as bencode."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> object:
    """Decode one bencoded value (byte strings come back as str when they are UTF-8)."""

    def parse(i: int) -> tuple[object, int]:
        c = data[i : i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1 : end]), end + 1
        if c == b"l":
            out: list[object] = []
            i += 1
            while data[i : i + 1] != b"e":
                v, i = parse(i)
                out.append(v)
            return out, i + 1
        if c == b"d":
            d: dict[str, object] = {}
            i += 1
            while data[i : i + 1] != b"e":
                k, i = parse(i)
                v, i = parse(i)
                d[str(k)] = v
            return d, i + 1
        colon = data.index(b":", i)
        n = int(data[i:colon])
        raw = data[colon + 1 : colon + 1 + n]
        try:
            return raw.decode(), colon + 1 + n
        except UnicodeDecodeError:
            return raw, colon + 1 + n

    value, _ = parse(0)
    return value


def sdp(port: int, host: str, pt: int, name: str) -> str:
    """A minimal audio offer/answer from a phone at host:port."""
    return (
        "v=0\r\n"
        f"o=- 1 1 IN IP4 {host}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP {pt}\r\n"
        f"a=rtpmap:{pt} {name}/8000\r\n"
        "a=sendrecv\r\n"
    )


_M_AUDIO = re.compile(r"^m=audio (\d+) ", re.M)


class RtpEngine:
    """One rtpengine daemon on ``host`` with its ng port; ``close()`` stops it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        ng_port: int = 22222,
        port_min: int = 20000,
        port_max: int = 29999,
        cpu: int | None = 0,
        threads: int = 1,
        log: str | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        exe = shutil.which("rtpengine") or "/usr/bin/rtpengine"
        cmd = [
            exe,
            "--config-file=none",
            "--table=-1",
            "--foreground",
            "--log-stderr",
            "--log-level=3",
            f"--interface={host}",
            f"--listen-ng={host}:{ng_port}",
            f"--port-min={port_min}",
            f"--port-max={port_max}",
            f"--num-threads={threads}",
            "--timeout=600",
            "--delete-delay=0",
        ]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        cmd = [*(prefix or []), *cmd]

        def limits() -> None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        self._log = open(log or os.devnull, "wb")  # noqa: SIM115 - lives as long as the daemon
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, preexec_fn=limits
        )
        self.addr = (host, ng_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)
        self._cookies = itertools.count(1)
        deadline = time.monotonic() + 10
        while True:  # wait until it answers ping
            try:
                if self.command({"command": "ping"}).get("result") == "pong":
                    break
            except (TimeoutError, ConnectionRefusedError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("rtpengine did not start")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self, body: dict[str, object]) -> dict[str, object]:
        cookie = f"c{next(self._cookies)}".encode()
        self.sock.sendto(cookie + b" " + bencode(body), self.addr)
        for _ in range(20):  # skip stale replies to earlier timeouts
            data, _ = self.sock.recvfrom(65536)
            got, _, payload = data.partition(b" ")
            if got == cookie:
                reply = bdecode(payload)
                assert isinstance(reply, dict)
                return reply
        raise TimeoutError("no ng reply")

    def call(
        self, call_id: str, a: tuple[str, int], b: tuple[str, int], pt: int, name: str
    ) -> tuple[int, int]:
        """Set up one call; returns (port for leg a to send to, port for leg b to send to)."""
        offer = self.command(
            {
                "command": "offer",
                "call-id": call_id,
                "from-tag": "a",
                "sdp": sdp(a[1], a[0], pt, name),
                "replace": ["origin", "session-connection"],
            }
        )
        if offer.get("result") != "ok":
            raise RuntimeError(f"offer failed: {offer}")
        answer = self.command(
            {
                "command": "answer",
                "call-id": call_id,
                "from-tag": "a",
                "to-tag": "b",
                "sdp": sdp(b[1], b[0], pt, name),
                "replace": ["origin", "session-connection"],
            }
        )
        if answer.get("result") != "ok":
            raise RuntimeError(f"answer failed: {answer}")
        b_port = int(_M_AUDIO.search(str(offer["sdp"])).group(1))  # type: ignore[union-attr]
        a_port = int(_M_AUDIO.search(str(answer["sdp"])).group(1))  # type: ignore[union-attr]
        return a_port, b_port

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sock.close()
        self._log.close()
