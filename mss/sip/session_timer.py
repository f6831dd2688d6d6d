"""RFC 4028 session timers of one leg, sans-IO: what mss asked for, what was agreed, and which leg
timer runs.

The leg (:mod:`mss.sip.leg`) owns a :class:`SessionTimer`, feeds it the 422 of its INVITE, the 2xx of
its INVITE and its own refreshes, and the far end's refreshing requests, and arms the timer
:meth:`SessionTimer.next_timer` names. Sending the refresh and ending the dialog stay with the leg.

- Our INVITE asks for ``Session-Expires`` (unless disabled); a 422 is retried once with the Min-SE
  it names, when that is at least :data:`MIN_SE_FLOOR` (§7.4).
- A 2xx with ``Session-Expires`` starts the timer (at least :data:`MIN_SE_FLOOR`); without one there
  is none (§7.2). A far-end request with ``Session-Expires`` below our Min-SE gets 422 (§8.1);
  without a ``refresher`` the UAC of that request refreshes (§9).
- The refresher refreshes at half the interval; the other side ends the session when
  ``interval - min(32, interval/3)`` passes without a refresh (§10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mss.errors import SipError
from mss.sip._grammar import parse_number
from mss.sip.message import Request, Response
from mss.sip.uri import get_param, parse_params

__all__ = [
    "MIN_SE_FLOOR",
    "SessionRefusal",
    "SessionTimer",
    "SessionTimerName",
    "parse_session_expires",
]

#: RFC 4028 §4: a session interval is at least 90 s.
MIN_SE_FLOOR = 90

#: The leg timers a session timer runs: ours to refresh, or theirs to expire.
SessionTimerName = Literal["session_refresh", "session_expiry"]


def parse_session_expires(value: str) -> tuple[int, str | None]:
    """``Session-Expires: delta;refresher=uac|uas`` → (seconds, refresher or None)."""
    delta, _, rest = value.partition(";")
    seconds = parse_number(delta, "Session-Expires")
    params = parse_params(";" + rest, "Session-Expires") if rest else ()
    refresher = get_param(params, "refresher")
    return seconds, (refresher.lower() if refresher else None)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRefusal:
    """The answer a far-end request's ``Session-Expires`` calls for instead of a 2xx."""

    status: int
    """400 (unreadable) or 422 (below our Min-SE)."""
    reason: str | None = None
    """Reason phrase, None for the standard one."""
    headers: tuple[tuple[str, str], ...] = ()
    """Headers of the refusal (``Min-SE`` on a 422)."""


@dataclass(slots=True)
class SessionTimer:
    """One leg's session timer (see the module docstring)."""

    requested: int
    """The ``Session-Expires`` our INVITE asks for (0: none), raised by a 422."""
    min_se: int
    """Our Min-SE: the smallest interval we accept from the far end."""
    interval: int | None = None
    """The agreed interval in seconds; None while there is no session timer."""
    we_refresh: bool = False
    """True when mss is the refresher."""
    retried_422: bool = False
    """True once the INVITE was retried after a 422 (only once)."""

    @property
    def active(self) -> bool:
        """True while a session timer runs."""
        return self.interval is not None

    def stop(self) -> None:
        """No session timer (the last exchange carried none)."""
        self.interval = None
        self.we_refresh = False

    def next_timer(self, now: float) -> tuple[SessionTimerName, float] | None:
        """The leg timer to arm from ``now``, None when there is no session timer (§10)."""
        interval = self.interval
        if interval is None:
            return None
        if self.we_refresh:
            return "session_refresh", now + interval / 2
        return "session_expiry", now + interval - min(32, interval / 3)

    def retry_after_422(self, response: Response) -> int | None:
        """The Min-SE a 422 to our INVITE names, when the INVITE is to be retried with it (once,
        §7.4); None when the 422 is a final failure. :attr:`requested` is raised to it."""
        if self.retried_422:
            return None
        try:
            min_se = parse_number((response.headers.get("Min-SE") or "").partition(";")[0], "Min-SE")
        except SipError:
            return None  # unreadable: the 422 is a final failure like any other
        if min_se < MIN_SE_FLOOR:
            return None
        self.retried_422 = True
        self.requested = max(min_se, self.requested)
        return min_se

    def on_response(self, response: Response, *, we_are_uac: bool) -> None:
        """A 2xx to our INVITE, re-INVITE or UPDATE: the timer it agrees (or none)."""
        value = response.headers.get("Session-Expires")
        if value is None:
            self.stop()
            return
        try:
            interval, refresher = parse_session_expires(value)
        except SipError:
            self.stop()
            return
        self.interval = max(interval, MIN_SE_FLOOR)
        self.we_refresh = (refresher or "uac") == ("uac" if we_are_uac else "uas")

    def on_request(self, request: Request) -> list[tuple[str, str]] | SessionRefusal:
        """A far-end re-INVITE or UPDATE: the headers for our 2xx, or the refusal to send instead
        (the timer is then unchanged)."""
        value = request.headers.get("Session-Expires")
        if value is None:
            self.stop()
            return []
        try:
            interval, refresher = parse_session_expires(value)
        except SipError as exc:
            return SessionRefusal(status=400, reason=exc.reason)
        if interval < self.min_se:
            return SessionRefusal(status=422, headers=(("Min-SE", str(self.min_se)),))
        refresher = refresher or "uac"
        self.interval = interval
        self.we_refresh = refresher == "uas"
        out = [("Session-Expires", f"{interval};refresher={refresher}")]
        if "timer" in request.headers.tokens("Supported"):
            out.append(("Require", "timer"))
        return out

    def refresh_headers(self) -> list[tuple[str, str]]:
        """``Session-Expires`` (we refresh) and ``Min-SE`` for a request of ours in a session with a
        timer; nothing without one."""
        if self.interval is None:
            return []
        return [("Session-Expires", f"{self.interval};refresher=uac"), ("Min-SE", str(self.min_se))]
