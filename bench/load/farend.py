"""The far end of the load benchmark: Kamailio answering statelessly, plus a silent media sink.

``FarEnd`` is :class:`mss_peers.kamailio.Kamailio` (start, the readiness ping, the port retry, the
process-group kill) with its own template, ``kamailio.cfg.in`` beside this module: every INVITE
gets 180 then 200 with an SDP answer, every other request 200, ACKs are dropped. It runs
``children`` UDP and TCP workers (4 by default: at 400 callbacks/s it stays under 10 % of a core).

The SDP points at ``media``, a UDP port that ``MediaSink`` holds open and never reads: nobody sends
from it, and what mss's relay sends there (ringback while user2 rings) is dropped by the kernel
once the receive buffer is full, without ICMP errors.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from types import TracebackType

from mss_peers.kamailio import Kamailio, KamailioError
from mss_peers.net import check_loopback, free_port

__all__ = ["FarEnd", "MediaSink", "answer_sdp"]

TEMPLATE = Path(__file__).with_name("kamailio.cfg.in")
# Worker processes per transport: enough that the far end never queues at the rates measured.
DEFAULT_CHILDREN = 4
# The sink's receive buffer (bytes): small, so a burst of ringback costs no memory.
SINK_RCVBUF = 4096


def answer_sdp(host: str, port: int) -> str:
    """The SDP answer of every INVITE: PCMU at ``host:port``, CRLF line ends."""
    lines = [
        "v=0",
        f"o=far 1 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=sendrecv",
    ]
    return "".join(line + "\r\n" for line in lines)


class MediaSink:
    """A UDP socket bound on loopback and never read: the RTP address of the far end's SDP."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = check_loopback(host)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SINK_RCVBUF)
        self.sock.bind((host, 0))
        self.port: int = self.sock.getsockname()[1]

    def close(self) -> None:
        """Release the port."""
        self.sock.close()

    def __enter__(self) -> MediaSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FarEnd(Kamailio):
    """Kamailio as a stateless answering machine on ``host:port`` (a free port by default)."""

    def __init__(
        self,
        *,
        media: tuple[str, int],
        host: str = "127.0.0.1",
        port: int | None = None,
        children: int = DEFAULT_CHILDREN,
        workdir: Path | str | None = None,
    ) -> None:
        if not 1 <= children <= 64:
            raise ValueError(f"children must be 1..64, not {children}")
        super().__init__(
            "trunk", host=host, port=port if port is not None else free_port(host), workdir=workdir
        )
        self.children = children
        self.media = (check_loopback(media[0]), int(media[1]))

    def __repr__(self) -> str:
        return f"<FarEnd {self.host}:{self.port} children={self.children}>"

    def render_config(self) -> str:
        """The kamailio.cfg text: ``kamailio.cfg.in`` with every placeholder filled."""
        sdp = answer_sdp(*self.media).replace("\r\n", "\\r\\n")
        values = {
            "HOST": self.host,
            "PORT": str(self.port),
            "CHILDREN": str(self.children),
            "SDP": sdp,
        }
        text = TEMPLATE.read_text()
        for name, value in values.items():
            text = text.replace(f"@{name}@", value)
        left = re.findall(r"@[A-Z_]+@", text)
        if left:
            raise KamailioError(f"unfilled placeholders in {TEMPLATE.name}: {sorted(set(left))}")
        return text

    def pin(self, cpu: int) -> None:
        """Run every process of this instance on ``cpu`` only (call after ``start``)."""
        for pid in self.process_ids():
            try:
                os.sched_setaffinity(pid, {cpu})
            except ProcessLookupError:
                continue

    def process_ids(self) -> list[int]:
        """The PIDs of every Kamailio process of this instance (its process group)."""
        if self.pid is None:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == self.pid:  # field 5, pgrp: start() made a new session
                found.append(int(entry))
        return found
