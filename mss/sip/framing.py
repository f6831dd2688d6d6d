"""Content-Length framing of SIP over a byte stream (RFC 3261 §18.3, RFC 5626 §3.5.1 keep-alives).

:class:`StreamFramer` takes bytes as they arrive on one TCP connection and returns whole messages
(still unparsed, exactly the bytes of each) and keep-alive pings. It never holds more than
:data:`~mss.sip.message.MAX_MESSAGE_SIZE` bytes: a message that would be larger, or a header
section without a usable Content-Length, breaks the stream (there is no way to find the next message
boundary), so it raises :class:`~mss.errors.SipError` and refuses further input; the adapter closes
the connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from mss.errors import SipError
from mss.sip._grammar import parse_number
from mss.sip.message import MAX_MESSAGE_SIZE

__all__ = ["KeepAlive", "StreamFramer"]

_WS = b" \t"


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A double-CRLF ping (RFC 5626 §3.5.1); answer it with a single CRLF pong."""


_KEEPALIVE = KeepAlive()


# A Content-Length line (``l`` is its compact form, RFC 3261 §7.3.3): the name at the start of a
# line after the first (a line starting with white space continues the one before), any case.
_CONTENT_LENGTH_LINES = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:(.*?)(?=\r\n|\Z)", re.IGNORECASE | re.DOTALL
)


def _content_length(head: bytes) -> int:
    """The Content-Length of a header section (``l`` or ``Content-Length``, any case)."""
    found: int | None = None
    for value in _CONTENT_LENGTH_LINES.findall(head):
        text = value.strip(_WS)
        if not text.isdigit():
            raise SipError(f"Content-Length {text[:20]!r} is not a number")
        if found is not None:
            raise SipError("Content-Length appears twice")
        found = parse_number(text.decode("ascii"), "Content-Length", MAX_MESSAGE_SIZE)
    if found is None:
        raise SipError("a message on a stream has no Content-Length")
    return found


class StreamFramer:
    """Cuts one connection's bytes into SIP messages by Content-Length."""

    __slots__ = ("_broken", "_buf", "_max")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        """Add ``data``; return the messages (and pings) it completed, in order."""
        if self._broken:
            raise SipError("stream is broken")
        buf = self._buf
        buf += data
        out: list[bytes | KeepAlive] = []
        while buf:
            # Between messages: CRLFs are keep-alive pings (CRLFCRLF) or pongs (CRLF).
            if buf[0] in (13, 10):
                if buf.startswith(b"\r\n\r\n"):
                    out.append(_KEEPALIVE)
                    del buf[:4]
                elif b"\r\n\r\n".startswith(bytes(buf[:4])):
                    break  # a ping or a pong: wait for the next bytes to tell
                elif buf.startswith(b"\r\n"):
                    del buf[:2]  # a pong
                else:
                    del buf[:1]  # a stray CR or LF
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._max:
                    self._fail(f"header section longer than {self._max} bytes")
                break
            try:
                length = _content_length(bytes(buf[:end]))
            except SipError as exc:
                self._fail(exc.reason)
            total = end + 4 + length
            if total > self._max:
                self._fail(f"message of {total} bytes is larger than {self._max}")
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    def _fail(self, reason: str) -> NoReturn:
        self._broken = True
        self._buf.clear()
        raise SipError(reason)
