"""One pjsua2 phone in a process of its own, driven over JSON lines (see mss_peers/phone.py).

Run as ``python phone_process.py '<config JSON>'``. The config keys are those of
``mss_peers.phone.Phone`` (user, password, registrar, transport, ...) plus ``workdir`` and
``log_path``.

Control protocol (one JSON object per line):

* stdin, from the test: ``{"id": 7, "cmd": "call", "args": {...}}``; end of input means quit.
* stdout, to the test: the reply ``{"id": 7, "ok": true, "result": ...}`` (or ``"ok": false,
  "error": "..."``), and events ``{"event": "confirmed", "call": 0, "time": ..., ...}`` whenever
  something happens.

pjlib prints its log with printf to file descriptor 1, so the protocol keeps a duplicate of the
original stdout and fd 1 and 2 are pointed at the phone's log file before pjsua2 is imported.

pjsua2 rules followed here (they crash the process otherwise): one thread (``threadCnt = 0``,
``mainThreadOnly``) polling ``libHandleEvents``; a Python reference to every Account, Call, player
and recorder; nothing is deleted inside a pjsua callback (work is deferred to the main loop);
every Call, player and recorder is gone before ``libDestroy()``; ``CallInfo`` is kept alive while
its media list is read.
"""

from __future__ import annotations

import json
import os
import sys

