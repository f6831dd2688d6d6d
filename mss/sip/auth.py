"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 2617, RFC 8760).

:func:`parse_challenge` reads a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value;
:func:`authorization` computes the matching ``Authorization`` / ``Proxy-Authorization`` value;
:class:`Authenticator` decides, for one request and the requests that retry it, whether a 401/407
is answered or given up:

- the strongest supported algorithm among the challenges is used (SHA-512-256, SHA-256, MD5, and
  their ``-sess`` variants); ``qop=auth`` is preferred, ``auth-int`` is used when it is the only one,
  and a challenge without qop gets the RFC 2069 response;
- a realm that was already answered and is challenged again without ``stale=true`` means the
  password is wrong: give up (Kamailio sends a fresh nonce on each challenge, so "the same nonce"
  alone does not catch it); the same nonce twice is never answered twice; at most
  :data:`MAX_AUTH_ATTEMPTS` retries per request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from mss.errors import SipError
from mss.sip._grammar import TOKEN_CHARS, WS
from mss.sip.message import Response

__all__ = [
    "ALGORITHMS",
    "MAX_AUTH_ATTEMPTS",
    "Authenticator",
    "Challenge",
    "authorization",
    "digest_response",
    "parse_auth_params",
    "parse_challenge",
]

#: Retries of one request with credentials before giving up (two realms, and one stale nonce).
MAX_AUTH_ATTEMPTS = 3

