"""SDP syntax (RFC 8866), sans-IO: a body parsed into frozen dataclasses and written back.

:func:`parse_sdp` turns a body into a frozen :class:`SessionDescription`; ``bytes(sd)`` writes it back
with CRLF line ends in the order of RFC 8866 §5. Every line is kept (attributes in their order,
unknown attributes included), so parse → serialize → parse is stable, and a body that was already in
canonical order comes back byte for byte. Parsing is tolerant where nothing depends on it (LF or
CRLF, blank lines, raw ``b=``/``t=`` values) and strict where something does: the ``m=`` line,
``c=``, ``o=``, and the attributes mss reads (``rtpmap``, ``ptime``, ``maxptime``, ``rtcp`` and the
direction attributes) raise :class:`~mss.errors.SdpError` naming the line.

What the descriptions mean for the two legs of a call (codecs agreed, hold, payload-type rewrites)
is :mod:`mss.sdp.offer_answer`'s business; this module knows nothing of offers and answers.

Errors: :class:`~mss.errors.SdpError` (answered 488) for SDP from the network that mss cannot use;
:class:`~mss.errors.LocalProtocolError` when mss itself builds an invalid description (a bug of ours).
"""

from __future__ import annotations

import enum
import functools
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from mss.errors import LocalProtocolError, SdpError
from mss.frozen import trusted

__all__ = [
    "MAX_SDP_SIZE",
    "MAX_SESSION_VERSION_DIGITS",
    "STATIC_PAYLOAD_TYPES",
    "TELEPHONE_EVENT",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "SessionDescription",
    "Timing",
    "parse_sdp",
]

#: Largest SDP body accepted. An audio offer is well under 2 kB (pjsua2 offering every codec it has
#: is about 1 kB); anything bigger is not a phone talking to a relay.
MAX_SDP_SIZE = 16384

#: The encoding name of RFC 4733 named telephone events (DTMF).
TELEPHONE_EVENT = "telephone-event"


