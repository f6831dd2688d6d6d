"""SIP messages: :class:`Request`, :class:`Response`, :class:`Headers`; :func:`parse_message`; ``bytes(msg)``.

Parsing (RFC 3261 §7, §20, §25) is strict where mss relies on a field and lenient where the RFC asks
for robustness:

- the start line must be exactly ``Method SP Request-URI SP SIP/2.0`` (or ``SIP/2.0 SP code SP
  reason``), single spaces, no ``<>`` around the Request-URI and no URI headers in it;
- compact header names (``v``, ``f``, ``i``, ...) are read as their full names; folded lines are
  unfolded; names are matched case-insensitively and written back in their canonical spelling;
- Via, From, To, Call-ID and CSeq must be present; those and Contact, Route, Record-Route,
  Max-Forwards, Content-Length, Expires and Date are validated at once, so a message that is
  accepted can be used without a second error path; CSeq's method must match a request's method;
- the fast path: the message is split once (the header section of the common form, CRLF lines
  without folding, is cut in C by ``mss.sip._head`` when it is built; the same Python runs
  otherwise and for every other form and error); each of those header values (and the Request-URI) is
  validated by one regex of the shape real peers write (``mss.sip._grammar`` "fast shapes") and
  its value (:class:`~mss.sip.uri.Via`, :class:`~mss.sip.uri.NameAddr`, ...) is built only when
  a property first asks for it, then kept; a value of another shape takes the general parser at
  once, which raises the error or gives the value. So the fields (and :meth:`Message.expires`) of
  a parsed message never raise; those of a message built locally are parsed from its headers when
  first read, and raise when a header was written wrong;
- every number (CSeq, Max-Forwards, Content-Length, Expires, and those the layers above read) goes
  through :func:`~mss.sip._grammar.parse_number`, which bounds its length before ``int()``;
- ``Content-Length`` frames the body: extra bytes of a datagram are ignored (RFC 3261 §18.3), too
  few are an error; a message is at most :data:`MAX_MESSAGE_SIZE` bytes.

A message that breaks these rules raises :class:`~mss.errors.SipError` whose ``reason`` says what is
wrong and whose ``status`` is the answer (400, or 505 for another SIP version, 513 for size).
Messages are values: build a new one instead of changing the headers of one that was parsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from re import Match

from mss.errors import LocalProtocolError, SipError
from mss.sip._grammar import (
    CALL_ID_RE,
    CSEQ_FAST_RE,
    MAX_NUMBER_DIGITS,
    SIP_URI_FAST_RE,
    TOKEN_RE,
    WS,
    is_token,
    parse_number,
)
from mss.sip.uri import (
    NameAddr,
    SipUri,
    Uri,
    Via,
    fast_name_addr,
    fast_via,
    name_addr_from_match,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_commas,
    via_from_match,
)

__all__ = [
    "LIST_HEADERS",
    "MAX_HEADERS",
    "MAX_MESSAGE_SIZE",
    "REASONS",
    "CSeq",
    "Headers",
    "Message",
    "Request",
    "Response",
    "canonical_name",
    "error_response",
    "make_response",
    "parse_message",
    "split_message",
    "trusted_cseq",
]

#: Largest SIP message mss reads or writes: the largest UDP payload. An INVITE with SDP is 1-3 kB;
#: anything near this bound is an attack or a bug, and TCP framing must not buffer more.
MAX_MESSAGE_SIZE = 65_535

#: Most header fields in one message; real messages carry 10-30.
MAX_HEADERS = 256

# Compact forms (RFC 3261 §7.3.3, RFC 3262/3515/3841/4028/4474) and canonical spellings.
_CANONICAL: dict[str, str] = {}
for _name in (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length", "Content-Type",
    "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity", "Identity-Info",
    "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization", "Path",
    "P-Asserted-Identity", "P-Preferred-Identity", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To",
    "Referred-By", "Reject-Contact", "Reply-To", "Request-Disposition", "Require", "Retry-After",
    "Route", "RSeq", "Server", "Service-Route", "Session-Expires", "Subject", "Supported",
    "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
):  # fmt: skip
    _CANONICAL[_name.lower()] = _name
_COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires",
    "y": "Identity",
}  # fmt: skip
for _short, _full in _COMPACT.items():
    _CANONICAL[_short] = _full

#: Headers whose values are comma-separated lists (RFC 3261 §7.3.1); others are read whole
#: (WWW-Authenticate and Date contain commas that separate nothing).
LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Error-Info", "In-Reply-To",
        "P-Asserted-Identity", "Path", "Proxy-Require", "Reason", "Record-Route", "Require", "Route",
        "Service-Route", "Supported", "Unsupported", "Via", "Warning",
    )
)  # fmt: skip

#: Headers that may appear at most once.
_SINGLE = ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")

#: Reason phrases mss writes.
REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 422: "Session Interval Too Small",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}  # fmt: skip

_name_cache: dict[str, tuple[str, str]] = {}


def canonical_name(name: str) -> tuple[str, str]:
    """``(key, spelling)`` of a header name: the key is the lowercase full name, used to compare."""
    found = _name_cache.get(name)
    if found is not None:
        return found
    lower = name.lower()
    full = _CANONICAL.get(lower)
    result = (full.lower(), full) if full is not None else (lower, name)
    if len(_name_cache) < 1024:  # bounded: names come off the wire
        _name_cache[name] = result
    return result


# The known names as they are usually written are always in the cache, however many odd names a
# peer sends first (the header section is cut fast only when every name is in it).
for _spelling in (*_CANONICAL.values(), *_COMPACT, *(n.upper() for n in _COMPACT)):
    canonical_name(_spelling)


class Headers:
    """Header fields in order; names compared case-insensitively, compact forms as full names.

    One entry per header line as written (a line may hold a comma-separated list; see
    :meth:`get_list`).
    """

    __slots__ = ("_index", "_items")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        # key -> its first value, built by the parser (None: look through _items)
        self._index: dict[str, str] | None = None
        for name, value in fields:
            key, spelling = canonical_name(name)
            self._items.append((key, spelling, value))

    @classmethod
    def _raw(cls, items: list[tuple[str, str, str]], index: dict[str, str] | None = None) -> Headers:
        h = cls.__new__(cls)
        h._items = items
        h._index = index
        return h

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _key, name, value in self._items:
            yield name, value

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _n, v in self._items] == [(k, v) for k, _n, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)[0]
        if self._index is not None:
            return key in self._index
        return any(k == key for k, _n, _v in self._items)

    def get(self, name: str) -> str | None:
        """The value of the first ``name`` line, None when absent."""
        key = canonical_name(name)[0]
        if self._index is not None:
            return self._index.get(key)
        for k, _n, v in self._items:
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """The values of every ``name`` line, as written."""
        key = canonical_name(name)[0]
        if self._index is not None and key not in self._index:
            return []  # absent (known from the parser's index without a scan)
        return [v for k, _n, v in self._items if k == key]

    def named(self, *names: str) -> list[tuple[str, str]]:
        """The ``(name, value)`` lines of any of ``names``, in order."""
        keys = [canonical_name(name)[0] for name in names]
        return [(n, v) for k, n, v in self._items if k in keys]

    def get_list(self, name: str) -> list[str]:
        """Every element of a list header, across lines, split at commas; empty elements dropped."""
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(v for v in split_commas(value) if v)
        return out

    def tokens(self, name: str) -> list[str]:
        """Elements of a token-list header (Supported, Require, Allow, ...), lowercased."""
        return [v.lower() for v in self.get_list(name)]

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers._raw(list(self._items))

    def add(self, name: str, value: str) -> None:
        """Append a ``name: value`` line."""
        key, spelling = canonical_name(name)
        self._items.append((key, spelling, value))
        self._index = None

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line by one (where the first was, else at the end)."""
        key, spelling = canonical_name(name)
        items = self._items
        self._index = None
        for i, (k, _n, _v) in enumerate(items):
            if k == key:
                items[i] = (key, spelling, value)
                self._items = items[: i + 1] + [it for it in items[i + 1 :] if it[0] != key]
                return
        items.append((key, spelling, value))

    def remove(self, name: str) -> None:
        """Remove every ``name`` line."""
        key = canonical_name(name)[0]
        self._items = [it for it in self._items if it[0] != key]
        self._index = None


