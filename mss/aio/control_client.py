"""The client side of the control socket: one request, one answer (``mss status``, ``calls``, ``hangup``).

Blocking and bounded: a connect and an answer within ``timeout`` seconds, an answer of at most
:data:`~mss.control.MAX_ANSWER` bytes. Every failure is a :class:`~mss.control.ControlError` whose
text says what an operator can do about it (mss not running, permission, a stale socket file).
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

from mss.aio.control import MAX_CONNECTIONS, unix_address
from mss.control import MAX_ANSWER, ControlError, ControlRequest, encode_request, read_answer
from mss.errors import MssError

__all__ = ["DEFAULT_TIMEOUT", "ask"]

#: Seconds a command waits for mss: it answers in milliseconds unless its loop is stuck.
DEFAULT_TIMEOUT = 10.0

#: Bytes read at a time.
_CHUNK = 65536

_ANSWER_KEY = {"status": "status", "calls": "calls", "hangup": "hangup"}


def _connect(path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with unix_address(path) as address:
            sock.connect(address)
    except FileNotFoundError:
        sock.close()
        raise ControlError(f"mss is not running: no control socket at {path}") from None
    except ConnectionRefusedError:
        sock.close()
        raise ControlError(f"mss is not running: nothing answers on {path} (left by a stopped mss)") from None
    except PermissionError:
        sock.close()
        raise ControlError(f"permission denied on {path}: run as the user mss runs as, or a member of "
                           "its group") from None
    except TimeoutError:
        sock.close()
        raise ControlError(f"mss did not accept the connection on {path} within {timeout:g}s") from None
    except MssError as exc:
        sock.close()
        raise ControlError(str(exc)) from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ENOTSOCK or exc.errno == errno.ENOTDIR:
            raise ControlError(f"{path} is not a control socket") from None
        raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
    return sock


def ask(path: str, request: ControlRequest, *, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Send ``request`` to the mss at ``path``; returns its answer's value (a dict for ``status``,
    a list for ``calls``, the id for ``hangup``). Raises :class:`ControlError`."""
    deadline = time.monotonic() + timeout
    with _connect(path, timeout) as sock:
        try:
            sock.sendall(encode_request(request))
            data = b""
            while not data.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(_CHUNK)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_ANSWER:
                    raise ControlError(f"the answer is longer than {MAX_ANSWER} bytes")
        except TimeoutError:
            raise ControlError(f"mss did not answer within {timeout:g}s") from None
        except ConnectionResetError:
            raise ControlError(f"mss reset the control connection (it serves {MAX_CONNECTIONS} at once: "
                               "try again)") from None
        except OSError as exc:
            raise ControlError(f"the control connection failed: {exc.strerror or exc}") from None
    if not data:
        raise ControlError("mss closed the control connection without an answer")
    return read_answer(data.rstrip(b"\n"), _ANSWER_KEY[request.cmd])