class Direction(enum.StrEnum):
    """A stream's direction attribute (RFC 8866 §6.7), from the point of view of the SDP's author."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        """The author of the SDP sends media."""
        return self in _SENDING

    @property
    def receives(self) -> bool:
        """The author of the SDP receives media."""
        return self in _RECEIVING

    @classmethod
    def from_flags(cls, *, send: bool, receive: bool) -> Direction:
        """The direction that sends and receives as told."""
        if send:
            return cls.SENDRECV if receive else cls.SENDONLY
        return cls.RECVONLY if receive else cls.INACTIVE

    def reverse(self) -> Direction:
        """The same stream seen from the other end: sendonly ↔ recvonly, the others unchanged."""
        return Direction.from_flags(send=self.receives, receive=self.sends)


_SENDING = frozenset({Direction.SENDRECV, Direction.SENDONLY})
_RECEIVING = frozenset({Direction.SENDRECV, Direction.RECVONLY})


def _check_token(value: str, what: str) -> None:
    # A token goes on a line between spaces: an empty one or one with whitespace would change the
    # line's meaning, and a CR or LF would inject a line.
    if not value or _not_token(value):
        raise LocalProtocolError(f"{what} {shown(value)} is not a single token")


# What a token may not hold (one regex search: a generator over the four was a third of an SDP
# attribute's construction).
_not_token = re.compile(r"[ \t\r\n]").search


def _check_text(value: str, what: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise LocalProtocolError(f"{what} {shown(value)} contains a CR, LF or NUL")


def check_port(port: int, what: str) -> None:
    """Refuse a port number outside 0-65535 (our own bug: ports from the network are checked when read)."""
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
        for name, value in (
            ("username", self.username), ("session_id", self.session_id), ("nettype", self.nettype),
            ("addrtype", self.addrtype), ("address", self.address),
        ):
            if not value or _not_token(value):
                _check_token(value, f"o= {name}")  # raises; the message is made only then
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
            raise LocalProtocolError(f"c= network type {shown(self.nettype)} is not IN")
        if self.addrtype not in ("IP4", "IP6"):
            raise LocalProtocolError(f"c= address type {shown(self.addrtype)} is not IP4 or IP6")
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
            raise LocalProtocolError(f"attribute name {shown(self.name)} contains a colon")
        value = self.value
        if value is not None and ("\r" in value or "\n" in value or "\0" in value):
            _check_text(value, f"a={self.name} value")  # the message is made only when it is needed

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
            raise LocalProtocolError(f"encoding name {shown(self.name)} contains a slash")
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
#: An m= line's payload type: every text of 1 to _PT_DIGITS ASCII digits worth 0-127 (leading zeros
#: and all), with its value (one look-up instead of a regex and an int() per format).
_PT_VALUES: Mapping[str, int] = {
    f"{pt:0{width}d}": pt for width in range(1, _PT_DIGITS + 1) for pt in range(min(128, 10**width))
}
#: o=<username> <sess-id> <sess-version> ...: sess-version = 1*DIGIT               (RFC 8866 §9)
SESSION_VERSION = re.compile(rf"[0-9]{{1,{MAX_SESSION_VERSION_DIGITS}}}")


def shown(text: str) -> str:
    """``text`` quoted for an error message (an SDP's or the offer/answer's), cut at :data:`_MAX_SHOWN`
    characters."""
    if len(text) <= _MAX_SHOWN:
        return repr(text)
    return f"{text[:_MAX_SHOWN]!r}... ({len(text)} characters)"


#: The direction attributes' names (RFC 8866 §6.7), flags without a value.
DIRECTION_NAMES = frozenset(d.value for d in Direction)


def _parse_rtpmap(value: str) -> tuple[int, Codec]:
    m = _RTPMAP.fullmatch(value)
    if m is None or int(m[1]) > 127 or int(m[3]) == 0 or m[4] == "0":
        raise SdpError(
            f"bad a=rtpmap value {shown(value)}: expected <payload type 0-127> <encoding>/<clock rate>"
            "[/<channels>]"
        )
    channels = int(m[4] or 1)
    if channels == 0:  # written "00": Codec's own check refuses it, with its message
        return int(m[1]), Codec(name=m[2], clock_rate=int(m[3]), channels=channels)
    # The regex proved the rest: a name without blanks or a slash, a positive clock rate.
    return int(m[1]), _trusted_codec(name=m[2], clock_rate=int(m[3]), channels=channels)


def _parse_rtcp(value: str) -> tuple[int, str | None]:
    m = _RTCP.fullmatch(value)
    if m is None or int(m[1]) > 65535:
        raise SdpError(f"bad a=rtcp value {shown(value)}: expected <port> [IN <IP4|IP6> <address>]")
    return int(m[1]), m[3]


class _Readings(typing.NamedTuple):
    """What the parser read of an m= section's a= lines besides its codecs (each line checked there):
    the first a=rtcp and a=ptime, and the direction attribute."""

    rtcp: tuple[int, str | None] | None
    ptime: int | None
    direction: Direction | None


#: A :class:`_Readings` from a tuple of its three values (NamedTuple's own ``__new__`` is a Python
#: function taking keywords: three times as slow).
_new_readings = functools.partial(tuple.__new__, _Readings)


def _parse_ptime(name: str, value: str) -> int:
    if _PTIME.fullmatch(value) is None or float(value) == 0:
        raise SdpError(f"bad a={name} value {shown(value)}: expected milliseconds")
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
    _codecs: dict[int, Codec] | None = field(default=None, init=False, repr=False, compare=False)
    _readings: _Readings | None = field(default=None, init=False, repr=False, compare=False)
    _attribute_text: tuple[str, ...] | None = field(default=None, init=False, repr=False, compare=False)
    # the a= lines of :attr:`attributes` as :meth:`lines` writes them, when made once already (our
    # audio templates and their copies: see read_once)
    # :attr:`rtcp`, :attr:`ptime` and :attr:`direction` as the parser read them; else read on use
    # :attr:`codecs`, made once (by the parser, which has read the rtpmaps already, or on first use)

    def __post_init__(self) -> None:
        _check_token(self.media, "media type")
        check_port(self.port, "m= port")
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
        readings = self._readings
        return _direction(self.attributes) if readings is None else readings.direction

    @property
    def codecs(self) -> dict[int, Codec]:
        """The payload types of the m= line in its order, mapped to their codecs.

        A payload type is mapped by its ``a=rtpmap`` or else by RFC 3551's static table; a dynamic
        one without ``a=rtpmap`` is left out. ``a=fmtp`` parameters are attached.
        """
        return dict(codec_table(self))  # a copy: the description stays as it was whatever the caller does

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """``a=rtcp`` (RFC 3605): the RTCP port and its address when given, None without the line."""
        if self._readings is not None:
            return self._readings.rtcp
        value = self.attribute("rtcp")
        return None if value is None else _parse_rtcp(value)

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in whole milliseconds, None without the line."""
        if self._readings is not None:
            return self._readings.ptime
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
        if self.bandwidths:
            out += [f"b={bandwidth}" for bandwidth in self.bandwidths]
        if self.key is not None:
            out.append(f"k={self.key}")
        text = self._attribute_text
        out += _attribute_lines(self.attributes) if text is None else text
        return out