@dataclass(frozen=True, slots=True)
class CSeq:
    """A CSeq value: sequence number and method (RFC 3261 §20.16)."""

    seq: int
    """0 .. 2**31-1."""
    method: str
    """The method of the request (uppercase for the standard methods)."""

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT"
)


_SET_SEQ, _SET_METHOD = CSeq.__dict__["seq"].__set__, CSeq.__dict__["method"].__set__


def trusted_cseq(seq: int, method: str) -> CSeq:
    """A CSeq of values known valid (a fast-shape match, a number mss counted), its slots set
    directly: CSeq's generated ``__init__`` sets a frozen dataclass's fields one by one."""
    cseq: CSeq = object.__new__(CSeq)
    _SET_SEQ(cseq, seq)
    _SET_METHOD(cseq, method)
    return cseq


def _cseq_from_match(m: Match[str]) -> CSeq:
    """The CSeq a fast-shape match stands for (the match validated it)."""
    return trusted_cseq(int(m.group(1)), m.group(2))


def _parse_cseq(value: str) -> CSeq:
    m = _cseq_fast(value)
    if m is not None and len(m.group(1)) < MAX_NUMBER_DIGITS:  # 9 digits: below 2**31
        return _cseq_from_match(m)
    return _parse_cseq_general(value)


