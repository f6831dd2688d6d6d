"""The control protocol of ``mss status``, ``mss calls`` and ``mss hangup``: JSON lines on a unix socket.

Sans-IO: the server adapter (:mod:`mss.aio.control`) and the client (:mod:`mss.aio.control_client`)
move bytes; this module decides what they mean. One request per line, one answer per line::

    {"cmd": "status"}              -> {"ok": true, "status": {...}}
    {"cmd": "calls"}               -> {"ok": true, "calls": [{...}, ...]}
    {"cmd": "hangup", "id": "42"}  -> {"ok": true, "hangup": "42"}
    anything wrong                 -> {"ok": false, "error": "why"}

The fields of ``status`` are :class:`StatusInfo`'s, those of each call :class:`CallInfo`'s. Clients
render them for people (:func:`render_status`, :func:`render_calls`) or print the JSON as it came.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from mss.errors import MssError

__all__ = [
    "COMMANDS",
    "MAX_ANSWER",
    "MAX_LINE",
    "CallInfo",
    "ControlError",
    "ControlRequest",
    "StatusInfo",
    "encode_answer",
    "encode_error",
    "encode_request",
    "parse_request",
    "read_answer",
    "render_calls",
    "render_status",
]

#: Bytes a request or an answer line may take. A request is a few dozen bytes; an answer lists every
#: live call (about 300 bytes each), so the client's bound is larger (:data:`MAX_ANSWER`).
MAX_LINE = 4096

#: Bytes of one answer the client reads at most: ``mss calls`` at 100,000 calls in progress.
MAX_ANSWER = 64 << 20

Command = Literal["status", "calls", "hangup"]

#: The commands the server knows.
COMMANDS: tuple[Command, ...] = ("status", "calls", "hangup")

#: A callback id as IIF allows it (SPEC.md): 1 to 31 letters, digits, ``.``, ``_``, ``-``.
_ID = re.compile(r"[A-Za-z0-9._-]{1,31}")


class ControlError(MssError):
    """A control request or answer that cannot be used; the text says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlRequest:
    """One request to the control socket."""

    cmd: Command
    """``status``, ``calls`` or ``hangup``."""
    id: str | None = None
    """The callback to hang up (``hangup`` only)."""

    def __post_init__(self) -> None:
        if self.cmd not in COMMANDS:
            raise ControlError(f"unknown command {self.cmd!r} (known: {', '.join(COMMANDS)})")
        if self.cmd == "hangup":
            if self.id is None or not _ID.fullmatch(self.id):
                raise ControlError(f"hangup needs a callback id (1-31 of A-Z a-z 0-9 . _ -), not {self.id!r}")
        elif self.id is not None:
            raise ControlError(f"{self.cmd} takes no id")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallInfo:
    """One callback in progress, as ``mss calls`` shows it."""

    id: str
    """The AS's callback id."""
    peer: str
    """[peer_servers] name of the AS that ordered it."""
    state: str
    """Call-flow state: ``calling user1``, ``calling user2``, ``bridged``, ``releasing``."""
    user1: str
    """Called first."""
    user2: str
    """Called when user1 answered."""
    age: float
    """Seconds since its REQUEST."""
    ports: tuple[int, int]
    """The relay's RTP ports facing user1 and user2 (RTCP one above each)."""
    packets_from_user1: int
    """RTP packets the relay took from user1."""
    packets_to_user1: int
    """RTP packets the relay sent to user1 (user2's audio, and ringback)."""
    packets_from_user2: int
    """RTP packets the relay took from user2."""
    packets_to_user2: int
    """RTP packets the relay sent to user2."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusInfo:
    """The server at a glance, as ``mss status`` shows it."""

    version: str
    """mss's version."""
    pid: int
    """Process id."""
    uptime: float
    """Seconds since the service started."""
    state: str
    """``starting`` (not taking orders yet), ``serving`` or ``draining``."""
    registration: str
    """``registered``, ``not registered``, or ``n/a`` (server-to-server mode)."""
    calls: int
    """Callbacks in progress."""
    max_calls: int
    """Callbacks in progress at most."""
    relay_sessions: int
    """Relay sessions open."""
    loop_lag_ms: float
    """The event loop's smoothed lag (what admission on load watches)."""
    overloaded: bool
    """True while REQUESTs are refused for load."""