def _attribute_lines(attributes: Sequence[Attribute]) -> list[str]:
    """The ``a=`` lines of ``attributes`` (:meth:`Attribute.__str__` written out here: a call per
    attribute would cost as much as the line)."""
    return [f"a={a.name}" if a.value is None else f"a={a.name}:{a.value}" for a in attributes]


def codec_table(media: MediaDescription) -> Mapping[int, Codec]:
    """:attr:`MediaDescription.codecs` without the copy, for readers that do not change it (the
    offer/answer reads every description's codecs once or twice)."""
    codecs = media._codecs
    if codecs is None:
        codecs = _codecs_of(media)
        object.__setattr__(media, "_codecs", codecs)
    return codecs


def read_once(media: MediaDescription) -> MediaDescription:
    """``media`` with its codecs, a=rtcp, a=ptime and direction read now and kept, as the parser keeps
    them, and its a= lines written once: for a description that is copied many times (the
    offer/answer's templates)."""
    codec_table(media)
    if media._readings is None:
        object.__setattr__(media, "_readings", _new_readings((media.rtcp, media.ptime, media.direction)))
    if media._attribute_text is None:
        object.__setattr__(media, "_attribute_text", tuple(_attribute_lines(media.attributes)))
    return media


def _codecs_of(media: MediaDescription) -> dict[int, Codec]:
    """:attr:`MediaDescription.codecs` of a description the parser did not read (built by hand)."""
    if not media.is_rtp:
        return {}
    rtpmaps: dict[int, Codec] = {}
    fmtps: dict[str, str] = {}
    for attr in media.attributes:
        if attr.value is not None:
            _read_codec_attribute(attr.name, attr.value, rtpmaps, fmtps)
    return _codec_map(media.formats, [int(fmt) for fmt in media.formats], rtpmaps, fmtps)


def _codec_map(
    formats: Sequence[str], pts: Sequence[int], rtpmaps: dict[int, Codec], fmtps: dict[str, str]
) -> dict[int, Codec]:
    """The codecs of an RTP stream's ``formats`` (``pts``: their numbers) from its a=rtpmap and
    a=fmtp lines (the first of each payload type), else RFC 3551's static table."""
    result: dict[int, Codec] = {}
    for fmt, pt in zip(formats, pts, strict=True):
        codec = rtpmaps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
        if codec is None or pt in result:
            continue
        params = fmtps.get(fmt)
        # The parameters are an attribute value's (no CR, LF or NUL): nothing to check again.
        result[pt] = codec if params is None else _trusted_codec(
            name=codec.name, clock_rate=codec.clock_rate, channels=codec.channels, fmtp=params
        )
    return result


def _read_codec_attribute(name: str, value: str, rtpmaps: dict[int, Codec], fmtps: dict[str, str]) -> None:
    """Note an a=rtpmap's codec or an a=fmtp's parameters (the first of each payload type)."""
    if name == "rtpmap":
        pt, codec = _parse_rtpmap(value)
        rtpmaps.setdefault(pt, codec)
    elif name == "fmtp":
        fmt, _, text = value.partition(" ")
        fmtps.setdefault(fmt, text.strip())


#: Each direction by its attribute's name (a dict lookup: ``Direction(name)`` is a Python-level call).
_DIRECTION_BY_NAME: Mapping[str, Direction] = {d.value: d for d in Direction}


