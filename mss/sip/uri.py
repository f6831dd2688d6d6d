"""URIs, name-addr values and Via values (RFC 3261 §19.1, §20, §25).

``parse_*`` and ``str()`` are inverses: ``parse_uri(str(u)) == u`` for every value built here, and
``str(parse_uri(text))`` is ``text`` for every valid ``text`` (the scheme is lowercased). Escapes
(``%41``) are kept as written; :func:`unescape` decodes them where a comparison needs it
(:attr:`SipUri.user_text`).

The user and password parts are held in their wire form: a :class:`SipUri` built with characters
that RFC 3261 §25.1 does not allow there raw (``user = 1*( unreserved / escaped / user-unreserved )``;
``#``, ``%`` not starting an escape, ``@``, space, non-ASCII) gets them escaped as ``%HH`` of their
UTF-8 bytes when it is made, so ``SipUri(host=h, user="*31#555")`` is written ``sip:*31%23555@h``.
A ``%HH`` already there is taken as an escape.

Every parse error is a :class:`~mss.errors.SipError` (status 400) whose reason names the part that is
wrong, so a refused message says why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from re import Match
from typing import TypeVar
from urllib.parse import unquote_to_bytes

from mss.errors import SipError
from mss.sip._grammar import (
    ABSOLUTE_URI_RE,
    HOST_RE,
    NAME_ADDR_FAST_RE,
    PARAM_VALUE_CHARS,
    PASSWORD_RE,
    SCHEME_RE,
    SIP_URI_NOUSER_RE,
    SIP_URI_RE,
    TOKEN_CHARS,
    URI_HEADER_RE,
    URI_PARAM_RE,
    USER_RE,
    VIA_FAST_RE,
    WS,
    is_token,
)

__all__ = [
    "NAME_ADDR_CACHE",
    "AbsoluteUri",
    "NameAddr",
    "Params",
    "SipUri",
    "Uri",
    "Via",
    "escape_user",
    "fast_name_addr",
    "fast_via",
    "get_param",
    "has_param",
    "match_name_addr",
    "match_via",
    "name_addr_from_match",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "parse_via",
    "quote",
    "sent_via",
    "split_commas",
    "unescape",
    "via_from_match",
    "wrote_name_addr",
]

_V = TypeVar("_V")

#: Parameters in the order written: ``(name, value)``; ``value`` is None for ``;lr``. A quoted value
#: keeps its quotes, so it is written back exactly.
Params = tuple[tuple[str, str | None], ...]


def get_param(params: Params, name: str) -> str | None:
    """The value of parameter ``name`` (case-insensitive): ``""`` when it has none, None when absent."""
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return "" if value is None else value
    return None


def has_param(params: Params, name: str) -> bool:
    """True when parameter ``name`` (case-insensitive) is present."""
    return get_param(params, name) is not None


def _set_param(params: Params, name: str, value: str | None) -> Params:
    lname = name.lower()
    out = [(k, v) for k, v in params if k.lower() != lname]
    out.append((name, value))
    return tuple(out)


def _split_params(text: str) -> Params:
    """The parameters of ``;a=1;b``-shaped text that a fast-shape regex has already validated."""
    if not text:
        return ()
    out: list[tuple[str, str | None]] = []
    for piece in text[1:].split(";"):
        name, eq, value = piece.partition("=")
        out.append((name, value if eq else None))
    return tuple(out)


def _params_str(params: Params) -> str:
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params])


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes (RFC 3261 §19.1.4 compares URIs unescaped)."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


# unreserved = alphanum / mark; user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
_USER_RAW = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/")
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_PASSWORD_RAW = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,")
_HEX = frozenset("0123456789abcdefABCDEF")


def _escape(text: str, raw: frozenset[str]) -> str:
    if raw.issuperset(text):
        return text
    out: list[str] = []
    n = len(text)
    for i, c in enumerate(text):
        if c in raw or (c == "%" and i + 2 < n and text[i + 1] in _HEX and text[i + 2] in _HEX):
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
    return "".join(out)


def escape_user(text: str) -> str:
    """``text`` as a URI user part (RFC 3261 §25.1): characters not allowed raw become ``%HH``."""
    return _escape(text, _USER_RAW)


def quote(text: str) -> str:
    """``text`` as a quoted-string: ``"`` and ``\\`` escaped (RFC 3261 §25.1 quoted-pair)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- URIs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1)."""

    host: str
    """Host name, IPv4 address or bracketed IPv6 reference, as written."""
    user: str | None = None
    """User part, escapes kept; None when there is no ``user@``."""
    password: str | None = None
    """Password part (``user:password@``), rarely used."""
    port: int | None = None
    """Port, None when absent (5060 for sip, 5061 for sips)."""
    params: Params = ()
    """URI parameters (``;transport=tcp;lr``)."""
    headers: tuple[tuple[str, str], ...] = ()
    """URI headers (``?Route=...&Subject=...``); not allowed in a Request-URI."""
    scheme: str = "sip"
    """``sip`` or ``sips`` (lowercase)."""

    def __post_init__(self) -> None:
        # Escape on the way in, so str(), equality and parse_uri(str(u)) == u all see the wire form.
        user, password = self.user, self.password
        if user is not None and not _USER_RAW.issuperset(user):
            object.__setattr__(self, "user", _escape(user, _USER_RAW))
        if password is not None and not _PASSWORD_RAW.issuperset(password):
            object.__setattr__(self, "password", _escape(password, _PASSWORD_RAW))

    @property
    def user_text(self) -> str | None:
        """The user part unescaped (RFC 3261 §19.1.4 compares users after unescaping)."""
        return None if self.user is None else unescape(self.user)

    def __str__(self) -> str:
        user = self.user
        if user is None:
            text = f"{self.scheme}:{self.host}"
        elif self.password is None:
            text = f"{self.scheme}:{user}@{self.host}"
        else:
            text = f"{self.scheme}:{user}:{self.password}@{self.host}"
        if self.port is not None:
            text = f"{text}:{self.port}"
        if self.params:
            text += _params_str(self.params)
        if self.headers:
            text += "?" + "&".join([f"{k}={v}" for k, v in self.headers])
        return text

    def param(self, name: str) -> str | None:
        """URI parameter ``name``: its value, ``""`` when valueless, None when absent."""
        return get_param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        """A copy with parameter ``name`` set (replacing an existing one)."""
        return _sip_uri(self.host, self.user, self.password, self.port,
                        _set_param(self.params, name, value), self.headers, self.scheme)

    @property
    def hostport(self) -> tuple[str, int]:
        """Host and port, the port defaulted by scheme (RFC 3263 without DNS)."""
        return self.host, self.port if self.port is not None else (5061 if self.scheme == "sips" else 5060)


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI of another scheme (``tel:``, ``http:``, ...), kept opaque."""

    scheme: str
    """The scheme, lowercased."""
    opaque: str
    """Everything after ``scheme:``."""

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


#: Any URI mss can carry.
Uri = SipUri | AbsoluteUri


def _parse_host_port(text: str, whole: str) -> tuple[str, int | None]:
    if text.startswith("["):
        close = text.find("]")
        host, rest = (text[: close + 1], text[close + 1 :]) if close > 0 else (text, "")
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
    if not HOST_RE.fullmatch(host):
        raise SipError(f"bad host {host!r} in URI {whole!r}")
    if not rest:
        return host, None
    port_text = rest[1:]
    if rest[0] != ":" or not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
        raise SipError(f"bad port {rest!r} in URI {whole!r}")
    port = int(port_text)
    if port > 65535:
        raise SipError(f"port {port} out of range in URI {whole!r}")
    return host, port


def parse_uri(text: str) -> Uri:
    """Parse a URI (no white space, no ``<>``): a :class:`SipUri` for sip/sips, else :class:`AbsoluteUri`."""
    if "@" in text:
        m = _sip_uri_fullmatch(text)
        groups = m.groups() if m is not None else None
    else:
        m = _sip_uri_nouser_fullmatch(text)
        groups = (m.group(1), None, None, *m.groups()[1:]) if m is not None else None
    if groups is not None:
        scheme, user, password, host, port_text, param_text, header_text = groups
        port = int(port_text) if port_text is not None else None
        if port is None or port <= 65535:
            params: Params = ()
            if param_text:
                params = tuple(
                    (name, value if eq else None)
                    for name, eq, value in (p.partition("=") for p in param_text[1:].split(";"))
                )
            headers: tuple[tuple[str, str], ...] = ()
            if header_text:
                headers = tuple((h[0], h[2]) for h in (p.partition("=") for p in header_text.split("&")))
            return SipUri(
                host=host,
                user=user,
                password=password,
                port=port,
                params=params,
                headers=headers,
                scheme=scheme.lower(),
            )
    return _parse_uri_slow(text)


_sip_uri_fullmatch = SIP_URI_RE.fullmatch
_sip_uri_nouser_fullmatch = SIP_URI_NOUSER_RE.fullmatch


def _parse_uri_slow(text: str) -> Uri:
    """The general parser: other schemes, and the exact reason when a sip URI is malformed."""
    colon = text.find(":")
    scheme = text[:colon].lower() if colon > 0 else ""
    if not scheme or not SCHEME_RE.fullmatch(scheme):
        raise SipError(f"{text!r} is not a URI (no scheme)")
    if scheme not in ("sip", "sips"):
        if not ABSOLUTE_URI_RE.fullmatch(text):
            raise SipError(f"{text!r} is not a URI")
        return AbsoluteUri(scheme=scheme, opaque=text[colon + 1 :])
    rest = text[colon + 1 :]
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, sep, pw = userinfo.partition(":")
        if not USER_RE.fullmatch(user):
            raise SipError(f"bad user part {user!r} in URI {text!r}")
        if sep:
            if not PASSWORD_RE.fullmatch(pw):
                raise SipError(f"bad password part in URI {text!r}")
            password = pw
    rest, qmark, header_text = rest.partition("?")
    hostport, semi, param_text = rest.partition(";")
    host, port = _parse_host_port(hostport, text)
    params: Params = ()
    if semi:
        plist: list[tuple[str, str | None]] = []
        for piece in param_text.split(";"):
            m = URI_PARAM_RE.fullmatch(piece)
            if m is None:
                raise SipError(f"bad URI parameter {piece!r} in {text!r}")
            plist.append((m.group(1), m.group(2)))
        params = tuple(plist)
    headers: tuple[tuple[str, str], ...] = ()
    if qmark:
        hlist: list[tuple[str, str]] = []
        for piece in header_text.split("&"):
            m = URI_HEADER_RE.fullmatch(piece)
            if m is None:
                raise SipError(f"bad URI header {piece!r} in {text!r}")
            hlist.append((m.group(1), m.group(2)))
        headers = tuple(hlist)
    return SipUri(
        host=host,
        user=user,
        password=password,
        port=port,
        params=params,
        headers=headers,
        scheme=scheme,
    )


# --- header parameters, quoted strings, lists -----------------------------------------------------


def _read_quoted(text: str, start: int, what: str) -> int:
    """Index just past the quoted-string that opens at ``text[start]`` (a DQUOTE)."""
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    raise SipError(f"unterminated quoted string in {what}")


def _unquote(raw: str) -> str:
    """The text of a quoted-string (quotes removed, quoted-pairs decoded)."""
    inner = raw[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\" and i + 1 < len(inner):
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_params(text: str, what: str) -> Params:
    """Parse ``*( SEMI generic-param )`` with optional white space around ``;`` and ``=``.

    ``text`` is what follows the main part of a header value; it must be empty or start (after
    white space) with ``;``. An empty parameter (``;;``) is refused.
    """
    rest = text.strip(WS)
    if not rest:
        return ()
    if rest[0] != ";":
        raise SipError(f"unexpected {rest[:20]!r} in {what}")
    params: list[tuple[str, str | None]] = []
    if '"' not in rest:
        for piece in rest[1:].split(";"):
            name, eq, raw = piece.partition("=")
            name = name.strip(WS)
            if not name:
                raise SipError(f"empty parameter in {what}")
            if not is_token(name):
                raise SipError(f"bad parameter name {name!r} in {what}")
            if eq:
                raw = raw.strip(WS)
                if not raw or not PARAM_VALUE_CHARS.issuperset(raw):
                    raise SipError(f"bad value {raw!r} of parameter {name!r} in {what}")
                params.append((name, raw))
            else:
                params.append((name, None))
        return tuple(params)
    # Slow path: a quoted value may contain ";" or "=".
    i, n = 0, len(rest)
    while i < n:
        # at a ";"
        i += 1
        while i < n and rest[i] in WS:
            i += 1
        j = i
        while j < n and rest[j] in TOKEN_CHARS:
            j += 1
        name = rest[i:j]
        if not name:
            raise SipError(f"empty parameter in {what}")
        i = j
        while i < n and rest[i] in WS:
            i += 1
        value: str | None = None
        if i < n and rest[i] == "=":
            i += 1
            while i < n and rest[i] in WS:
                i += 1
            if i < n and rest[i] == '"':
                j = _read_quoted(rest, i, what)
            else:
                j = i
                while j < n and rest[j] in PARAM_VALUE_CHARS:
                    j += 1
                if j == i:
                    raise SipError(f"bad value of parameter {name!r} in {what}")
            value = rest[i:j]
            i = j
            while i < n and rest[i] in WS:
                i += 1
        if i < n and rest[i] != ";":
            raise SipError(f"unexpected {rest[i : i + 20]!r} in {what}")
        params.append((name, value))
    return tuple(params)


def split_commas(value: str) -> list[str]:
    """Split a header value at the commas that separate list elements (not inside quotes or ``<>``)."""
    if "," not in value:
        return [value.strip(WS)]
    if '"' not in value and "<" not in value:
        return [v.strip(WS) for v in value.split(",")]
    out: list[str] = []
    start = 0
    i, n = 0, len(value)
    angle = False
    while i < n:
        c = value[i]
        if c == '"' and not angle:
            i = _read_quoted(value, i, "header value")
            continue
        if c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == "," and not angle:
            out.append(value[start:i].strip(WS))
            start = i + 1
        i += 1
    out.append(value[start:].strip(WS))
    return out


_ADDR_SPEC_END = re.compile(r"[; \t]")

# --- name-addr ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From, To, Contact, Route or Record-Route value: ``"display" <uri>;params``."""

    uri: Uri
    """The address."""
    display: str | None = None
    """Display name (unquoted text), None when absent."""
    params: Params = ()
    """Header parameters (``tag``, ``expires``, ``q``, ``lr`` of a Route is a URI parameter)."""

    def __str__(self) -> str:
        head = f"{quote(self.display)} <{self.uri}>" if self.display is not None else f"<{self.uri}>"
        return head + _params_str(self.params) if self.params else head

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (From/To), None when absent."""
        for key, value in self.params:  # read for every message: get_param, with its spelling first
            if key == "tag" or key.lower() == "tag":
                return value or None
        return None

    def param(self, name: str) -> str | None:
        """Header parameter ``name``: its value, ``""`` when valueless, None when absent."""
        return get_param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> NameAddr:
        """A copy with header parameter ``name`` set."""
        return _name_addr(self.uri, self.display, _set_param(self.params, name, value))

    def with_tag(self, tag: str) -> NameAddr:
        """A copy with ``;tag=`` set."""
        if not self.params:  # the usual case: an address without parameters gets its tag
            return _name_addr(self.uri, self.display, (("tag", tag),))
        return self.with_param("tag", tag)

    def without_params(self) -> NameAddr:
        """A copy without header parameters (the address and display name alone)."""
        return _name_addr(self.uri, self.display, ()) if self.params else self


# Values built from a fast-shape match skip the dataclasses' __init__ (and SipUri.__post_init__,
# which leaves the user and password that shape allows as they are): the slots are set directly,
# three times cheaper. The objects are the same as the ones __init__ makes. The ``with_param``
# copies are built the same way: their fields were checked when the original was made.
_new = object.__new__
_URI_SLOTS = tuple(
    SipUri.__dict__[name].__set__
    for name in ("host", "user", "password", "port", "params", "headers", "scheme")
)
_ADDR_SLOTS = tuple(NameAddr.__dict__[name].__set__ for name in ("uri", "display", "params"))


def _sip_uri(
    host: str,
    user: str | None,
    password: str | None,
    port: int | None,
    params: Params,
    headers: tuple[tuple[str, str], ...],
    scheme: str,
) -> SipUri:
    uri: SipUri = _new(SipUri)
    set_host, set_user, set_password, set_port, set_params, set_headers, set_scheme = _URI_SLOTS
    set_host(uri, host)
    set_user(uri, user)
    set_password(uri, password)
    set_port(uri, port)
    set_params(uri, params)
    set_headers(uri, headers)
    set_scheme(uri, scheme)
    return uri


def _name_addr(uri: Uri, display: str | None, params: Params) -> NameAddr:
    addr: NameAddr = _new(NameAddr)
    set_uri, set_display, set_params = _ADDR_SLOTS
    set_uri(addr, uri)
    set_display(addr, display)
    set_params(addr, params)
    return addr


def match_name_addr(value: str) -> Match[str] | None:
    """The match of ``value`` against the common name-addr shape, None when it has another shape.

    A match is a valid value (:func:`name_addr_from_match` builds it, equal to what
    :func:`parse_name_addr` returns); None says nothing: :func:`parse_name_addr` decides.
    """
    m = _name_addr_fast(value)
    if m is not None and (m.group(7) is None or int(m.group(7)) <= 65535):
        return m
    return None


def name_addr_from_match(m: Match[str]) -> NameAddr:
    """The value a :func:`match_name_addr` match stands for."""
    known = _known_addrs.get(m.string)
    if isinstance(known, NameAddr):  # built already from an earlier match of the same text
        return known
    qdisplay, tdisplay, scheme, user, password, host, port, uparams, uheaders, hparams = m.groups()
    headers: tuple[tuple[str, str], ...] = ()
    if uheaders:
        headers = tuple((h[0], h[2]) for h in (p.partition("=") for p in uheaders.split("&")))
    uri = _sip_uri(
        host, user, password, int(port) if port is not None else None, _split_params(uparams), headers, scheme
    )
    addr = _name_addr(uri, qdisplay if qdisplay is not None else tdisplay, _split_params(hparams))
    _remember(_known_addrs, m.string, addr)
    return addr


#: Fast-shape name-addr and Via values kept by their text (:func:`fast_name_addr`,
#: :func:`fast_via`): within a dialog the same From, To and Contact text comes back in every message
#: (and a far end's Contact in every call), and a transaction's Via in each of its messages, so most
#: are matched and built once. Each is kept as the match until a field is read, then as the value.
#: Bounded: emptied when full, so a peer sending ever new texts only churns it.
NAME_ADDR_CACHE = 1024

_known_addrs: dict[str, NameAddr | Match[str]] = {}
_known_vias: dict[str, Via | Match[str]] = {}


def _remember(cache: dict[str, _V], text: str, value: _V) -> None:
    if len(cache) >= NAME_ADDR_CACHE and text not in cache:
        cache.clear()
    cache[text] = value


def _known_or_matched(cache: dict[str, _V | Match[str]], match: Callable[[str], Match[str] | None],
                      text: str) -> _V | Match[str] | None:
    """The value kept for ``text``, else ``match(text)`` (kept too when it matched), else None."""
    found = cache.get(text)
    if found is not None:
        return found
    m = match(text)
    if m is not None:
        _remember(cache, text, m)
    return m


def wrote_name_addr(text: str, addr: NameAddr) -> None:
    """mss wrote ``addr`` as ``text`` (``str(addr)``): the messages carrying it (ours, and the
    answers that copy it) take the value instead of matching the text again."""
    _remember(_known_addrs, text, addr)


def fast_name_addr(value: str) -> NameAddr | Match[str] | None:
    """``value``'s parsed name-addr when this text was built from a fast-shape match before (the
    values are frozen, so one object serves every message), else :func:`match_name_addr`'s match
    (:func:`name_addr_from_match` builds it; kept too), else None (:func:`parse_name_addr` decides)."""
    found = _known_addrs.get(value)  # _known_or_matched, inlined: read for every From, To and Contact
    return found if found is not None else _known_or_matched(_known_addrs, match_name_addr, value)


_name_addr_fast = NAME_ADDR_FAST_RE.fullmatch


def parse_name_addr(value: str, what: str = "address") -> NameAddr:
    """Parse ``name-addr`` or ``addr-spec`` followed by header parameters (RFC 3261 §20.10, §25.1).

    In the ``addr-spec`` form (no ``<>``) the URI ends at the first ``;`` (what follows are header
    parameters) and must not contain ``?`` or ``,`` (RFC 3261 §20).
    """
    m = match_name_addr(value)
    if m is not None:
        return name_addr_from_match(m)
    return _parse_name_addr(value, what)


def _parse_name_addr(value: str, what: str) -> NameAddr:
    """The general name-addr parser: every form, and the exact reason when the value is malformed."""
    s = value.strip(WS)
    if not s:
        raise SipError(f"empty {what}")
    display: str | None = None
    if s[0] == '"':
        end = _read_quoted(s, 0, what)
        display = _unquote(s[:end])
        rest = s[end:].lstrip(WS)
        if not rest.startswith("<"):
            raise SipError(f"{what}: a display name must be followed by <URI>")
        lt = 0
        s = rest
    else:
        lt = s.find("<")
    if lt >= 0:
        if lt > 0:
            words = s[:lt].strip(WS)
            for word in words.replace("\t", " ").split(" "):
                if word and not is_token(word):
                    raise SipError(f"{what}: display name {words!r} must be quoted")
            display = " ".join(w for w in words.replace("\t", " ").split(" ") if w)
        gt = s.find(">", lt)
        if gt < 0:
            raise SipError(f"{what}: '<' without '>'")
        uri_text = s[lt + 1 : gt]
        if " " in uri_text or "\t" in uri_text:
            raise SipError(f"{what}: white space inside <{uri_text}>")
        uri = parse_uri(uri_text)
        params = parse_params(s[gt + 1 :], what)
        return NameAddr(uri=uri, display=display, params=params)
    # addr-spec form
    m = _ADDR_SPEC_END.search(s)
    end = m.start() if m is not None else len(s)
    uri_text = s[:end]
    if "?" in uri_text or "," in uri_text:
        raise SipError(f"{what}: a URI with '?' or ',' must be enclosed in <>")
    uri = parse_uri(uri_text)
    return NameAddr(uri=uri, display=None, params=parse_params(s[end:], what))


# --- Via ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42, RFC 3581 ``rport``)."""

    transport: str
    """``UDP``, ``TCP``, ``TLS``, ... (uppercase)."""
    host: str
    """sent-by host."""
    port: int | None = None
    """sent-by port, None when absent."""
    params: Params = ()
    """``branch``, ``received``, ``rport``, ... in order."""
    protocol: str = "SIP/2.0"
    """Protocol name and version."""

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.protocol}/{self.transport} {hp}{_params_str(self.params)}"

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter, None when absent."""
        for key, value in self.params:  # read for every message: get_param, with its spelling first
            if key == "branch" or key.lower() == "branch":
                return value or None
        return None

    @property
    def received(self) -> str | None:
        """The ``received`` parameter, None when absent."""
        return get_param(self.params, "received") or None

    @property
    def rport(self) -> int | None:
        """The ``rport`` value when filled in by the server, else None."""
        value = get_param(self.params, "rport")
        if value and value.isascii() and value.isdigit() and len(value) <= 5:  # a port: 5 digits
            return int(value)
        return None

    def param(self, name: str) -> str | None:
        """Via parameter ``name``: its value, ``""`` when valueless, None when absent."""
        return get_param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> Via:
        """A copy with parameter ``name`` set."""
        return _via(self.transport, self.host, self.port, _set_param(self.params, name, value),
                    self.protocol)


def _take_token(s: str, i: int) -> tuple[str, int]:
    j = i
    n = len(s)
    while j < n and s[j] in TOKEN_CHARS:
        j += 1
    return s[i:j], j


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in WS:
        i += 1
    return i


def match_via(value: str) -> Match[str] | None:
    """The match of ``value`` against the common Via shape (``SIP/2.0/UDP host:port;params``).

    A match is a valid value (:func:`via_from_match` builds it, equal to what :func:`parse_via`
    returns); None says nothing: :func:`parse_via` decides.
    """
    m = _via_fast(value)
    if m is not None and (m.group(3) is None or int(m.group(3)) <= 65535):
        return m
    return None


_VIA_SLOTS = tuple(Via.__dict__[name].__set__ for name in ("transport", "host", "port", "params", "protocol"))


def _via(transport: str, host: str, port: int | None, params: Params, protocol: str) -> Via:
    via: Via = _new(Via)  # as for _sip_uri: the slots set directly
    set_transport, set_host, set_port, set_params, set_protocol = _VIA_SLOTS
    set_transport(via, transport)
    set_host(via, host)
    set_port(via, port)
    set_params(via, params)
    set_protocol(via, protocol)
    return via


def via_from_match(m: Match[str]) -> Via:
    """The value a :func:`match_via` match stands for."""
    known = _known_vias.get(m.string)
    if isinstance(known, Via):  # built already from an earlier match of the same text
        return known
    transport, host, port, params = m.groups()
    via = _via(transport.upper(), host, int(port) if port is not None else None,
               _split_params(params), "SIP/2.0")
    _remember(_known_vias, m.string, via)
    return via


def sent_via(transport: str, host: str, port: int, branch: str, *, rport: bool) -> str:
    """The text of mss's own Via (``rport`` asked for, RFC 3581); its value, built directly from
    values mss made, is kept like :func:`fast_via`'s, so the messages carrying it are not matched
    again."""
    params: Params = (("branch", branch), ("rport", None)) if rport else (("branch", branch),)
    via = _via(transport, host, port, params, "SIP/2.0")
    text = f"SIP/2.0/{transport} {host}:{port};branch={branch};rport" if rport else \
        f"SIP/2.0/{transport} {host}:{port};branch={branch}"
    _remember(_known_vias, text, via)
    return text


def fast_via(value: str) -> Via | Match[str] | None:
    """``value``'s parsed Via when this text was matched before (kept as for :func:`fast_name_addr`),
    else :func:`match_via`'s match (kept too), else None (:func:`parse_via` decides)."""
    found = _known_vias.get(value)  # as in fast_name_addr
    return found if found is not None else _known_or_matched(_known_vias, match_via, value)