#: Supported algorithms, strongest first, with their hashlib names.
ALGORITHMS: dict[str, str] = {
    "SHA-512-256": "sha512_256",
    "SHA-256": "sha256",
    "MD5": "md5",
}
if "sha512_256" not in hashlib.algorithms_available:  # pragma: no cover - depends on OpenSSL
    del ALGORITHMS["SHA-512-256"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """One Digest challenge (RFC 7616 §3.3)."""

    realm: str
    """Protection space; the password belongs to it."""
    nonce: str
    """Server nonce."""
    algorithm: str = "MD5"
    """``MD5``, ``SHA-256``, ``SHA-512-256``, optionally with ``-sess`` (as sent, uppercased)."""
    qop: tuple[str, ...] = ()
    """Offered qop values (lowercase); empty: RFC 2069 compatibility."""
    opaque: str | None = None
    """Echoed back unchanged."""
    stale: bool = False
    """The previous nonce was stale; the credentials were right."""
    proxy: bool = False
    """True for Proxy-Authenticate (407), False for WWW-Authenticate (401)."""

    @property
    def supported(self) -> bool:
        """True when mss can answer it."""
        base = self.algorithm.removesuffix("-SESS")
        return base in ALGORITHMS and (not self.qop or "auth" in self.qop or "auth-int" in self.qop)

    @property
    def strength(self) -> int:
        """Higher is stronger (for choosing among several challenges)."""
        names = list(ALGORITHMS)
        base = self.algorithm.removesuffix("-SESS")
        return len(names) - names.index(base) if base in names else -1


def parse_auth_params(text: str) -> dict[str, str]:
    """Parse ``auth-param *(COMMA auth-param)``; names lowercased, quoted values unquoted."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and (text[i] in WS or text[i] == ","):
            i += 1
        if i >= n:
            break
        j = i
        while j < n and text[j] in TOKEN_CHARS:
            j += 1
        name = text[i:j].lower()
        if not name:
            raise SipError(f"bad authentication parameter at {text[i : i + 20]!r}")
        i = j
        while i < n and text[i] in WS:
            i += 1
        if i >= n or text[i] != "=":
            raise SipError(f"authentication parameter {name!r} has no value")
        i += 1
        while i < n and text[i] in WS:
            i += 1
        if i < n and text[i] == '"':
            out: list[str] = []
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(text[i])
                i += 1
            if i >= n:
                raise SipError(f"unterminated quoted value of {name!r}")
            i += 1
            value = "".join(out)
        else:
            j = i
            while j < n and text[j] not in WS and text[j] != ",":
                j += 1
            value = text[i:j]
            i = j
        params[name] = value
        while i < n and text[i] in WS:
            i += 1
        if i < n and text[i] != ",":
            raise SipError(f"expected ',' after {name!r}")
    return params


def parse_challenge(value: str, *, proxy: bool) -> Challenge | None:
    """Parse a challenge; None when its scheme is not Digest (RFC 3261 §22.1: ignore it)."""
    scheme, _, rest = value.strip(WS).partition(" ")
    if scheme.lower() != "digest":
        return None
    params = parse_auth_params(rest)
    if "realm" not in params or "nonce" not in params:
        raise SipError("Digest challenge without realm or nonce")
    qop = tuple(q.strip(WS).lower() for q in params.get("qop", "").split(",") if q.strip(WS))
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5").upper(),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        proxy=proxy,
    )


def _hash(algorithm: str, text: str) -> str:
    name = ALGORITHMS[algorithm.removesuffix("-SESS")]
    # surrogateescape: a realm or nonce that is not UTF-8 is hashed as the octets that came
    # (the parser decoded them so), not refused with a UnicodeEncodeError.
    return hashlib.new(name, text.encode("utf-8", "surrogateescape")).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str,
    cnonce: str,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1; RFC 2069 when ``qop`` is None)."""
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    if algorithm.endswith("-SESS"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        body_hash = hashlib.new(ALGORITHMS[algorithm.removesuffix("-SESS")], body).hexdigest()
        ha2 = _hash(algorithm, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop is None:
        return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge``."""
    qop: str | None = None
    if challenge.qop:
        qop = "auth" if "auth" in challenge.qop else "auth-int"
    nc_text = f"{nc:08x}"
    response = digest_response(
        algorithm=challenge.algorithm,
        username=username,
        password=password,
        realm=challenge.realm,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        body=body,
    )
    parts = [
        f"username={_q(username)}",
        f"realm={_q(challenge.realm)}",
        f"nonce={_q(challenge.nonce)}",
        f"uri={_q(uri)}",
        f"response={_q(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if qop is not None:
        parts += [f"cnonce={_q(cnonce)}", f"qop={qop}", f"nc={nc_text}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_q(challenge.opaque)}")
    return "Digest " + ", ".join(parts)


@dataclass(slots=True)
class Authenticator:
    """Answers the 401/407 challenges of one request and its retries, and knows when to stop."""

    username: str
    """Digest user name."""
    password: str
    """Digest password."""
    make_cnonce: Callable[[], str]
    """Source of client nonces."""
    attempts: int = 0
    """Retries with credentials made so far."""
    _answered: dict[tuple[bool, str], str] = field(default_factory=dict)

    def headers_for(
        self, response: Response, *, method: str, uri: str, body: bytes = b""
    ) -> list[tuple[str, str]] | None:
        """Authorization headers for the retry of the request ``response`` challenged; None: give up."""
        if response.status not in (401, 407) or self.attempts >= MAX_AUTH_ATTEMPTS:
            return None
        chosen: dict[tuple[bool, str], Challenge] = {}
        for header, proxy in (("WWW-Authenticate", False), ("Proxy-Authenticate", True)):
            for value in response.headers.get_all(header):
                try:
                    ch = parse_challenge(value, proxy=proxy)
                except SipError:
                    continue
                if ch is None or not ch.supported:
                    continue
                key = (proxy, ch.realm)
                if key not in chosen or ch.strength > chosen[key].strength:
                    chosen[key] = ch
        if not chosen:
            return None
        out: list[tuple[str, str]] = []
        for key, ch in chosen.items():
            previous = self._answered.get(key)
            if previous is not None and (not ch.stale or previous == ch.nonce):
                return None  # this realm refused our credentials: wrong password
            self._answered[key] = ch.nonce
            value = authorization(
                ch,
                username=self.username,
                password=self.password,
                method=method,
                uri=uri,
                cnonce=self.make_cnonce(),
                body=body,
            )
            out.append(("Proxy-Authorization" if ch.proxy else "Authorization", value))
        self.attempts += 1
        return out