def _direction(attributes: Sequence[Attribute]) -> Direction | None:
    for attr in attributes:
        if attr.value is None:
            direction = _DIRECTION_BY_NAME.get(attr.name)
            if direction is not None:
                return direction
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
        if self.emails:
            out += [f"e={email}" for email in self.emails]
        if self.phones:
            out += [f"p={phone}" for phone in self.phones]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        if self.bandwidths:
            out += [f"b={bandwidth}" for bandwidth in self.bandwidths]
        for timing in self.times:
            out.append(f"t={timing.value}")
            if timing.repeats:
                out += [f"r={repeat}" for repeat in timing.repeats]
        if self.timezone is not None:
            out.append(f"z={self.timezone}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out += _attribute_lines(self.attributes)
        for media in self.media:
            out += media.lines()
        return out

    def to_bytes(self) -> bytes:
        """The body as it goes on the wire: every line ended by CRLF (RFC 8866 §5)."""
        lines = self.lines()
        lines.append("")  # the last line's CRLF
        return "\r\n".join(lines).encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.to_bytes()

# --------------------------------------------------------------------------------------------------
# Values known valid
# --------------------------------------------------------------------------------------------------

# A frozen dataclass's __init__ sets each field through object.__setattr__, then __post_init__ checks
# them all again. Values whose every field is already known valid (a token cut by str.split(), a
# number matched by a bounded regex, a text from a body without a stray CR or NUL, our own constants)
# are built by setting the slots directly instead (mss.frozen.trusted): the same objects, several
# times cheaper. Values from anywhere else go through __init__ and its checks.

_T = typing.TypeVar("_T")


def trusted_copy(obj: _T, **changes: object) -> _T:
    """:func:`dataclasses.replace` without the checks, for changes known valid (our own numbers, or
    fields of another checked value). Like ``replace``, fields that are not ``__init__`` arguments
    (the cached codecs of a :class:`MediaDescription`) start again from their defaults."""
    make, names = _TRUSTED_BY_CLASS[type(obj)]
    values = {name: getattr(obj, name) for name in names}
    values.update(changes)
    return make(**values)  # type: ignore[return-value]


_trusted_codec = trusted(Codec)
_trusted_attribute = trusted(Attribute)
_trusted_origin = trusted(Origin)
_trusted_connection = trusted(Connection)
_trusted_timing = trusted(Timing)
_trusted_media = trusted(MediaDescription)
_trusted_session = trusted(SessionDescription)
#: Each class's trusted constructor and ``__init__`` fields, for :func:`trusted_copy`.
_TRUSTED_BY_CLASS: dict[type, tuple[Callable[..., object], tuple[str, ...]]] = {
    cls: (make, tuple(f.name for f in fields(cls) if f.init))
    for cls, make in (
        (Codec, _trusted_codec), (Attribute, _trusted_attribute), (Origin, _trusted_origin),
        (Connection, _trusted_connection), (Timing, _trusted_timing), (MediaDescription, _trusted_media),
        (SessionDescription, _trusted_session),
    )
}


def _attribute_line(make: Callable[..., Attribute], value: str) -> Attribute | None:
    """The attribute of an a= line's ``value`` built by ``make`` (:class:`Attribute`, checking; or
    its trusted constructor for a trusted body, where only the name needs this check), None when it
    has no valid name."""
    name, colon, rest = value.partition(":")
    if not name or " " in name or "\t" in name:
        return None
    return make(name=name, value=rest if colon else None)


_checked_attribute_line = functools.partial(_attribute_line, Attribute)
_trusted_attribute_line = functools.partial(_attribute_line, _trusted_attribute)


# A phone writes most of its a= lines (rtpmap, fmtp, the direction, ptime) the same in every SDP: their
# readings are kept, made once per value (Attribute and Codec are immutable; exceptions are not kept,
# so a bad value raises every time). Its ssrc and rtcp lines differ every time and pass through.

#: Attribute lines kept, and a=rtpmap values: bounded, as they come from SDP.
_ATTRIBUTE_CACHE = 512
_RTPMAP_CACHE = 256
#: Longest line of a body whose values are kept: a phone's lines are far shorter; a body with a
#: longer one is read without the caches, so that they hold at most their sizes times this.
_MAX_KEPT_LINE = 128

_kept_attribute_line = functools.lru_cache(maxsize=_ATTRIBUTE_CACHE)(_trusted_attribute_line)
_kept_rtpmap = functools.lru_cache(maxsize=_RTPMAP_CACHE)(_parse_rtpmap)


class _Builders(typing.NamedTuple):
    """What the parser builds a body's values with (see parse_sdp): checking constructors, trusting
    ones, or trusting ones that keep what they read."""

    attribute_line: Callable[[str], Attribute | None]
    rtpmap: Callable[[str], tuple[int, Codec]]
    timing: Callable[..., Timing]
    media: Callable[..., MediaDescription]
    session: Callable[..., SessionDescription]


def _checked_media(
    *, _codecs: dict[int, Codec], _readings: _Readings, **fields: typing.Any
) -> MediaDescription:
    """A :class:`MediaDescription` through its checks, with what the parser read of it kept (as the
    trusted constructor takes them)."""
    media = MediaDescription(**fields)
    object.__setattr__(media, "_codecs", _codecs)
    object.__setattr__(media, "_readings", _readings)
    return media


_CHECKING = _Builders(
    _checked_attribute_line, _parse_rtpmap, Timing, _checked_media, SessionDescription
)
_TRUSTING = _Builders(
    _trusted_attribute_line, _parse_rtpmap, _trusted_timing, _trusted_media, _trusted_session
)
_KEEPING = _TRUSTING._replace(attribute_line=_kept_attribute_line, rtpmap=_kept_rtpmap)


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------

_TYPE_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")
_SESSION_TYPES = frozenset("vosiuepcbtrzka")
_MEDIA_TYPES = frozenset("icbka")


class _Level:
    """The a= lines of one level (the session, or one m= section) while they are read."""

    __slots__ = ("attributes", "direction", "fmtps", "ptime", "rtcp", "rtpmaps")

    def __init__(self) -> None:
        self.attributes: list[Attribute] = []
        self.direction: Direction | None = None  # the level's direction attribute, once read
        self.rtpmaps: dict[int, Codec] = {}  # the first a=rtpmap of each payload type, as read
        self.fmtps: dict[str, str] = {}  # the first a=fmtp of each format, as read
        self.rtcp: tuple[int, str | None] | None = None  # the first a=rtcp, as read
        self.ptime: int | None = None  # the first a=ptime, as read


class _MediaBuilder(_Level):
    """The lines of one m= section while it is being read."""

    __slots__ = ("bandwidths", "connection", "information", "key", "lineno", "m_value")

    def __init__(self, lineno: int, m_value: str) -> None:
        _Level.__init__(self)  # (a zero-argument super() costs as much as the rest of this)
        self.lineno = lineno
        self.m_value = m_value
        self.information: str | None = None
        self.connection: Connection | None = None
        self.bandwidths: list[str] = []
        self.key: str | None = None


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse an SDP body; raise :class:`~mss.errors.SdpError` with the reason when it is unusable.

    Lines may end with CRLF or LF (RFC 8866 §5: "a parser SHOULD be tolerant and also accept
    records terminated with a single newline character"); blank lines are skipped.
    """
    if len(data) > MAX_SDP_SIZE:
        raise SdpError(f"SDP body of {len(data)} bytes is over the limit of {MAX_SDP_SIZE}")
    # Text fields may be in another charset (a=charset); surrogateescape keeps their bytes intact.
    text = data.decode("utf-8", "surrogateescape")
    # In a body whose only CRs end lines and that has no NUL, no text cut from a line holds a CR, LF
    # or NUL, all that the dataclasses refuse in a text; every token is cut by str.split() or
    # checked for blanks here, every number by a bounded regex. Its values are built without the
    # dataclasses' checks, which could only pass (the usual case). Any other body is built through
    # the checks, which refuse its odd texts with their own messages.
    crlf = text.count("\r\n")
    trusting = "\0" not in text and text.count("\r") == crlf
    if trusting and text.count("\n") == crlf:  # every line ends with CRLF (the usual): split there
        lines = text.split("\r\n")
    else:
        lines = [line.removesuffix("\r") for line in text.split("\n")]
    # Blank lines are skipped (the usual body has none before v=0).
    first = 0 if lines[0] else next((n for n, line in enumerate(lines) if line), None)
    if first is None:
        raise SdpError("empty SDP body")
    if lines[first] != "v=0":
        raise SdpError(f"line {first + 1}: an SDP body begins with v=0, not {shown(lines[first])}")
    if not trusting:
        make = _CHECKING
    elif max(map(len, lines)) <= _MAX_KEPT_LINE:  # the usual: short lines, their values kept
        make = _KEEPING
    else:
        make = _TRUSTING
    try:
        return _parse_lines(lines, first + 1, make)
    except LocalProtocolError as exc:  # a value the dataclasses refuse, e.g. a CR inside a line
        raise SdpError(str(exc)) from None


def _parse_lines(lines: list[str], start: int, make: _Builders) -> SessionDescription:
    """The body from ``lines[start]`` on, the line after v=0 (line numbers count from 1)."""
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
    session = _Level()
    media: list[_MediaBuilder] = []
    level: _Level = session  # where a= lines go: the session, then the last m= section
    attribute_line = make.attribute_line

    for n, line in enumerate(lines[start:], start + 1):
        kind, equals, value = line.partition("=")
        if kind == "a" and equals:  # most lines (first, so they pass the fewest tests): at both levels
            attr = attribute_line(value)
            if attr is None:
                raise SdpError(f"line {n}: bad a= line {shown('a=' + value)}: expected <name>[:<value>]")
            if attr.name in _READ_ATTRIBUTES:  # else (most lines) kept as written
                _read_attribute(n, attr, level, make)
            level.attributes.append(attr)
            continue
        if not line:
            continue
        if kind not in _TYPE_LETTERS or not equals:  # <type>=<value>, type one letter a-z
            raise SdpError(f"line {n}: {shown(line)} is not a <type>=<value> line")
        # RFC 8866 §5: "An SDP parser MUST completely ignore or reject any session description
        # that contains a type letter that it does not understand."
        if kind not in _SESSION_TYPES and kind != "m":
            raise SdpError(f"line {n}: unknown SDP line type {kind!r}")
        if kind == "m":
            level = _MediaBuilder(n, value)
            media.append(level)
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
        else:  # i, u, z, k
            if kind in single:
                raise SdpError(f"line {n}: a second session-level {kind}= line")
            single[kind] = value

    if origin is None:
        raise SdpError("the SDP body has no o= line")
    descriptions = tuple([_build_media(builder, connection, make) for builder in media])
    return make.session(
        origin=origin,
        session_name="-" if session_name is None else session_name,
        information=single.get("i"),
        uri=single.get("u"),
        emails=tuple(emails),
        phones=tuple(phones),
        connection=connection,
        bandwidths=tuple(bandwidths),
        times=_times(times, make),
        timezone=single.get("z"),
        key=single.get("k"),
        attributes=tuple(session.attributes),
        media=descriptions,
    )


#: The times of a body without t= lines, and of one with the usual ``t=0 0`` alone (made once).
_DEFAULT_TIMES = (Timing(),)


def _times(times: list[tuple[str, list[str]]], make: _Builders) -> tuple[Timing, ...]:
    """The body's t= values with their r= values as :class:`Timing` values."""
    if not times or (len(times) == 1 and times[0][0] == "0 0" and not times[0][1]):
        return _DEFAULT_TIMES
    return tuple([make.timing(value=t, repeats=tuple(r)) for t, r in times])


def _parse_origin(n: int, value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(
            f"line {n}: bad o= line {shown('o=' + value)}: expected <username> <sess-id> <sess-version> "
            "<nettype> <addrtype> <address>"
        )
    if SESSION_VERSION.fullmatch(parts[2]) is None:
        if parts[2].isascii() and parts[2].isdigit():
            raise SdpError(
                f"line {n}: bad o= line {shown('o=' + value)}: session version of {len(parts[2])} digits is "
                f"longer than {MAX_SESSION_VERSION_DIGITS} (RFC 3264 §5: a 64-bit integer)"
            )
        raise SdpError(
            f"line {n}: bad o= line {shown('o=' + value)}: session version {shown(parts[2])} is not a number"
        )
    # Tokens cut by str.split() (no blanks), a version of digits: nothing Origin would refuse.
    return _trusted_origin(
        username=parts[0],
        session_id=parts[1],
        version=int(parts[2]),
        nettype=parts[3],
        addrtype=parts[4],
        address=parts[5],
    )


def _parse_connection(n: int, value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpError(f"line {n}: bad c= line {shown('c=' + value)}: expected IN <IP4|IP6> <address>")
    if parts[0] != "IN":
        raise SdpError(
            f"line {n}: bad c= line {shown('c=' + value)}: network type {shown(parts[0])} is not IN"
        )
    if parts[1] not in ("IP4", "IP6"):
        raise SdpError(
            f"line {n}: bad c= line {shown('c=' + value)}: address type {shown(parts[1])} is not IP4 or IP6"
        )
    # Checked above, and an address cut by str.split(): nothing Connection would refuse.
    return _trusted_connection(addrtype=parts[1], address=parts[2])


#: The attributes the parser reads (and so checks) besides keeping them.
_READ_ATTRIBUTES = frozenset({"rtpmap", "fmtp", "rtcp", "ptime", "maxptime", *DIRECTION_NAMES})


def _read_attribute(n: int, attr: Attribute, level: _Level, make: _Builders) -> None:
    """Read (and so check) an a= line of :data:`_READ_ATTRIBUTES` into ``level``."""
    name, rest = attr.name, attr.value
    try:
        if name == "rtpmap":
            pt, codec = make.rtpmap(rest or "")
            level.rtpmaps.setdefault(pt, codec)
        elif name == "fmtp":
            if rest is not None:
                _read_codec_attribute(name, rest, level.rtpmaps, level.fmtps)
        elif name == "rtcp":
            rtcp = _parse_rtcp(rest or "")
            if level.rtcp is None:
                level.rtcp = rtcp
        elif name in ("ptime", "maxptime"):
            ptime = _parse_ptime(name, rest or "")
            if name == "ptime" and level.ptime is None:
                level.ptime = ptime
        elif name in DIRECTION_NAMES:
            if rest is not None:
                raise SdpError(f"a={name} takes no value")
            # RFC 8866 §6.7: one direction per level; two of them leave the direction unknown.
            if level.direction is not None:
                raise SdpError(f"a={name} after a={level.direction}: two direction attributes")
            level.direction = _DIRECTION_BY_NAME[name]
    except SdpError as exc:
        raise SdpError(f"line {n}: {exc.reason}") from None


def _build_media(
    builder: _MediaBuilder, session_connection: Connection | None, make: _Builders
) -> MediaDescription:
    n, value = builder.lineno, builder.m_value
    parts = value.split()
    if len(parts) < 4:
        raise _bad_m_line(n, value, "expected <media> <port> <proto> <format> ...")
    media_type, port_text, proto, formats = parts[0], parts[1], parts[2], tuple(parts[3:])
    count = None
    if port_text.isascii() and port_text.isdigit() and len(port_text) <= _PORT_DIGITS:
        port = int(port_text)  # the usual: a port alone (what _PORT matches without a "/<count>")
    else:
        port_match = _PORT.fullmatch(port_text)
        if port_match is None:
            raise _bad_m_line(n, value, f"port {shown(port_text)} is not a number")
        port = int(port_match[1])
        count = None if port_match[2] is None else int(port_match[2])
    if port > 65535:
        raise _bad_m_line(n, value, f"port {port} is out of range")
    if count == 0:
        raise _bad_m_line(n, value, "number of ports is 0")
    rtp = proto.upper().startswith("RTP/")
    pts: list[int] = []
    if rtp:
        for fmt in formats:
            pt = _PT_VALUES.get(fmt)
            if pt is None:
                raise _bad_m_line(n, value, f"payload type {shown(fmt)} is not a number 0-127")
            pts.append(pt)
    # RFC 8866 §5.7: a c= line is required in every media section or at session level. A rejected
    # stream (port 0) carries no media, so its missing address harms nobody.
    if port != 0 and builder.connection is None and session_connection is None:
        raise SdpError(f"line {n}: no c= line for the m={media_type} stream, nor at session level")
    return make.media(
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
        # What the parser read already, kept so that nobody reads it again.
        _codecs=_codec_map(formats, pts, builder.rtpmaps, builder.fmtps) if rtp else {},
        _readings=_new_readings((builder.rtcp, builder.ptime, builder.direction)),
    )


def _bad_m_line(n: int, value: str, why: str) -> SdpError:
    return SdpError(f"line {n}: bad m= line {shown('m=' + value)}: {why}")
