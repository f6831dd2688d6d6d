"""The external line's registration (RFC 3261 §10), refreshed before expiry, retried with back-off.

States and moves (``_set_state`` refuses any other)::

    IDLE ──start──> REGISTERING ──2xx──> REGISTERED ──refresh timer──> REFRESHING ──2xx──> REGISTERED
                       │  ↺ 401/407 answered, 423 retried                  │
                       └──failure──> WAITING ──retry timer──> REGISTERING <─┘ failure
    any ──shutdown──> UNREGISTERING ──final / timeout──> STOPPED     (STOPPED at once when nothing to remove)

- One Call-ID for the life of the UA, CSeq + 1 for every REGISTER (§10.2.4); one REGISTER in
  flight at a time (§10.2): a shutdown during one waits for it.
- The granted lifetime is our Contact's ``expires`` in the 2xx, else its Expires, else what we
  asked; the refresh goes out at ``max(granted / 2, granted - REFRESH_MARGIN)``.
- 423 Interval Too Brief: ask again at once with its Min-Expires (§10.3). 401/407: the
  :class:`~mss.sip.auth.Authenticator` answers or gives up (wrong password: no loop).
- Any failure (final non-2xx, timeout, transport) reports RegistrationFailed, counts as not
  registered, and retries after ``min(BACKOFF_MAX, BACKOFF_BASE · 2^(n-1))`` seconds.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mss.errors import LocalProtocolError, SipError
from mss.sip._grammar import parse_number
from mss.sip.auth import Authenticator
from mss.sip.events import Registered, RegistrationFailed, UAEvent, Unregistered
from mss.sip.message import Headers, Request, Response
from mss.sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from mss.sip.settings import UASettings

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "REFRESH_MARGIN",
    "RegCore",
    "RegState",
    "Registration",
]

#: First retry delay after a failed REGISTER, seconds; doubles on each failure in a row.
BACKOFF_BASE = 5.0
#: Longest retry delay, seconds.
BACKOFF_MAX = 300.0
#: Refresh this many seconds before the registration expires (when it is long enough).
REFRESH_MARGIN = 30.0


class RegState(enum.Enum):
    """Where the registration is."""

    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    REFRESHING = "refreshing"
    WAITING = "waiting"
    UNREGISTERING = "unregistering"
    STOPPED = "stopped"


R = RegState
_MOVES: dict[RegState, frozenset[RegState]] = {
    R.IDLE: frozenset({R.REGISTERING, R.STOPPED}),
    R.REGISTERING: frozenset({R.REGISTERED, R.WAITING, R.UNREGISTERING, R.STOPPED}),
    R.REGISTERED: frozenset({R.REFRESHING, R.UNREGISTERING, R.WAITING}),
    R.REFRESHING: frozenset({R.REGISTERED, R.WAITING, R.UNREGISTERING, R.STOPPED}),
    R.WAITING: frozenset({R.REGISTERING, R.STOPPED}),
    R.UNREGISTERING: frozenset({R.STOPPED}),
    R.STOPPED: frozenset(),
}


class RegCore(Protocol):
    """What the registration needs from the user agent."""

    settings: UASettings

    def new_branch(self) -> str:
        """A fresh RFC 3261 branch."""
        ...

    def new_tag(self) -> str:
        """A fresh tag."""
        ...

    def new_call_id(self) -> str:
        """A fresh Call-ID."""
        ...

    def via(self, branch: str) -> str:
        """Our Via value with ``branch``."""
        ...

    def contact(self, user: str) -> NameAddr:
        """Our Contact for ``user``."""
        ...

    def make_cnonce(self) -> str:
        """A fresh digest client nonce."""
        ...

    def send_request(self, owner: Registration, request: Request, now: float) -> str | None:
        """Send in a new client transaction; the key, or None when no transaction is left."""
        ...

    def set_timer(self, owner: Registration, name: str, deadline: float) -> None:
        """Arm a timer."""
        ...

    def clear_timer(self, owner: Registration, name: str) -> None:
        """Disarm a timer."""
        ...

    def emit(self, event: UAEvent) -> None:
        """Queue an event."""
        ...


@dataclass(eq=False, slots=True)
class Registration:
    """The REGISTER state machine of the external line; see the module docstring."""

    core: RegCore
    state: RegState = RegState.IDLE
    call_id: str = ""
    tag: str = ""
    cseq: int = 0
    expires: int = 0
    """Seconds granted by the last 2xx (0: not registered)."""
    failures: int = 0
    """Failures in a row (for the back-off)."""
    _key: str | None = None
    _request: Request | None = None
    _auth: Authenticator | None = None
    _asked: int = 0
    _stop_pending: bool = False
    _interval_retried: bool = False

    @property
    def registered(self) -> bool:
        """True while a registration is in force (a refresh in flight included)."""
        return self.state in (R.REGISTERED, R.REFRESHING)

    def _set_state(self, new: RegState) -> None:
        if new is self.state:
            return
        if new not in _MOVES[self.state]:
            raise LocalProtocolError(f"registration: illegal move {self.state.value} -> {new.value}")
        self.state = new

    # -- commands -------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Register (once; later calls do nothing)."""
        if self.state is not R.IDLE:
            return
        self.call_id = self.core.new_call_id()
        self.tag = self.core.new_tag()
        self._set_state(R.REGISTERING)
        self._register(now, self.core.settings.expires, fresh_auth=True)

    def shutdown(self, now: float) -> None:
        """Remove the registration (Expires: 0), then report Unregistered."""
        st = self.state
        if st in (R.UNREGISTERING, R.STOPPED):
            return
        self.core.clear_timer(self, "refresh")
        self.core.clear_timer(self, "retry")
        if st in (R.REGISTERING, R.REFRESHING):
            self._stop_pending = True  # one REGISTER at a time: wait for this one
            return
        if st is R.REGISTERED:
            self._set_state(R.UNREGISTERING)
            self._register(now, 0, fresh_auth=True)
            return
        self._stop()

    def _stop(self) -> None:
        self._set_state(R.STOPPED)
        self.expires = 0
        self.core.emit(Unregistered())

    # -- the REGISTER request ------------------------------------------------------------------

    def _build(self, expires: int, extra: list[tuple[str, str]]) -> Request:
        s = self.core.settings
        self.cseq += 1
        aor = str(NameAddr(SipUri(host=s.domain, user=s.aor_user)))
        h = Headers()
        h.add("Via", self.core.via(self.core.new_branch()))
        h.add("Max-Forwards", "70")
        h.add("From", f"{aor};tag={self.tag}")
        h.add("To", aor)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Contact", str(self.core.contact(s.aor_user)))
        h.add("Expires", str(expires))
        h.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE")
        h.add("Supported", "100rel, timer")
        h.add("User-Agent", s.user_agent)
        for name, value in extra:
            h.add(name, value)
        return Request("REGISTER", SipUri(host=s.domain), h)

    def _register(
        self, now: float, expires: int, *, fresh_auth: bool, extra: list[tuple[str, str]] | None = None
    ) -> None:
        s = self.core.settings
        if fresh_auth or self._auth is None:
            self._auth = Authenticator(s.auth_user or s.aor_user, s.password or "", self.core.make_cnonce)
            self._interval_retried = False
        self._asked = expires
        request = self._build(expires, extra or [])
        self._request = request
        key = self.core.send_request(self, request, now)
        if key is None:
            if self.state is R.UNREGISTERING:
                self._stop()
            else:
                self._failed(503, "Service Unavailable (transaction limit)", now)
            return
        self._key = key

    # -- transaction results -------------------------------------------------------------------

    def on_response(self, key: str, response: Response, now: float) -> None:
        """A response to our REGISTER."""
        if key != self._key or response.status < 200:
            return
        self._key = None
        request = self._request
        assert request is not None and self._auth is not None
        status = response.status
        if status in (401, 407):
            extra = self._auth.headers_for(response, method="REGISTER", uri=str(request.uri))
            if extra is not None:
                self._register(now, self._asked, fresh_auth=False, extra=extra)
                return
        if status == 423 and self._asked and not self._interval_retried:
            try:
                min_expires = parse_number(response.headers.get("Min-Expires") or "", "Min-Expires")
            except SipError:
                min_expires = 0  # unreadable: the 423 is a failure like any other
            if min_expires > self._asked:
                self._interval_retried = True
                self._register(now, min_expires, fresh_auth=False)
                return
        if self.state is R.UNREGISTERING:
            self._stop()
            return
        if 200 <= status < 300:
            self._registered(response, now)
        else:
            self._failed(status, response.reason, now)

    def on_timeout(self, key: str, now: float, *, transport: bool) -> None:
        """Our REGISTER got no final response."""
        if key != self._key:
            return
        self._key = None
        if self.state is R.UNREGISTERING:
            self._stop()
            return
        if transport:
            self._failed(503, "Service Unavailable (transport failure)", now)
        else:
            self._failed(408, "Request Timeout", now)

    def _granted(self, response: Response) -> int:
        s = self.core.settings
        mine = self.core.contact(s.aor_user).uri
        try:
            contacts = response.contacts
        except SipError:  # a bad Contact in a 2xx: fall back to Expires
            contacts = []
        for contact in contacts:
            uri = contact.uri
            if (
                isinstance(uri, SipUri)
                and isinstance(mine, SipUri)
                and uri.user_text == mine.user_text  # compared unescaped (RFC 3261 §19.1.4)
                and uri.hostport == mine.hostport
            ):
                value = contact.param("expires")
                if value:
                    with contextlib.suppress(SipError):  # unreadable: the Expires header decides
                        return parse_number(value, "Contact expires")
        try:
            header = response.expires()
        except SipError:
            header = None
        return header if header is not None else self._asked

    def _registered(self, response: Response, now: float) -> None:
        granted = self._granted(response)
        if granted <= 0:
            self._failed(500, "registrar granted no lifetime", now)
            return
        self.expires = granted
        self.failures = 0
        self._set_state(R.REGISTERED)
        if self._stop_pending:
            self._stop_pending = False
            self._set_state(R.UNREGISTERING)
            self._register(now, 0, fresh_auth=True)
            return
        self.core.set_timer(self, "refresh", now + max(granted / 2, granted - REFRESH_MARGIN))
        self.core.emit(Registered(expires=granted))

    def _failed(self, status: int, reason: str, now: float) -> None:
        self.expires = 0
        if self._stop_pending:
            self._stop_pending = False
            self._stop()
            return
        if not 300 <= status <= 699:
            status = 500
        self.failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (self.failures - 1))
        self._set_state(R.WAITING)
        self.core.set_timer(self, "retry", now + delay)
        self.core.emit(RegistrationFailed(status=status, reason=reason, retry_at=now + delay))

    def on_timer(self, name: str, now: float) -> None:
        """The refresh or the retry timer fired."""
        if name == "refresh" and self.state is R.REGISTERED:
            self._set_state(R.REFRESHING)
            self._register(now, self.core.settings.expires, fresh_auth=True)
        elif name == "retry" and self.state is R.WAITING:
            self._set_state(R.REGISTERING)
            self._register(now, self.core.settings.expires, fresh_auth=True)
