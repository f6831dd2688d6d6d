"""The control socket (``[control] socket``): a unix stream socket speaking :mod:`mss.control`.

``mss status``, ``mss calls`` and ``mss hangup ID`` connect here. Who may: the socket file is mode
0660, so the user mss runs as and its group. At start a socket file left by a crash is replaced,
but if another mss answers on it, start-up stops (two mss on one config share one journal); a
file that is not a socket is never removed. At exit the socket file is removed (if it is still
ours).

Unix socket paths are limited to :data:`MAX_SUN_PATH` bytes. A longer path is reached through the
directory's descriptor (``/proc/self/fd/N/name``), so any path the file system allows works, for the
server and the client alike (:func:`unix_address`).

Bounded: :data:`MAX_CONNECTIONS` at once, requests of :data:`~mss.control.MAX_LINE` bytes, and each
connection has :data:`REQUEST_TIMEOUT` seconds to send its request line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterator

from mss.control import MAX_LINE, ControlError, ControlRequest, encode_error, parse_request
from mss.errors import MssError
from mss.ratelog import RateLimitedLog

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_SUN_PATH",
    "REQUEST_TIMEOUT",
    "SOCKET_MODE",
    "ControlServer",
    "abort_connections",
    "unix_address",
]

log = logging.getLogger("mss.control")

#: Bytes of a unix socket path the kernel takes (sun_path is 108 with its terminating NUL).
MAX_SUN_PATH = 107

#: Control connections open at once at most: an operator's commands and a monitoring script or two.
MAX_CONNECTIONS = 16

#: Seconds a connection has to send its request line (and to take the answer).
REQUEST_TIMEOUT = 5.0

#: The socket file's mode: the user mss runs as and its group (an operators' group) may connect.
SOCKET_MODE = 0o660

#: Seconds the start-up check waits for an mss that may be answering on an existing socket file.
PROBE_TIMEOUT = 1.0

Handler = Callable[[ControlRequest], bytes]


@contextlib.contextmanager
def unix_address(path: str) -> Iterator[str]:
    """The address to bind or connect for ``path``: itself when short enough, else the same file seen
    through its directory's descriptor (held open while the block runs)."""
    if len(os.fsencode(path)) <= MAX_SUN_PATH:
        yield path
        return
    directory, name = os.path.split(path)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        short = f"/proc/self/fd/{fd}/{name}"
        if len(os.fsencode(short)) > MAX_SUN_PATH:
            raise MssError(f"control socket name {name!r} is too long for a unix socket")
        yield short
    finally:
        os.close(fd)


async def abort_connections(writers: set[asyncio.StreamWriter]) -> None:
    """Abort the connections still open (at close): their tasks end on their own, not cancelled."""
    for writer in list(writers):
        writer.transport.abort()
    for _ in range(3):  # the aborted connections' tasks see it within a loop iteration or two
        if not writers:
            break
        await asyncio.sleep(0)


def _answers(path: str) -> bool:
    """True when something accepts connections on the socket file ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT)
        try:
            with unix_address(path) as address:
                probe.connect(address)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise
    return True


class ControlServer:
    """Serves control requests on a unix socket; ``handler`` answers each with one line."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._inode: tuple[int, int] | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._log = RateLimitedLog(log)

    async def start(self) -> None:
        """Bind and listen; raises :class:`MssError` when another mss answers there or the path is
        unusable (the reason says which)."""
        path = self.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise MssError(f"[control] socket {path}: {exc.strerror}") from exc
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise MssError(f"[control] socket {path}: exists and is not a socket; not replacing it")
            try:
                taken = _answers(path)
            except OSError as exc:
                raise MssError(f"[control] socket {path}: cannot check it: {exc.strerror}") from exc
            if taken:
                raise MssError(f"[control] socket {path}: another mss answers there (is mss already "
                               "running with this config?)")
            log.warning("control socket %s left by a previous mss; replacing it", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(path) as address:
                old_umask = os.umask(0o117)  # born 0660: never a moment world-connectable
                try:
                    sock.bind(address)
                finally:
                    os.umask(old_umask)
                os.chmod(address, SOCKET_MODE)
                st = os.stat(address)
            self._inode = (st.st_dev, st.st_ino)
            sock.listen(MAX_CONNECTIONS)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE + 1)
        except OSError as exc:
            sock.close()
            raise MssError(f"[control] socket {path}: cannot listen: {exc.strerror or exc}") from exc
        log.info("control socket %s (mss status, mss calls, mss hangup)", path)

    async def close(self) -> None:
        """Stop listening and remove the socket file, if it is still the one this server made."""
        if self._server is not None:
            self._server.close()
            self._server = None
        await abort_connections(self._open)
        if self._inode is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(self.path)
            self._inode = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= MAX_CONNECTIONS:
            self._log.warning("busy", "control: %d connections open already; one refused", len(self._open))
            with contextlib.suppress(OSError):
                writer.write(encode_error(f"busy: {MAX_CONNECTIONS} control connections open"))
            writer.close()
            return
        self._open.add(writer)
        try:
            answer = await self._answer(reader)
            writer.write(answer)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (OSError, TimeoutError):
            pass  # the client went away or stalled
        finally:
            self._open.discard(writer)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), REQUEST_TIMEOUT)
        except TimeoutError:
            return encode_error(f"no request line within {REQUEST_TIMEOUT:g}s")
        except asyncio.LimitOverrunError:
            return encode_error(f"request longer than {MAX_LINE} bytes")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial.strip():
                return b""
            line = exc.partial  # a last line without its line end
        try:
            request = parse_request(line.rstrip(b"\r\n"))
        except ControlError as exc:
            return encode_error(str(exc))
        try:
            return self.handler(request)
        except ControlError as exc:
            return encode_error(str(exc))
        except Exception as exc:  # a bug: the operator gets a reason, mss keeps running
            self._log.error(("handler", type(exc).__name__), "control %s failed: %r", request.cmd, exc)
            return encode_error(f"{request.cmd} failed inside mss: {type(exc).__name__}; see the log")
