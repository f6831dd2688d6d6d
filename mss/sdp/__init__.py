"""SDP for the two legs of a callback, sans-IO: its syntax (RFC 8866) and the offer/answer model (RFC 3264).

=================  ==============================================================================
``syntax``         RFC 8866: :func:`parse_sdp` into frozen :class:`SessionDescription` dataclasses,
                   ``bytes(sd)`` back; every number bounded in length before ``int()``
``offer_answer``   RFC 3264: our offers (:func:`make_offer`, :func:`make_bridge_offer`), the
                   remote's answer (:func:`read_answer`), our answer to a far-end offer
                   (:func:`make_answer`), hold (:func:`with_direction`), the relay's payload-type
                   rewrite (:func:`pt_mapping`), one leg's o= line (:class:`LocalSdp`); every
                   agreement is a :class:`Negotiated`
``crypto``         RFC 4568: SDES a=crypto lines checked as opaque tokens for SRTP passthrough
                   (:class:`CryptoLine`, :func:`crypto_lines`), mss's placeholder key
=================  ==============================================================================

Import from here: every name below is the package's surface; the modules' other names are theirs.

Errors: :class:`~mss.errors.SdpError` (answered 488) for SDP from the network that mss cannot use;
:class:`~mss.errors.LocalProtocolError` when mss itself asks for an invalid SDP (a bug of ours).
"""

from __future__ import annotations

from mss.sdp.crypto import (
    MAX_CRYPTO_LINES,
    MAX_CRYPTO_VALUE,
    PLACEHOLDER_SUITE,
    CryptoLine,
    answer_lines,
    crypto_lines,
    placeholder_crypto,
)
from mss.sdp.offer_answer import (
    DEFAULT_TELEPHONE_EVENT_PT,
    DEFAULT_TELEPHONE_EVENTS,
    PASSTHROUGH_CODECS,
    LocalSdp,
    Negotiated,
    make_answer,
    make_bridge_offer,
    make_offer,
    pt_mapping,
    read_answer,
    with_direction,
)
from mss.sdp.syntax import (
    MAX_SDP_SIZE,
    MAX_SESSION_VERSION_DIGITS,
    STATIC_PAYLOAD_TYPES,
    TELEPHONE_EVENT,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
    parse_sdp,
)

__all__ = [
    "DEFAULT_TELEPHONE_EVENTS",
    "DEFAULT_TELEPHONE_EVENT_PT",
    "MAX_CRYPTO_LINES",
    "MAX_CRYPTO_VALUE",
    "MAX_SDP_SIZE",
    "MAX_SESSION_VERSION_DIGITS",
    "PASSTHROUGH_CODECS",
    "PLACEHOLDER_SUITE",
    "STATIC_PAYLOAD_TYPES",
    "TELEPHONE_EVENT",
    "Attribute",
    "Codec",
    "Connection",
    "CryptoLine",
    "Direction",
    "LocalSdp",
    "MediaDescription",
    "Negotiated",
    "Origin",
    "SessionDescription",
    "Timing",
    "answer_lines",
    "crypto_lines",
    "make_answer",
    "make_bridge_offer",
    "make_offer",
    "parse_sdp",
    "placeholder_crypto",
    "pt_mapping",
    "read_answer",
    "with_direction",
]
