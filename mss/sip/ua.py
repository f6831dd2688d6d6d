"""The SIP user agent of mss, sans-IO: what the call flow and the adapter talk to.

Layers, bottom up: bytes → :mod:`~mss.sip.framing` / :mod:`~mss.sip.message` → transactions
(:mod:`~mss.sip.transaction`) → legs and their dialogs (:mod:`~mss.sip.leg`,
:mod:`~mss.sip.dialog`) and the registration (:mod:`~mss.sip.registration`) → UA events
(:mod:`~mss.sip.events`). The adapter feeds bytes with :meth:`UserAgent.receive_data`, writes
:meth:`UserAgent.data_to_send`, arms one timer at :meth:`UserAgent.get_timer`; the call flow issues
commands (:meth:`invite`, :meth:`hangup`, :meth:`answer_offer`, :meth:`reinvite`) and reads
:meth:`next_event`.

Where requests go (:mod:`mss.sip.targets`; RFC 3263 §4.3): a new out-of-dialog request (REGISTER,
an INVITE that starts a leg) goes to the first PSS address that is not marked down (in external
line mode an INVITE goes first to where the registration is); when it times out (Timer B/F), its
transport fails, or it gets 503, the address is marked down (:data:`DOWN_TIME`, or the 503's
Retry-After) and the same request, with a new branch, goes to the next address, at most
:data:`MAX_TRIES` addresses per request and never for a leg being hung up. The owner (leg or
registration) sees one transaction: the key of its first try. Everything else of an owner (auth
retries, CANCEL, in-dialog requests, ACKs) goes where its last out-of-dialog request went, so the
registration moves with the address that answered, and when the address it is registered at is
marked down it registers again at once (at the next one). With ``outbound_proxy`` every request
goes to the proxy's addresses instead, out-of-dialog ones with a loose-route ``Route`` header
(RFC 3261 §8.1.2). DNS lookups are the adapter's (:meth:`UserAgent.dns_queries`,
:meth:`UserAgent.dns_answer`).

Security (the PSS is mss's only SIP peer):

- SIP from any address but the PSS's (all its addresses, and the outbound proxy's) is dropped
  unread and counted (``dropped_strangers``);
- a new INVITE (no To tag) is always refused with 403: no call can be placed through mss except
  by IIF; other out-of-dialog requests get 481, OPTIONS gets 200;
- live state and lingering state are counted apart. A new ``invite`` is admitted while fewer than
  ``max_dialogs`` legs are live and the transaction layer is not :attr:`full` (live transactions
  only), else it fails with 503. Finished legs linger 64·T1 (to re-ACK late 2xx copies and answer
  late requests) in a table of their own, ``max_lingering_dialogs``, whose oldest entry is dropped
  when it is full (``evicted_dialogs``); lingering transactions likewise
  (``evicted_transactions``, see :mod:`~mss.sip.transaction`);
- requests within a dialog mss knows (BYE, re-INVITE, UPDATE, PRACK, INFO, ACK, the CANCEL of a
  re-INVITE) are always served: the overload 503 (stateless, ``Retry-After``) only meets new
  out-of-dialog requests, which have a budget of their own (``max_out_of_dialog``) so that OPTIONS
  or stray INVITEs never take the room live calls need.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, replace

from mss.errors import LocalProtocolError, SipError
from mss.sip._timers import TimerQueue
from mss.sip.checks import ACCEPTED_TYPES, ALLOWED_METHODS, SUPPORTED, check_request
from mss.sip.events import (
    LegAnswered,
    LegEnded,
    LegFailed,
    LegId,
    LegOffer,
    LegProgress,
    LegReinviteResult,
    LegRemoteAnswer,
    LegRinging,
    LegTrying,
    Registered,
    RegistrationFailed,
    UAEvent,
    Unregistered,
)
from mss.sip.framing import KeepAlive, StreamFramer
from mss.sip.leg import Leg
from mss.sip.message import CSeq, Request, Response, error_response, make_response, parse_message
from mss.sip.registration import Registration, RegState
from mss.sip.settings import UASettings
from mss.sip.targets import (
    Addr as TargetAddr,
)
from mss.sip.targets import (
    DnsAnswer,
    DnsFailure,
    DnsQuery,
    TargetList,
    families_for,
    format_addr,
    parse_hostport,
)
from mss.sip.transaction import (
    Addr,
    RequestReceived,
    ResponseReceived,
    StrayAck,
    StrayResponse,
    TimedOut,
    TransactionLayer,
    TransportFailed,
    TxEvent,
)
from mss.sip.uri import NameAddr, SipUri, fast_via, sent_via, wrote_name_addr
from mss.sipkind import message_kind

__all__ = [
    "DOWN_TIME",
    "MAX_DOWN_TIME",
    "MAX_NOTICES",
    "MAX_STREAMS",
    "MAX_TRIES",
    "LegAnswered",
    "LegEnded",
    "LegFailed",
    "LegOffer",
    "LegProgress",
    "LegReinviteResult",
    "LegRemoteAnswer",
    "LegRinging",
    "LegTrying",
    "Registered",
    "RegistrationFailed",
    "UAEvent",
    "UASettings",
    "Unregistered",
    "UserAgent",
]

#: TCP connections the UA keeps framing state for: only the PSS connects, with one or two.
MAX_STREAMS = 64

#: Notices (problems worth a log line) kept until the adapter reads them; older ones are dropped
#: (they are counted in :attr:`UserAgent.counters` anyway).
MAX_NOTICES = 64

#: Addresses one out-of-dialog request is sent to at most (RFC 3263 §4.3 failover): each try may
#: last 64·T1, so this bounds a request's whole life to a few minutes.
MAX_TRIES = 4

#: Seconds a PSS address that timed out, failed or sent 503 (without Retry-After) is tried last.
DOWN_TIME = 60.0
#: The longest Retry-After of a 503 honoured, seconds (a bigger one is a mistake or an attack).
MAX_DOWN_TIME = 600.0

_OUT_OF_DIALOG = frozenset({"INVITE", "REGISTER", "OPTIONS"})
_BLANK = (b"", b"\r", b"\n", b" ", b"\t")
# Type tuples for isinstance (a ``X | Y`` written in a function is a new union object at each call).
_OWNERS = (Leg, Registration)
_CLIENT_OUTCOMES = (ResponseReceived, TimedOut, TransportFailed)
_FAILURES = (TimedOut, TransportFailed)
_LEADING_NUMBER = re.compile(r"[0-9]{1,9}")  # Retry-After: delta-seconds [comment] *(;params)
_TAG_PARAM = re.compile(r";\s*tag\s*=", re.IGNORECASE)
_BAD_USER_CHAR = re.compile(r"[ \t\r\n<>@;?]").search  # in a user an INVITE's URI is made from


@dataclass(slots=True, kw_only=True)
class _Try:
    """An out-of-dialog request of ours in flight, and the addresses it was sent to."""

    owner: Leg | Registration
    request: Request
    """The request as last sent (its top Via names the live transaction)."""
    first_key: str
    """The transaction key its owner knows."""
    tried: tuple[TargetAddr, ...]
    """Addresses tried, the live one last."""
    sent: float
    """When the live try went out."""
    answered: bool = False
    """A provisional response came: a server has the request, it is not sent elsewhere."""


_COUNTERS = (
    "failovers",  # out-of-dialog requests sent again to the next PSS address
    "dropped_strangers",  # datagrams / stream bytes from an address that is not the PSS
    "parse_errors",  # messages that failed to parse (a 400 went back when possible)
    "misrouted",  # responses whose top Via is not ours
    "refused_invites",  # new INVITEs from outside, answered 403
    "overload_503",  # new out-of-dialog requests answered 503: no room for them
    "evicted_dialogs",  # lingering dialogs dropped to make room for newer ones
    "stray_responses",  # responses that matched nothing
    "broken_streams",  # TCP connections closed for bad framing
)


class UserAgent:
    """mss's SIP user agent: registration, outgoing legs, in-dialog requests, security limits."""

    def __init__(self, settings: UASettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.SystemRandom()
        self.rng = self._rng
        """Randomness for the legs' back-offs (glare retry, Retry-After)."""
        self._tx = TransactionLayer(
            max_transactions=settings.max_transactions,
            max_lingering=settings.max_lingering_transactions,
            max_out_of_dialog=settings.max_out_of_dialog,
            timer_values=settings.timer_values,
            on_terminated=self._tx_terminated,
        )
        self._timers = TimerQueue()
        self._events: deque[UAEvent] = deque()
        self._owners: dict[str, Leg | Registration] = {}
        self._ended_tx: list[str] = []
        self._legs: dict[LegId, Leg] = {}
        self._dialogs: dict[tuple[str, str], Leg] = {}  # live and lingering, by (Call-ID, our tag)
        # Finished legs still in _dialogs, oldest first (an OrderedDict: the oldest found in O(1)).
        self._lingering: OrderedDict[Leg, None] = OrderedDict()
        self._framers: dict[object, StreamFramer] = {}
        self._broken: list[object] = []
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self.messages: Counter[tuple[str, str]] = Counter()
        """SIP messages by (direction ``in``/``out``, :func:`~mss.sipkind.message_kind`), for the metrics."""
        self._notices: deque[tuple[str, str, str]] = deque(maxlen=MAX_NOTICES)
        self._reg = Registration(self)
        self.targets = self._target_list(settings.pss_host)
        """The PSS's addresses (pss_host)."""
        self.proxy: TargetList | None = None
        """The outbound proxy's addresses, when there is one: every request goes there."""
        self._route: str | None = None
        if settings.outbound_proxy:
            self.proxy = self._target_list(settings.outbound_proxy)
            entry = parse_hostport(settings.outbound_proxy)
            proxy_uri = SipUri(host=f"[{entry.host}]" if ":" in entry.host else entry.host, port=entry.port)
            if settings.reliable:
                proxy_uri = proxy_uri.with_param("transport", settings.transport)
            self._route = f"<{proxy_uri.with_param('lr')}>"
        self._bound: dict[Leg | Registration, TargetAddr] = {}  # where an owner's requests go
        self._in_use: Counter[TargetAddr] = Counter()  # the values of _bound, counted
        self._accepted = self._known_addresses()
        self._dns_dirty = True
        self._down: dict[TargetAddr, float] = {}  # address -> until when it is tried last
        self._tries: dict[str, _Try] = {}  # live transaction key -> its out-of-dialog try
        self._first_key: dict[str, str] = {}  # a failover's transaction key -> the owner's key
        self._live_key: dict[str, str] = {}  # the owner's key -> the live try's key
        self._own: _Own | None = None  # what our messages write alike, made from the settings once

    def _target_list(self, text: str) -> TargetList:
        s = self.settings
        return TargetList.parse(text, default_port=s.pss_port, transport=s.transport,
                                families=families_for(s.local_host), rng=self._rng)  # fmt: skip

    # -- state for the service ------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """True when calls may be placed: registered in external line mode, always in trunk mode."""
        return self._reg.registered if self.settings.register else True

    @property
    def counters(self) -> dict[str, int]:
        """Counters for logs: drops, errors, and the transactions, dialogs and legs in use."""
        out = dict(self._counts)
        out["transactions"] = len(self._tx)
        out["live_transactions"] = self._tx.live
        out["lingering_transactions"] = self._tx.lingering
        out["evicted_transactions"] = self._tx.evicted
        out["dialogs"] = len(self._dialogs)
        out["lingering_dialogs"] = len(self._lingering)
        out["legs"] = len(self._legs)
        return out

    @property
    def leg_room(self) -> int:
        """New legs :meth:`invite` takes now (0 when the transaction layer takes no new work)."""
        return 0 if self._tx.full else max(0, self.settings.max_dialogs - len(self._legs))

    def live_for(self, peer: tuple[str, int]) -> bool:
        """True when a live transaction uses TCP peer ``peer`` (the adapter keeps its connection)."""
        return self._tx.live_for(peer)

    def leg_state(self, leg_id: LegId) -> str | None:
        """The state of leg ``leg_id`` (for logs and tests), None when it is over."""
        leg = self._legs.get(leg_id)
        return leg.state.value if leg is not None else None

    # -- Core services (used by legs and the registration) --------------------------------------

    def new_branch(self) -> str:
        """A fresh RFC 3261 branch."""
        return f"z9hG4bK{self._rng.getrandbits(64):016x}"

    def new_tag(self) -> str:
        """A fresh tag."""
        return f"{self._rng.getrandbits(48):012x}"

    def _mine(self) -> _Own:
        """What our messages write alike (remade if :attr:`settings` is replaced)."""
        own = self._own
        if own is None or own.settings is not self.settings:
            own = self._own = _Own(self.settings, self.contact(self.settings.caller))
        return own

    def new_call_id(self) -> str:
        """A fresh Call-ID."""
        return f"{self._rng.getrandbits(96):024x}@{self._mine().contact_host}"

    def make_cnonce(self) -> str:
        """A fresh digest client nonce."""
        return f"{self._rng.getrandbits(64):016x}"

    def via(self, branch: str) -> str:
        """Our Via value: ``rport`` asked for over UDP (RFC 3581); ``TLS`` over TLS (RFC 3261 §20.42)."""
        own = self._mine()
        return sent_via(own.transport, own.contact_host, own.local_port, branch, rport=own.rport)

    def ack_via(self) -> str:
        """Our Via value with a fresh branch, for an ACK of a 2xx: the text :meth:`via` writes, its value
        not kept (an ACK is sent as bytes and nothing of ours reads it back)."""
        own = self._mine()
        return f"{own.via_head}{self.new_branch()}{own.via_tail}"

    def contact(self, user: str) -> NameAddr:
        """Our Contact for ``user`` (``transport=tcp`` over TCP, ``transport=tls`` over TLS: a sip:
        URI, not sips:, as most providers expect; RFC 5630 §3.2)."""
        s = self.settings
        uri = SipUri(host=s.contact_host, user=user, port=s.local_port)
        if s.reliable:
            uri = uri.with_param("transport", s.transport)
        return NameAddr(uri)

    def send_request(self, owner: Leg | Registration, request: Request, now: float) -> str | None:
        """Send ``request`` to the PSS in a new client transaction owned by ``owner``; None when
        there is no room.

        A new leg's INVITE was admitted by :meth:`invite`; everything else (its auth retries, CANCEL,
        BYE, PRACK, re-INVITE, REGISTER) is work for what exists and is not refused for admission.
        """
        # Our own request: a To without a tag parameter starts something new (read without parsing).
        fresh = request.method in _OUT_OF_DIALOG and not _TAG_PARAM.search(request.headers.get("To") or "")
        if fresh:
            if self._route is not None and "Route" not in request.headers:
                request.headers.add("Route", self._route)
            dest = self._first_choice(owner, now)
        elif request.method == "CANCEL":
            dest = self._cancel_destination(owner, request)
        else:
            dest = self._bound.get(owner) or self._first_choice(owner, now)
        if dest is None:
            self._notice_target("no_target", "", f"no address for the PSS ({self._route_list().describe()}):"
                                f" {request.method} not sent")  # fmt: skip
            return None
        try:
            key = self._tx.send_request(
                request, dest, reliable=self.settings.reliable, now=now, in_dialog=True
            )
        except LocalProtocolError:
            return None
        self._owners[key] = owner
        if fresh:
            self._bind(owner, dest)
            self._tries[key] = _Try(owner=owner, request=request, first_key=key, tried=(dest,), sent=now)
        return key

    def send_ack(self, ack: bytes) -> None:
        """Send the ACK of a 2xx (encoded) where its leg's requests go."""
        dest: TargetAddr | None = None
        if len(self._in_use) > 1:  # more than one address in use: find the leg's
            with contextlib.suppress(SipError):
                msg = parse_message(ack)
                leg = self._dialogs.get((msg.call_id, msg.from_.tag or ""))
                dest = self._bound.get(leg) if leg is not None else None
        if dest is None:
            dest = next(iter(self._in_use), None) or self._first_choice(None, 0.0)
        if dest is not None:
            self._tx.send_raw(ack, dest)

    # -- targets and failover (RFC 3263 §4.3) ---------------------------------------------------

    def _bind(self, owner: Leg | Registration, addr: TargetAddr | None) -> None:
        """Where ``owner``'s requests go from now on (None: forget it)."""
        old = self._bound.pop(owner, None)
        if old is not None:
            self._in_use[old] -= 1
            if not self._in_use[old]:
                del self._in_use[old]
        if addr is not None:
            self._bound[owner] = addr
            self._in_use[addr] += 1

    def _route_list(self) -> TargetList:
        return self.proxy if self.proxy is not None else self.targets

    def candidates(self, now: float) -> list[TargetAddr]:
        """Where a new request may go, in order: addresses marked down last."""
        ordered = self._route_list().candidates()
        if not self._down:
            return ordered  # nothing is marked down (the usual case): the order as it is
        for addr, until in list(self._down.items()):
            if until <= now or addr not in ordered:
                del self._down[addr]  # bounded by the candidates
        return [a for a in ordered if a not in self._down] + [a for a in ordered if a in self._down]

    def _first_choice(self, owner: Leg | Registration | None, now: float) -> TargetAddr | None:
        """An owner keeps its address while it is up; a new leg in external line mode starts
        where the registration is; else the first candidate."""
        for addr in (self._bound.get(owner) if owner is not None else None,
                     self._bound.get(self._reg) if self.settings.register else None):  # fmt: skip
            if addr is not None and self._down.get(addr, 0.0) <= now and addr in self._route_list_set():
                return addr
        choices = self.candidates(now)
        return choices[0] if choices else None

    def _route_list_set(self) -> list[TargetAddr]:
        return self._route_list().candidates(ordered=False)  # a handful: a list is quicker

    def _cancel_destination(self, owner: Leg | Registration, cancel: Request) -> TargetAddr | None:
        """A CANCEL goes with its INVITE: after a failover, to the live try, with its Via."""
        if isinstance(owner, Leg) and owner.invite_key is not None:
            live = self._tries.get(self._live_key.get(owner.invite_key, owner.invite_key))
            if live is not None:
                cancel.headers.set("Via", live.request.headers.get_list("Via")[0])
                return live.tried[-1]
        return self._bound.get(owner)

    def _mark_down(self, addr: TargetAddr, now: float, seconds: float = DOWN_TIME) -> None:
        self._down[addr] = now + min(MAX_DOWN_TIME, max(0.0, seconds))

    def _move_registration(self, addr: TargetAddr, now: float) -> None:
        """``addr`` failed: if the line is registered there, register at the next address now."""
        reg = self._reg
        if self.settings.register and self._bound.get(reg) == addr and reg.state is RegState.REGISTERED:
            # Registered at an address that failed: register at the next one now (the refresh
            # is sent where the registration's requests go unless that address is down).
            others = [a for a in self.candidates(now) if a not in self._down]
            if others:
                moves = f"registration moves from {format_addr(addr)} to {format_addr(others[0])}"
                self._notice_target("registration_moves", addr[0], moves)
                self._bind(self._reg, None)
                self._reg.on_timer("refresh", now)

    def _failover(self, key: str, now: float, why: str, *, down_for: float = DOWN_TIME) -> bool:
        """Send the out-of-dialog request of transaction ``key`` to the next address; False when
        there is none (or the owner no longer wants it): the failure then goes to the owner."""
        attempt = self._tries.pop(key, None)
        if attempt is None:
            return False
        failed = attempt.tried[-1]
        self._mark_down(failed, now, down_for)
        moved = self._failover_to_next(attempt, now, why)
        self._move_registration(failed, now)
        return moved

    def _failover_to_next(self, attempt: _Try, now: float, why: str) -> bool:
        failed = attempt.tried[-1]
        owner = attempt.owner
        method = attempt.request.method
        text = f"PSS {format_addr(failed)} {why} {method}"
        if why == "did not answer":
            text += f" in {now - attempt.sent:.0f} s"
        if attempt.answered or (isinstance(owner, Leg) and owner.hangup_requested):
            return False  # a server has it (a provisional came), or the leg is being given up
        following = [a for a in self.candidates(now) if a not in attempt.tried]
        if len(attempt.tried) >= MAX_TRIES or not following:
            tried = ", ".join(format_addr(a) for a in attempt.tried)
            self._notice_target("failover", failed[0], f"{text}; no other address to try (tried {tried})")
            return False
        nxt = following[0]
        request = _with_via(attempt.request, self.via(self.new_branch()))
        try:
            new_key = self._tx.send_request(
                request, nxt, reliable=self.settings.reliable, now=now, in_dialog=True
            )
        except LocalProtocolError:
            return False
        self._counts["failovers"] += 1
        self._notice_target("failover", failed[0], f"{text}; trying {format_addr(nxt)}")
        self._owners[new_key] = owner
        self._tries[new_key] = replace(attempt, request=request, tried=(*attempt.tried, nxt), sent=now)
        self._first_key[new_key] = attempt.first_key
        self._live_key[attempt.first_key] = new_key
        self._bind(owner, nxt)
        return True

    def _notice_target(self, kind: str, source_ip: str, text: str) -> None:
        self._notices.append((kind, source_ip, text))

    # -- DNS (the adapter makes the lookups) ----------------------------------------------------

    def _lists(self) -> list[TargetList]:
        return [self.targets] if self.proxy is None else [self.targets, self.proxy]

    def dns_queries(self, now: float) -> list[DnsQuery]:
        """The lookups due now; each must be answered with :meth:`dns_answer`."""
        if not self._dns_dirty:
            due = self._dns_timer()
            if due is None or due > now:
                return []
        self._dns_dirty = False
        out: list[DnsQuery] = []
        for targets in self._lists():
            out.extend(q for q in targets.queries(now) if q not in out)
        return out

    def dns_answer(self, query: DnsQuery, result: DnsAnswer | DnsFailure, now: float) -> None:
        """The outcome of a lookup from :meth:`dns_queries`."""
        for targets in self._lists():
            targets.answer(query, result, now)
        self._accepted = self._known_addresses()
        self._dns_dirty = True  # an answer may call for more lookups (the targets of SRV records)

    def _dns_timer(self) -> float | None:
        soonest = self.targets.get_timer()
        if self.proxy is not None:
            t = self.proxy.get_timer()
            if t is not None and (soonest is None or t < soonest):
                soonest = t
        return soonest

    @property
    def registrar(self) -> TargetAddr | None:
        """Where the registration's requests go (None before the first REGISTER)."""
        return self._bound.get(self._reg)

    @property
    def dns_settled(self) -> bool:
        """True when every lookup needed so far has had an outcome."""
        return all(lst.settled for lst in self._lists())

    def _known_addresses(self) -> frozenset[str]:
        # The answers' addresses, and those calls and the registration still use (an address the
        # DNS no longer names still sends the BYE of a call it took).
        bound = {addr[0] for addr in self._in_use}
        return frozenset().union(bound, *(lst.addresses() for lst in self._lists()))

    def accepts(self, ip: str) -> bool:
        """True when SIP from ``ip`` is read: an address of the PSS or of the outbound proxy."""
        return ip in self._accepted

    def respond(self, key: str, response: Response, now: float) -> None:
        """Answer in server transaction ``key`` (LocalProtocolError when it is gone)."""
        self._tx.respond(key, response, now)

    def give_up_invite(self, key: str) -> None:
        """Stop waiting for the final response of client INVITE ``key``."""
        tx = self._tx.client(self._live_key.get(key, key))
        if tx is not None:
            tx.cancel_timeout()

    def set_timer(self, owner: Leg | Registration, name: str, deadline: float) -> None:
        """Arm a leg or registration timer."""
        self._timers.set(owner, name, deadline)

    def clear_timer(self, owner: Leg | Registration, *names: str) -> None:
        """Disarm leg or registration timers."""
        self._timers.clear(owner, *names)

    def emit(self, event: UAEvent) -> None:
        """Queue an event for :meth:`next_event`."""
        self._events.append(event)

    def leg_finished(self, leg: Leg) -> None:
        """``leg`` reported its end: free its leg_id; its dialog lingers (oldest dropped when full)."""
        if self._legs.get(leg.leg_id) is leg:
            del self._legs[leg.leg_id]
        if self._dialogs.get((leg.call_id, leg.local_tag)) is leg and leg not in self._lingering:
            self._lingering[leg] = None
            while len(self._lingering) > self.settings.max_lingering_dialogs:
                self._counts["evicted_dialogs"] += 1
                self.leg_gone(next(iter(self._lingering)))

    def leg_gone(self, leg: Leg) -> None:
        """``leg`` lingered long enough (or was dropped for room): forget it."""
        self._timers.clear_owner(leg)
        self._bind(leg, None)
        self._lingering.pop(leg, None)
        key = (leg.call_id, leg.local_tag)
        if self._dialogs.get(key) is leg:
            del self._dialogs[key]
        if self._legs.get(leg.leg_id) is leg:
            del self._legs[leg.leg_id]

    def _tx_terminated(self, key: str) -> None:
        # Forgotten after the events of this turn are dispatched (a TimedOut still needs the owner).
        self._ended_tx.append(key)

    # -- input from the adapter -----------------------------------------------------------------

    def receive_data(
        self, data: bytes, source: tuple[str, int], now: float, *, stream: object | None = None
    ) -> None:
        """A UDP datagram (``stream`` None) or bytes read from TCP connection ``stream``."""
        if source[0] not in self._accepted:
            self._counts["dropped_strangers"] += 1
            if stream is not None and stream not in self._broken:
                self._broken.append(stream)
            return
        if stream is None:
            if data[:1] not in _BLANK or data.strip(b"\r\n \t"):  # a blank datagram is a keep-alive
                self._receive_message(data, source, False, now)
        else:
            framer = self._framers.get(stream)
            if framer is None:
                if len(self._framers) >= MAX_STREAMS:
                    self._broken.append(stream)
                    return
                framer = self._framers[stream] = StreamFramer()
            try:
                frames = framer.feed(data)
            except SipError as exc:
                self._counts["parse_errors"] += 1
                self._counts["broken_streams"] += 1
                self._notice("broken_stream", source, f"TCP connection closed: {exc.reason}")
                del self._framers[stream]
                self._broken.append(stream)
                return
            for frame in frames:
                if isinstance(frame, KeepAlive):
                    self._tx.send_raw(b"\r\n", source)  # RFC 5626 §3.5.1 pong
                else:
                    self._receive_message(frame, source, True, now)
        self._pump(now)

    def stream_closed(self, stream: object, now: float) -> None:
        """TCP connection ``stream`` is closed: drop its framing state."""
        self._framers.pop(stream, None)
        if stream in self._broken:
            self._broken.remove(stream)

    def transport_failed(self, dest: tuple[str, int], now: float) -> None:
        """The adapter could not send to ``dest`` (TCP connect failed): fail what was sent there."""
        self._tx.transport_failed(dest)
        self._pump(now)

    def _receive_message(self, frame: bytes, source: Addr, reliable: bool, now: float) -> None:
        self.messages["in", message_kind(frame)] += 1
        try:
            msg = parse_message(frame, exact=reliable)
        except SipError as exc:
            self._counts["parse_errors"] += 1
            self._notice("parse_error", source, f"malformed message dropped ({exc.status}): {exc.reason}")
            answer = error_response(frame, exc.status, exc.reason)
            if answer is not None:
                self._tx.send_raw(answer, source)
            return
        if isinstance(msg, Response):
            via = msg.top_via
            own = self._mine()
            if via.host != own.contact_host or (via.port or 5060) != own.settings.local_port:
                self._counts["misrouted"] += 1
                self._notice("misrouted", source, f"response with a Via for {via.host}:{via.port} dropped")
                return
        in_dialog = isinstance(msg, Request) and self._knows_dialog(msg)
        if not self._tx.receive(msg, source, reliable=reliable, now=now, in_dialog=in_dialog):
            self._counts["overload_503"] += 1
            if isinstance(msg, Request) and msg.method != "ACK":
                self._notice(
                    "overload", source, f"{msg.method} answered 503: no room for new out-of-dialog requests"
                )
                busy = make_response(msg, 503, to_tag=self.new_tag(), headers=[("Retry-After", "5")])
                with contextlib.suppress(LocalProtocolError):  # too large to answer: dropped
                    self._tx.send_raw(busy.encode(), source)

    def _knows_dialog(self, request: Request) -> bool:
        """True when ``request`` names (by Call-ID and its To tag, our tag) a dialog mss holds."""
        tag = request.to.tag
        return tag is not None and (request.call_id, tag) in self._dialogs

    # -- timers ---------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run (a DNS answer's expiry included: the adapter
        then finds the lookup in :meth:`dns_queries`), None when nothing is pending."""
        soonest = self._tx.get_timer()  # read after every message: no lists built
        for t in (self._timers.next_deadline(), self._dns_timer()):
            if t is not None and (soonest is None or t < soonest):
                soonest = t
        return soonest

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``."""
        self._tx.handle_timer(now)
        self._pump(now)
        for owner, name in self._timers.pop_due(now):
            if isinstance(owner, _OWNERS):
                owner.on_timer(name, now)
            self._pump(now)

    # -- commands -------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin registering (external line mode); nothing in trunk mode."""
        if self.settings.register:
            self._reg.start(now)
        self._pump(now)

    def shutdown(self, now: float) -> None:
        """Remove the registration (Expires: 0); Unregistered follows (at once in trunk mode)."""
        if self.settings.register:
            self._reg.shutdown(now)
        else:
            self.emit(Unregistered())
        self._pump(now)

    def invite(self, leg_id: LegId, user: str, sdp: bytes, now: float) -> None:
        """Call ``sip:user@domain`` through the PSS with ``sdp`` as the offer (From: caller)."""
        if leg_id in self._legs:
            raise LocalProtocolError(f"leg {leg_id!r} already exists")
        if not user or _BAD_USER_CHAR(user):
            raise LocalProtocolError(f"bad user {user!r}")
        s = self.settings
        if len(self._legs) >= s.max_dialogs or self._tx.full:  # live state only: lingering is apart
            self.emit(LegFailed(leg_id=leg_id, status=503, reason="Service Unavailable (dialog limit)"))
            return
        call_id = self.new_call_id()
        tag = self.new_tag()
        leg = Leg(core=self, leg_id=leg_id, user=user, local_sdp=sdp, call_id=call_id, local_tag=tag)
        self._legs[leg_id] = leg
        self._dialogs[(call_id, tag)] = leg
        leg.start(self._build_invite(user, sdp, call_id, tag), now)
        self._pump(now)

    def _build_invite(self, user: str, sdp: bytes, call_id: str, tag: str) -> Request:
        own = self._mine()
        local = own.local
        called = own.called.get(user)
        if called is None:
            target = SipUri(host=own.settings.domain, user=user)
            target_text = str(target)
            called = (target, target_text, NameAddr(target), f"<{target_text}>")  # the last: str(to)
            if len(own.called) >= _CALLED:
                own.called.clear()
            own.called[user] = called
        target, target_text, to, to_text = called
        from_ = local.with_tag(tag)
        from_text = f"{own.local_text};tag={tag}"
        for text, addr in ((from_text, from_), (to_text, to)):
            wrote_name_addr(text, addr)  # the answers copy them
        via = self.via(self.new_branch())
        items = [
            ("via", "Via", via),
            ("max-forwards", "Max-Forwards", "70"),
            ("from", "From", from_text),
            ("to", "To", to_text),
            ("call-id", "Call-ID", call_id),
            ("cseq", "CSeq", "1 INVITE"),
            *own.invite_tail,
        ]
        return Request._local("INVITE", target, items, sdp, via=fast_via(via), from_=from_, to=to,
                              call_id=call_id, cseq=_FIRST_INVITE, uri_text=target_text)  # fmt: skip

    def hangup(self, leg_id: LegId, now: float) -> None:
        """CANCEL an unanswered leg, BYE an answered one; nothing when it is over or ending."""
        leg = self._legs.get(leg_id)
        if leg is not None:
            leg.hangup(now)
        self._pump(now)

    def answer_offer(self, leg_id: LegId, sdp: bytes, now: float) -> None:
        """Answer the far end's pending offer (LegOffer) with ``sdp``."""
        leg = self._legs.get(leg_id)
        if leg is not None:
            leg.answer_offer(sdp, now)
        self._pump(now)

    def reject_offer(self, leg_id: LegId, now: float, status: int = 488) -> None:
        """Refuse the far end's pending offer (488 Not Acceptable Here by default)."""
        leg = self._legs.get(leg_id)
        if leg is not None:
            leg.reject_offer(status, now)
        self._pump(now)

    def reinvite(self, leg_id: LegId, sdp: bytes, now: float) -> None:
        """Send our own offer in a re-INVITE; LegReinviteResult follows."""
        leg = self._legs.get(leg_id)
        if leg is not None:
            leg.reinvite(sdp, now)
        self._pump(now)

    # -- output ---------------------------------------------------------------------------------

    def next_event(self) -> UAEvent | None:
        """The next event, None when there is none."""
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        """What to write and to whom: a datagram, or bytes for the TCP connection to that address."""
        out = self._tx.data_to_send()
        for data, _ in out:
            self.messages["out", message_kind(data)] += 1
        return out

    def notices(self) -> list[tuple[str, str, str]]:
        """Problems since the last call, for the adapter's (rate-limited) log: ``(kind, source IP,
        text)``; one per refused message at most, the newest :data:`MAX_NOTICES` kept."""
        out = list(self._notices)
        self._notices.clear()
        return out

    def _notice(self, kind: str, source: tuple[str, int], text: str) -> None:
        self._notices.append((kind, source[0], f"SIP from {source[0]}:{source[1]}: {text[:200]}"))

    def streams_to_close(self) -> list[object]:
        """TCP connections the adapter must close (broken framing, or not from the PSS)."""
        out, self._broken = self._broken, []
        return out

    # -- dispatch of transaction events -----------------------------------------------------------

    def _pump(self, now: float) -> None:
        while True:
            events = self._tx.next_events()
            if not events:
                break
            for event in events:
                self._dispatch(event, now)
        if self._ended_tx:
            for key in self._ended_tx:
                self._tries.pop(key, None)
                first = self._first_key.pop(key, key)
                if key != first:
                    self._owners.pop(key, None)  # a failover's try
                live = self._live_key.get(first)
                if live is None or live == key:  # the owner's key is over (no later try lives on)
                    self._owners.pop(first, None)
                    self._live_key.pop(first, None)
            self._ended_tx.clear()

    def _dispatch(self, event: TxEvent, now: float) -> None:
        if isinstance(event, _CLIENT_OUTCOMES):
            if event.key in self._tries and not self._on_try_event(event, now):
                return
            first = self._first_key.get(event.key)
            if first is not None:  # a failover's try: its owner knows the first try's key
                event = replace(event, key=first)
        if isinstance(event, RequestReceived):
            self._on_request(event.key, event.request, now)
        elif isinstance(event, ResponseReceived):
            owner = self._owners.get(event.key)
            if isinstance(owner, Leg):
                if event.key == owner.invite_key:
                    owner.on_invite_response(event.response, now)
                else:
                    owner.on_response(event.key, event.response, now)
            elif owner is not None:
                owner.on_response(event.key, event.response, now)
        elif isinstance(event, _FAILURES):
            transport = isinstance(event, TransportFailed)
            if isinstance(event, TimedOut) and not event.client:
                return  # Timer H: no ACK for a non-2xx answer; nothing to undo
            owner = self._owners.get(event.key)
            if isinstance(owner, Leg):
                if event.key == owner.invite_key:
                    owner.on_invite_timeout(now, transport=transport)
                else:
                    owner.on_request_timeout(event.key, now, transport=transport)
            elif owner is not None:
                owner.on_timeout(event.key, now, transport=transport)
        elif isinstance(event, StrayResponse):
            resp = event.response
            leg = self._dialogs.get((resp.call_id, resp.from_.tag or ""))
            if leg is not None and resp.cseq.method == "INVITE" and 200 <= resp.status < 300:
                leg.on_stray_2xx(resp, now)
            else:
                self._counts["stray_responses"] += 1
        elif isinstance(event, StrayAck):
            ack = event.request
            leg = self._dialogs.get((ack.call_id, ack.to.tag or ""))
            if leg is not None:
                leg.on_ack(ack, now)

    def _on_try_event(self, event: ResponseReceived | TimedOut | TransportFailed, now: float) -> bool:
        """An out-of-dialog try's outcome: False when a failover took it over (the owner sees
        nothing), True when it goes to the owner (under the key the owner knows)."""
        key = event.key
        attempt = self._tries[key]
        if isinstance(event, ResponseReceived):
            status = event.response.status
            self._down.pop(attempt.tried[-1], None)  # it answered: up
            if status == 503:
                found = _LEADING_NUMBER.match(event.response.headers.get("Retry-After") or "")
                seconds = float(found.group()) if found else DOWN_TIME
                return not self._failover(key, now, "answered 503 to", down_for=seconds)
            if status >= 200:
                del self._tries[key]
            elif not attempt.answered:
                attempt.answered = True  # kept for a CANCEL's Via
            return True
        if isinstance(event, TimedOut) and not event.client:
            return True
        why = "could not be reached for" if isinstance(event, TransportFailed) else "did not answer"
        return not self._failover(key, now, why)

    def _answer(self, key: str, response: Response, now: float) -> None:
        with contextlib.suppress(LocalProtocolError):  # a new server transaction takes its first answer
            self._tx.respond(key, response, now)

    def _options_ok(self, request: Request, to_tag: str) -> Response:
        return make_response(
            request,
            200,
            to_tag=to_tag,
            headers=[
                ("Allow", ", ".join(ALLOWED_METHODS)),
                ("Accept", ", ".join(ACCEPTED_TYPES)),
                ("Supported", ", ".join(SUPPORTED)),
                ("Server", self.settings.user_agent),
            ],
        )

    def _on_request(self, key: str, request: Request, now: float) -> None:
        to_tag = self.new_tag()
        refusal = check_request(request, to_tag=to_tag)
        if refusal is not None:
            self._answer(key, refusal, now)
            return
        method = request.method
        dialog_tag = request.to.tag
        leg = self._dialogs.get((request.call_id, dialog_tag)) if dialog_tag else None
        if method == "CANCEL":
            invite = self._tx.find_invite_for_cancel(request)
            found = invite is not None and leg is not None and leg.on_cancel(invite.key, now)
            self._answer(key, make_response(request, 200 if found else 481, to_tag=to_tag), now)
            return
        if leg is not None:
            leg.on_request(key, request, now)
            return
        if method == "OPTIONS":
            self._answer(key, self._options_ok(request, to_tag), now)
            return
        if method == "INVITE" and dialog_tag is None:
            self._counts["refused_invites"] += 1
            self._answer(
                key, make_response(request, 403, "Forbidden (no incoming calls)", to_tag=to_tag), now
            )
            return
        self._answer(key, make_response(request, 481, to_tag=to_tag), now)



