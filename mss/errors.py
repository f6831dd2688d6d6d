"""The one error tree of mss.

Every error mss raises on purpose is an :class:`MssError`. Protocol errors carry the answer that goes
back on the wire, so the adapter that catches one knows what to send without a second lookup::

    MssError
    ├── ConfigError              config.ini is wrong: section, key, reason       (mss check-config → exit 2)
    ├── ProtocolError            bytes that break a protocol's rules
    │   ├── LocalProtocolError   we were asked to send something invalid (a bug of ours)
    │   └── RemoteProtocolError  the peer sent something invalid
    │       ├── IIFError         carries the IIF id for ``ACK: id=...;code=fail;``
    │       ├── SipError         carries the SIP status to answer with (400, 413, 420, ...)
    │       └── SdpError         an SDP body we cannot use (answered 488 by the SIP layer)
    ├── JournalError             sqlite3 failed; raised ``from`` the sqlite3 error
    ├── TransportError           a socket failed; raised ``from`` the OSError
    └── RelayError               the media relay refused a verb
        └── PortsExhausted       no free RTP port pair in [rtp] port_min..port_max

Adapters (``mss/aio``) translate ``OSError`` and ``sqlite3.Error`` into these with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "IIFError",
    "JournalError",
    "LocalProtocolError",
    "MssError",
    "PortsExhausted",
    "ProtocolError",
    "RelayError",
    "RemoteProtocolError",
    "SdpError",
    "SipError",
    "TransportError",
]


class MssError(Exception):
    """Root of every error mss raises on purpose."""


class ConfigError(MssError):
    """A bad config.ini value: names the section, the key and the reason."""

    def __init__(self, section: str, key: str | None, reason: str) -> None:
        self.section = section
        self.key = key
        self.reason = reason
        where = f"[{section}] {key}" if key else f"[{section}]"
        super().__init__(f"{where}: {reason}")


class ProtocolError(MssError):
    """Bytes that break a protocol's rules."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class IIFError(RemoteProtocolError):
    """An IIF message that is refused with ``ACK: id=<iif_id>;code=fail;``.

    ``iif_id`` is the id read from the message, or ``""`` when none could be read.
    """

    def __init__(self, reason: str, *, iif_id: str = "") -> None:
        self.reason = reason
        self.iif_id = iif_id
        super().__init__(reason)


class SipError(RemoteProtocolError):
    """A SIP message refused with ``status`` (a 4xx/5xx code) when it was a request."""

    def __init__(self, reason: str, *, status: int = 400) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)


class SdpError(RemoteProtocolError):
    """An SDP body mss cannot use; the SIP layer answers 488 Not Acceptable Here."""

    def __init__(self, reason: str, *, status: int = 488) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)


class JournalError(MssError):
    """The journal (sqlite3) failed."""


class TransportError(MssError):
    """A socket operation failed."""


class RelayError(MssError):
    """The media relay refused a verb."""


class PortsExhausted(RelayError):
    """No free RTP/RTCP port pair is left in the configured range."""