def _parse_cseq_general(value: str) -> CSeq:
    num, _, method = value.strip(WS).partition(" ")
    num = num.strip(WS)
    method = method.strip(WS)
    shown = value if len(value) <= 60 else value[:60] + "..."
    if not num.isdigit() or not num.isascii():
        raise SipError(f"CSeq {shown!r}: the sequence number is not a number")
    # RFC 3261 §8.1.1.5: "less than 2**31"; the length is checked first (int() of a huge string).
    num = num.lstrip("0") or "0"  # leading zeros count too for int()'s 4,300-digit limit
    if len(num) > MAX_NUMBER_DIGITS or int(num) >= 2**31:
        raise SipError(f"CSeq {shown!r}: the sequence number is larger than 2**31-1")
    seq = int(num)
    if not is_token(method):
        raise SipError(f"CSeq {value!r}: bad method")
    return CSeq(seq=seq, method=method)


_cseq_fast = CSEQ_FAST_RE.fullmatch

#: A header value validated by a fast-shape regex and not built yet, or the value itself.
_Via = Via | Match[str]
_Addr = NameAddr | Match[str]


def _built_via(v: _Via) -> Via:
    return v if isinstance(v, Via) else via_from_match(v)


def _built_addr(v: _Addr) -> NameAddr:
    return v if isinstance(v, NameAddr) else name_addr_from_match(v)


