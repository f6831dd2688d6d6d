"""The call engine's adapter: runs one :class:`~mss.callflow.CallbackCall` per callback on the event loop.

It owns the SIP transport (:class:`~mss.aio.sip_transport.SipTransport`), the media relay and one
loop timer per call; what is pure (event translation, command mapping, the CDR) is
:mod:`mss.engine`. The desk starts and cancels callbacks; every callback ends with exactly one
:meth:`~mss.desk.CallbackDesk.finish`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mss import callflow as cf
from mss import engine, tones
from mss.aio.sip_transport import SipTransport
from mss.config import Config
from mss.control import CallInfo
from mss.desk import Callback, CallbackDesk, Outcome
from mss.engine import CallRecord
from mss.errors import JournalError, MssError, RelayError
from mss.ratelog import RateLimitedLog
from mss.relay import FIELDS, Relay, RelaySession
from mss.sip import events as ua
from mss.sip.settings import UASettings
from mss.sip.targets import format_addr, parse_host_list

__all__ = ["CallEngine"]

log = logging.getLogger("mss.call")

#: Seconds closing waits for released calls to finish their BYE/CANCEL exchanges.
CLOSE_WAIT = 5.0

#: Seconds the relay ports of callbacks cut by a crash stay out of use after the restart: nothing
#: told their phones the call ended, so they may still be sending until their user hangs up or an
#: RTP or session timer of theirs fires, and a new call given those ports would hear them.
RESTART_QUARANTINE = 60.0

_LAST_RX = FIELDS.index("last_rx_ns")
_JITTER_Q4 = FIELDS.index("jitter_q4")
_RTP_IN = FIELDS.index("rtp_packets_in")
_RTP_OUT = FIELDS.index("rtp_packets_out")


@dataclass(slots=True)
class _Call:
    """A callback in progress: its record (call flow and CDR data), relay session and timer."""

    callback: Callback
    record: CallRecord
    session: RelaySession
    timer: asyncio.TimerHandle | None = None
    deadline: float = 0.0
    """The call flow's deadline (monotonic) ``timer`` was armed for."""

    @property
    def flow(self) -> cf.CallbackCall:
        """The callback's call flow."""
        return self.record.flow