def encode_request(request: ControlRequest) -> bytes:
    """``request`` as one line."""
    fields: dict[str, str] = {"cmd": request.cmd}
    if request.id is not None:
        fields["id"] = request.id
    return json.dumps(fields).encode() + b"\n"


def parse_request(line: bytes) -> ControlRequest:
    """Read one request line (without its line end); raises :class:`ControlError` with the reason."""
    if len(line) > MAX_LINE:
        raise ControlError(f"request longer than {MAX_LINE} bytes")
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"not a JSON request: {exc}") from None
    if not isinstance(data, dict):
        raise ControlError('a request is a JSON object like {"cmd": "status"}')
    cmd = data.get("cmd")
    cb_id = data.get("id")
    if not isinstance(cmd, str):
        raise ControlError('a request needs "cmd": one of ' + ", ".join(COMMANDS))
    if cb_id is not None and not isinstance(cb_id, str):
        raise ControlError('"id" must be a string')
    unknown = sorted(set(data) - {"cmd", "id"})
    if unknown:
        raise ControlError(f"unknown field(s): {', '.join(unknown)}")
    if cmd not in COMMANDS:
        raise ControlError(f"unknown command {cmd!r} (known: {', '.join(COMMANDS)})")
    return ControlRequest(cmd=cmd, id=cb_id)


def _plain(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def encode_answer(key: str, value: object) -> bytes:
    """A successful answer line: ``{"ok": true, key: value}`` (dataclasses as objects)."""
    return json.dumps({"ok": True, key: _plain(value)}, separators=(",", ":")).encode() + b"\n"


def encode_error(reason: str) -> bytes:
    """A refusal line."""
    return json.dumps({"ok": False, "error": reason}).encode() + b"\n"


def read_answer(line: bytes, key: str) -> Any:
    """The ``key`` part of an answer line; raises :class:`ControlError` with the server's reason when it
    refused, or when the line is not an answer."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ControlError("the control socket answered something that is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise ControlError("the control socket answered something that is not a control answer")
    if not data["ok"]:
        raise ControlError(str(data.get("error", "refused")))
    if key not in data:
        raise ControlError(f"the answer has no {key!r}")
    return data[key]


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


def render_status(status: dict[str, Any]) -> str:
    """``mss status`` for people: one ``name: value`` line each."""
    load = f"loop lag {float(status['loop_lag_ms']):.1f} ms"
    if status.get("overloaded"):
        load += " (overloaded: REQUESTs refused)"
    rows = [
        ("mss", f"{status['version']} (pid {status['pid']}), {status['state']}"),
        ("uptime", _duration(float(status["uptime"]))),
        ("registration", str(status["registration"])),
        ("calls", f"{status['calls']} in progress (max {status['max_calls']}), "
                  f"{status['relay_sessions']} relay sessions"),
        ("load", load),
    ]
    return "\n".join(f"{name + ':':<14}{value}" for name, value in rows)


_CALL_COLUMNS = ("ID", "PEER", "STATE", "USER1", "USER2", "AGE", "PORTS", "USER1 IN/OUT", "USER2 IN/OUT")


def render_calls(calls: list[dict[str, Any]]) -> str:
    """``mss calls`` for people: a table, one callback a row (``no callbacks in progress`` when none)."""
    if not calls:
        return "no callbacks in progress"
    rows = [_CALL_COLUMNS] + [
        (
            str(c["id"]), str(c["peer"]), str(c["state"]), str(c["user1"]), str(c["user2"]),
            _duration(float(c["age"])), f"{c['ports'][0]}/{c['ports'][1]}",
            f"{c['packets_from_user1']}/{c['packets_to_user1']}",
            f"{c['packets_from_user2']}/{c['packets_to_user2']}",
        )
        for c in calls
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_CALL_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