_via_fast = VIA_FAST_RE.fullmatch


def parse_via(value: str) -> Via:
    """Parse one Via value: ``sent-protocol LWS sent-by *( SEMI via-params )``."""
    m = match_via(value)
    if m is not None:
        return via_from_match(m)
    return _parse_via(value)


def _parse_via(value: str) -> Via:
    """The general Via parser: white space anywhere LWS may be, and the exact reason when malformed."""
    s = value.strip(WS)
    parts: list[str] = []
    i = 0
    for k in range(3):
        i = _skip_ws(s, i)
        tok, i = _take_token(s, i)
        if not tok:
            raise SipError(f"Via {value!r}: bad sent-protocol")
        parts.append(tok)
        j = _skip_ws(s, i)
        if k == 2 and j == i:
            raise SipError(f"Via {value!r}: no white space before sent-by")
        i = j
        if k < 2:
            if i >= len(s) or s[i] != "/":
                raise SipError(f"Via {value!r}: bad sent-protocol")
            i += 1
    name, version, transport = parts
    if name.upper() != "SIP":
        raise SipError(f"Via {value!r}: protocol is not SIP")
    # sent-by = host [ COLON port ]
    if s.startswith("[", i):
        close = s.find("]", i)
        if close < 0:
            raise SipError(f"Via {value!r}: bad IPv6 host")
        host, i = s[i : close + 1], close + 1
    else:
        j = i
        while j < len(s) and s[j] not in WS and s[j] not in ";:":
            j += 1
        host, i = s[i:j], j
    if not host or not HOST_RE.fullmatch(host):
        raise SipError(f"Via {value!r}: bad sent-by host {host!r}")
    port: int | None = None
    j = _skip_ws(s, i)
    if j < len(s) and s[j] == ":":
        j = _skip_ws(s, j + 1)
        k = j
        while k < len(s) and s[k] in "0123456789":  # ASCII: int() of '²' raises ValueError
            k += 1
        if k == j or k - j > 5 or int(s[j:k]) > 65535:
            raise SipError(f"Via {value!r}: bad sent-by port")
        port = int(s[j:k])
        i = k
    params = parse_params(s[i:], f"Via {value!r}")
    return Via(
        transport=transport.upper(),
        host=host,
        port=port,
        params=params,
        protocol=f"{name.upper()}/{version}",
    )
