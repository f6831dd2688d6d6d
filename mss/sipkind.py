"""What kind of SIP message a datagram or frame is, for the ``mss_sip_messages_total`` metric.

Read from the first bytes only (no parse; it runs for every message in and out): a request's method
told by its first four bytes (each method of :data:`METHODS` has its own), or a response's status
class. Label values come from the wire, so they are bounded: other methods count as ``other``.
"""

from __future__ import annotations

__all__ = ["KINDS", "METHODS", "message_kind"]

#: Request methods counted by name (RFC 3261 and the extensions a PSS sends); any other is ``other``.
METHODS: frozenset[str] = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "UPDATE", "PRACK", "INFO", "NOTIFY",
    "SUBSCRIBE", "REFER", "MESSAGE",
})

_RESPONSE = b"SIP/"
_CLASSES = {str(n).encode(): f"{n}xx" for n in range(1, 7)}
#: Each method by its first four bytes (with the space after a shorter one: ``b"ACK "``).
_BY_PREFIX = {(m + " ")[:4].encode(): m for m in METHODS}

#: Every value :func:`message_kind` returns.
KINDS: frozenset[str] = frozenset({*METHODS, *_CLASSES.values(), "other"})


def message_kind(data: bytes) -> str:
    """``INVITE``, ``BYE``, ... for a request; ``1xx`` .. ``6xx`` for a response; else ``other``."""
    kind = _BY_PREFIX.get(data[:4])
    if kind is not None:
        return kind
    if data[:4] == _RESPONSE:  # "SIP/2.0 200 ...": the class is the digit after "SIP/2.0 "
        return _CLASSES.get(data[8:9], "other")
    return "other"
