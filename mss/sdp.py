"""SDP bodies (RFC 8866) and the offer/answer model (RFC 3264) for the two legs of a callback, sans-IO.

Two layers, both pure:

* **Syntax.** :func:`parse_sdp` turns a body into a frozen :class:`SessionDescription`; ``bytes(sd)``
  writes it back with CRLF line ends in the order of RFC 8866 §5. Every line is kept (attributes in
  their order, unknown attributes included), so parse → serialize → parse is stable, and a body that
  was already in canonical order comes back byte for byte. Parsing is tolerant where nothing depends
  on it (LF or CRLF, blank lines, raw ``b=``/``t=`` values) and strict where something does: the
  ``m=`` line, ``c=``, ``o=``, and the attributes mss reads (``rtpmap``, ``ptime``, ``maxptime``,
  ``rtcp`` and the direction attributes) raise :class:`~mss.errors.SdpError` naming the line.

* **Negotiation.** mss relays media without transcoding, so negotiation only has to agree on one
  codec per leg, the telephone-event payload type, the remote media address and the direction:

  - :func:`make_offer` builds the offer to user1 from ``[callback] audio_codecs``;
    :func:`read_answer` reads user1's answer into a :class:`Negotiated`.
  - :func:`make_bridge_offer` builds the offer to user2: only the codec user1 chose (same payload
    type, same fmtp) plus telephone-event, so RTP passes between the legs untouched.
  - :func:`make_answer` answers a far-end offer (re-INVITE, UPDATE): hold, resume, a new address.
  - :func:`pt_mapping` gives the relay the payload-type rewrite between the legs, if any.
  - :class:`LocalSdp` stamps the ``o=`` line of one leg's successive SDPs (RFC 3264 §8).

  A far-end SDP that repeats the previous one (a session refresh) compares equal to it; the caller
  may skip renegotiating then (RFC 3264 §8: "If the version in the origin line does not increment,
  the SDP MUST be identical to the SDP with that version number").

Payload-type numbers follow RFC 3264 §5.1: "For sendrecv RTP streams, the payload type numbers
indicate the value of the payload type field in RTP packets the offerer is expecting to receive for
that codec." So on each leg RTP *from* the remote carries the numbers of *our* SDP
(:attr:`Negotiated.local_pt`), and RTP *to* the remote carries the numbers of *its* SDP
(:attr:`Negotiated.remote_pt`).

Errors: :class:`~mss.errors.SdpError` (answered 488) for SDP from the network that mss cannot use;
:class:`~mss.errors.LocalProtocolError` when mss itself asks for an invalid SDP (a bug of ours).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from mss.errors import LocalProtocolError, SdpError

__all__ = [
    "DEFAULT_TELEPHONE_EVENTS",
    "DEFAULT_TELEPHONE_EVENT_PT",
    "MAX_SDP_SIZE",
    "MAX_SESSION_VERSION_DIGITS",
    "PASSTHROUGH_CODECS",
    "STATIC_PAYLOAD_TYPES",
    "TELEPHONE_EVENT",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "LocalSdp",
    "MediaDescription",
    "Negotiated",
    "Origin",
    "SessionDescription",
    "Timing",
    "make_answer",
    "make_bridge_offer",
    "make_offer",
    "parse_sdp",
    "pt_mapping",
    "read_answer",
    "with_direction",
]

#: Largest SDP body accepted. An audio offer is well under 2 kB (pjsua2 offering every codec it has
#: is about 1 kB); anything bigger is not a phone talking to a relay.
MAX_SDP_SIZE = 16384

#: The encoding name of RFC 4733 named telephone events (DTMF).
TELEPHONE_EVENT = "telephone-event"

#: The telephone-event payload type mss puts in its own offers (the common choice of phones and SBCs).
DEFAULT_TELEPHONE_EVENT_PT = 101

#: The events mss declares for telephone-event: the 16 DTMF events and flash (RFC 4733 §3.2).
DEFAULT_TELEPHONE_EVENTS = "0-16"


class Direction(enum.StrEnum):
    """A stream's direction attribute (RFC 8866 §6.7), from the point of view of the SDP's author."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        """The author of the SDP sends media."""
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        """The author of the SDP receives media."""
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, *, send: bool, receive: bool) -> Direction:
        """The direction that sends and receives as told."""
        if send:
            return cls.SENDRECV if receive else cls.SENDONLY
        return cls.RECVONLY if receive else cls.INACTIVE

    def reverse(self) -> Direction:
        """The same stream seen from the other end: sendonly ↔ recvonly, the others unchanged."""
        return Direction.from_flags(send=self.receives, receive=self.sends)


def _check_token(value: str, what: str) -> None:
    # A token goes on a line between spaces: an empty one or one with whitespace would change the
    # line's meaning, and a CR or LF would inject a line.
    if not value or any(ch in value for ch in " \t\r\n"):
        raise LocalProtocolError(f"{what} {_shown(value)} is not a single token")


def _check_text(value: str, what: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise LocalProtocolError(f"{what} {_shown(value)} contains a CR, LF or NUL")


def _check_port(port: int, what: str) -> None:
    if not 0 <= port <= 65535:
        raise LocalProtocolError(f"{what} {port} is not a port number (0-65535)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """The ``o=`` line (RFC 8866 §5.2): who made the session and which version of it this is."""

    username: str = "-"
    """The originator's login, ``-`` when there is none."""
    session_id: str
    """The session id, a numeric string kept as written; constant for a session."""
    version: int
    """The session version; it increases by one with every change (RFC 3264 §8)."""
    nettype: str = "IN"
    """Network type, ``IN``."""
    addrtype: str = "IP4"
    """Address type, ``IP4`` or ``IP6``."""
    address: str
    """The originator's address."""

    def __post_init__(self) -> None:
        for name in ("username", "session_id", "nettype", "addrtype", "address"):
            _check_token(getattr(self, name), f"o= {name}")
        if self.version < 0:
            raise LocalProtocolError(f"o= version {self.version} is negative")

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} {self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """A ``c=`` line (RFC 8866 §5.7): where media goes."""

    addrtype: str = "IP4"
    """``IP4`` or ``IP6``."""
    address: str
    """The address as written (an IP literal for any stream mss uses)."""
    nettype: str = "IN"
    """Network type; only ``IN`` exists."""

    def __post_init__(self) -> None:
        if self.nettype != "IN":
            raise LocalProtocolError(f"c= network type {_shown(self.nettype)} is not IN")
        if self.addrtype not in ("IP4", "IP6"):
            raise LocalProtocolError(f"c= address type {_shown(self.addrtype)} is not IP4 or IP6")
        _check_token(self.address, "c= address")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def is_null(self) -> bool:
        """The address is 0.0.0.0 (or ::): the RFC 2543 way of putting a stream on hold."""
        return self.address in ("0.0.0.0", "::")


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribute:
    """An ``a=`` line (RFC 8866 §5.13): ``a=name`` (a flag) or ``a=name:value``."""

    name: str
    """The attribute name, e.g. ``rtpmap``."""
    value: str | None = None
    """Everything after the first colon; None for a flag attribute such as ``sendrecv``."""

    def __post_init__(self) -> None:
        _check_token(self.name, "attribute name")
        if ":" in self.name:
            raise LocalProtocolError(f"attribute name {_shown(self.name)} contains a colon")
        if self.value is not None:
            _check_text(self.value, f"a={self.name} value")

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """A ``t=`` line with its ``r=`` lines (RFC 8866 §5.9, §5.10), kept as written."""

    value: str = "0 0"
    """``<start> <stop>``; ``0 0`` is an unbounded session, the usual case for SIP."""
    repeats: tuple[str, ...] = ()
    """The ``r=`` values that follow it."""

    def __post_init__(self) -> None:
        _check_text(self.value, "t= value")
        for repeat in self.repeats:
            _check_text(repeat, "r= value")


@dataclass(frozen=True, slots=True, kw_only=True)
class Codec:
    """An encoding as ``a=rtpmap`` names it (RFC 8866 §6.6), with its ``a=fmtp`` parameters."""

    name: str
    """Encoding name as written (compared case-insensitively, RFC 4855 §3)."""
    clock_rate: int
    """RTP clock rate in Hz."""
    channels: int = 1
    """Audio channels."""
    fmtp: str | None = None
    """The format parameters, e.g. ``annexb=no``; None when there is no ``a=fmtp``."""

    def __post_init__(self) -> None:
        _check_token(self.name, "encoding name")
        if "/" in self.name:
            raise LocalProtocolError(f"encoding name {_shown(self.name)} contains a slash")
        if self.clock_rate <= 0 or self.channels <= 0:
            raise LocalProtocolError(f"codec {self.name}/{self.clock_rate}/{self.channels} is not valid")
        if self.fmtp is not None:
            _check_text(self.fmtp, "fmtp")

    def __str__(self) -> str:
        rtpmap = f"{self.name}/{self.clock_rate}"
        return rtpmap if self.channels == 1 else f"{rtpmap}/{self.channels}"

    def same_encoding(self, other: Codec) -> bool:
        """Same encoding name (case-insensitive), clock rate and channels; fmtp is not compared."""
        return (
            self.name.casefold() == other.name.casefold()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )

    @property
    def is_telephone_event(self) -> bool:
        """This is RFC 4733 telephone-event, not audio."""
        return self.name.casefold() == TELEPHONE_EVENT


#: The static audio payload types of RFC 3551 §6 (Table 4): known without an ``a=rtpmap``.
STATIC_PAYLOAD_TYPES: Mapping[int, Codec] = {
    0: Codec(name="PCMU", clock_rate=8000),
    3: Codec(name="GSM", clock_rate=8000),
    4: Codec(name="G723", clock_rate=8000),
    5: Codec(name="DVI4", clock_rate=8000),
    6: Codec(name="DVI4", clock_rate=16000),
    7: Codec(name="LPC", clock_rate=8000),
    8: Codec(name="PCMA", clock_rate=8000),
    9: Codec(name="G722", clock_rate=8000),
    10: Codec(name="L16", clock_rate=44100, channels=2),
    11: Codec(name="L16", clock_rate=44100),
    12: Codec(name="QCELP", clock_rate=8000),
    13: Codec(name="CN", clock_rate=8000),
    14: Codec(name="MPA", clock_rate=90000),
    15: Codec(name="G728", clock_rate=8000),
    16: Codec(name="DVI4", clock_rate=11025),
    17: Codec(name="DVI4", clock_rate=22050),
    18: Codec(name="G729", clock_rate=8000),
}

#: The codecs mss relays untouched, by configuration name, with their static payload type.
PASSTHROUGH_CODECS: Mapping[str, int] = {"PCMU": 0, "PCMA": 8, "G729": 18}

# Every number read from an SDP has its length bounded before int() or float() sees it: a number
# of thousands of digits would otherwise cost quadratic time, or raise ValueError past Python's
# 4,300-digit limit, instead of the SdpError the caller handles. Digits are ASCII only (RFC 8866 §9:
# DIGIT = %x30-39); int() would also take other scripts' digits.

#: Digits of the o= session version. RFC 3264 §5: "The numeric value of the session id and version
#: in the o line MUST be representable with a 64 bit signed integer" (19 digits); 20 also takes the
#: unsigned 64-bit values some stacks write.
MAX_SESSION_VERSION_DIGITS = 20
#: Digits of a payload type: they are 0-127 (RFC 3550 §5.1, a 7-bit field).
_PT_DIGITS = 3
#: Digits of a port or a number of ports: ports are 0-65535 (16 bits).
_PORT_DIGITS = 5
#: Digits of an a=rtpmap clock rate: audio runs at 8-48 kHz, video at 90 kHz; 9 digits is ample.
_CLOCK_RATE_DIGITS = 9
#: Digits of an a=rtpmap channel count (audio has a handful of channels).
_CHANNELS_DIGITS = 3
#: Digits of a=ptime/a=maxptime milliseconds, before and after the decimal point (99999 ms is
#: already far beyond any packet time).
_PTIME_DIGITS = 5
_PTIME_DECIMALS = 3
#: Longest piece of input quoted in an error message: enough to recognise the line, too little for
#: a hostile body to fill a log or a CDR through one error.
_MAX_SHOWN = 80

# a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]   (RFC 8866 §6.6)
_RTPMAP = re.compile(
    rf"([0-9]{{1,{_PT_DIGITS}}}) ([^/\s]+)/([0-9]{{1,{_CLOCK_RATE_DIGITS}}})"
    rf"(?:/([0-9]{{1,{_CHANNELS_DIGITS}}}))?"
)
# a=rtcp:<port> [<nettype> <addrtype> <connection-address>]                       (RFC 3605 §2.1)
_RTCP = re.compile(rf"([0-9]{{1,{_PORT_DIGITS}}})(?: IN (IP4|IP6) (\S+))?")
# a=ptime:<packet time>, a=maxptime:<maximum packet time>: milliseconds, an integer or a decimal
# (RFC 8866 §6.4, §6.5)
_PTIME = re.compile(rf"[0-9]{{1,{_PTIME_DIGITS}}}(?:\.[0-9]{{1,{_PTIME_DECIMALS}}})?")
# m=<media> <port>[/<number of ports>] <proto> <fmt> ...                          (RFC 8866 §5.14)
_PORT = re.compile(rf"([0-9]{{1,{_PORT_DIGITS}}})(?:/([0-9]{{1,{_PORT_DIGITS}}}))?")
_PT = re.compile(rf"[0-9]{{1,{_PT_DIGITS}}}")
# o=<username> <sess-id> <sess-version> ...: sess-version = 1*DIGIT                (RFC 8866 §9)
_SESSION_VERSION = re.compile(rf"[0-9]{{1,{MAX_SESSION_VERSION_DIGITS}}}")


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut at :data:`_MAX_SHOWN` characters."""
    if len(text) <= _MAX_SHOWN:
        return repr(text)
    return f"{text[:_MAX_SHOWN]!r}... ({len(text)} characters)"
_DIRECTIONS = frozenset(d.value for d in Direction)


def _parse_rtpmap(value: str) -> tuple[int, Codec]:
    m = _RTPMAP.fullmatch(value)
    if m is None or int(m[1]) > 127 or int(m[3]) == 0 or m[4] == "0":
        raise SdpError(
            f"bad a=rtpmap value {_shown(value)}: expected <payload type 0-127> <encoding>/<clock rate>"
            "[/<channels>]"
        )
    return int(m[1]), Codec(name=m[2], clock_rate=int(m[3]), channels=int(m[4] or 1))


def _parse_rtcp(value: str) -> tuple[int, str | None]:
    m = _RTCP.fullmatch(value)
    if m is None or int(m[1]) > 65535:
        raise SdpError(f"bad a=rtcp value {_shown(value)}: expected <port> [IN <IP4|IP6> <address>]")
    return int(m[1]), m[3]


def _parse_ptime(name: str, value: str) -> int:
    if _PTIME.fullmatch(value) is None or float(value) == 0:
        raise SdpError(f"bad a={name} value {_shown(value)}: expected milliseconds")
    return max(1, round(float(value)))


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDescription:
    """One ``m=`` section (RFC 8866 §5.14) with its ``i=``, ``c=``, ``b=``, ``k=`` and ``a=`` lines."""

    media: str = "audio"
    """Media type: ``audio``, ``video``, ..."""
    port: int
    """Transport port; 0 marks a rejected or disabled stream (RFC 3264 §6, §8.2)."""
    port_count: int | None = None
    """The ``/<number of ports>`` of the m= line, None when absent."""
    proto: str = "RTP/AVP"
    """Transport protocol, e.g. ``RTP/AVP``."""
    formats: tuple[str, ...]
    """Media formats; RTP payload type numbers for RTP protocols."""
    information: str | None = None
    """The ``i=`` line."""
    connection: Connection | None = None
    """The media-level ``c=`` line; None means the session-level one applies."""
    bandwidths: tuple[str, ...] = ()
    """``b=`` values as written, e.g. ``TIAS:64000``."""
    key: str | None = None
    """The (obsolete) ``k=`` line."""
    attributes: tuple[Attribute, ...] = ()
    """All ``a=`` lines in their order."""

    def __post_init__(self) -> None:
        _check_token(self.media, "media type")
        _check_port(self.port, "m= port")
        if self.port_count is not None and self.port_count <= 0:
            raise LocalProtocolError(f"m= number of ports {self.port_count} is not positive")
        _check_token(self.proto, "m= protocol")
        if not self.formats:
            raise LocalProtocolError("an m= line needs at least one format")
        for fmt in self.formats:
            _check_token(fmt, "m= format")
        for text, what in ((self.information, "i= value"), (self.key, "k= value")):
            if text is not None:
                _check_text(text, what)
        for bandwidth in self.bandwidths:
            _check_text(bandwidth, "b= value")

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value`` line, None when there is none (or it is a flag)."""
        for attr in self.attributes:
            if attr.name == name:
                return attr.value
        return None

    @property
    def is_rtp(self) -> bool:
        """The protocol is an RTP profile (``RTP/AVP``, ``RTP/SAVP``, ...): formats are payload types."""
        return self.proto.upper().startswith("RTP/")

    @property
    def direction(self) -> Direction | None:
        """The media-level direction attribute, None when there is none."""
        return _direction(self.attributes)

    @property
    def codecs(self) -> dict[int, Codec]:
        """The payload types of the m= line in its order, mapped to their codecs.

        A payload type is mapped by its ``a=rtpmap`` or else by RFC 3551's static table; a dynamic
        one without ``a=rtpmap`` is left out. ``a=fmtp`` parameters are attached.
        """
        if not self.is_rtp:
            return {}
        rtpmaps: dict[int, Codec] = {}
        fmtps: dict[str, str] = {}
        for attr in self.attributes:
            if attr.name == "rtpmap" and attr.value is not None:
                mapped_pt, mapped = _parse_rtpmap(attr.value)
                rtpmaps.setdefault(mapped_pt, mapped)
            elif attr.name == "fmtp" and attr.value is not None:
                fmt, _, text = attr.value.partition(" ")
                fmtps.setdefault(fmt, text.strip())
        result: dict[int, Codec] = {}
        for fmt in self.formats:
            pt = int(fmt)
            codec = rtpmaps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
            if codec is None or pt in result:
                continue
            params = fmtps.get(fmt)
            result[pt] = codec if params is None else replace(codec, fmtp=params)
        return result

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """``a=rtcp`` (RFC 3605): the RTCP port and its address when given, None without the line."""
        value = self.attribute("rtcp")
        return None if value is None else _parse_rtcp(value)

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in whole milliseconds, None without the line."""
        value = self.attribute("ptime")
        return None if value is None else _parse_ptime("ptime", value)

    @property
    def maxptime(self) -> int | None:
        """``a=maxptime`` in whole milliseconds, None without the line."""
        value = self.attribute("maxptime")
        return None if value is None else _parse_ptime("maxptime", value)

    def lines(self) -> list[str]:
        """The section's lines in RFC 8866 order (m, i, c, b, k, a), without line ends."""
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        if self.information is not None:
            out.append(f"i={self.information}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={bandwidth}" for bandwidth in self.bandwidths)
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"a={attr}" for attr in self.attributes)
        return out