class Message:
    """What requests and responses share: headers, body and the parsed common fields.

    The common fields are properties, each computed once and kept. For a parsed message they hold
    what :func:`parse_message` validated (a value, or the match of a fast-shape regex that the
    property turns into the value the first time it is read); for a message built locally they are
    parsed from its headers when first read (raising :class:`~mss.errors.SipError` when malformed).
    """

    __slots__ = (
        "_call_id",
        "_contact",
        "_cseq",
        "_from",
        "_record_route",
        "_route",
        "_to",
        "_via",
        "body",
        "headers",
    )

    headers: Headers
    body: bytes

    def __init__(self, headers: Headers, body: bytes) -> None:
        self.headers = headers
        self.body = body
        self._via: list[_Via] | None = None
        self._from: _Addr | None = None
        self._to: _Addr | None = None
        self._call_id: str | None = None
        self._cseq: CSeq | Match[str] | None = None
        self._contact: list[_Addr] | None = None
        self._route: list[_Addr] | None = None
        self._record_route: list[_Addr] | None = None

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        return self.encode()

    def encode(self) -> bytes:
        """The message on the wire; ``Content-Length`` is written from the body (added if missing)."""
        cl = str(len(self.body))
        lines = [
            f"{name}: {cl if key == 'content-length' else value}" for key, name, value in self.headers._items
        ]
        cl_line = f"Content-Length: {cl}"
        n = lines.count(cl_line)  # every Content-Length line reads so now
        if n == 0:
            lines.append(cl_line)
        elif n > 1:  # write the first only
            first = lines.index(cl_line) + 1
            lines[first:] = [line for line in lines[first:] if line != cl_line]
        lines.append("\r\n")
        head = (self._start_line() + "\r\n" + "\r\n".join(lines)).encode("utf-8", "surrogateescape")
        if len(head) + len(self.body) > MAX_MESSAGE_SIZE:
            raise LocalProtocolError(
                f"SIP message of {len(head) + len(self.body)} bytes exceeds {MAX_MESSAGE_SIZE}"
            )
        return head + self.body

    # -- parsed fields, computed once ----------------------------------------------------------

    @property
    def via(self) -> list[Via]:
        """Every Via value, top first."""
        raw = self._via
        if raw is None:
            vias = [parse_via(v) for v in self.headers.get_list("Via")]
        else:
            vias = [_built_via(v) for v in raw]
        self._via = list(vias)
        return vias

    @property
    def top_via(self) -> Via:
        """The first Via value."""
        raw = self._via
        if raw is None:
            return self._top_via_slow()
        if not raw:
            raise SipError("no Via")
        top = raw[0]
        if not isinstance(top, Via):
            top = raw[0] = via_from_match(top)
        return top

    def _top_via_slow(self) -> Via:
        vias = self.via
        if not vias:
            raise SipError("no Via")
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        """The From value."""
        raw = self._from
        if isinstance(raw, NameAddr):
            return raw
        value = _required_addr(self.headers, "From") if raw is None else name_addr_from_match(raw)
        self._from = value
        return value

    @property
    def to(self) -> NameAddr:
        """The To value."""
        raw = self._to
        if isinstance(raw, NameAddr):
            return raw
        value = _required_addr(self.headers, "To") if raw is None else name_addr_from_match(raw)
        self._to = value
        return value

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        value = self._call_id
        if value is None:
            value = _required(self.headers, "Call-ID").strip(WS)
            if not CALL_ID_RE.fullmatch(value):
                raise SipError(f"bad Call-ID {value!r}")
            self._call_id = value
        return value

    @property
    def cseq(self) -> CSeq:
        """The CSeq."""
        raw = self._cseq
        if isinstance(raw, CSeq):
            return raw
        value = _parse_cseq(_required(self.headers, "CSeq")) if raw is None else _cseq_from_match(raw)
        self._cseq = value
        return value

    @property
    def cseq_method(self) -> str:
        """The CSeq's method (what a response is matched by), read without building the CSeq."""
        raw = self._cseq
        return raw.group(2) if isinstance(raw, Match) else self.cseq.method

    def _addr_list(self, raw: list[_Addr] | None, name: str) -> list[NameAddr]:
        if raw is not None:
            return [_built_addr(v) for v in raw] if raw else []  # none: the usual Route, Record-Route
        elems = self.headers.get_list(name)
        if name == "Contact" and elems == ["*"]:
            return []
        return [parse_name_addr(v, name) for v in elems]

    @property
    def contacts(self) -> list[NameAddr]:
        """The Contact values ([] for ``*`` or none)."""
        value = self._addr_list(self._contact, "Contact")
        self._contact = list(value)
        return value

    @property
    def route(self) -> list[NameAddr]:
        """The Route values, first hop first."""
        value = self._addr_list(self._route, "Route")
        self._route = list(value)
        return value

    @property
    def record_route(self) -> list[NameAddr]:
        """The Record-Route values, as written (nearest proxy to the UAS last)."""
        value = self._addr_list(self._record_route, "Record-Route")
        self._record_route = list(value)
        return value

    @property
    def content_type(self) -> str | None:
        """Media type of the body (``application/sdp``), lowercased, parameters dropped."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.partition(";")[0].strip(WS).lower()

    def expires(self) -> int | None:
        """The Expires header (seconds), None when absent."""
        value = self.headers.get("Expires")
        return None if value is None else parse_number(value, "Expires", 2**32 - 1)


def _required(h: Headers, name: str) -> str:
    value = h.get(name)
    if value is None:
        raise SipError(f"no {name} header")
    return value


def _required_addr(h: Headers, name: str) -> NameAddr:
    return parse_name_addr(_required(h, name), name)


class Request(Message):
    """A SIP request."""

    __slots__ = ("_uri", "_uri_text", "method")

    def __init__(self, method: str, uri: Uri, headers: Headers, body: bytes = b"") -> None:
        Message.__init__(self, headers, body)
        self.method = method
        """The method (``INVITE``, ...)."""
        self._uri: Uri | None = uri
        self._uri_text = ""  # the Request-URI's text as str() writes it, when known ("": not yet)

    @classmethod
    def _parsed(cls, method: str, uri: Uri | None, uri_text: str, headers: Headers) -> Request:
        req = cls.__new__(cls)  # the parsed fields are set by _validate
        req.headers = headers
        req.method = method
        req._uri = uri
        req._uri_text = uri_text
        return req

    @classmethod
    def _local(
        cls,
        method: str,
        uri: Uri,
        items: list[tuple[str, str, str]],
        body: bytes,
        *,
        via: Via | Match[str] | None,
        from_: NameAddr,
        to: NameAddr,
        call_id: str,
        cseq: CSeq,
        uri_text: str = "",
    ) -> Request:
        """A request mss builds from values it made: ``items`` are the header fields ``(key,
        spelling, value)``, each value the text of the value passed for it (the Via's match, From, To,
        Call-ID, CSeq), so those fields are kept as they are instead of parsed back from our own
        text; ``uri_text``, when given, is ``str(uri)``. The other fields are parsed from ``items``
        when first read, as for any built message."""
        req = cls.__new__(cls)
        req.headers = Headers._raw(items)
        req.body = body
        req.method = method
        req._uri = uri
        req._uri_text = uri_text
        req._via = [via] if via is not None else None
        req._from = from_
        req._to = to
        req._call_id = call_id
        req._cseq = cseq
        req._contact = req._route = req._record_route = None
        return req

    @property
    def uri(self) -> Uri:
        """The Request-URI."""
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self._uri_text)
        return uri

    def _start_line(self) -> str:
        uri = self._uri
        return f"{self.method} {self._uri_text or uri} SIP/2.0"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.method, self.uri, self.headers, self.body) == (
            other.method,
            other.uri,
            other.headers,
            other.body,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str, headers: Headers, body: bytes = b"") -> None:
        Message.__init__(self, headers, body)
        self.status = status
        """The status code, 100..699."""
        self.reason = reason
        """The reason phrase (may be empty)."""

    @classmethod
    def _parsed(cls, status: int, reason: str, headers: Headers) -> Response:
        resp = cls.__new__(cls)  # the parsed fields are set by _validate
        resp.headers = headers
        resp.status = status
        resp.reason = reason
        return resp

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self.status, self.reason, self.headers, self.body) == (
            other.status,
            other.reason,
            other.headers,
            other.body,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# --- parsing ------------------------------------------------------------------------------------


def split_message(data: bytes) -> tuple[str, list[str], bytes]:
    """Split raw bytes into the start line, the unfolded header lines and the rest (body and beyond).

    Leading CRLFs are skipped (RFC 3261 §7.5). Lines end in CRLF; a bare LF is accepted too.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipError(f"message of {len(data)} bytes is larger than {MAX_MESSAGE_SIZE}", status=513)
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        head_bytes, rest = data[start:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n", start)
        if end < 0:
            raise SipError("the header section does not end (no empty line)")
        head_bytes, rest = data[start:end], data[end + 2 :]
    head = head_bytes.decode("utf-8", "surrogateescape")
    raw_lines = head.split("\r\n")
    if len(raw_lines) > MAX_HEADERS * 4:
        raise SipError(f"more than {MAX_HEADERS} header lines")
    if head.count("\n") == len(raw_lines) - 1 and _folded(head) is None:  # CRLFs, no folding
        return raw_lines[0], raw_lines[1:], rest
    raw_lines = head.split("\n")
    if "\r" in head:
        raw_lines = [line[:-1] if line.endswith("\r") else line for line in raw_lines]
    if len(raw_lines) > MAX_HEADERS * 4:
        raise SipError(f"more than {MAX_HEADERS} header lines")
    lines: list[str] = []
    for line in raw_lines[1:]:
        if line[:1] in (" ", "\t"):
            if not lines:
                raise SipError("the first header line is a continuation line")
            lines[-1] = lines[-1].rstrip(WS) + " " + line.strip(WS)
        else:
            lines.append(line)
    return raw_lines[0], lines, rest


# A folded line (RFC 3261 §7.3.1): a line that starts with white space.
_folded = re.compile("\n[ \t]").search


def _parse_headers(lines: list[str]) -> list[tuple[str, str, str]]:
    """The header fields ``(key, spelling, value)`` in order."""
    if len(lines) > MAX_HEADERS:
        raise SipError(f"more than {MAX_HEADERS} header fields")
    items: list[tuple[str, str, str]] = []
    append = items.append
    cache = _name_cache
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise SipError(f"header line without a colon: {line[:40]!r}")
        known = cache.get(name)
        if known is None:
            name = name.rstrip(WS)
            if not is_token(name):
                raise SipError(f"bad header name {name[:40]!r}")
            known = canonical_name(name)
        append((known[0], known[1], value.strip(WS)))
    return items


def _parse_request_line(line: str) -> tuple[str, Uri | None, str]:
    """Method, Request-URI (None when only validated) and the Request-URI's text when not built."""
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        if line != line.rstrip(WS):
            raise SipError("white space at the end of the request line")
        if "  " in line or line[:1] in WS:
            raise SipError("request-line elements must be separated by single spaces")
        if len(parts) > 3:
            raise SipError("white space inside the Request-URI")
        raise SipError(f"malformed request line {line[:60]!r}")
    method, uri_text, version = parts
    if method not in _METHODS and not TOKEN_RE.fullmatch(method):
        raise SipError(f"bad method {method[:30]!r}")
    _check_version(version)
    if uri_text in _fast_ruris:
        return method, None, uri_text  # the same text passed the check below before
    m = _sip_uri_fast(uri_text)
    if m is not None and m.group(7) is None and (m.group(5) is None or int(m.group(5)) <= 65535):
        if len(_fast_ruris) >= _FAST_RURIS:  # bounded: the texts come off the wire
            _fast_ruris.clear()
        _fast_ruris[uri_text] = None
        return method, None, uri_text  # valid, no headers, written back as is: built when read
    if uri_text.startswith("<"):
        raise SipError("the Request-URI must not be enclosed in <>")
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers:
        raise SipError("the Request-URI must not carry headers ('?...')")
    return method, uri, ""


_sip_uri_fast = SIP_URI_FAST_RE.fullmatch

#: Methods known to be tokens (any other is checked against the token rule).
_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO",
                      "NOTIFY", "SUBSCRIBE", "REFER", "MESSAGE"})  # fmt: skip