# ---- file descriptors first: the protocol keeps the real stdout, pjlib gets the log ----
_CONTROL_FD = os.dup(1)
_CONFIG = json.loads(sys.argv[1])
_log_fd = os.open(_CONFIG["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.dup2(_log_fd, 1)
os.dup2(_log_fd, 2)
os.close(_log_fd)
sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process
sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
_control = open(_CONTROL_FD, "w", buffering=1)  # noqa: SIM115

import contextlib  # noqa: E402
import gc  # noqa: E402
import re  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import wave  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pjsua2 as pj  # noqa: E402

# Polling period of pjsua's event loop (ms): short enough for prompt replies, light on CPU.
POLL_MS = 10
# A command line from the test is never longer than this (bytes); more is a protocol error.
MAX_COMMAND = 65536
# How long quitting may wait for calls to end and for the unregistration (s).
QUIT_GRACE = 2.0
# How long a finished call may wait for its recording file to be closed (s).
RECORDER_CLOSE_WAIT = 2.0
# The tone played into calls: amplitude (fraction of full scale) and length of the looped file.
TONE_LEVEL = 0.3
TONE_SECONDS = 1
CLOCK_RATE = 16000
# Commands that start a dialog transaction, the errors meaning "another one is still open", and
# how long / how often such a command is retried (s).
RETRIED_COMMANDS = {"hold", "unhold", "reinvite", "update", "dtmf"}
BUSY_ERRORS = re.compile(r"EINVALIDOP|EBUSY|EPENDING")
RETRY_WINDOW = 3.0
RETRY_INTERVAL = 0.02

STATE_NAMES = {
    pj.PJSIP_INV_STATE_NULL: "null",
    pj.PJSIP_INV_STATE_CALLING: "calling",
    pj.PJSIP_INV_STATE_INCOMING: "incoming_state",
    pj.PJSIP_INV_STATE_EARLY: "early",
    pj.PJSIP_INV_STATE_CONNECTING: "connecting",
    pj.PJSIP_INV_STATE_CONFIRMED: "confirmed",
    pj.PJSIP_INV_STATE_DISCONNECTED: "disconnected",
}
MEDIA_NAMES = {
    pj.PJSUA_CALL_MEDIA_NONE: "none",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
    pj.PJSUA_CALL_MEDIA_ERROR: "error",
}
# Compact header names (RFC 3261 §7.3.3) -> full names, lowercased.
COMPACT = {
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
}


def emit(obj: dict[str, Any]) -> None:
    """Write one protocol line to the test."""
    _control.write(json.dumps(obj) + "\n")


def event(kind: str, **fields: Any) -> None:
    """Emit an event (with the wall-clock time)."""
    emit({"event": kind, "time": time.time(), **fields})


def parse_message(text: str) -> dict[str, Any]:
    """First line and headers (lowercased full names -> list of values) of a SIP message."""
    head = text.split("\r\n\r\n", 1)[0].replace("\r\n", "\n")
    lines = head.split("\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if ":" not in line:
            continue
        name, value = line.split(":", 1)
        name = name.strip().lower()
        headers.setdefault(COMPACT.get(name, name), []).append(value.strip())
    return {"first_line": lines[0] if lines else "", "headers": headers}


def uri_user(value: str) -> str:
    """The user part of the URI in a From/To/Contact value ('' when none)."""
    match = re.search(r"sips?:([^@;>\s]+)@", value)
    return match.group(1) if match else ""


def file_is_open(path: str) -> bool:
    """True while this process still has ``path`` open (looked up in /proc/self/fd)."""
    target = os.path.realpath(path)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}") == target:
                return True
        except OSError:
            continue
    return False


def write_tone(path: Path, hz: float) -> None:
    """A looped sine: TONE_SECONDS of whole periods at CLOCK_RATE, 16-bit mono."""
    t = np.arange(CLOCK_RATE * TONE_SECONDS) / CLOCK_RATE
    samples = (np.sin(2 * np.pi * hz * t) * TONE_LEVEL * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(CLOCK_RATE)
        w.writeframes(samples.tobytes())


class PhoneCall(pj.Call):  # type: ignore[misc]
    """A call of this phone; every callback turns into events."""

    def __init__(self, phone: PhoneApp, acc: pj.Account, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.phone = phone
        self.index = len(phone.calls)
        self.recorder: pj.AudioMediaRecorder | None = None
        self.recording: str | None = None
        self.codec: str | None = None
        self.media_status = "none"
        self.dtmf = ""
        self.last_code = 0
        self.last_reason = ""
        self.state = "null"
        self.finished = False
        self.sip_call_id = ""
        self.audio_index: int | None = None  # the call's audio media, once active
        self.last_stream_stat: dict[str, Any] | None = None  # read at the end of the call

    # -- helpers --

    def ev(self, kind: str, **fields: Any) -> None:
        event(kind, call=self.index, **fields)

    def summary(self) -> dict[str, Any]:
        """What the test may ask about this call."""
        return {
            "call": self.index,
            "state": self.state,
            "code": self.last_code,
            "reason": self.last_reason,
            "codec": self.codec,
            "media": self.media_status,
            "dtmf": self.dtmf,
            "recording": self.recording,
            "call_id": self.sip_call_id,
            "stream_stat": self.stream_stat() or self.last_stream_stat,
        }

    def stream_stat(self) -> dict[str, Any] | None:
        """The audio stream's own RTCP statistics (pjsua2 ``getStreamStat``): RTP packets and bytes
        received and sent, packets lost and jitter as the phone measured them; None without one."""
        if self.audio_index is None:
            return None
        try:
            rtcp = self.getStreamStat(self.audio_index).rtcp
        except pj.Error:
            return None
        rx, tx = rtcp.rxStat, rtcp.txStat
        return {
            "rx_packets": int(rx.pkt), "rx_bytes": int(rx.bytes), "rx_loss": int(rx.loss),
            "rx_jitter_mean_ms": float(rx.jitterUsec.mean) / 1000,
            "rx_jitter_max_ms": float(rx.jitterUsec.max) / 1000,
            "tx_packets": int(tx.pkt), "tx_bytes": int(tx.bytes),
        }

    # -- callbacks --

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        ci = self.getInfo()
        self.state = STATE_NAMES.get(ci.state, str(ci.state))
        self.last_code = int(ci.lastStatusCode)
        self.last_reason = str(ci.lastReason)
        self.sip_call_id = str(ci.callIdString)
        fields = {
            "code": self.last_code,
            "reason": self.last_reason,
            "call_id": self.sip_call_id,
            "remote_uri": str(ci.remoteUri),
            "remote_contact": str(ci.remoteContact),
            "local_uri": str(ci.localUri),
            "role": "caller" if ci.role == pj.PJSIP_ROLE_UAC else "callee",
            "codec": self.codec,
        }
        if self.state == "disconnected":
            self.last_stream_stat = self.stream_stat() or self.last_stream_stat
            fields["stream_stat"] = self.last_stream_stat
            # The recorder is closed (and the WAV header written) in the main loop; the
            # "disconnected" event follows then.
            self.phone.later(0.0, lambda: self.phone.finish_call(self, fields))
        elif self.state != "incoming_state":
            self.ev(self.state, **fields)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        ci = self.getInfo()  # keep alive while its media list is read
        media = ci.media
        for i in range(len(media)):
            if media[i].type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = MEDIA_NAMES.get(media[i].status, str(media[i].status))
            self.media_status = status
            if status in ("active", "remote_hold"):
                self.audio_index = i
                self.codec = self.stream_codec(i)
                self.phone.connect_audio(self, self.getAudioMedia(i))
            self.ev("media", status=status, codec=self.codec)
            break

    def stream_codec(self, index: int) -> str | None:
        try:
            si = self.getStreamInfo(index)
        except pj.Error:
            return None
        return str(si.codecName)

    def onStreamDestroyed(self, prm: pj.OnStreamDestroyedParam) -> None:
        # the last moment the stream's statistics can be read (DISCONNECTED comes after it)
        self.last_stream_stat = self.stream_stat() or self.last_stream_stat

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        digit = str(prm.digit)
        self.dtmf += digit
        method = "rfc4733" if prm.method == pj.PJSUA_DTMF_METHOD_RFC2833 else str(prm.method)
        self.ev("dtmf", digit=digit, method=method, digits=self.dtmf)

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        e = prm.e
        if e.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx_event = e.body.tsxState
        if tsx_event.type != pj.PJSIP_EVENT_RX_MSG:
            return
        text = str(tsx_event.src.rdata.wholeMsg)
        parsed = parse_message(text)
        self.ev("sip", direction="rx", first_line=parsed["first_line"], message=text)


class PhoneAccount(pj.Account):  # type: ignore[misc]
    """The phone's account: registration state and incoming calls."""

    def __init__(self, phone: PhoneApp) -> None:
        super().__init__()
        self.phone = phone
        self.registered = False

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        expires = int(prm.expiration)
        self.registered = prm.code // 100 == 2 and expires > 0
        event(
            "registration",
            code=int(prm.code),
            reason=str(prm.reason),
            expires=expires,
            registered=self.registered,
        )

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = PhoneCall(self.phone, self, prm.callId)
        self.phone.calls.append(call)
        text = str(prm.rdata.wholeMsg)
        parsed = parse_message(text)
        headers = parsed["headers"]
        ci = call.getInfo()
        call.sip_call_id = str(ci.callIdString)
        call.state = "incoming"
        from_value = (headers.get("from") or [""])[0]
        call.ev(
            "incoming",
            call_id=call.sip_call_id,
            request_line=parsed["first_line"],
            from_header=from_value,
            from_user=uri_user(from_value),
            to_header=(headers.get("to") or [""])[0],
            remote_uri=str(ci.remoteUri),
            remote_contact=str(ci.remoteContact),
            source=str(prm.rdata.srcAddress),
            headers=headers,
            invite=text,
        )
        self.phone.on_incoming(call)


class PhoneApp:
    """The endpoint, the account, the calls and the command loop."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = config
        self.workdir = Path(config["workdir"])
        self.calls: list[PhoneCall] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.running = True
        self.buffer = b""
        self.player: pj.AudioMediaPlayer | None = None
        self.ep = pj.Endpoint()
        self.acc: PhoneAccount | None = None
        self.transport_id = -1

    # ---- setup ----

    def start(self) -> dict[str, Any]:
        c = self.cfg
        ep = self.ep
        ep.libCreate()
        ep_cfg = pj.EpConfig()
        ep_cfg.uaConfig.threadCnt = 0
        ep_cfg.uaConfig.mainThreadOnly = True
        ep_cfg.uaConfig.maxCalls = 8
        ep_cfg.uaConfig.userAgent = f"test-phone/{c['user']}"
        ep_cfg.logConfig.level = int(c["log_level"])
        ep_cfg.logConfig.consoleLevel = int(c["log_level"])
        ep_cfg.logConfig.msgLogging = True
        ep_cfg.medConfig.noVad = True  # keep RTP flowing during silence
        ep_cfg.medConfig.ecTailLen = 0
        ep_cfg.medConfig.clockRate = CLOCK_RATE
        ep_cfg.medConfig.txDropPct = int(c.get("tx_drop_pct") or 0)  # simulated loss on the wire
        ep.libInit(ep_cfg)

        tp_cfg = pj.TransportConfig()
        tp_cfg.port = int(c.get("local_port") or 0)
        tp_cfg.boundAddress = c["local_host"]
        tp_type = pj.PJSIP_TRANSPORT_TCP if c["transport"] == "tcp" else pj.PJSIP_TRANSPORT_UDP
        self.transport_id = ep.transportCreate(tp_type, tp_cfg)
        ep.libStart()
        ep.audDevManager().setNullDev()
        self.set_codecs(c["codecs"])

        if c.get("tone_hz"):
            tone = self.workdir / f"tone-{c['tone_hz']:g}.wav"
            write_tone(tone, float(c["tone_hz"]))
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(str(tone))  # loops by default

        host, port = c["registrar"]
        tp = c["transport"]
        acc_cfg = pj.AccountConfig()
        acc_cfg.idUri = f"sip:{c['user']}@{host}:{port}"
        if c.get("display"):
            acc_cfg.idUri = f'"{c["display"]}" <{acc_cfg.idUri}>'
        acc_cfg.regConfig.registrarUri = f"sip:{host}:{port};transport={tp}" if c["register"] else ""
        acc_cfg.regConfig.registerOnAdd = bool(c["register"])
        acc_cfg.regConfig.timeoutSec = int(c.get("expires") or 300)
        acc_cfg.regConfig.retryIntervalSec = 0  # a failed registration is an event, not a loop
        acc_cfg.regConfig.unregWaitMsec = 500
        acc_cfg.sipConfig.proxies.append(f"sip:{host}:{port};transport={tp};lr")
        acc_cfg.sipConfig.transportId = self.transport_id
        if c.get("password") is not None:
            acc_cfg.sipConfig.authCreds.append(
                pj.AuthCredInfo("digest", "*", c.get("auth_user") or c["user"], 0, c["password"])
            )
        acc_cfg.mediaConfig.transportConfig.boundAddress = c["local_host"]
        acc_cfg.mediaConfig.transportConfig.port = int(c.get("rtp_port") or 0)
        acc_cfg.natConfig.contactRewriteUse = 0
        acc_cfg.natConfig.viaRewriteUse = 0
        acc_cfg.natConfig.sdpNatRewriteUse = 0
        acc_cfg.natConfig.sipOutboundUse = 1 if c["transport"] == "tcp" else 0
        acc_cfg.callConfig.prackUse = {
            "no": pj.PJSUA_100REL_NOT_USED,
            "optional": pj.PJSUA_100REL_OPTIONAL,
            "mandatory": pj.PJSUA_100REL_MANDATORY,
        }[c.get("prack") or "no"]
        if c.get("srtp") == "mandatory":  # SRTP keyed by SDES only, allowed over plain SIP
            acc_cfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
            acc_cfg.mediaConfig.srtpSecureSignaling = 0
            acc_cfg.mediaConfig.srtpOpt.keyings = pj.IntVector([pj.PJMEDIA_SRTP_KEYING_SDES])
        self.acc = PhoneAccount(self)
        self.acc.create(acc_cfg)
        info = ep.transportGetInfo(self.transport_id)
        return {"sip_address": str(info.localName), "transport": tp, "pid": os.getpid()}

    def set_codecs(self, wanted: list[str]) -> None:
        """Only the codecs in ``wanted`` (names like PCMU, PCMA, G722), in that priority."""
        known = [str(ci.codecId) for ci in self.ep.codecEnum2()]
        for codec_id in known:
            self.ep.codecSetPriority(codec_id, 0)
        for rank, name in enumerate(wanted):
            matches = [k for k in known if k.split("/")[0].lower() == name.lower()]
            if not matches:
                raise ValueError(f"codec {name} is not in this pjsua2 build: {known}")
            for codec_id in matches:
                self.ep.codecSetPriority(codec_id, 250 - rank)

    # ---- audio ----

    def connect_audio(self, call: PhoneCall, aud: pj.AudioMedia) -> None:
        """Play the tone into the call and record the far end (once per call)."""
        if self.player is not None:
            self.player.startTransmit(aud)
        if self.cfg["record"]:
            if call.recorder is None:
                path = self.workdir / f"{self.cfg['user']}-call{call.index}.wav"
                call.recorder = pj.AudioMediaRecorder()
                call.recorder.createRecorder(str(path))
                call.recording = str(path)
                call.ev("recording", path=str(path))
            aud.startTransmit(call.recorder)

    def finish_call(self, call: PhoneCall, fields: dict[str, Any]) -> None:
        """After DISCONNECTED: close the recorder, wait until the file is really closed (the
        conference bridge removes the port, and the writer writes the WAV sizes, only on its
        next clock tick), then tell the test."""
        if call.finished:
            return
        call.finished = True
        if call.recorder is None:
            call.ev("disconnected", **fields, recording=call.recording, dtmf=call.dtmf)
            return
        call.recorder = None  # asks pjsua to destroy the recorder port
        gc.collect()
        deadline = time.monotonic() + RECORDER_CLOSE_WAIT

        def when_closed() -> None:
            still_open = call.recording is not None and file_is_open(call.recording)
            if still_open and time.monotonic() < deadline:
                self.later(POLL_MS / 1000, when_closed)
                return
            call.ev(
                "disconnected",
                **fields,
                recording=call.recording,
                recording_closed=not still_open,
                dtmf=call.dtmf,
            )

        when_closed()

    # ---- behaviour of incoming calls ----

    def on_incoming(self, call: PhoneCall) -> None:
        behaviour = str(self.cfg["behaviour"])
        early = 183 if self.cfg.get("early_media") else 180
        if behaviour == "answer":
            self.later(0.0, lambda: self.answer(call, early))
            self.later(0.0, lambda: self.answer(call, 200))
        elif behaviour == "ring":
            self.later(0.0, lambda: self.answer(call, early))
        elif behaviour == "busy":
            self.later(0.0, lambda: self.answer(call, 486))
        elif behaviour.startswith("reject:"):
            code = int(behaviour.split(":", 1)[1])
            self.later(0.0, lambda: self.answer(call, code))
        elif behaviour.startswith("answer_after:"):
            delay = float(behaviour.split(":", 1)[1])
            self.later(0.0, lambda: self.answer(call, early))
            self.later(delay, lambda: self.answer(call, 200))
        elif behaviour == "ignore":
            pass  # no provisional or final response: the test answers by hand
        else:
            raise ValueError(f"unknown behaviour {behaviour!r}")

    def answer(self, call: PhoneCall, code: int, reason: str = "") -> None:
        if call.finished or call.state == "disconnected":
            return
        prm = pj.CallOpParam()
        prm.statusCode = code
        if reason:
            prm.reason = reason
        call.answer(prm)

    # ---- the loop ----

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` from the main loop after ``delay`` seconds (never inside a callback)."""
        self.timers.append((time.monotonic() + delay, action))

    def run_timers(self) -> None:
        now = time.monotonic()
        due = [t for t in self.timers if t[0] <= now]
        if not due:
            return
        self.timers = [t for t in self.timers if t[0] > now]
        for _, action in sorted(due, key=lambda t: t[0]):
            try:
                action()
            except Exception as exc:
                event("error", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())

    def read_commands(self) -> list[dict[str, Any]]:
        ready, _, _ = select.select([0], [], [], 0)
        if not ready:
            return []
        chunk = os.read(0, MAX_COMMAND)
        if not chunk:
            self.running = False
            return []
        self.buffer += chunk
        if len(self.buffer) > MAX_COMMAND and b"\n" not in self.buffer:
            self.buffer = b""
            event("error", message="command line too long")
            return []
        lines = self.buffer.split(b"\n")
        self.buffer = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]

    def loop(self) -> None:
        while self.running:
            self.ep.libHandleEvents(POLL_MS)
            self.run_timers()
            for cmd in self.read_commands():
                self.dispatch(cmd)

    def dispatch(self, cmd: dict[str, Any], deadline: float | None = None) -> None:
        """Run one command and reply. A dialog-changing command (hold, re-INVITE, UPDATE ...)
        that finds an INVITE transaction still open (e.g. its ACK not yet in) is retried from
        the loop until RETRY_WINDOW has passed, and replied to then."""
        ident = cmd.get("id")
        try:
            handler = getattr(self, "cmd_" + str(cmd["cmd"]))
            result = handler(**cmd.get("args", {}))
            emit({"id": ident, "ok": True, "result": result})
        except pj.Error as exc:
            now = time.monotonic()
            deadline = deadline if deadline is not None else now + RETRY_WINDOW
            if cmd["cmd"] in RETRIED_COMMANDS and BUSY_ERRORS.search(exc.reason) and now < deadline:
                self.later(RETRY_INTERVAL, lambda: self.dispatch(cmd, deadline))
                return
            emit(
                {
                    "id": ident,
                    "ok": False,
                    "error": f"pj.Error {exc.status}: {exc.title}: {exc.reason}",
                    "status": int(exc.status),
                    "traceback": traceback.format_exc(),
                }
            )
        except Exception as exc:
            emit(
                {
                    "id": ident,
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            )

    def find_call(self, call: int | None) -> PhoneCall:
        if not self.calls:
            raise LookupError("this phone has no call")
        if call is None:
            return self.calls[-1]
        return self.calls[call]

    # ---- commands (each returns a JSON-able result) ----

    def cmd_ping(self) -> str:
        return "pong"

    def cmd_call(self, uri: str, headers: dict[str, str] | None = None) -> int:
        assert self.acc is not None
        call = PhoneCall(self, self.acc)
        self.calls.append(call)
        prm = pj.CallOpParam(True)
        for name, value in (headers or {}).items():
            header = pj.SipHeader()
            header.hName = name
            header.hValue = value
            prm.txOption.headers.append(header)
        call.state = "calling"
        call.makeCall(uri, prm)
        return call.index

    def cmd_answer(self, code: int = 200, reason: str = "", call: int | None = None) -> None:
        self.answer(self.find_call(call), code, reason)

    def cmd_hangup(self, code: int = 0, call: int | None = None) -> None:
        target = self.find_call(call)
        if target.finished:
            return
        prm = pj.CallOpParam()
        if code:
            prm.statusCode = code
        target.hangup(prm)

    def cmd_hold(self, call: int | None = None) -> None:
        self.find_call(call).setHold(pj.CallOpParam(True))

    def cmd_unhold(self, call: int | None = None) -> None:
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        self.find_call(call).reinvite(prm)

    def cmd_reinvite(self, call: int | None = None) -> None:
        self.find_call(call).reinvite(pj.CallOpParam(True))

    def cmd_update(self, call: int | None = None) -> None:
        self.find_call(call).update(pj.CallOpParam(True))

    def cmd_dtmf(self, digits: str, duration_ms: int = 100, call: int | None = None) -> None:
        prm = pj.CallSendDtmfParam()
        prm.digits = digits
        prm.method = pj.PJSUA_DTMF_METHOD_RFC2833
        prm.duration = duration_ms
        self.find_call(call).sendDtmf(prm)

    def cmd_info(self, call: int | None = None) -> dict[str, Any]:
        return self.find_call(call).summary()

    def cmd_calls(self) -> list[dict[str, Any]]:
        return [c.summary() for c in self.calls]

    def cmd_register(self, on: bool = True) -> None:
        assert self.acc is not None
        self.acc.setRegistration(on)

    def cmd_quit(self) -> None:
        self.running = False

    # ---- shutdown ----

    def shutdown(self) -> None:
        """End calls, unregister, free every pjsua2 object, then destroy the library."""
        deadline = time.monotonic() + QUIT_GRACE
        with contextlib.suppress(pj.Error):
            self.ep.hangupAllCalls()
        while time.monotonic() < deadline and not all(c.finished or c.state in ("null",) for c in self.calls):
            self.ep.libHandleEvents(POLL_MS)
            self.run_timers()
        if self.acc is not None and self.acc.registered:
            with contextlib.suppress(pj.Error):
                self.acc.setRegistration(False)
            while time.monotonic() < deadline and self.acc.registered:
                self.ep.libHandleEvents(POLL_MS)
        for call in self.calls:
            call.recorder = None
        self.timers.clear()
        self.player = None
        self.calls.clear()
        gc.collect()
        if self.acc is not None:
            self.acc.shutdown()
            self.acc = None
            gc.collect()
        # Unregistered and hung up above, so no network wait (pjsua would otherwise sleep ~1 s).
        self.ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)


def main() -> int:
    app = PhoneApp(_CONFIG)

    def on_signal(signum: int, frame: object) -> None:
        app.running = False

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        info = app.start()
    except Exception as exc:
        event("failed", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return 1
    event("ready", **info)
    try:
        app.loop()
    except Exception as exc:
        event("error", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    app.shutdown()
    event("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
