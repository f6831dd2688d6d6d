"""pjsua2 SIP phones for the end-to-end tests, each in a process of its own.

A ``Phone`` starts ``phone_process.py`` (pjsua2, null audio device) and drives it over JSON
lines on the child's stdin/stdout; pjlib's own output goes to the phone's log file. Every wait
is bounded and a timeout raises ``PhoneTimeout`` (an ``AssertionError``) that lists the events
seen so far and the phone's log tail, so a failing test explains itself::

    with Phone("100", "pw100", registrar=pss.address, tone_hz=440) as a, \\
         Phone("101", "pw101", registrar=pss.address, tone_hz=1000, transport="tcp") as b:
        a.wait_registered(); b.wait_registered()
        a.call("101")                       # sip:101@<registrar>, through the PSS
        seen = b.wait_event("incoming")     # seen["from_user"] == "100"
        a.wait_event("confirmed"); time.sleep(2)
        a.hangup(); a.wait_event("disconnected"); b.wait_event("disconnected")
        assert tone_fraction(a.recording_path(), 1000) > 0.9

Constructor (keyword arguments after ``password``):

``user``, ``password``
    The SIP user and its digest password (``None``: no credentials). ``auth_user`` overrides
    the digest user name.
``registrar``
    (host, port) of the PSS. The phone registers there (``register=True``) and sends every
    request through it (it is the account's outbound proxy, with ``;lr``).
``transport``
    ``"udp"`` or ``"tcp"`` for all the phone's signalling (over TCP pjsua uses RFC 5626
    outbound: its Contact names the connection's ephemeral port).
``local_host``, ``local_port``, ``rtp_port``
    Where the phone binds SIP and RTP (127.0.0.x; ports 0 = any).
``behaviour`` (for incoming calls)
    ``"answer"`` 180 then 200 at once; ``"ring"`` 180 and wait for ``answer()``/``reject()``;
    ``"busy"`` 486; ``"reject:603"`` any final code; ``"answer_after:2.0"`` 180, 200 after
    2 s; ``"ignore"`` no answer at all (only pjsua's 100 Trying).
``early_media``
    Send 183 with SDP instead of 180 (the tone plays before the call is answered).
``tone_hz``
    Play a sine of this frequency into every call (``None``: silence; RTP still flows, VAD is
    off).
``record``
    Record what the far end sends, one 16 kHz mono WAV per call in ``workdir``.
``codecs``
    Codec names in priority order (``PCMU``, ``PCMA``, ``G722``, ``GSM``, ``iLBC``, ``speex``,
    ``L16``; no G.729 in this build); all others are disabled. telephone-event is always
    offered.
``prack``
    ``"no"`` (default), ``"optional"`` or ``"mandatory"`` 100rel (RFC 3262).
``srtp``
    ``"no"`` (default: plain RTP/AVP) or ``"mandatory"``: SRTP keyed by SDES (a=crypto, RFC 4568)
    over plain SIP (``srtpSecureSignaling = 0``); an RTP/AVP offer is then refused.
``tx_drop_pct``
    Drop about this percentage of the RTP packets the phone sends, at random, after counting them
    as sent (pjsua's ``txDropPct``: real loss on the wire for whoever receives them).
``display``, ``expires``, ``log_level``, ``workdir``, ``name``
    Display name in From; registration expiry; pjlib log level (4 logs SIP messages);
    where recordings and the log go (a temp dir by default); a label for messages.

Methods: ``start(timeout)``, ``stop(timeout)`` (always reaps the process), ``wait_registered``,
``wait_unregistered``, ``mark()``, ``wait_event(kind, timeout, since=mark, **match)``,
``wait_sip(method or status, timeout, since=mark)``, ``events(kind)``, ``call(target,
headers)``, ``answer(code)``, ``reject(code)``, ``hangup(code)``, ``hold()``, ``unhold()``,
``reinvite()``, ``update()``, ``send_dtmf(digits)``, ``dtmf_received()``, ``wait_dtmf(digits,
timeout)``, ``info()``, ``recording_path()``, ``set_registration(on)``, ``log_text()``,
``log_tail()``, ``describe()``.

Events (dicts; every one has ``event``, ``time`` and, for call events, ``call`` = the index of
the call in this phone, 0, 1, ...):

``ready``        the phone is up: ``sip_address``, ``transport``, ``pid``
``registration`` ``code``, ``reason``, ``expires``, ``registered``
``incoming``     a new INVITE: ``from_user`` (the caller number seen), ``from_header``,
                 ``to_header``, ``request_line``, ``remote_uri``, ``remote_contact``, ``call_id``,
                 ``source``, ``headers`` (lowercase name -> list of values), ``invite`` (the text)
``calling``, ``early``, ``connecting``, ``confirmed``, ``disconnected``
                 call state changes: ``code`` and ``reason`` (the last SIP status: 180/183 in
                 ``early``, 200 in ``confirmed``, the final status in ``disconnected`` - e.g.
                 486, 404, 480, or 487 at a callee whose INVITE was cancelled), ``role``
                 (``caller``/``callee``), ``call_id``, ``remote_uri``, ``codec``; a
                 ``disconnected`` event comes after the recording file is closed
                 (complete) and has ``recording``, ``recording_closed``, ``dtmf`` and
                 ``stream_stat`` (the audio stream's own RTCP counts as the call ended: ``rx_packets``,
                 ``rx_bytes``, ``rx_loss``, ``rx_jitter_mean_ms``, ``rx_jitter_max_ms``,
                 ``tx_packets``, ``tx_bytes``; None without audio; ``info()`` has it too)
``media``        ``status`` (``active``, ``local_hold``, ``remote_hold``, ``none``), ``codec``
``recording``    a recorder was started: ``path``
``dtmf``         a received digit: ``digit``, ``method`` (``rfc4733``), ``digits`` so far
``sip``          a SIP message received within a call's transactions: ``first_line``,
                 ``message`` (e.g. the re-INVITE of a hold, responses to the INVITE)
``error``        something failed inside the phone: ``message``, ``traceback``
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from mss_peers.net import check_loopback, parent_death_signal

__all__ = ["Phone", "PhoneError", "PhoneTimeout"]

PROCESS = Path(__file__).with_name("phone_process.py")
# Bounds (seconds): start of the child, one command's reply, the child's own shutdown.
START_TIMEOUT = 10.0
COMMAND_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
# Events that a call which has ended will never send again.
CALL_PROGRESS = {"calling", "early", "connecting", "confirmed", "media", "recording"}
# Lines of the phone's log quoted in failure messages.
LOG_TAIL_LINES = 80


class PhoneError(RuntimeError):
    """A command failed inside the phone, or the phone process is gone."""


class PhoneTimeout(AssertionError):
    """An awaited event did not come in time; the message carries the events and the log."""


class Phone:
    """A pjsua2 phone in a child process; see the module docstring."""

    def __init__(
        self,
        user: str,
        password: str | None = None,
        registrar: tuple[str, int] = ("127.0.0.1", 5060),
        *,
        transport: str = "udp",
        local_host: str = "127.0.0.1",
        local_port: int = 0,
        rtp_port: int = 0,
        register: bool = True,
        behaviour: str = "answer",
        early_media: bool = False,
        tone_hz: float | None = 440.0,
        record: bool = True,
        codecs: Sequence[str] = ("PCMU", "PCMA"),
        prack: str = "no",
        srtp: str = "no",
        tx_drop_pct: int = 0,
        auth_user: str | None = None,
        display: str | None = None,
        expires: int = 300,
        log_level: int = 4,
        workdir: Path | str | None = None,
        name: str | None = None,
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
        if prack not in ("no", "optional", "mandatory"):
            raise ValueError(f"prack must be no, optional or mandatory, not {prack!r}")
        if srtp not in ("no", "mandatory"):
            raise ValueError(f"srtp must be no or mandatory, not {srtp!r}")
        if not 0 <= tx_drop_pct <= 100:
            raise ValueError(f"tx_drop_pct must be 0..100, not {tx_drop_pct!r}")
        self.user = user
        self.password = password
        self.registrar = (check_loopback(registrar[0]), int(registrar[1]))
        self.transport = transport
        self.local_host = check_loopback(local_host)
        self.behaviour = behaviour
        self.name = name or f"phone {user}/{transport}"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"phone-{user}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"phone-{user}.log"
        self.config: dict[str, Any] = {
            "user": user,
            "password": password,
            "auth_user": auth_user,
            "registrar": list(self.registrar),
            "transport": transport,
            "local_host": local_host,
            "local_port": local_port,
            "rtp_port": rtp_port,
            "register": register,
            "behaviour": behaviour,
            "early_media": early_media,
            "tone_hz": tone_hz,
            "record": record,
            "codecs": list(codecs),
            "prack": prack,
            "srtp": srtp,
            "tx_drop_pct": tx_drop_pct,
            "display": display,
            "expires": expires,
            "log_level": log_level,
            "workdir": str(self.workdir),
            "log_path": str(self.log_path),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.info_ready: dict[str, Any] = {}
        self._events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._reader: threading.Thread | None = None
        self._stray_output: list[str] = []

    # ---- life cycle ----

    def __enter__(self) -> Phone:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Phone {self.name} registrar={self.registrar[0]}:{self.registrar[1]}>"

    def start(self, timeout: float = START_TIMEOUT) -> Phone:
        """Start the child process and wait for its ``ready`` event."""
        if self.process is not None:
            raise PhoneError(f"{self.name} already started")
        self.process = subprocess.Popen(
            [sys.executable, str(PROCESS), json.dumps(self.config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the child sends fd 2 to its log file at once
            start_new_session=True,
            preexec_fn=parent_death_signal(),
        )
        self._reader = threading.Thread(target=self._read, name=f"{self.name} reader", daemon=True)
        self._reader.start()
        try:
            event = self._wait(lambda e: e["event"] in ("ready", "failed"), timeout, "ready")
        except PhoneTimeout:
            self.stop()
            raise
        if event["event"] == "failed":
            self.stop()
            raise PhoneError(
                f"{self.name} failed to start: {event.get('message')}\n"
                f"{event.get('traceback', '')}\n{self.log_tail()}"
            )
        self.info_ready = event
        return self

    def begin_stop(self) -> None:
        """Ask the child to quit without waiting (``stop()`` then waits); lets a test stop many
        phones at once."""
        process = self.process
        if process is None or process.stdin is None or process.stdin.closed:
            return
        with contextlib.suppress(OSError):
            if process.poll() is None:
                process.stdin.write(b'{"id": 0, "cmd": "quit"}\n')
                process.stdin.flush()
            process.stdin.close()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Hang up, unregister and end the child; kill it when it does not end in time."""
        self.begin_stop()
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=timeout)
        if process.stdout is not None:
            process.stdout.close()

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self.process is not None and self.process.poll() is None

    def cleanup(self) -> None:
        """Remove the temp dir (only when the phone made it itself); stop first."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- the protocol ----

    def _read(self) -> None:
        process = self.process
        assert process is not None and process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                self._stray_output.append(line)
                continue
            with self._cond:
                if "event" in message:
                    self._events.append(message)
                elif message.get("id") in self._replies:
                    self._replies[message["id"]].put(message)
                self._cond.notify_all()
        with self._cond:
            self._events.append({"event": "exited", "time": time.time()})
            self._cond.notify_all()

    def command(self, cmd: str, timeout: float = COMMAND_TIMEOUT, **args: Any) -> Any:
        """Send one command and return its result (``PhoneError`` on failure)."""
        process = self.process
        if process is None or process.stdin is None or process.poll() is not None:
            raise PhoneError(f"{self.name} is not running\n{self.describe()}")
        ident = next(self._ids)
        box: queue.Queue[dict[str, Any]] = queue.Queue()
        self._replies[ident] = box
        try:
            process.stdin.write(json.dumps({"id": ident, "cmd": cmd, "args": args}).encode() + b"\n")
            process.stdin.flush()
            try:
                reply = box.get(timeout=timeout)
            except queue.Empty:
                raise PhoneTimeout(
                    f"{self.name}: no reply to {cmd} within {timeout} s\n{self.describe()}"
                ) from None
        finally:
            del self._replies[ident]
        if not reply.get("ok"):
            raise PhoneError(
                f"{self.name}: {cmd}({args}) failed: {reply.get('error')}\n{reply.get('traceback', '')}"
            )
        return reply.get("result")

    # ---- events ----

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every event received so far (of ``kind`` when given), oldest first."""
        with self._cond:
            return [dict(e) for e in self._events if kind is None or e["event"] == kind]

    def _wait(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        gone: Callable[[], str | None] | None = None,
        since: int = 0,
    ) -> dict[str, Any]:
        """The first unconsumed event from index ``since`` on matching ``predicate`` (consumed
        now). Gives up at the timeout, when the process exits, or when ``gone()`` says why it
        cannot come any more."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, event in enumerate(self._events):
                    if index >= since and index not in self._consumed and predicate(event):
                        self._consumed.add(index)
                        return dict(event)
                reason = gone() if gone else None
                if any(e["event"] == "exited" for e in self._events):
                    reason = "the phone process exited"
                left = deadline - time.monotonic()
                if left <= 0 or reason:
                    break
                self._cond.wait(left)
        reason = reason or f"not within {timeout} s"
        raise PhoneTimeout(f"{self.name}: no {what} event ({reason})\n{self.describe()}")

    def _call_ended(self, call: int | None) -> str | None:
        """Why call ``call`` (default: the latest) cannot progress any more, or None: its
        ``disconnected`` event is in and was not awaited yet."""
        indices = [e["call"] for e in self._events if "call" in e]
        if call is None:
            if not indices:
                return None
            call = max(indices)
        for index, e in enumerate(self._events):
            if e["event"] == "disconnected" and e["call"] == call and index not in self._consumed:
                return f"call {call} ended: {e['code']} {e['reason']}"
        return None

    def mark(self) -> int:
        """A position in the event stream: ``wait_event(..., since=phone.mark())`` taken before
        an action only sees the events that came after it."""
        with self._cond:
            return len(self._events)

    def wait_event(
        self, kind: str | Iterable[str], timeout: float = 5.0, *, since: int = 0, **match: Any
    ) -> dict[str, Any]:
        """The next not yet awaited event of ``kind`` (a name or several) whose fields equal
        ``match`` (e.g. ``wait_event("media", status="active")``); raises ``PhoneTimeout``.

        Events are kept from the start, so an event that came before the call still counts
        (the ``media`` event of the call setup matches a later wait for ``status="active"``:
        pass ``since=phone.mark()`` taken before the action to see only newer events); each
        event is returned by ``wait_event`` at most once. Waiting for ``calling``,
        ``early``, ``connecting``, ``confirmed``, ``media`` or ``recording`` fails at once when
        the call (``call=``, else the latest one the phone knows) has a ``disconnected`` event
        not yet awaited: await each call's ``disconnected`` before waiting on the next call.
        """
        kinds = {kind} if isinstance(kind, str) else set(kind)

        def wanted(event: dict[str, Any]) -> bool:
            return event["event"] in kinds and all(event.get(k) == v for k, v in match.items())

        def gone() -> str | None:
            return self._call_ended(match.get("call"))

        label = "/".join(sorted(kinds)) + (f" {match}" if match else "")
        # Waiting for progress of a call that has ended would only run into the timeout.
        return self._wait(wanted, timeout, label, gone if kinds <= CALL_PROGRESS else None, since)

    def wait_sip(self, what: str | int, timeout: float = 5.0, *, since: int = 0) -> dict[str, Any]:
        """The next not yet awaited ``sip`` event (from ``since`` on) for a received request of
        method ``what`` (e.g. ``"PRACK"``) or a response with status ``what`` (e.g. ``183``)."""
        prefix = f"SIP/2.0 {what} " if isinstance(what, int) else f"{what.upper()} "
        return self._wait(
            lambda e: e["event"] == "sip" and e["first_line"].startswith(prefix),
            timeout,
            f"sip {what}",
            since=since,
        )

    def wait_registered(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for a successful registration (``PhoneTimeout`` if it fails or is late)."""
        event = self._wait(lambda e: e["event"] == "registration", timeout, "registration")
        if not event["registered"]:
            raise PhoneTimeout(
                f"{self.name}: registration failed: {event['code']} {event['reason']}\n{self.describe()}"
            )
        return event

    def wait_unregistered(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for the answer to an unregistration."""
        return self._wait(
            lambda e: e["event"] == "registration" and not e["registered"],
            timeout,
            "unregistration",
        )

    # ---- calls ----

    def target_uri(self, target: str) -> str:
        """``target`` as a URI: a bare user becomes ``sip:user@<registrar host:port>``."""
        if target.startswith(("sip:", "sips:", "tel:")):
            return target
        host, port = self.registrar
        return f"sip:{target}@{host}:{port}"

    def call(self, target: str, headers: dict[str, str] | None = None) -> int:
        """Call ``target`` (a user or a URI) through the registrar; returns the call index."""
        result: int = self.command("call", uri=self.target_uri(target), headers=headers or {})
        return result

    def answer(self, code: int = 200, reason: str = "", call: int | None = None) -> None:
        """Answer the (latest) incoming call with ``code`` (180, 183, 200 ...)."""
        self.command("answer", code=code, reason=reason, call=call)

    def reject(self, code: int = 486, call: int | None = None) -> None:
        """Answer the (latest) incoming call with a final error ``code``."""
        self.command("answer", code=code, call=call)

    def hangup(self, code: int = 0, call: int | None = None) -> None:
        """End the (latest) call: BYE when answered, CANCEL while calling, ``code`` (603 by
        default) for an unanswered incoming call."""
        self.command("hangup", code=code, call=call)

    def hold(self, call: int | None = None) -> None:
        """Put the call on hold (re-INVITE with a=sendonly)."""
        self.command("hold", call=call)

    def unhold(self, call: int | None = None) -> None:
        """Take the call off hold (re-INVITE with a=sendrecv)."""
        self.command("unhold", call=call)

    def reinvite(self, call: int | None = None) -> None:
        """Send a re-INVITE with a fresh offer."""
        self.command("reinvite", call=call)

    def update(self, call: int | None = None) -> None:
        """Send an UPDATE (RFC 3311) with a fresh offer."""
        self.command("update", call=call)

    def send_dtmf(self, digits: str, duration_ms: int = 100, call: int | None = None) -> None:
        """Send ``digits`` as RFC 4733 telephone-events."""
        self.command("dtmf", digits=digits, duration_ms=duration_ms, call=call)

    def dtmf_received(self, call: int | None = None) -> str:
        """The RFC 4733 digits received so far (in the latest call, or call ``call``)."""
        events = self.events("dtmf")
        if call is None and events:
            call = max(e["call"] for e in events)
        return "".join(e["digit"] for e in events if e["call"] == call)

    def wait_dtmf(self, digits: str, timeout: float = 5.0, call: int | None = None) -> str:
        """Wait until ``digits`` have been received; return what was received."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.dtmf_received(call) != digits and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
        got = self.dtmf_received(call)
        if got != digits:
            raise PhoneTimeout(f"{self.name}: expected DTMF {digits!r}, got {got!r}\n{self.describe()}")
        return got

    def info(self, call: int | None = None) -> dict[str, Any]:
        """The phone's view of a call: state, code, reason, codec, media, dtmf, recording."""
        result: dict[str, Any] = self.command("info", call=call)
        return result

    def set_registration(self, on: bool) -> None:
        """Register (``True``) or unregister (``False``) now."""
        self.command("register", on=on)

    def recording_path(self, call: int | None = None) -> Path:
        """The WAV recording of the (latest) call; complete once its ``disconnected`` event
        has come."""
        events = self.events("recording")
        if call is not None:
            events = [e for e in events if e["call"] == call]
        if not events:
            raise PhoneError(f"{self.name}: no recording (no media yet?)\n{self.describe()}")
        return Path(events[-1]["path"])

    # ---- diagnostics ----

    def log_text(self) -> str:
        """pjlib's log of this phone (SIP messages at log_level 4)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def describe(self) -> str:
        """Events seen (one line each) and the log tail, for assertion messages."""
        lines = [f"--- {self.name}: events ---"]
        for e in self.events():
            fields = {
                k: v
                for k, v in e.items()
                if k not in ("event", "time", "invite", "message", "headers", "traceback")
            }
            lines.append(f"{e['event']} {fields}")
            if e["event"] == "error":
                lines.append(str(e.get("traceback", "")))
        lines += [f"--- {self.name}: log tail ({self.log_path}) ---", self.log_tail()]
        if self._stray_output:
            lines += ["--- stray output ---", *self._stray_output[-20:]]
        return "\n".join(lines)