#: Request-URI texts that passed the fast-shape check (the requests of a dialog repeat one: the
#: Contact mss sent); at most this many are kept (emptied when full).
_FAST_RURIS = 256
_fast_ruris: dict[str, None] = {}


def _check_version(version: str) -> None:
    if version == "SIP/2.0" or version.upper() == "SIP/2.0":
        return
    if re.fullmatch(r"SIP/\d+\.\d+", version, re.IGNORECASE):
        raise SipError(f"SIP version {version!r} is not supported", status=505)
    raise SipError(f"bad SIP version {version[:20]!r}")


def _parse_status_line(line: str) -> tuple[int, str]:
    known = _status_lines.get(line)
    if known is not None:
        return known
    found = _parse_status_line_text(line)
    if len(_status_lines) >= _STATUS_LINES:  # bounded: reason phrases come off the wire
        _status_lines.clear()
    _status_lines[line] = found
    return found


#: Status lines read before, and what they say: a handful of texts ("SIP/2.0 200 OK") make up
#: nearly every response. At most this many are kept (emptied when full).
_STATUS_LINES = 256
_status_lines: dict[str, tuple[int, str]] = {}


def _parse_status_line_text(line: str) -> tuple[int, str]:
    version, _, rest = line.partition(" ")
    _check_version(version)
    code, _, reason = rest.partition(" ")
    if len(code) != 3 or not code.isdigit() or not code.isascii():
        raise SipError(f"status code {code[:20]!r} is not three digits")
    status = int(code)
    if not 100 <= status <= 699:
        raise SipError(f"status code {status} is outside 100..699")
    return status, reason


