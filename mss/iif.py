"""IIF, the text protocol between an application server (AS) and mss; sans-IO.

Wire format (SPEC.md, "IIF wire format")::

    REQUEST: id=1234;user1=100;user2=101;duration=3600;     AS -> mss
    CANCEL: id=1234;                                        AS -> mss
    ACK: id=1234;code=ok;                                   mss -> AS
    RESPONSE: id=1234;real_duration=180;                    mss -> AS
    EVENT: id=1234;state=user1_ringing;                     mss -> AS (peers with events = yes)

Rules kept here:

* A message is ``METHOD:`` (uppercase), optional spaces, then ``name=value`` parameters separated by
  ``;``; the final ``;`` may be missing. Unknown parameters are ignored; a missing, repeated, empty or
  malformed one refuses the message.
* TCP framing: a message ends at LF; a CR before it is dropped. A buffered message that ends with ``;``
  is also complete after :data:`IDLE_COMPLETION` seconds without more bytes (for ASes that send no line
  ends), and any buffered message is complete when the peer ends the stream. UDP: one message per
  datagram.
* No message is longer than :data:`MAX_IIF_MESSAGE` bytes: a longer one is refused and discarded up to
  its end (its line end, or a ``;`` followed by :data:`IDLE_COMPLETION` of silence); a connection never
  buffers more than that.

A refused message is reported by raising :class:`~mss.errors.IIFError` from
:meth:`IIFConnection.next_event`; the error carries the id to put in ``ACK: id=...;code=fail;`` and
the connection stays usable (the bad message is consumed).
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass
from typing import Literal, NoReturn, get_args

from mss.errors import IIFError, LocalProtocolError

__all__ = [
    "EVENT_STATES",
    "IDLE_COMPLETION",
    "MAX_IIF_MESSAGE",
    "RESULTS",
    "Ack",
    "CallbackRequest",
    "CallbackResponse",
    "CallbackState",
    "Cancel",
    "Event",
    "IIFConnection",
    "ProgressEvent",
    "Result",
    "Role",
    "parse_datagram",
    "parse_message",
    "serialize",
]

#: Longest message accepted, line end excluded: far above a valid REQUEST (about 120 bytes), and what
#: bounds the bytes a connection may hold unparsed.
MAX_IIF_MESSAGE = 1024

#: Seconds of silence after which a buffered message ending with ``;`` counts as complete.
IDLE_COMPLETION = 0.2

#: Longest id and user name: "less than 32 characters" (the service guide).
MAX_FIELD = 31

#: Largest duration written by a well-formed number; bounds int() on hostile input.
_MAX_DIGITS = 10

Result = Literal[
    "answered",
    "user1_busy",
    "user1_no_answer",
    "user1_rejected",
    "user1_failed",
    "user2_busy",
    "user2_no_answer",
    "user2_rejected",
    "user2_failed",
    "cancelled",
    "media_timeout",
    "shutdown",
]
"""A value of ``result=`` in an extended RESPONSE (SPEC.md, "Failure causes"): a callback's outcome."""

CallbackState = Literal["user1_ringing", "user1_answered", "user2_ringing", "bridged"]
"""A value of ``state=`` in an EVENT line (SPEC.md, "Additions"): how far a callback has come."""

#: Every :data:`CallbackState`, for checking what is read from the wire.
EVENT_STATES: frozenset[str] = frozenset(get_args(CallbackState))

#: Every :data:`Result`, for checking what is read from the wire.
RESULTS: frozenset[str] = frozenset(get_args(Result))

_ID_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_FIELD}}}")
_USER_RE = re.compile(rf"[A-Za-z0-9+*#._-]{{1,{MAX_FIELD}}}")
_METHOD_RE = re.compile(rb"([A-Z]+):[ \t]*")
# A word before the first ':' that is not an IIF method (e.g. lowercase): its parameters are still read.
_WORD_COLON_RE = re.compile(rb"([A-Za-z]+):")
# An id anywhere in a message whose start cannot be read (``REQUEST id=7;...``): echoed when valid and whole.
_LOOSE_ID_RE = re.compile(rb"(?:^|[ \t;:])id[ \t]*=[ \t]*([A-Za-z0-9._-]{1,%d})[ \t]*(?:;|$)" % MAX_FIELD)
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