def _direction(attributes: Sequence[Attribute]) -> Direction | None:
    for attr in attributes:
        if attr.value is None and attr.name in _DIRECTIONS:
            return Direction(attr.name)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDescription:
    """A whole SDP body (RFC 8866 §5): the session-level lines and the media sections."""

    version: int = 0
    """The ``v=`` line; always 0."""
    origin: Origin
    """The ``o=`` line."""
    session_name: str = "-"
    """The ``s=`` line."""
    information: str | None = None
    """The session-level ``i=`` line."""
    uri: str | None = None
    """The ``u=`` line."""
    emails: tuple[str, ...] = ()
    """The ``e=`` lines."""
    phones: tuple[str, ...] = ()
    """The ``p=`` lines."""
    connection: Connection | None = None
    """The session-level ``c=`` line, the default of every media section."""
    bandwidths: tuple[str, ...] = ()
    """Session-level ``b=`` values as written, e.g. ``AS:84``."""
    times: tuple[Timing, ...] = (Timing(),)
    """The ``t=`` lines with their ``r=`` lines."""
    timezone: str | None = None
    """The ``z=`` line."""
    key: str | None = None
    """The session-level ``k=`` line."""
    attributes: tuple[Attribute, ...] = ()
    """Session-level ``a=`` lines in their order."""
    media: tuple[MediaDescription, ...] = ()
    """The media sections in their order."""

    def __post_init__(self) -> None:
        if self.version != 0:
            raise LocalProtocolError(f"SDP version {self.version} is not 0")
        _check_text(self.session_name, "s= value")
        for text, what in (
            (self.information, "i= value"),
            (self.uri, "u= value"),
            (self.timezone, "z= value"),
            (self.key, "k= value"),
        ):
            if text is not None:
                _check_text(text, what)
        for value in (*self.emails, *self.phones):
            _check_text(value, "e=/p= value")
        for bandwidth in self.bandwidths:
            _check_text(bandwidth, "b= value")

    @property
    def direction(self) -> Direction | None:
        """The session-level direction attribute, None when there is none."""
        return _direction(self.attributes)

    def direction_of(self, media: MediaDescription) -> Direction:
        """A stream's direction: media level, else session level, else sendrecv (RFC 3264 §5.1)."""
        return media.direction or self.direction or Direction.SENDRECV

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """A stream's ``c=``: the media-level one, else the session-level one (RFC 8866 §5.7)."""
        return media.connection or self.connection

    def lines(self) -> list[str]:
        """The body's lines in RFC 8866 §5 order, without line ends."""
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.information is not None:
            out.append(f"i={self.information}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={email}" for email in self.emails)
        out.extend(f"p={phone}" for phone in self.phones)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={bandwidth}" for bandwidth in self.bandwidths)
        for timing in self.times:
            out.append(f"t={timing.value}")
            out.extend(f"r={repeat}" for repeat in timing.repeats)
        if self.timezone is not None:
            out.append(f"z={self.timezone}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"a={attr}" for attr in self.attributes)
        for media in self.media:
            out.extend(media.lines())
        return out

    def to_bytes(self) -> bytes:
        """The body as it goes on the wire: every line ended by CRLF (RFC 8866 §5)."""
        return "".join(f"{line}\r\n" for line in self.lines()).encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.to_bytes()


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------

_LINE = re.compile(r"([a-z])=(.*)", re.DOTALL)
_SESSION_TYPES = frozenset("vosiuepcbtrzka")
_MEDIA_TYPES = frozenset("icbka")


class _MediaBuilder:
    """The lines of one m= section while it is being read."""

    def __init__(self, lineno: int, m_value: str) -> None:
        self.lineno = lineno
        self.m_value = m_value
        self.information: str | None = None
        self.connection: Connection | None = None
        self.bandwidths: list[str] = []
        self.key: str | None = None
        self.attributes: list[Attribute] = []


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse an SDP body; raise :class:`~mss.errors.SdpError` with the reason when it is unusable.

    Lines may end with CRLF or LF (RFC 8866 §5: "a parser SHOULD be tolerant and also accept
    records terminated with a single newline character"); blank lines are skipped.
    """
    if len(data) > MAX_SDP_SIZE:
        raise SdpError(f"SDP body of {len(data)} bytes is over the limit of {MAX_SDP_SIZE}")
    # Text fields may be in another charset (a=charset); surrogateescape keeps their bytes intact.
    text = data.decode("utf-8", "surrogateescape")
    numbered = [
        (n, line.removesuffix("\r"))
        for n, line in enumerate(text.split("\n"), start=1)
        if line.removesuffix("\r")
    ]
    if not numbered:
        raise SdpError("empty SDP body")
    if numbered[0][1] != "v=0":
        raise SdpError(f"line {numbered[0][0]}: an SDP body begins with v=0, not {_shown(numbered[0][1])}")
    try:
        return _parse_lines(numbered[1:])
    except LocalProtocolError as exc:  # a value the dataclasses refuse, e.g. a CR inside a line
        raise SdpError(str(exc)) from None


def _parse_lines(numbered: list[tuple[int, str]]) -> SessionDescription:
    origin: Origin | None = None
    session_name: str | None = None
    single: dict[str, str] = {}  # i, u, z, k at session level
    emails: list[str] = []
    phones: list[str] = []
    connection: Connection | None = None
    bandwidths: list[str] = []
    # t= values with their r= values: a Timing is built once at the end, since rebuilding it for
    # every r= line costs quadratic time (a 16 kB body of r= lines took most of a second).
    times: list[tuple[str, list[str]]] = []
    attributes: list[Attribute] = []
    media: list[_MediaBuilder] = []

    for n, line in numbered:
        match = _LINE.fullmatch(line)
        if match is None:
            raise SdpError(f"line {n}: {_shown(line)} is not a <type>=<value> line")
        kind, value = match[1], match[2]
        # RFC 8866 §5: "An SDP parser MUST completely ignore or reject any session description
        # that contains a type letter that it does not understand."
        if kind not in _SESSION_TYPES and kind != "m":
            raise SdpError(f"line {n}: unknown SDP line type {kind!r}")
        if kind == "m":
            media.append(_MediaBuilder(n, value))
            continue
        if media:
            current = media[-1]
            if kind not in _MEDIA_TYPES:
                raise SdpError(f"line {n}: {kind}= is not allowed in a media section")
            if kind == "c":
                if current.connection is not None:
                    raise SdpError(f"line {n}: a second c= line in the media section")
                current.connection = _parse_connection(n, value)
            elif kind == "b":
                current.bandwidths.append(value)
            elif kind == "a":
                current.attributes.append(_parse_attribute(n, value, current.attributes))
            elif kind == "i":
                current.information = value
            else:
                current.key = value
            continue
        if kind == "v":
            raise SdpError(f"line {n}: a second v= line")
        if kind == "o":
            if origin is not None:
                raise SdpError(f"line {n}: a second o= line")
            origin = _parse_origin(n, value)
        elif kind == "s":
            if session_name is not None:
                raise SdpError(f"line {n}: a second s= line")
            session_name = value
        elif kind == "c":
            if connection is not None:
                raise SdpError(f"line {n}: a second session-level c= line")
            connection = _parse_connection(n, value)
        elif kind == "b":
            bandwidths.append(value)
        elif kind == "t":
            times.append((value, []))
        elif kind == "r":
            if not times:
                raise SdpError(f"line {n}: r= line without a t= line before it")
            times[-1][1].append(value)
        elif kind == "e":
            emails.append(value)
        elif kind == "p":
            phones.append(value)
        elif kind == "a":
            attributes.append(_parse_attribute(n, value, attributes))
        else:  # i, u, z, k
            if kind in single:
                raise SdpError(f"line {n}: a second session-level {kind}= line")
            single[kind] = value

    if origin is None:
        raise SdpError("the SDP body has no o= line")
    descriptions = tuple(_build_media(builder, connection) for builder in media)
    return SessionDescription(
        origin=origin,
        session_name="-" if session_name is None else session_name,
        information=single.get("i"),
        uri=single.get("u"),
        emails=tuple(emails),
        phones=tuple(phones),
        connection=connection,
        bandwidths=tuple(bandwidths),
        times=tuple(Timing(value=t, repeats=tuple(r)) for t, r in times) or (Timing(),),
        timezone=single.get("z"),
        key=single.get("k"),
        attributes=tuple(attributes),
        media=descriptions,
    )


def _parse_origin(n: int, value: str) -> Origin:
    line = f"o={value}"
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(
            f"line {n}: bad o= line {_shown(line)}: expected <username> <sess-id> <sess-version> "
            "<nettype> <addrtype> <address>"
        )
    if _SESSION_VERSION.fullmatch(parts[2]) is None:
        if parts[2].isascii() and parts[2].isdigit():
            raise SdpError(
                f"line {n}: bad o= line {_shown(line)}: session version of {len(parts[2])} digits is "
                f"longer than {MAX_SESSION_VERSION_DIGITS} (RFC 3264 §5: a 64-bit integer)"
            )
        raise SdpError(
            f"line {n}: bad o= line {_shown(line)}: session version {_shown(parts[2])} is not a number"
        )
    return Origin(
        username=parts[0],
        session_id=parts[1],
        version=int(parts[2]),
        nettype=parts[3],
        addrtype=parts[4],
        address=parts[5],
    )


def _parse_connection(n: int, value: str) -> Connection:
    line = f"c={value}"
    parts = value.split()
    if len(parts) != 3:
        raise SdpError(f"line {n}: bad c= line {_shown(line)}: expected IN <IP4|IP6> <address>")
    if parts[0] != "IN":
        raise SdpError(f"line {n}: bad c= line {_shown(line)}: network type {_shown(parts[0])} is not IN")
    if parts[1] not in ("IP4", "IP6"):
        raise SdpError(
            f"line {n}: bad c= line {_shown(line)}: address type {_shown(parts[1])} is not IP4 or IP6"
        )
    return Connection(addrtype=parts[1], address=parts[2])


def _parse_attribute(n: int, value: str, earlier: Sequence[Attribute]) -> Attribute:
    name, colon, rest = value.partition(":")
    if not name or any(ch in name for ch in " \t"):
        raise SdpError(f"line {n}: bad a= line {_shown('a=' + value)}: expected <name>[:<value>]")
    attr = Attribute(name=name, value=rest if colon else None)
    try:
        if name == "rtpmap":
            _parse_rtpmap(rest)
        elif name == "rtcp":
            _parse_rtcp(rest)
        elif name in ("ptime", "maxptime"):
            _parse_ptime(name, rest)
        elif name in _DIRECTIONS:
            if colon:
                raise SdpError(f"a={name} takes no value")
            # RFC 8866 §6.7: one direction per level; two of them leave the direction unknown.
            previous = _direction(earlier)
            if previous is not None:
                raise SdpError(f"a={name} after a={previous}: two direction attributes")
    except SdpError as exc:
        raise SdpError(f"line {n}: {exc.reason}") from None
    return attr


def _build_media(builder: _MediaBuilder, session_connection: Connection | None) -> MediaDescription:
    n, value = builder.lineno, builder.m_value
    line = f"m={value}"
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"line {n}: bad m= line {_shown(line)}: expected <media> <port> <proto> <format> ...")
    media_type, port_text, proto, formats = parts[0], parts[1], parts[2], tuple(parts[3:])
    port_match = _PORT.fullmatch(port_text)
    if port_match is None:
        raise SdpError(f"line {n}: bad m= line {_shown(line)}: port {_shown(port_text)} is not a number")
    port = int(port_match[1])
    if port > 65535:
        raise SdpError(f"line {n}: bad m= line {line!r}: port {port} is out of range")
    count = None if port_match[2] is None else int(port_match[2])
    if count == 0:
        raise SdpError(f"line {n}: bad m= line {_shown(line)}: number of ports is 0")
    if proto.upper().startswith("RTP/"):
        for fmt in formats:
            if _PT.fullmatch(fmt) is None or int(fmt) > 127:
                raise SdpError(
                    f"line {n}: bad m= line {_shown(line)}: payload type {_shown(fmt)} is not a number 0-127"
                )
    # RFC 8866 §5.7: a c= line is required in every media section or at session level. A rejected
    # stream (port 0) carries no media, so its missing address harms nobody.
    if port != 0 and builder.connection is None and session_connection is None:
        raise SdpError(f"line {n}: no c= line for the m={media_type} stream, nor at session level")
    return MediaDescription(
        media=media_type,
        port=port,
        port_count=count,
        proto=proto,
        formats=formats,
        information=builder.information,
        connection=builder.connection,
        bandwidths=tuple(builder.bandwidths),
        key=builder.key,
        attributes=tuple(builder.attributes),
    )


# --------------------------------------------------------------------------------------------------
# Offer/answer (RFC 3264)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Negotiated:
    """What one leg agreed on: the codec, telephone-event, where to send media, and the direction."""

    codec: Codec
    """The one codec of the leg, with the fmtp the remote wrote for it."""
    local_pt: int
    """The codec's payload type in our SDP: RTP *from* the remote carries it (RFC 3264 §5.1)."""
    remote_pt: int
    """The codec's payload type in the remote's SDP: RTP mss sends *to* the remote carries it."""
    local_te_pt: int | None
    """telephone-event's payload type in our SDP; None when the leg has no telephone-event."""
    remote_te_pt: int | None
    """telephone-event's payload type in the remote's SDP; None when the leg has no telephone-event."""
    remote_address: str
    """The remote's RTP address (its c= line)."""
    remote_port: int
    """The remote's RTP port (its m= line)."""
    remote_rtcp_address: str
    """The remote's RTCP address: a=rtcp's (RFC 3605) when given, else the RTP address."""
    remote_rtcp_port: int
    """The remote's RTCP port: a=rtcp's (RFC 3605), else RTP port + 1 (RFC 3550 §11)."""
    local_direction: Direction
    """The stream's direction in our SDP."""
    remote_direction: Direction
    """The stream's direction in the remote's SDP; a null c= address (0.0.0.0) counts as not
    receiving (RFC 3264 §8.4), so ``sendrecv`` with 0.0.0.0 is read as ``sendonly``."""
    hold: bool
    """The remote put the stream on hold: a=sendonly or a=inactive (RFC 3264 §8.4), or the RFC 2543
    null address. Reflect it to the other leg by offering it :attr:`remote_direction`."""
    ptime: int | None
    """The remote's a=ptime in milliseconds, None when it gave none."""
    stream_index: int
    """Index of the audio stream among the m= lines."""

    def __post_init__(self) -> None:
        for pt in (self.local_pt, self.remote_pt, self.local_te_pt, self.remote_te_pt):
            if pt is not None and not 0 <= pt <= 127:
                raise LocalProtocolError(f"payload type {pt} is not in 0-127")
        if (self.local_te_pt is None) != (self.remote_te_pt is None):
            raise LocalProtocolError("telephone-event is negotiated on both sides or on neither")
        _check_port(self.remote_port, "remote port")
        _check_port(self.remote_rtcp_port, "remote RTCP port")

    @property
    def send(self) -> bool:
        """mss may send media to the remote (both directions allow it)."""
        return self.local_direction.sends and self.remote_direction.receives

    @property
    def receive(self) -> bool:
        """The remote may send media to mss (both directions allow it)."""
        return self.local_direction.receives and self.remote_direction.sends


def _is_usable_audio(media: MediaDescription) -> bool:
    # Plain RTP only: mss writes ringback into the stream and forwards packets as they are, so it
    # can neither key SRTP (RTP/SAVP) nor answer feedback (RTP/AVPF).
    return media.media == "audio" and media.port != 0 and media.proto.upper() == "RTP/AVP"


def _audio_index(sd: SessionDescription) -> int | None:
    """The first usable audio stream: the one mss uses; every other stream is rejected."""
    for index, media in enumerate(sd.media):
        if _is_usable_audio(media):
            return index
    return None


def _remote_address(sd: SessionDescription, media: MediaDescription) -> Connection:
    conn = sd.connection_for(media)
    if conn is None:  # parse_sdp already refuses this; a hand-built description may not
        raise SdpError("the audio stream has no c= address")
    try:
        ip = ipaddress.ip_address(conn.address)
    except ValueError:
        raise SdpError(f"c= address {_shown(conn.address)} is not an IP address") from None
    if ip.version != (4 if conn.addrtype == "IP4" else 6):
        raise SdpError(f"c= address {_shown(conn.address)} is not an {conn.addrtype} address")
    return conn


def _effective_remote_direction(
    sd: SessionDescription, media: MediaDescription, conn: Connection
) -> Direction:
    direction = sd.direction_of(media)
    if conn.is_null:
        # RFC 3264 §8.4: "the offerer ... sets the connection address to 0.0.0.0" was RFC 2543's
        # hold; media cannot be sent to that address, so the remote does not receive.
        direction = Direction.from_flags(send=direction.sends, receive=False)
    return direction


def _remote_rtcp(media: MediaDescription, conn: Connection) -> tuple[str, int]:
    rtcp = media.rtcp
    if rtcp is None:
        # RFC 3550 §11: "the RTCP port SHOULD be the next higher (odd) port number".
        return conn.address, min(media.port + 1, 65535)
    port, address = rtcp
    return address or conn.address, port


def _telephone_event(codecs: Mapping[int, Codec], clock_rate: int) -> tuple[int, Codec] | None:
    # RFC 4733 §2.1: telephone-event runs at the clock rate of the audio it goes with.
    for pt, codec in codecs.items():
        if codec.is_telephone_event and codec.clock_rate == clock_rate:
            return pt, codec
    return None


def _names(codecs: Mapping[int, Codec]) -> str:
    return ", ".join(str(codec) for codec in codecs.values()) or "nothing"


def read_answer(offer: SessionDescription, answer: SessionDescription) -> Negotiated:
    """Read the remote's answer to our ``offer``; raise :class:`~mss.errors.SdpError` when unusable.

    The answer must keep the offer's m= lines (RFC 3264 §6: "The answer MUST contain exactly the same
    number of "m=" lines as the offer"), accept our audio stream, and choose a codec we offered (by
    encoding; the answer's payload-type number may differ from ours).
    """
    index = _audio_index(offer)
    if index is None:
        raise LocalProtocolError("our offer has no RTP/AVP audio stream")
    if len(answer.media) != len(offer.media):
        raise SdpError(f"the answer has {len(answer.media)} m= lines for the {len(offer.media)} of the offer")
    ours, theirs = offer.media[index], answer.media[index]
    if theirs.port == 0:
        raise SdpError("the answer rejected the audio stream (port 0)")
    if theirs.media != ours.media or theirs.proto.upper() != ours.proto.upper():
        raise SdpError(
            f"the answer's stream {index + 1} is m={theirs.media} {theirs.proto}, "
            f"not m={ours.media} {ours.proto}"
        )
    offered = ours.codecs
    answered = theirs.codecs
    chosen: tuple[int, int, Codec] | None = None
    for remote_pt, codec in answered.items():
        if codec.is_telephone_event:
            continue
        local_pt = next(
            (pt for pt, mine in offered.items() if mine.same_encoding(codec)),
            None,
        )
        if local_pt is not None:
            chosen = local_pt, remote_pt, codec
            break
    if chosen is None:
        audio = {pt: c for pt, c in offered.items() if not c.is_telephone_event}
        raise SdpError(
            f"the answer chose no codec of the offer (offered {_names(audio)}; answered {_names(answered)})"
        )
    local_pt, remote_pt, codec = chosen
    local_te = _telephone_event(offered, codec.clock_rate)
    remote_te = _telephone_event(answered, codec.clock_rate)
    if local_te is None or remote_te is None:
        local_te = remote_te = None
    conn = _remote_address(answer, theirs)
    remote_direction = _effective_remote_direction(answer, theirs, conn)
    rtcp_address, rtcp_port = _remote_rtcp(theirs, conn)
    return Negotiated(
        codec=codec,
        local_pt=local_pt,
        remote_pt=remote_pt,
        local_te_pt=None if local_te is None else local_te[0],
        remote_te_pt=None if remote_te is None else remote_te[0],
        remote_address=conn.address,
        remote_port=theirs.port,
        remote_rtcp_address=rtcp_address,
        remote_rtcp_port=rtcp_port,
        local_direction=offer.direction_of(ours),
        remote_direction=remote_direction,
        hold=_is_hold(answer.direction_of(theirs), conn),
        ptime=theirs.ptime,
        stream_index=index,
    )


def _is_hold(direction: Direction, conn: Connection) -> bool:
    # RFC 3264 §8.4: a stream is put on hold by marking it sendonly (or inactive, when it was
    # recvonly); RFC 2543 did it with c=0.0.0.0.
    return not direction.receives or conn.is_null


def _local_connection(host: str) -> Connection:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise LocalProtocolError(f"local media host {host!r} is not an IP address") from None
    return Connection(addrtype="IP4" if ip.version == 4 else "IP6", address=ip.compressed)


def _audio_section(
    *,
    port: int,
    codecs: Sequence[tuple[int, Codec]],
    telephone_event: tuple[int, str] | None,
    ptime: int | None,
    direction: Direction,
) -> MediaDescription:
    formats = [str(pt) for pt, _ in codecs]
    attributes = []
    for pt, codec in codecs:
        attributes.append(Attribute(name="rtpmap", value=f"{pt} {codec}"))
        if codec.fmtp is not None:
            attributes.append(Attribute(name="fmtp", value=f"{pt} {codec.fmtp}"))
    if telephone_event is not None:
        te_pt, events = telephone_event
        if te_pt in {pt for pt, _ in codecs}:
            raise LocalProtocolError(f"telephone-event payload type {te_pt} is taken by a codec")
        formats.append(str(te_pt))
        # RFC 4733 §2.1: telephone-event runs at the clock rate of the audio it goes with.
        rate = codecs[0][1].clock_rate if codecs else 8000
        attributes.append(Attribute(name="rtpmap", value=f"{te_pt} {TELEPHONE_EVENT}/{rate}"))
        attributes.append(Attribute(name="fmtp", value=f"{te_pt} {events}"))
    if ptime is not None:
        if ptime <= 0:
            raise LocalProtocolError(f"ptime {ptime} is not positive")
        attributes.append(Attribute(name="ptime", value=str(ptime)))
    attributes.append(Attribute(name=direction.value))
    _check_port(port, "local media port")
    return MediaDescription(
        media="audio", port=port, proto="RTP/AVP", formats=tuple(formats), attributes=tuple(attributes)
    )


def _session(
    *, host: str, session_id: int | str, version: int, media: Sequence[MediaDescription]
) -> SessionDescription:
    conn = _local_connection(host)
    return SessionDescription(
        origin=Origin(
            session_id=str(session_id), version=version, addrtype=conn.addrtype, address=conn.address
        ),
        session_name="mss",
        connection=conn,
        media=tuple(media),
    )


def _passthrough(name: str) -> tuple[int, Codec]:
    pt = PASSTHROUGH_CODECS.get(name.upper())
    if pt is None:
        raise LocalProtocolError(f"codec {name!r} is not one mss relays ({', '.join(PASSTHROUGH_CODECS)})")
    return pt, STATIC_PAYLOAD_TYPES[pt]


def _check_te_pt(pt: int | None) -> None:
    if pt is not None and not 96 <= pt <= 127:
        # RFC 3551 §3: dynamic payload types are 96-127; telephone-event has no static one.
        raise LocalProtocolError(f"telephone-event payload type {pt} is not dynamic (96-127)")


def make_offer(
    *,
    host: str,
    port: int,
    codecs: Sequence[str],
    telephone_event_pt: int | None = DEFAULT_TELEPHONE_EVENT_PT,
    session_id: int | str,
    version: int,
    ptime: int | None = 20,
    direction: Direction = Direction.SENDRECV,
    fmtp: Mapping[str, str] | None = None,
) -> SessionDescription:
    """The offer to user1: one audio stream at ``host:port`` with ``codecs`` in order of preference.

    ``codecs`` are names of :data:`PASSTHROUGH_CODECS` (``[callback] audio_codecs``), offered with
    their static payload types; ``telephone_event_pt`` (None: no telephone-event) is offered at
    8000 Hz with events 0-16; ``fmtp`` maps a codec name to its format parameters, e.g.
    ``{"G729": "annexb=no"}`` (without it G.729 implies Annex B, RFC 4856 §2.1.9).
    """
    if isinstance(codecs, str) or not codecs:
        raise LocalProtocolError(f"codecs must be a non-empty sequence of names, not {codecs!r}")
    _check_te_pt(telephone_event_pt)
    params = {name.upper(): value for name, value in (fmtp or {}).items()}
    chosen: list[tuple[int, Codec]] = []
    for name in codecs:
        pt, codec = _passthrough(name)
        if any(pt == other for other, _ in chosen):
            raise LocalProtocolError(f"codec {name!r} is listed twice")
        value = params.get(name.upper())
        chosen.append((pt, codec if value is None else replace(codec, fmtp=value)))
    te = None if telephone_event_pt is None else (telephone_event_pt, DEFAULT_TELEPHONE_EVENTS)
    audio = _audio_section(port=port, codecs=chosen, telephone_event=te, ptime=ptime, direction=direction)
    return _session(host=host, session_id=session_id, version=version, media=[audio])


def make_bridge_offer(
    first_leg: Negotiated,
    *,
    host: str,
    port: int,
    session_id: int | str,
    version: int,
    telephone_event_pt: int | None = None,
    ptime: int | None = 20,
    direction: Direction = Direction.SENDRECV,
) -> SessionDescription:
    """The offer to user2: only the codec user1 chose, plus telephone-event.

    The codec keeps user1's payload type and fmtp, and telephone-event defaults to user1's payload
    type (else :data:`DEFAULT_TELEPHONE_EVENT_PT`), so that in the usual case RTP crosses the relay
    without any rewrite (see :func:`pt_mapping`). ``telephone_event_pt`` overrides the number.
    """
    te_pt = telephone_event_pt
    if te_pt is None:
        te_pt = first_leg.remote_te_pt
        if te_pt is None or te_pt == first_leg.remote_pt or not 96 <= te_pt <= 127:
            te_pt = DEFAULT_TELEPHONE_EVENT_PT
    _check_te_pt(te_pt)
    audio = _audio_section(
        port=port,
        codecs=[(first_leg.remote_pt, first_leg.codec)],
        telephone_event=(te_pt, DEFAULT_TELEPHONE_EVENTS),
        ptime=ptime,
        direction=direction,
    )
    return _session(host=host, session_id=session_id, version=version, media=[audio])


def make_answer(
    offer: SessionDescription,
    *,
    host: str,
    port: int,
    codecs: Sequence[str],
    session_id: int | str,
    version: int,
    direction: Direction = Direction.SENDRECV,
    ptime: int | None = None,
    telephone_event: bool = True,
) -> tuple[SessionDescription, Negotiated]:
    """Answer a far-end offer (a re-INVITE or UPDATE): the answer and what it agrees on.

    The first RTP/AVP audio stream with a port is used; every other stream is rejected with port 0
    (RFC 3264 §6). The codec is the offer's first one whose name is in ``codecs`` (names of
    :data:`PASSTHROUGH_CODECS`), under the offer's payload type and fmtp; telephone-event is
    answered with the offer's payload type and events (RFC 3264 §6.1: "the same payload type number
    SHOULD be used"). ``direction`` is what mss wants for the stream (sendrecv normally); the answer
    mirrors the offer within it (RFC 3264 §6.1): sendonly → recvonly, recvonly → sendonly,
    inactive → inactive. Raises :class:`~mss.errors.SdpError` when nothing is usable (→ 488).
    """
    if isinstance(codecs, str) or not codecs:
        raise LocalProtocolError(f"codecs must be a non-empty sequence of names, not {codecs!r}")
    allowed = [_passthrough(name)[1] for name in codecs]
    index = _audio_index(offer)
    if index is None:
        raise SdpError("the offer has no RTP/AVP audio stream with a port")
    theirs = offer.media[index]
    offered = theirs.codecs
    chosen = next(
        ((pt, codec) for pt, codec in offered.items() if any(codec.same_encoding(mine) for mine in allowed)),
        None,
    )
    if chosen is None:
        audio = {pt: c for pt, c in offered.items() if not c.is_telephone_event}
        raise SdpError(
            f"no codec in common: the offer has {_names(audio)}; mss takes "
            f"{', '.join(str(c) for c in allowed)}"
        )
    pt, codec = chosen
    te = _telephone_event(offered, codec.clock_rate) if telephone_event else None
    te_answer = None
    if te is not None:
        te_answer = te[0], te[1].fmtp or DEFAULT_TELEPHONE_EVENTS
    conn = _remote_address(offer, theirs)
    remote_direction = _effective_remote_direction(offer, theirs, conn)
    # RFC 3264 §6.1: "If a stream is offered as sendonly, the corresponding stream MUST be marked
    # as recvonly or inactive in the answer. If a media stream is listed as recvonly in the offer,
    # the answer MUST be marked as sendonly or inactive in the answer. [...] If an offered media
    # stream is listed as inactive, it MUST be marked as inactive in the answer."
    local_direction = Direction.from_flags(
        send=direction.sends and remote_direction.receives,
        receive=direction.receives and remote_direction.sends,
    )
    media: list[MediaDescription] = []
    for i, offered_media in enumerate(offer.media):
        if i == index:
            media.append(
                _audio_section(
                    port=port,
                    codecs=[(pt, codec)],
                    telephone_event=te_answer,
                    ptime=ptime,
                    direction=local_direction,
                )
            )
        else:
            # RFC 3264 §6: "To reject an offered stream, the port number in the corresponding
            # stream in the answer MUST be set to zero. Any media formats listed are ignored."
            media.append(
                MediaDescription(
                    media=offered_media.media,
                    port=0,
                    proto=offered_media.proto,
                    formats=offered_media.formats,
                )
            )
    answer = _session(host=host, session_id=session_id, version=version, media=media)
    rtcp_address, rtcp_port = _remote_rtcp(theirs, conn)
    negotiated = Negotiated(
        codec=codec,
        local_pt=pt,
        remote_pt=pt,
        local_te_pt=None if te is None else te[0],
        remote_te_pt=None if te is None else te[0],
        remote_address=conn.address,
        remote_port=theirs.port,
        remote_rtcp_address=rtcp_address,
        remote_rtcp_port=rtcp_port,
        local_direction=local_direction,
        remote_direction=remote_direction,
        hold=_is_hold(offer.direction_of(theirs), conn),
        ptime=theirs.ptime,
        stream_index=index,
    )
    return answer, negotiated


def with_direction(sd: SessionDescription, direction: Direction) -> SessionDescription:
    """``sd`` with the direction of its audio stream set to ``direction`` (a re-offer for hold/resume).

    The media-level direction attribute is replaced in place (or added last); a session-level one is
    dropped so that it cannot contradict. Stamp the result with :meth:`LocalSdp.stamp`.
    """
    index = _audio_index(sd)
    if index is None:
        raise LocalProtocolError("the SDP has no RTP/AVP audio stream")
    media = sd.media[index]
    attributes = [a for a in media.attributes if not (a.value is None and a.name in _DIRECTIONS)]
    position = next(
        (i for i, a in enumerate(media.attributes) if a.value is None and a.name in _DIRECTIONS),
        len(attributes),
    )
    attributes.insert(position, Attribute(name=direction.value))
    streams = list(sd.media)
    streams[index] = replace(media, attributes=tuple(attributes))
    session_attributes = tuple(a for a in sd.attributes if not (a.value is None and a.name in _DIRECTIONS))
    return replace(sd, attributes=session_attributes, media=tuple(streams))


def pt_mapping(leg_a: Negotiated, leg_b: Negotiated) -> tuple[dict[int, int], dict[int, int]]:
    """The payload-type rewrites of the relay: ``(a_to_b, b_to_a)``.

    ``a_to_b[pt]`` is the payload type to write into an RTP packet that came from leg A with ``pt``
    before it is sent to leg B (and ``b_to_a`` the other way). Only numbers that change are listed:
    empty maps mean the packets pass untouched. Raises :class:`~mss.errors.SdpError` when the legs
    use different codecs, since mss does not transcode.

    Each direction maps our SDP's numbers on the source leg (what the source sends, RFC 3264 §5.1)
    to the remote SDP's numbers on the destination leg. An endpoint that sends with the numbers of
    its own SDP instead is tolerated: those numbers are mapped too when they mean nothing else.
    """
    if not leg_a.codec.same_encoding(leg_b.codec):
        raise SdpError(
            f"the legs use different codecs ({leg_a.codec} and {leg_b.codec}); mss does not transcode"
        )
    return _one_way(leg_a, leg_b), _one_way(leg_b, leg_a)


def _one_way(source: Negotiated, destination: Negotiated) -> dict[int, int]:
    pairs = [(source.local_pt, destination.remote_pt)]
    if source.local_te_pt is not None and destination.remote_te_pt is not None:
        pairs.append((source.local_te_pt, destination.remote_te_pt))
    mapping = dict(pairs)
    tolerated = [(source.remote_pt, destination.remote_pt)]
    if source.remote_te_pt is not None and destination.remote_te_pt is not None:
        tolerated.append((source.remote_te_pt, destination.remote_te_pt))
    for pt, to in tolerated:
        mapping.setdefault(pt, to)
    return {pt: to for pt, to in mapping.items() if pt != to}


class LocalSdp:
    """The SDPs mss sends on one leg, stamped with one o= line across the dialog (RFC 3264 §8).

    RFC 3264 §8: "the "o=" line of the new SDP MUST be identical to that in the previous SDP,
    except that the version in the origin field MUST increment by one from the previous SDP. If the
    version in the origin line does not increment, the SDP MUST be identical to the SDP with that
    version number." So :meth:`stamp` keeps the first SDP's o= line, reuses the version for an
    identical SDP (a session refresh) and increments it for any change.
    """

    def __init__(self, *, session_id: int | str, version: int | None = None) -> None:
        """``session_id`` identifies the session; ``version`` is the first SDP's (default: the id,
        as pjmedia does, when the id is numeric, else 1)."""
        self.session_id = str(session_id)
        if version is None:
            numeric = _SESSION_VERSION.fullmatch(self.session_id) is not None
            version = int(self.session_id) if numeric else 1
        self.first_version = version
        self.last: SessionDescription | None = None
        """The last SDP stamped, None before the first."""

    def stamp(self, sd: SessionDescription) -> SessionDescription:
        """``sd`` with this leg's o= line and the right version; remembered as :attr:`last`."""
        if self.last is None:
            stamped = replace(
                sd, origin=replace(sd.origin, session_id=self.session_id, version=self.first_version)
            )
        else:
            stamped = replace(sd, origin=self.last.origin)
            if stamped != self.last:
                stamped = replace(sd, origin=replace(self.last.origin, version=self.last.origin.version + 1))
        self.last = stamped
        return stamped