def _values(items: list[tuple[str, str, str]], key: str) -> list[str]:
    """Every element of list header ``key``, across its lines."""
    out: list[str] = []
    for k, _n, value in items:
        if k == key:
            out.extend(v for v in split_commas(value) if v)
    return out


def _elements(value: str | None) -> list[str]:
    """The elements of a list header written on one line (``value``; None when absent)."""
    if value is None:
        return []
    if "," not in value:
        return [value] if value else []
    return [v for v in split_commas(value) if v]


def _addresses(values: list[str], name: str) -> list[_Addr]:
    """The validated elements of a name-addr list header (``*`` alone in Contact: none)."""
    if name == "Contact" and values == ["*"]:
        return []
    return [fast_name_addr(v) or parse_name_addr(v, name) for v in values]


def _validate(msg: Message, items: list[tuple[str, str, str]], index: dict[str, str], unique: bool) -> None:
    """Check the fields mss relies on (raises SipError), in one pass; keeps what it found on ``msg``.

    ``index`` holds each header's first value; ``unique`` says no header appears twice. Each value
    is matched against its fast shape (kept as the match, built when read) or else parsed by the
    general parser (kept as the value, or the error raised), in a fixed order, so the error is the
    one the general parsers give for the first bad field.
    """
    if not unique:
        counts: dict[str, int] = {}
        for key, _n, _v in items:
            counts[key] = counts.get(key, 0) + 1
        for key in _SINGLE:
            if counts.get(key, 0) > 1:
                raise SipError(f"{canonical_name(key)[1]} appears {counts[key]} times")
    value = index.get("via") if unique else None
    if value and "," not in value:  # one Via line with one value: the usual message
        msg._via = [fast_via(value) or parse_via(value)]
    else:
        values = _elements(value) if unique else _values(items, "via")
        if not values:
            raise SipError("no Via header")
        msg._via = [fast_via(v) or parse_via(v) for v in values]
    value = index.get("from")
    if value is None:
        raise SipError("no From header")
    msg._from = fast_name_addr(value) or parse_name_addr(value, "From")
    value = index.get("to")
    if value is None:
        raise SipError("no To header")
    msg._to = fast_name_addr(value) or parse_name_addr(value, "To")
    value = index.get("call-id")
    if value is None:
        raise SipError("no Call-ID header")
    if not _call_id_ok(value):
        raise SipError(f"bad Call-ID {value!r}")
    msg._call_id = value
    value = index.get("cseq")
    if value is None:
        raise SipError("no CSeq header")
    m = _cseq_fast(value)
    if m is not None and len(m.group(1)) < MAX_NUMBER_DIGITS:
        msg._cseq, method = m, m.group(2)
    else:
        cseq = msg._cseq = _parse_cseq(value)
        method = cseq.method
    if isinstance(msg, Request) and method != msg.method:
        raise SipError(f"CSeq method {method} does not match the request method {msg.method}")
    if unique:  # most messages carry one Contact line and no Route or Record-Route
        value = index.get("contact")
        if value is None:
            msg._contact = []
        else:  # one name-addr of the common shape (or known) is the usual Contact: no list built first
            found = fast_name_addr(value) if "," not in value else None
            msg._contact = [found] if found is not None else _addresses(_elements(value), "Contact")
        value = index.get("route")
        msg._route = [] if value is None else _addresses(_elements(value), "Route")
        value = index.get("record-route")
        msg._record_route = [] if value is None else _addresses(_elements(value), "Record-Route")
    else:
        msg._contact = _addresses(_values(items, "contact"), "Contact")
        msg._route = _addresses(_values(items, "route"), "Route")
        msg._record_route = _addresses(_values(items, "record-route"), "Record-Route")
    if isinstance(msg, Response):
        # Max-Forwards, Expires and Date decide nothing in a response mss acts on (a REGISTER's
        # granted lifetime reads Expires itself and falls back when it is unreadable): a bad one must
        # not drop an answer, or an answered call would be lost.
        return
    value = index.get("max-forwards")
    if value is not None:
        parse_number(value, "Max-Forwards", 255)
    value = index.get("expires")
    if value is not None:
        parse_number(value, "Expires", 2**32 - 1)
    value = index.get("date")
    if value is not None and not _DATE_RE.fullmatch(value):
        raise SipError(f"bad Date {value!r} (RFC 1123 date in GMT expected)")