# --- events ------------------------------------------------------------------------------------

def _check_id(value: str) -> None:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise LocalProtocolError(f"invalid IIF id {value!r}")


def _check_count(name: str, value: int, low: int) -> None:
    """A whole number the wire can carry: ``low`` to :data:`_MAX_DIGITS` digits."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 10**_MAX_DIGITS:
        raise LocalProtocolError(f"invalid IIF {name} {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackRequest:
    """``REQUEST``: the AS orders a callback."""

    id: str
    """Callback identity chosen by the AS (1-31 of letters, digits, ``.`` ``_`` ``-``)."""
    user1: str
    """Called first; hears ringback while user2 is called."""
    user2: str
    """Called once user1 answers."""
    duration: int
    """Longest the callback may last, in seconds from user1's answer."""

    def __post_init__(self) -> None:
        _check_id(self.id)
        for user in (self.user1, self.user2):
            if not isinstance(user, str) or not _USER_RE.fullmatch(user):
                raise LocalProtocolError(f"invalid IIF user {user!r}")
        _check_count("duration", self.duration, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """``CANCEL``: the AS aborts a callback in any state."""

    id: str
    """The callback to abort."""

    def __post_init__(self) -> None:
        _check_id(self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """``ACK``: mss took (``ok``) or refused a REQUEST or CANCEL."""

    id: str
    """The id of the message answered; empty (with ``ok=False`` only) when none could be read."""
    ok: bool
    """``code=ok`` when True, ``code=fail`` when False."""

    def __post_init__(self) -> None:
        if not isinstance(self.ok, bool):
            raise LocalProtocolError(f"ACK ok must be True or False, not {self.ok!r}")
        if self.id or self.ok:
            _check_id(self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackResponse:
    """``RESPONSE``: a callback ended; sent exactly once per REQUEST acknowledged ``ok``."""

    id: str
    """The callback's id."""
    real_duration: int
    """Bridged talk time in whole seconds (0 when never bridged)."""
    result: str | None = None
    """Extended responses only: the outcome (one of :data:`RESULTS`)."""
    code: int | None = None
    """Extended responses only: the deciding SIP status, 0 when none."""

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_count("real_duration", self.real_duration, 0)
        if (self.result is None) != (self.code is None):
            raise LocalProtocolError("result and code go together")
        if self.result is not None and self.result not in RESULTS:
            raise LocalProtocolError(f"unknown result {self.result!r}")
        if self.code is not None and (
            isinstance(self.code, bool) or not isinstance(self.code, int) or not 0 <= self.code <= 699
        ):
            raise LocalProtocolError(f"invalid SIP code {self.code!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressEvent:
    """``EVENT``: how far a callback has come, for peers with ``events = yes`` (best effort, TCP only,
    after the ACK and before the RESPONSE)."""

    id: str
    """The callback's id."""
    state: CallbackState
    """``user1_ringing``, ``user1_answered``, ``user2_ringing`` or ``bridged``."""

    def __post_init__(self) -> None:
        _check_id(self.id)
        if self.state not in EVENT_STATES:
            raise LocalProtocolError(f"unknown callback state {self.state!r}")


Event = CallbackRequest | Cancel | Ack | CallbackResponse | ProgressEvent


# --- parse and serialize ------------------------------------------------------------------------

class Role(enum.Enum):
    """Which side of IIF a connection is: what it accepts."""

    SERVER = "server"  # mss: accepts REQUEST and CANCEL
    CLIENT = "client"  # an AS: accepts ACK, RESPONSE and EVENT


_ACCEPTS = {Role.SERVER: ("REQUEST", "CANCEL"), Role.CLIENT: ("ACK", "RESPONSE", "EVENT")}


def _readable_id(params: dict[str, str]) -> str:
    """The id to echo in a refusal: only when it is itself valid."""
    value = params.get("id", "")
    return value if _ID_RE.fullmatch(value) else ""


def _split_params(text: str) -> tuple[dict[str, str], str | None]:
    """Parameters by name, and the reason they are malformed (None when well-formed).

    The first occurrence of each name is kept so a refusal can still echo a valid id.
    """
    params: dict[str, str] = {}
    problem: str | None = None
    parts = text.split(";")
    if parts and parts[-1].strip() == "":
        parts.pop()  # the optional final ';'
    for part in parts:
        name, eq, value = part.strip().partition("=")
        if not eq or not _NAME_RE.fullmatch(name):
            problem = problem or f"malformed parameter {part.strip()!r}"
            continue
        if name in params:
            problem = problem or f"repeated parameter {name!r}"
            continue
        params[name] = value.strip()
    return params, problem


def _required(params: dict[str, str], name: str, iif_id: str) -> str:
    value = params.get(name)
    if value is None:
        raise IIFError(f"missing parameter {name!r}", iif_id=iif_id)
    if value == "":
        raise IIFError(f"empty parameter {name!r}", iif_id=iif_id)
    return value


def _int_param(params: dict[str, str], name: str, iif_id: str) -> int:
    value = _required(params, name, iif_id)
    if not value.isdigit() or not value.isascii() or len(value) > _MAX_DIGITS:
        raise IIFError(f"{name} {value!r} is not a whole number", iif_id=iif_id)
    return int(value)


def _user_param(params: dict[str, str], name: str, iif_id: str) -> str:
    value = _required(params, name, iif_id)
    if not _USER_RE.fullmatch(value):
        raise IIFError(
            f"{name} {value!r} is not 1 to {MAX_FIELD} of digits, letters, + * # . _ -", iif_id=iif_id
        )
    return value


def _refuse_without_method(line: bytes) -> NoReturn:
    """Refuse a message that does not start with ``METHOD:``, echoing its id whenever one is readable.

    SPEC.md: "the id left empty when none could be read", so ``request: id=7;...`` gets ``ACK: id=7;``.
    """
    word = _WORD_COLON_RE.match(line)
    if word is not None:
        params, _ = _split_params(line[word.end() :].decode("latin-1"))
        raise IIFError(f"unknown method {word.group(1).decode('ascii')!r}", iif_id=_readable_id(params))
    loose = _LOOSE_ID_RE.search(line)
    iif_id = loose.group(1).decode("ascii") if loose else ""
    raise IIFError("no METHOD: at the start of the message", iif_id=iif_id)


def parse_message(line: bytes, *, role: Role = Role.SERVER, max_duration: int = 86400) -> Event:
    """Parse one message (line end already removed).

    Raises :class:`IIFError` with the readable id when the message is refused.
    """
    if len(line) > MAX_IIF_MESSAGE:
        raise IIFError(f"message longer than {MAX_IIF_MESSAGE} bytes")
    match = _METHOD_RE.match(line)
    if match is None:
        _refuse_without_method(line)
    # latin-1 never fails; every rule below admits ASCII only, so other bytes are refused there.
    text = line[match.end() :].decode("latin-1")
    params, problem = _split_params(text.rstrip(" \t"))
    iif_id = _readable_id(params)
    method = match.group(1).decode("ascii")
    if method not in _ACCEPTS[role]:
        raise IIFError(f"unknown method {method!r}", iif_id=iif_id)
    if problem is not None:
        raise IIFError(problem, iif_id=iif_id)
    if method == "ACK" and params.get("id") == "":
        # mss's own answer to a message whose id could not be read: ``ACK: id=;code=fail;``.
        if params.get("code") != "fail":
            raise IIFError("empty parameter 'id'")
        return Ack(id="", ok=False)
    raw_id = _required(params, "id", iif_id)
    if not iif_id:
        raise IIFError(f"id {raw_id!r} is not 1 to {MAX_FIELD} of letters, digits, . _ -")

    if method == "REQUEST":
        user1 = _user_param(params, "user1", iif_id)
        user2 = _user_param(params, "user2", iif_id)
        duration = _int_param(params, "duration", iif_id)
        if not 1 <= duration <= max_duration:
            raise IIFError(f"duration {duration} is outside 1..{max_duration}", iif_id=iif_id)
        return CallbackRequest(id=iif_id, user1=user1, user2=user2, duration=duration)
    if method == "CANCEL":
        return Cancel(id=iif_id)
    if method == "ACK":
        code = _required(params, "code", iif_id)
        if code not in ("ok", "fail"):
            raise IIFError(f"code {code!r} is not ok or fail", iif_id=iif_id)
        return Ack(id=iif_id, ok=code == "ok")
    if method == "EVENT":
        state = _required(params, "state", iif_id)
        if state not in EVENT_STATES:
            raise IIFError(f"state {state!r} is not one of {', '.join(sorted(EVENT_STATES))}", iif_id=iif_id)
        return ProgressEvent(id=iif_id, state=state)  # type: ignore[arg-type]  # checked just above
    real_duration = _int_param(params, "real_duration", iif_id)
    # An extended response whose cause we cannot read is still a RESPONSE: keep the duration.
    result = params.get("result")
    code_text = params.get("code")
    sip_code: int | None = None
    if code_text is not None and code_text.isascii() and code_text.isdigit() and len(code_text) <= 3:
        sip_code = int(code_text)
    if result not in RESULTS or sip_code is None or sip_code > 699:
        result, sip_code = None, None
    return CallbackResponse(id=iif_id, real_duration=real_duration, result=result, code=sip_code)


def serialize(event: Event) -> bytes:
    """The wire form of ``event``, CRLF-terminated, exactly as the service guide writes it."""
    if isinstance(event, CallbackRequest):
        text = (
            f"REQUEST: id={event.id};user1={event.user1};user2={event.user2};"
            f"duration={event.duration};"
        )
    elif isinstance(event, Cancel):
        text = f"CANCEL: id={event.id};"
    elif isinstance(event, Ack):
        text = f"ACK: id={event.id};code={'ok' if event.ok else 'fail'};"
    elif isinstance(event, ProgressEvent):
        text = f"EVENT: id={event.id};state={event.state};"
    else:
        text = f"RESPONSE: id={event.id};real_duration={event.real_duration};"
        if event.result is not None:
            text += f"result={event.result};code={event.code};"
    return text.encode("ascii") + b"\r\n"


# --- the stream connection ----------------------------------------------------------------------

class IIFConnection:
    """One IIF stream (TCP connection): bytes and ``now`` in, events out.

    Feed bytes with :meth:`receive_data` (``b""`` for end of stream), then call :meth:`next_event`
    until it returns None; it raises :class:`IIFError` for each refused message. Arm a timer for
    :meth:`get_timer` and call :meth:`handle_timer` when it fires (idle completion).
    """

    def __init__(self, role: Role = Role.SERVER, *, max_duration: int = 86400) -> None:
        self.role = role
        self.max_duration = max_duration
        self._buffer = bytearray()  # an incomplete message, never more than MAX_IIF_MESSAGE bytes
        self._cr = False  # a CR arrived after the buffered bytes: a line end if LF follows
        self._discarding = False  # inside an oversized message: drop bytes up to its end
        self._discard_idle_form = False  # the bytes dropped so far end with ';' (idle may end them)
        self._last_data = 0.0
        self._lines: deque[bytes | IIFError] = deque()
        self.closed = False

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes as they arrived; ``b""`` means the peer ended the stream.

        At the end of the stream a buffered message is complete whatever its last byte.
        """
        if self.closed:
            return
        if not data:
            self.closed = True
            if not self._discarding and self._buffer.strip(b" \t\r"):
                self._lines.append(bytes(self._buffer))
            self._buffer.clear()
            self._cr = False
            return
        self._last_data = now
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            if self._discarding:
                if end >= 0:
                    self._discarding = False
                elif piece.strip(b" \t\r"):
                    self._discard_idle_form = piece.rstrip(b" \t\r").endswith(b";")
            elif end >= 0:
                self._end_line(piece)
            else:
                self._hold(piece)
            if end < 0:
                return
            start = end + 1

    def _end_line(self, piece: bytes) -> None:
        """An LF arrived after ``piece``: the buffered message is complete."""
        line = bytes(self._buffer) + (b"\r" if self._cr else b"") + piece
        self._buffer.clear()
        self._cr = False
        if line.endswith(b"\r"):
            line = line[:-1]  # CRLF
        if len(line) > MAX_IIF_MESSAGE:
            self._refuse_oversized(line)
        elif line.strip(b" \t\r"):
            self._lines.append(line)

    def _hold(self, piece: bytes) -> None:
        """Buffer ``piece`` (no line end in it) or, past the bound, refuse the message."""
        if self._cr:
            piece = b"\r" + piece  # the CR held back was inside the message
        self._cr = piece.endswith(b"\r")
        if self._cr:
            piece = piece[:-1]  # maybe the first half of CRLF: held as a flag, not a byte
        if len(self._buffer) + len(piece) <= MAX_IIF_MESSAGE:
            self._buffer += piece
            return
        self._refuse_oversized(bytes(self._buffer) + piece)
        self._buffer.clear()
        self._cr = False
        self._discarding = True
        self._discard_idle_form = piece.rstrip(b" \t\r").endswith(b";")

    def _refuse_oversized(self, head: bytes) -> None:
        # Echo the id only when it is whole: the parameters up to the last ';' within the bound.
        text = head[:MAX_IIF_MESSAGE].decode("ascii", "replace").partition(":")[2]
        params, _ = _split_params(text[: text.rfind(";") + 1])
        self._lines.append(
            IIFError(f"message longer than {MAX_IIF_MESSAGE} bytes", iif_id=_readable_id(params))
        )

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next, or None."""
        if self._discarding:
            return self._last_data + IDLE_COMPLETION if self._discard_idle_form else None
        if self._buffer.rstrip(b" \t\r").endswith(b";"):
            return self._last_data + IDLE_COMPLETION
        return None

    def handle_timer(self, now: float) -> None:
        """After :data:`IDLE_COMPLETION` of silence, a buffered message ending with ``;`` is complete
        (and an oversized one being discarded has ended)."""
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return
        if self._discarding:
            self._discarding = False
        else:
            self._lines.append(bytes(self._buffer))
        self._buffer.clear()
        self._cr = False

    def next_event(self) -> Event | None:
        """The next complete message, None when none is complete; raises :class:`IIFError`."""
        if not self._lines:
            return None
        item = self._lines.popleft()
        if isinstance(item, IIFError):
            raise item
        return parse_message(item, role=self.role, max_duration=self.max_duration)

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message (never above :data:`MAX_IIF_MESSAGE`)."""
        return len(self._buffer)

    def send(self, event: Event) -> bytes:
        """Bytes to write for ``event``."""
        allowed: tuple[type, ...] = (
            (Ack, CallbackResponse, ProgressEvent) if self.role is Role.SERVER else (CallbackRequest, Cancel)
        )
        if not isinstance(event, allowed):
            raise LocalProtocolError(f"a {self.role.value} does not send {type(event).__name__}")
        return serialize(event)


def parse_datagram(data: bytes, *, role: Role = Role.SERVER, max_duration: int = 86400) -> Event:
    """Parse one UDP datagram: one message, optionally followed by CRLF or LF."""
    if data.endswith(b"\n"):
        data = data[:-1]
    if data.endswith(b"\r"):
        data = data[:-1]
    if b"\n" in data:
        params, _ = _split_params(data.partition(b":")[2][:MAX_IIF_MESSAGE].decode("ascii", "replace"))
        raise IIFError("more than one line in a datagram", iif_id=_readable_id(params))
    return parse_message(data, role=role, max_duration=max_duration)