_FIRST_INVITE = CSeq(1, "INVITE")

#: Users called lately whose Request-URI and To are kept (values are frozen: one serves every INVITE
#: to that user); at most this many (emptied when full).
_CALLED = 256


class _Own:
    """What mss's messages write alike, made once from the settings: the Via's transport and host
    (where responses are expected), and a new leg's INVITE (From without its tag, the fields after
    CSeq)."""

    __slots__ = ("called", "contact_host", "invite_tail", "local", "local_port", "local_text", "rport",
                 "settings", "transport", "via_head", "via_tail")

    def __init__(self, s: UASettings, contact: NameAddr) -> None:
        self.settings = s
        self.contact_host = s.contact_host
        # RFC 3581 rport asked for over UDP; TLS named as such (RFC 3261 §20.42).
        self.transport = s.transport.upper() if s.reliable else "UDP"
        # Our Via's text around its branch, as sent_via writes it.
        self.via_head = f"SIP/2.0/{self.transport} {self.contact_host}:{s.local_port};branch="
        self.via_tail = "" if s.reliable else ";rport"
        self.local_port = s.local_port
        self.rport = not s.reliable
        self.local = NameAddr(SipUri(host=s.domain, user=s.caller))
        self.local_text = str(self.local)
        self.called: dict[str, tuple[SipUri, str, NameAddr, str]] = {}
        """By user: the Request-URI of an INVITE to that user, its text, the To value and its text."""
        tail: list[tuple[str, str, str]] = [
            ("contact", "Contact", str(contact)),
            ("allow", "Allow", ", ".join(ALLOWED_METHODS)),
            ("supported", "Supported", ", ".join(SUPPORTED)),
        ]
        if s.session_expires:
            tail.append(("session-expires", "Session-Expires", str(s.session_expires)))
            tail.append(("min-se", "Min-SE", str(s.min_se)))
        tail.append(("user-agent", "User-Agent", s.user_agent))
        tail.append(("content-type", "Content-Type", "application/sdp"))
        self.invite_tail = tuple(tail)


def _with_via(request: Request, via: str) -> Request:
    """A copy of ``request`` with ``via`` as its only Via (a new try is a new transaction)."""
    headers = request.headers.copy()
    headers.set("Via", via)
    return Request(request.method, request.uri, headers, request.body)
