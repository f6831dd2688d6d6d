"""SDES crypto lines (RFC 4568), read as opaque tokens for SRTP passthrough, sans-IO.

mss keys nothing: each phone's ``a=crypto`` is the key it sends with, and mss only carries it to the
other phone. So a line is checked for its shape and bounded, never decoded:

    a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]       (RFC 4568 §9.1)

- ``tag`` is 1*9DIGIT, ``crypto-suite`` 1*(ALPHA / DIGIT / "_"), ``key-params`` one or more
  ``<key-method>:<key-info>`` joined by ``;``, session parameters tokens; single spaces between.
- A line is at most :data:`MAX_CRYPTO_VALUE` characters, a stream has at most
  :data:`MAX_CRYPTO_LINES` of them, and their tags differ (RFC 4568 §6.1).

:func:`placeholder_crypto` makes mss's own line for its first offer to user1: a fresh random key that
nothing is ever sent with (user1's answer carries the key that matters).

Errors: :class:`~mss.errors.SdpError` (answered 488) for a line from the network that is malformed.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from mss.errors import SdpError
from mss.sdp.syntax import MediaDescription, shown

__all__ = [
    "MAX_CRYPTO_LINES",
    "MAX_CRYPTO_VALUE",
    "PLACEHOLDER_SUITE",
    "CryptoLine",
    "answer_lines",
    "crypto_lines",
    "placeholder_crypto",
]

#: Characters of one a=crypto value: a suite with a 256-bit key, lifetime, MKI and a few session
#: parameters fit in well under 200; more is not a key line but an attack on memory or logs.
MAX_CRYPTO_VALUE = 512

#: a=crypto lines in one stream: a phone offers one per suite it supports (pjmedia at most 16, RFC
#: 4568 §6.1 lets it list alternatives); more is refused rather than carried to the other phone.
MAX_CRYPTO_LINES = 16

#: The suite of mss's placeholder key: the one every SDES endpoint must support (RFC 4568 §6.2.1).
PLACEHOLDER_SUITE = "AES_CM_128_HMAC_SHA1_80"

#: Bytes of the placeholder's key and salt: 128-bit master key + 112-bit master salt (RFC 4568 §6.2.1).
_PLACEHOLDER_KEY_BYTES = 30

# RFC 4568 §9.1: tag = 1*9DIGIT; crypto-suite = 1*(ALPHA / DIGIT / "_"); key-param = key-method ":"
# key-info, several joined by ";"; key-info and session-params are VCHAR runs (no space).
_CRYPTO = re.compile(
    r"(?P<tag>[0-9]{1,9}) (?P<suite>[A-Za-z0-9_]+) "
    r"(?P<keys>[A-Za-z0-9_-]+:[\x21-\x7e]+)(?P<session>( [\x21-\x7e]+)*)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CryptoLine:
    """One ``a=crypto`` value, checked for its shape and kept verbatim."""

    tag: int
    """The line's tag: an answer names the offered line it accepts by it (RFC 4568 §5.1.2)."""
    suite: str
    """The crypto suite, e.g. ``AES_CM_128_HMAC_SHA1_80``."""
    value: str
    """The whole value after ``a=crypto:``, exactly as written."""

    @classmethod
    def parse(cls, value: str) -> CryptoLine:
        """Read an ``a=crypto`` value; :class:`~mss.errors.SdpError` when it is not RFC 4568's shape."""
        if len(value) > MAX_CRYPTO_VALUE:
            raise SdpError(f"a=crypto line of {len(value)} characters is over {MAX_CRYPTO_VALUE}")
        match = _CRYPTO.fullmatch(value)
        if match is None:
            raise SdpError(
                f"a=crypto:{shown(value)} is not <tag> <crypto-suite> <key-method>:<key-info> [<params>]"
            )
        return cls(tag=int(match["tag"]), suite=match["suite"], value=value)

    def with_tag(self, tag: int) -> CryptoLine:
        """The same line under another tag (an answer takes the tag of the offered line it accepts)."""
        _, _, rest = self.value.partition(" ")
        return CryptoLine(tag=tag, suite=self.suite, value=f"{tag} {rest}")


def crypto_lines(media: MediaDescription) -> tuple[CryptoLine, ...]:
    """The stream's ``a=crypto`` lines in their order, checked (bounded count, distinct tags)."""
    lines: list[CryptoLine] = []
    for attr in media.attributes:
        if attr.name != "crypto":
            continue
        if len(lines) == MAX_CRYPTO_LINES:
            raise SdpError(f"more than {MAX_CRYPTO_LINES} a=crypto lines in the stream")
        if attr.value is None:
            raise SdpError("a=crypto without a value")
        line = CryptoLine.parse(attr.value)
        if any(line.tag == other.tag for other in lines):
            raise SdpError(f"a=crypto tag {line.tag} appears twice")  # RFC 4568 §6.1: tags are unique
        lines.append(line)
    return tuple(lines)


def placeholder_crypto(tag: int = 1) -> CryptoLine:
    """mss's own a=crypto for its first offer: a fresh random key of :data:`PLACEHOLDER_SUITE`.

    Nothing is ever encrypted with it: user1's answer names the key user1 sends with, and mss passes
    user2's key to user1 in a re-INVITE before any media flows to user1.
    """
    key = base64.b64encode(secrets.token_bytes(_PLACEHOLDER_KEY_BYTES)).decode("ascii")
    return CryptoLine(tag=tag, suite=PLACEHOLDER_SUITE, value=f"{tag} {PLACEHOLDER_SUITE} inline:{key}")


def answer_lines(answer: Sequence[CryptoLine], offered: Sequence[CryptoLine]) -> CryptoLine:
    """The one line an answer accepts: exactly one, with the tag and suite of an offered line
    (RFC 4568 §5.1.2: "the answerer MUST ... [choose] one of the offered crypto attributes")."""
    if not answer:
        raise SdpError("the RTP/SAVP answer has no a=crypto line")
    if len(answer) > 1:
        raise SdpError(f"the answer has {len(answer)} a=crypto lines; one is accepted")
    line = answer[0]
    if not any(line.tag == o.tag and line.suite.upper() == o.suite.upper() for o in offered):
        raise SdpError(f"the answer's a=crypto tag {line.tag} ({line.suite}) is not one offered")
    return line
