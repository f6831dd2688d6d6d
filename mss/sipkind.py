"""What kind of SIP message a datagram or frame is, for the ``mss_sip_messages_total`` metric.

Read from the first bytes only (no parse): a request's method, or a response's status class. Label
values come from the wire, so they are bounded: methods outside :data:`METHODS` count as ``other``.
"""

from __future__ import annotations

__all__ = ["KINDS", "METHODS", "message_kind"]

#: Request methods counted by name (RFC 3261 and the extensions a PSS sends); any other is ``other``.
METHODS: frozenset[str] = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "UPDATE", "PRACK", "INFO", "NOTIFY",
    "SUBSCRIBE", "REFER", "MESSAGE",
})

_RESPONSE = b"SIP/2.0 "
_CLASSES = {str(n).encode(): f"{n}xx" for n in range(1, 7)}
_BY_METHOD = {m.encode(): m for m in METHODS}

#: Every value :func:`message_kind` returns.
KINDS: frozenset[str] = frozenset({*METHODS, *_CLASSES.values(), "other"})

#: Bytes a method name may take before the space that ends it (the longest in METHODS is 9).
_METHOD_SCAN = 12


def message_kind(data: bytes) -> str:
    """``INVITE``, ``BYE``, ... for a request; ``1xx`` .. ``6xx`` for a response; else ``other``."""
    if data.startswith(_RESPONSE):
        return _CLASSES.get(data[8:9], "other")
    end = data.find(b" ", 0, _METHOD_SCAN)
    return _BY_METHOD.get(data[:end], "other") if end > 0 else "other"