_call_id_ok = CALL_ID_RE.fullmatch


_Head = tuple[str, list[tuple[str, str, str]], dict[str, str], bool, bytes]


def _split_head_py(data: bytes) -> _Head:
    """Start line, header fields, each key's first value, whether no key repeats, and the rest."""
    start, lines, rest = split_message(data)
    if not start:
        raise SipError("empty start line")
    items = _parse_headers(lines)
    index = {key: value for key, _n, value in items}  # the last value of each key
    unique = len(index) == len(items)
    if not unique:
        index = {key: value for key, _n, value in reversed(items)}  # the first
    return start, items, index, unique, rest


def _load_split_head() -> Callable[[bytes, dict[str, tuple[str, str]]], _Head | None] | None:
    """mss.sip._head's cutter in C (setup.py builds it), None in a tree where it is not built."""
    try:
        from mss.sip._head import split_head
    except ImportError:  # pragma: no cover - an unbuilt tree: _split_head_py does the same
        return None
    return split_head


#: The common form cut in C (None: the Python alone; tests set it so to compare the two).
_split_head = _load_split_head()


def parse_message(data: bytes, *, exact: bool = False) -> Request | Response:
    """Parse one message from a datagram (or a frame cut by :class:`~mss.sip.framing.StreamFramer`).

    Bytes beyond ``Content-Length`` are ignored (a datagram's trailing octets) unless ``exact``;
    without ``Content-Length`` the body is the rest of the data (UDP only, RFC 3261 §18.3).
    """
    cut = _split_head(data, _name_cache) if _split_head is not None else None
    if cut is not None:
        start, items, index, unique, rest = cut
    else:
        start, items, index, unique, rest = _split_head_py(data)
    msg: Request | Response
    headers = Headers._raw(items, index)
    if start.startswith("SIP/") or start[:4].upper() == "SIP/":
        status, reason = _parse_status_line(start)
        msg = Response._parsed(status, reason, headers)
    else:
        method, uri, uri_text = _parse_request_line(start)
        msg = Request._parsed(method, uri, uri_text, headers)
    found = index.get("content-length")
    if found is not None:
        length = parse_number(found, "Content-Length", MAX_MESSAGE_SIZE)
        if length > len(rest):
            raise SipError(f"Content-Length {length} is larger than the {len(rest)} bytes of body")
        if exact and length != len(rest):
            raise SipError(f"{len(rest) - length} bytes after the body")
        msg.body = rest[:length] if length != len(rest) else rest
    else:
        msg.body = rest
    _validate(msg, items, index, unique)
    return msg


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` (RFC 3261 §8.2.6.2): Via, From, To, Call-ID and CSeq copied.

    ``to_tag`` is added to To unless it already has one (never for 100 Trying, §8.2.6.1).
    """
    # The copied lines are taken as they are (their keys and spellings are the canonical ones).
    h = request.headers
    index = h._index
    if index is not None and "from" in index and "to" in index:  # parsed: each key's first value
        from_value, to_value, stamp = index["from"], index["to"], index.get("timestamp")
    else:
        from_value, to_value, stamp = _required(h, "From"), _required(h, "To"), h.get("Timestamp")
    items = [item for item in h._items if item[0] == "via"]
    items.append(("from", "From", from_value))
    if to_tag is not None and status != 100 and request.to.tag is None:
        to_value = f"{to_value};tag={to_tag}"
    items.append(("to", "To", to_value))
    items.append(("call-id", "Call-ID", request.call_id))
    raw = request._cseq
    if isinstance(raw, Match) and (raw.group(1)[0] != "0" or raw.group(1) == "0"):
        cseq_text = raw.string  # a fast-shape match, "<seq> <method>": as str(CSeq) writes it
    else:
        cseq_text = str(request.cseq)
    items.append(("cseq", "CSeq", cseq_text))
    if status == 100 and stamp is not None:  # RFC 3261 §8.2.6.1
        items.append(("timestamp", "Timestamp", stamp))
    for name, value in headers:
        key, spelling = canonical_name(name)
        items.append((key, spelling, value))
    text = reason if reason is not None else REASONS.get(status, "")
    return Response(status, text, Headers._raw(items), body)


def error_response(data: bytes, status: int, reason: str) -> bytes | None:
    """A best-effort ``status`` response to a request that failed to parse (RFC 3261 §8.2).

    Copies the raw Via, From, To, Call-ID and CSeq lines and says why in a Warning (399). Returns
    None when the data is a response, an ACK, or lacks a field the answer needs.
    """
    try:
        start, lines, _rest = split_message(data)
        items = _parse_headers(lines)
    except SipError:
        return None
    method = start.split(" ", 1)[0]
    if not method or start.upper().startswith("SIP/") or method == "ACK":
        return None
    found: dict[str, list[str]] = {}
    for key, _name, value in items:
        if key in ("via", "from", "to", "call-id", "cseq"):
            found.setdefault(key, []).append(value)
    if len(found) < 5:
        return None
    to = found["to"][0]
    if ";tag=" not in to.replace(" ", "").lower():
        to += ";tag=mss-err"
    text = reason.replace("\\", "\\\\").replace('"', '\\"')
    out = [f"SIP/2.0 {status} {REASONS.get(status, 'Error')}"]
    out += [f"Via: {v}" for v in found["via"]]
    out += [f"From: {found['from'][0]}", f"To: {to}", f"Call-ID: {found['call-id'][0]}"]
    out += [f"CSeq: {found['cseq'][0]}", f'Warning: 399 mss "{text[:200]}"', "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode("utf-8", "surrogateescape")