class CallEngine:
    """Places callbacks through the PSS and bridges them in the relay."""

    def __init__(self, config: Config, desk: CallbackDesk) -> None:
        self.config = config
        self.desk = desk
        self.relay: Relay | None = None
        self.sip: SipTransport | None = None
        self.registered = not config.callback.external_line_mode
        self.calls: dict[int, _Call] = {}
        self._journal_log = RateLimitedLog(log)
        self.closed_counters: npt.NDArray[np.uint64] = np.zeros(len(FIELDS), dtype=np.uint64)
        """The relay counters of every session closed so far, both legs summed (see :meth:`relay_totals`)."""
        self.registration_settled = asyncio.Event()
        """Set once the first REGISTER got its answer, or at once in server-to-server mode."""
        if self.registered:
            self.registration_settled.set()

    # --- lifetime ------------------------------------------------------------------------------

    async def open(self) -> None:
        cfg = self.config
        try:
            self.relay = Relay(host=cfg.rtp.host, port_min=cfg.rtp.port_min, port_max=cfg.rtp.port_max,
                               kernel_forwarding=cfg.rtp.kernel_forwarding)
        except RelayError as exc:
            raise MssError(f"[rtp]: {exc}") from exc
        log.info("relay on %s ports %d..%d (%d sessions, %s, bridged legs forwarded %s)", cfg.rtp.host,
                 cfg.rtp.port_min, cfg.rtp.port_max, self.relay.capacity, self.relay.backend,
                 "in the kernel" if self.relay.kernel_forwarding_active else "in userspace")
        self._quarantine_cut_ports(self.relay)
        # G.729 ringback: encoded here once rather than by the first call that needs it
        if "G729" in cfg.callback.audio_codecs and not tones.ringback_frames("G729"):
            log.warning("G.729 ringback is off (%s): user1 hears silence while user2 rings on a G.729 call",
                        tones.g729_unavailable())
        if cfg.rtp.srtp == "passthrough":  # SRTP passthrough: see docs/deploy.md, "SRTP"
            log.info("SRTP passthrough: calls are RTP/SAVP with the phones' own keys; user1 hears silence "
                     "while user2 rings (the relay cannot encrypt a ringback tone)")
        self.sip = SipTransport(UASettings.from_config(cfg), on_event=self._on_sip_event)
        await self.sip.open()
        if cfg.external_line is not None:
            log.info("registering the external line %s at %s; REQUESTs get code=fail until it is",
                     cfg.external_line.username, _pss_text(cfg))
        else:
            log.info("server-to-server mode: calls go to %s from %s", _pss_text(cfg), cfg.caller)

    def _quarantine_cut_ports(self, relay: Relay) -> None:
        """Keep the relay ports of callbacks a crash cut out of use for a while (before any call)."""
        now = time.time()
        try:
            held = self.desk.journal.quarantined_ports(now, RESTART_QUARANTINE)
        except JournalError as exc:
            log.error("cannot read the relay ports of callbacks cut by the last stop: %s", exc)
            return
        pairs = sum(relay.quarantine([port], until - now) for port, until in held)
        if pairs:
            log.warning("relay: %d RTP port pair(s) of callbacks cut by a crash kept out of use for up"
                        " to %ds (their phones may still be sending)", pairs, RESTART_QUARANTINE)

    async def close(self) -> None:
        self.release_all()  # normally only released calls are left, their BYEs under way
        deadline = time.monotonic() + CLOSE_WAIT
        while self.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for call in list(self.calls.values()):
            self._end(call)
        if self.sip is not None:
            await self.sip.close()
        if self.relay is not None:
            self.relay.close()

    # --- the desk's verbs ----------------------------------------------------------------------

    def refusal(self, pending: int) -> str | None:
        if not self.registered:
            return "the external line is not registered"
        if self.relay is None or self.sip is None:
            return "the call engine is not running"
        # ``pending`` callbacks of the same batch are taken but not started: their sessions are not open yet.
        if pending >= self.relay.available:  # ports in quarantine after a crash count as taken
            return f"no RTP ports left ({self.relay.capacity} relay sessions)"
        # A callback needs two legs; legs of callbacks already answered to the AS may still be
        # hanging up. Refused now rather than taken and failed with a 503 of our own later.
        if self.sip.ua.leg_room < 2 * (pending + 1):
            return "no SIP legs left (calls still hanging up hold them)"
        return None

    def start(self, callback: Callback) -> None:
        assert self.relay is not None
        try:
            session = self.relay.open_session(bridged=False)
        except Exception as exc:
            if isinstance(exc, RelayError):
                log.error("callback %s: %s", callback.id, exc)
            else:
                log.exception("callback %s: the relay failed", callback.id)
            self.desk.finish(callback.seq, Outcome(real_duration=0, result="user1_failed", code=0))
            return
        try:  # so that a restart after a crash keeps these ports out of use for a while
            self.desk.journal.record_ports(callback.seq, (session.a_port, session.b_port))
        except JournalError as exc:
            self._journal_log.error("ports", "callback %s: cannot record its relay ports: %s",
                                    callback.id, exc)
        settings = engine.call_settings(self.config, a_port=session.a_port, b_port=session.b_port,
                                        session_id=secrets.randbelow(1 << 31) + 1,
                                        progress_events=self.desk.wants_events(callback))
        flow = cf.CallbackCall(user1=callback.user1, user2=callback.user2, duration=callback.duration,
                               settings=settings)
        record = CallRecord(flow=flow, caller=self.config.caller)
        call = _Call(callback=callback, record=record, session=session)
        self.calls[callback.seq] = call
        try:
            commands = flow.start(time.monotonic())
        except Exception:
            log.exception("callback %s: cannot start", callback.id)
            self._end(call, unanswered="user1_failed")
            return
        self._run(call, commands)

    def cancel(self, seq: int) -> None:
        call = self.calls.get(seq)
        if call is not None:
            self._run(call, call.flow.cancel(time.monotonic()))

    def release_all(self) -> None:
        now = time.monotonic()
        for call in list(self.calls.values()):
            self._run(call, call.flow.shutdown(now))

    # --- SIP events ----------------------------------------------------------------------------

    def _on_sip_event(self, event: ua.UAEvent) -> None:
        if isinstance(event, ua.Registered):
            if not self.registered:
                log.info("external line registered (expires %ds)", event.expires)
            self.registered = True
            self.registration_settled.set()
            return
        if isinstance(event, ua.RegistrationFailed):
            if self.registered:
                log.error("external line registration lost: %d %s", event.status, event.reason)
            self.registered = False
            self.registration_settled.set()
            return
        found = engine.flow_event(event)
        call = self.calls.get(found[0].seq) if found is not None else None
        if found is None or call is None:
            return
        log.debug("callback %s: %s", call.callback.id, found[1])
        self._run(call, call.record.handle(found[1], time.monotonic(), time.time()))

    # --- commands ------------------------------------------------------------------------------

    def _run(self, call: _Call, commands: list[cf.Command]) -> None:
        """Carry out the call flow's commands in order, then re-arm the call's timer.

        A failure here is a bug or a resource error, never a reason to lose the callback: it is
        logged, the call is released, and the AS still gets its RESPONSE.
        """
        try:
            self._carry_out(call, commands)
        except Exception:
            log.exception("callback %s: failed in state %s; releasing it", call.callback.id,
                          call.flow.state.value)
            try:
                self._carry_out(call, call.flow.shutdown(time.monotonic()))
            except Exception:
                log.exception("callback %s: release failed; dropping it", call.callback.id)
                self._end(call)

    def _carry_out(self, call: _Call, commands: list[cf.Command]) -> None:
        assert self.sip is not None
        seq = call.callback.seq
        now = time.monotonic()
        for command in commands:
            if isinstance(command, cf.Invite):
                log.debug("callback %s: calling %s (%s)", call.callback.id, command.user, command.leg)
                if command.leg == "user2" and self.config.rtp.srtp == "passthrough":
                    log.debug("callback %s: no ringback to user1 on SRTP", call.callback.id)
            if isinstance(command, cf.Invite | cf.Hangup | cf.AnswerOffer | cf.Reinvite):
                engine.carry_out_sip(self.sip.ua, seq, command, now)
            elif isinstance(command, cf.MarkBridged):
                log.debug("callback %s: bridged (%s)", call.callback.id, call.flow.codec)
                self.desk.bridged(seq)
            elif isinstance(command, cf.Notify):
                self.desk.progress(seq, command.state)
            elif isinstance(command, cf.SendResponse):
                self._respond(call, command)
            elif isinstance(command, cf.Finished):
                self._end(call)
            else:
                engine.carry_out_relay(call.session, command)
        self.sip.flush()
        self._arm(call)

    def _respond(self, call: _Call, command: cf.SendResponse) -> None:
        if call.record.reported:
            return
        stats = None  # the CDR's media quality: the session's counters read before it closes
        if not call.session.closed:
            try:
                stats = call.session.stats()
            except RelayError as exc:
                self._journal_log.error("quality", "callback %s: no media quality in its CDR: %s",
                                        call.callback.id, exc)
        outcome = call.record.outcome(command, time.time(), stats)
        if outcome is None:
            return
        log.debug("callback %s: released by %s: %s", call.callback.id, command.released_by, command.reason)
        self.desk.finish(call.callback.seq, outcome)

    def _end(self, call: _Call, unanswered: cf.Result = "shutdown") -> None:
        """The call is over (or mss is closing): free its relay session and timer.

        ``unanswered`` is the result reported if the AS has not had its RESPONSE yet.
        """
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        self._close_session(call.session)
        self.calls.pop(call.callback.seq, None)
        if not call.record.reported:
            # Closing with the call still up (shutdown past every grace): the AS still gets its answer.
            self._respond(call, cf.SendResponse(real_duration=0, result=unanswered, code=0,
                                                released_by="mss", reason="mss released it"))

    # --- timers --------------------------------------------------------------------------------

    def _arm(self, call: _Call) -> None:
        """Arm the call's loop timer for its call flow's deadline.

        A timer armed for an earlier deadline is left alone (it fires, finds nothing due, and is armed
        again): a deadline that only moves later, as the inactivity deadline does with every packet,
        costs no new loop timer.
        """
        deadline = call.flow.get_timer() if call.callback.seq in self.calls else None
        if call.timer is not None:
            if deadline is not None and call.deadline <= deadline:
                return
            call.timer.cancel()
            call.timer = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            call.deadline = deadline
            call.timer = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()),
                                      self._on_timer, call)

    def _on_timer(self, call: _Call) -> None:
        call.timer = None
        if call.flow.state is cf.CallState.BRIDGED and not call.session.closed and self.relay is not None:
            # The relay's receive times are read when a timer of the call is due, not polled: the
            # inactivity deadline moves to the last packet's time + inactivity_timeout (and is armed
            # again) or has passed. One read per call per inactivity_timeout, no pass over every call.
            # With the kernel fast path the shared rows are merged once a second: a call's own rows
            # are read fresh then, or a short inactivity_timeout would see a talking call as silent.
            rows = (call.session.counters() if self.relay.kernel_forwarding_active
                    else self.relay.counters[call.session.slot])
            row = rows[:, _LAST_RX]
            call.flow.media_seen(engine.last_rx(row))
            # and each party's jitter estimate sampled for the CDR (its mean and max over the call)
            call.record.sample_jitter(rows[:, _JITTER_Q4], row)
        self._run(call, call.flow.handle_timer(time.monotonic()))

    # --- operations: totals, listing and hanging up (the metrics and the control socket) ---------

    def _close_session(self, session: RelaySession) -> None:
        """Close a call's relay session and add its counters to :attr:`closed_counters`.

        Read after the close: the packet loop no longer writes the row, and the slot is reused only
        by :meth:`Relay.open_session` on this thread, so the row is whole and final here.
        """
        was_open = not session.closed
        session.close()
        if was_open and self.relay is not None:
            legs = self.relay.counters[session.slot]
            self.closed_counters += legs[0]  # in place, leg by leg: no temporary array
            self.closed_counters += legs[1]

    def relay_totals(self) -> npt.NDArray[np.uint64]:
        """Every relay counter since start, both legs of every session summed (closed and live): one
        bulk read of the live rows, never a pass per packet. Indexed like :data:`~mss.relay.FIELDS`;
        ``last_rx_ns`` and the like are meaningless summed."""
        totals = self.closed_counters.copy()
        if self.relay is not None:
            slots = [call.session.slot for call in self.calls.values() if not call.session.closed]
            if slots:
                totals += self.relay.counters[slots].sum(axis=(0, 1), dtype=np.uint64)
        return totals

    def list_calls(self, now: float) -> list[CallInfo]:
        """Every callback in progress, oldest first (``now``: the wall clock)."""
        out = []
        for call in self.calls.values():
            cb = call.callback
            a, b = (0, 0), (0, 0)
            if self.relay is not None and not call.session.closed:
                row = self.relay.counters[call.session.slot]
                a = int(row[0, _RTP_IN]), int(row[0, _RTP_OUT])
                b = int(row[1, _RTP_IN]), int(row[1, _RTP_OUT])
            out.append(CallInfo(
                id=cb.id, peer=cb.origin.peer, state=call.flow.state.value, user1=cb.user1, user2=cb.user2,
                age=max(0.0, now - cb.received_at), ports=(call.session.a_port, call.session.b_port),
                packets_from_user1=a[0], packets_to_user1=a[1],
                packets_from_user2=b[0], packets_to_user2=b[1],
            ))
        return out

    def hangup(self, callback_id: str) -> bool:
        """Release callback ``callback_id`` as an AS's CANCEL does (its RESPONSE follows as usual);
        False when no callback of that id is in progress."""
        for seq, call in self.calls.items():
            if call.callback.id == callback_id:
                log.info("callback %s: hangup from the control socket", callback_id)
                self.cancel(seq)
                return True
        return False


def _pss_text(cfg: Config) -> str:
    """The PSS for a log line: ``host:port`` for one address; a name or a list as configured (its
    addresses, and their ports, come from DNS or the entries: mss.sip.targets logs them)."""
    entries = parse_host_list(cfg.sip.pss_host)
    if len(entries) == 1 and entries[0].literal and entries[0].port is None:
        return format_addr((entries[0].host, cfg.sip.pss_port))
    return cfg.sip.pss_host
