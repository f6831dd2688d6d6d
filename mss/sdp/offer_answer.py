"""The offer/answer model (RFC 3264) for the two legs of a callback, sans-IO.

mss relays media without transcoding, so negotiation only has to agree on one codec per leg, the
telephone-event payload type, the remote media address and the direction:

- :func:`make_offer` builds the offer to user1 from ``[callback] audio_codecs``;
  :func:`read_answer` reads user1's answer into a :class:`Negotiated`.
- :func:`make_bridge_offer` builds the offer to user2: only the codec user1 chose (same payload
  type, same fmtp) plus telephone-event, so RTP passes between the legs untouched.
- :func:`make_answer` answers a far-end offer (re-INVITE, UPDATE): hold, resume, a new address.
- :func:`with_direction` re-offers a stream with another direction (hold, resume).
- :func:`pt_mapping` gives the relay the payload-type rewrite between the legs, if any.
- :class:`LocalSdp` stamps the ``o=`` line of one leg's successive SDPs (RFC 3264 §8).

SRTP passthrough: given ``crypto`` lines, offers are RTP/SAVP with them verbatim, answers to them
must accept one of them (RFC 4568 §5.1.2) and :attr:`Negotiated.crypto` is the remote's key line;
without, only RTP/AVP is offered and taken (:mod:`mss.sdp.crypto` checks the lines).

A far-end SDP that repeats the previous one (a session refresh) compares equal to it; the caller
may skip renegotiating then (RFC 3264 §8: "If the version in the origin line does not increment,
the SDP MUST be identical to the SDP with that version number").

Payload-type numbers follow RFC 3264 §5.1: "For sendrecv RTP streams, the payload type numbers
indicate the value of the payload type field in RTP packets the offerer is expecting to receive for
that codec." So on each leg RTP *from* the remote carries the numbers of *our* SDP
(:attr:`Negotiated.local_pt`), and RTP *to* the remote carries the numbers of *its* SDP
(:attr:`Negotiated.remote_pt`).

The descriptions themselves (parse, serialize) are :mod:`mss.sdp.syntax`'s.

Errors: :class:`~mss.errors.SdpError` (answered 488) for SDP from the network that mss cannot use;
:class:`~mss.errors.LocalProtocolError` when mss itself asks for an invalid SDP (a bug of ours).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from mss.errors import LocalProtocolError, SdpError
from mss.frozen import trusted
from mss.sdp.crypto import CryptoLine, answer_lines, crypto_lines
from mss.sdp.syntax import (
    DIRECTION_NAMES,
    MAX_SESSION_VERSION_DIGITS,
    SESSION_VERSION,
    STATIC_PAYLOAD_TYPES,
    TELEPHONE_EVENT,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
    check_port,
    codec_table,
    read_once,
    shown,
    trusted_copy,
)

__all__ = [
    "DEFAULT_TELEPHONE_EVENTS",
    "DEFAULT_TELEPHONE_EVENT_PT",
    "PASSTHROUGH_CODECS",
    "LocalSdp",
    "Negotiated",
    "make_answer",
    "make_bridge_offer",
    "make_offer",
    "pt_mapping",
    "read_answer",
    "with_direction",
]

#: The telephone-event payload type mss puts in its own offers (the common choice of phones and SBCs).
DEFAULT_TELEPHONE_EVENT_PT = 101

#: The events mss declares for telephone-event: the 16 DTMF events and flash (RFC 4733 §3.2).
DEFAULT_TELEPHONE_EVENTS = "0-16"

#: The codecs mss relays untouched, by configuration name, with their static payload type.
PASSTHROUGH_CODECS: Mapping[str, int] = {"PCMU": 0, "PCMA": 8, "G729": 18}


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
    crypto: str | None = None
    """SRTP (RTP/SAVP) only: the remote's a=crypto value, verbatim: the key it sends with (RFC 4568:
    in an answer, its one line; in an offer, the offered line mss accepted). None on plain RTP."""

    def __post_init__(self) -> None:
        # A Negotiated that mss reads from SDP is built without these checks (_negotiated): its
        # numbers come from a checked description. Values made anywhere else go through them.
        for pt in (self.local_pt, self.remote_pt, self.local_te_pt, self.remote_te_pt):
            if pt is not None and not 0 <= pt <= 127:
                raise LocalProtocolError(f"payload type {pt} is not in 0-127")
        if (self.local_te_pt is None) != (self.remote_te_pt is None):
            raise LocalProtocolError("telephone-event is negotiated on both sides or on neither")
        check_port(self.remote_port, "remote port")
        check_port(self.remote_rtcp_port, "remote RTCP port")

    @property
    def send(self) -> bool:
        """mss may send media to the remote (both directions allow it)."""
        return self.local_direction.sends and self.remote_direction.receives

    @property
    def receive(self) -> bool:
        """The remote may send media to mss (both directions allow it)."""
        return self.local_direction.receives and self.remote_direction.sends


#: The RTP profile of a stream by whether it is SRTP (RFC 3711 §12: RTP/SAVP).
_PROFILE = {False: "RTP/AVP", True: "RTP/SAVP"}


def _is_usable_audio(media: MediaDescription, secure: bool) -> bool:
    # One profile per call: plain RTP/AVP (mss may write ringback into it and rewrite payload types),
    # or RTP/SAVP with SRTP passthrough (forwarded untouched, keys carried between the phones). mss
    # answers no feedback (RTP/AVPF, RTP/SAVPF).
    return media.media == "audio" and media.port != 0 and media.proto.upper() == _PROFILE[secure]


def _audio_index(sd: SessionDescription, secure: bool = False) -> int | None:
    """The first usable audio stream: the one mss uses; every other stream is rejected."""
    for index, media in enumerate(sd.media):
        if _is_usable_audio(media, secure):
            return index
    return None


def _our_audio(sd: SessionDescription) -> tuple[int, bool]:
    """The audio stream of an SDP of ours and whether it is SRTP."""
    for secure in (False, True):
        index = _audio_index(sd, secure)
        if index is not None:
            return index, secure
    raise LocalProtocolError("our SDP has no RTP/AVP or RTP/SAVP audio stream")


#: Media addresses whose IP version is kept (:func:`_ip_version`), and local ones whose c= line is:
#: a carrier's media comes from a few gateways, and ours is one address; bounded, as they come
#: from SDP.
REMOTE_ADDRESSES = 1024
LOCAL_CONNECTIONS = 16


@functools.lru_cache(maxsize=REMOTE_ADDRESSES)
def _ip_version(address: str) -> int | None:
    """4 or 6 for an IP literal, None for anything else."""
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return None


def _remote_address(sd: SessionDescription, media: MediaDescription) -> Connection:
    conn = sd.connection_for(media)
    if conn is None:  # parse_sdp already refuses this; a hand-built description may not
        raise SdpError("the audio stream has no c= address")
    version = _ip_version(conn.address)
    if version is None:
        raise SdpError(f"c= address {shown(conn.address)} is not an IP address")
    if version != (4 if conn.addrtype == "IP4" else 6):
        raise SdpError(f"c= address {shown(conn.address)} is not an {conn.addrtype} address")
    return conn


def _check_family(remote: Connection, local_address: str) -> None:
    """mss has one media address: a remote address of the other IP version cannot be reached from
    it (no ANAT, RFC 4091, nor ICE). An RFC 2543 hold (``0.0.0.0``) is a direction, not a place,
    and passes."""
    local = _ip_version(local_address)
    if local is None or _ip_version(remote.address) in (None, local):
        return
    if ipaddress.ip_address(remote.address).is_unspecified:
        return
    raise SdpError(
        f"c= address {shown(remote.address)} is {remote.addrtype}; mss's media address "
        f"{local_address} is IP{local}"
    )


def _effective_remote_direction(direction: Direction, conn: Connection) -> Direction:
    """The remote's ``direction`` as it can be: a null address does not receive."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class _RemoteStream:
    """The remote's audio stream, read from its SDP (its answer to us, or its offer)."""

    index: int
    """Index of the stream among the m= lines."""
    media: MediaDescription
    connection: Connection
    """Its address, checked to be an IP literal of its address type."""
    direction: Direction
    """Its direction, a null address counting as not receiving (:func:`_effective_remote_direction`)."""
    hold: bool
    """It puts the stream on hold (:func:`_is_hold`)."""


_trusted_remote_stream = trusted(_RemoteStream)
_trusted_negotiated = trusted(Negotiated)
_trusted_origin = trusted(Origin)
_trusted_media = trusted(MediaDescription)
_trusted_session = trusted(SessionDescription)


def _remote_stream(sd: SessionDescription, index: int) -> _RemoteStream:
    media = sd.media[index]
    conn = _remote_address(sd, media)
    direction = sd.direction_of(media)
    return _trusted_remote_stream(
        index=index,
        media=media,
        connection=conn,
        direction=_effective_remote_direction(direction, conn),
        hold=_is_hold(direction, conn),
    )


def _negotiated(
    remote: _RemoteStream,
    *,
    codec: Codec,
    pts: tuple[int, int],
    te_pts: tuple[int, int] | None,
    local_direction: Direction,
    crypto: str | None,
) -> Negotiated:
    """The one place a :class:`Negotiated` is built, for an answer read and an answer made alike.

    ``pts`` and ``te_pts`` are the (ours, theirs) payload types of the codec and of telephone-event.
    Built without Negotiated's checks, which cannot fail here: payload types are keys of a
    description's codecs (0-127), telephone-event is given on both sides or neither, the ports are a
    checked m= port and a=rtcp's (0-65535) or the m= port + 1 (at most 65535).
    """
    rtcp_address, rtcp_port = _remote_rtcp(remote.media, remote.connection)
    return _trusted_negotiated(
        codec=codec,
        local_pt=pts[0],
        remote_pt=pts[1],
        local_te_pt=None if te_pts is None else te_pts[0],
        remote_te_pt=None if te_pts is None else te_pts[1],
        remote_address=remote.connection.address,
        remote_port=remote.media.port,
        remote_rtcp_address=rtcp_address,
        remote_rtcp_port=rtcp_port,
        local_direction=local_direction,
        remote_direction=remote.direction,
        hold=remote.hold,
        ptime=remote.media.ptime,
        stream_index=remote.index,
        crypto=crypto,
    )


def read_answer(offer: SessionDescription, answer: SessionDescription) -> Negotiated:
    """Read the remote's answer to our ``offer``; raise :class:`~mss.errors.SdpError` when unusable.

    The answer must keep the offer's m= lines (RFC 3264 §6: "The answer MUST contain exactly the same
    number of "m=" lines as the offer"), accept our audio stream, and choose a codec we offered (by
    encoding; the answer's payload-type number may differ from ours).
    """
    index, secure = _our_audio(offer)
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
    offered = codec_table(ours)
    answered = codec_table(theirs)
    # Each encoding we offered with its first payload type, and telephone-event by clock rate: the
    # answer's codecs are then matched by one look-up each (Codec.same_encoding, is_telephone_event).
    ours_by_encoding: dict[tuple[str, int, int], int] = {}
    ours_te: dict[int, int] = {}  # RFC 4733 §2.1: telephone-event at the clock rate of its audio
    for pt, mine in offered.items():
        encoding = mine.name.casefold(), mine.clock_rate, mine.channels
        ours_by_encoding.setdefault(encoding, pt)
        if encoding[0] == TELEPHONE_EVENT:
            ours_te.setdefault(mine.clock_rate, pt)
    chosen: tuple[int, int, Codec] | None = None
    theirs_te: dict[int, int] = {}
    for remote_pt, codec in answered.items():
        encoding = codec.name.casefold(), codec.clock_rate, codec.channels
        if encoding[0] == TELEPHONE_EVENT:
            theirs_te.setdefault(codec.clock_rate, remote_pt)
        elif chosen is None:
            local_pt = ours_by_encoding.get(encoding)
            if local_pt is not None:
                chosen = local_pt, remote_pt, codec
    if chosen is None:
        audio = {pt: c for pt, c in offered.items() if not c.is_telephone_event}
        raise SdpError(
            f"the answer chose no codec of the offer (offered {_names(audio)}; answered {_names(answered)})"
        )
    local_pt, remote_pt, codec = chosen
    local_te, remote_te = ours_te.get(codec.clock_rate), theirs_te.get(codec.clock_rate)
    te_pts = None if local_te is None or remote_te is None else (local_te, remote_te)
    remote = _remote_stream(answer, index)
    local_conn = offer.connection_for(ours)
    if local_conn is not None:
        _check_family(remote.connection, local_conn.address)
    return _negotiated(
        remote,
        codec=codec,
        pts=(local_pt, remote_pt),
        te_pts=te_pts,
        local_direction=offer.direction_of(ours),
        # RFC 4568 §5.1.2: the answer accepts one offered line, with its own key.
        crypto=answer_lines(crypto_lines(theirs), crypto_lines(ours)).value if secure else None,
    )


def _is_hold(direction: Direction, conn: Connection) -> bool:
    # RFC 3264 §8.4: a stream is put on hold by marking it sendonly (or inactive, when it was
    # recvonly); RFC 2543 did it with c=0.0.0.0.
    return not direction.receives or conn.is_null


@functools.lru_cache(maxsize=LOCAL_CONNECTIONS)
def _local_connection(host: str) -> Connection:
    # Cached: our media address is the same in every SDP we build (the value is frozen).
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise LocalProtocolError(f"local media host {host!r} is not an IP address") from None
    return Connection(addrtype="IP4" if ip.version == 4 else "IP6", address=ip.compressed)


#: Audio sections kept as templates (:func:`_audio_template`): one per ``audio_codecs`` list and one per
#: codec (with its fmtp) that user1's phones choose, a handful in all; bounded, as the codecs of
#: bridge offers and answers come from SDP.
AUDIO_TEMPLATES = 64
#: Longest fmtp or telephone-event list a kept template holds (phones write a few characters).
_MAX_KEPT_TEXT = 128


@functools.lru_cache(maxsize=AUDIO_TEMPLATES)
def _audio_template(
    codecs: tuple[tuple[int, Codec], ...],
    telephone_event: tuple[int, str] | None,
    ptime: int | None,
    direction: Direction,
) -> MediaDescription:
    """Our audio section but for its port (0 here) and SRTP keys: made and checked once, then every
    offer or answer with these codecs is a copy with its own port (:func:`_audio_section`)."""
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
    return read_once(
        MediaDescription(media="audio", port=0, formats=tuple(formats), attributes=tuple(attributes))
    )


def _audio_section(
    *,
    port: int,
    codecs: Sequence[tuple[int, Codec]],
    telephone_event: tuple[int, str] | None,
    ptime: int | None,
    direction: Direction,
    crypto: Sequence[str] = (),
) -> MediaDescription:
    # A template is kept only when its texts from SDP (a phone's fmtp, its events) are short: the
    # templates then hold a few kilobytes at most, however long such lines come.
    keep = telephone_event is None or len(telephone_event[1]) <= _MAX_KEPT_TEXT
    for _, codec in codecs:
        if codec.fmtp is not None and len(codec.fmtp) > _MAX_KEPT_TEXT:
            keep = False
    template = (_audio_template if keep else _audio_template.__wrapped__)(
        tuple(codecs), telephone_event, ptime, direction
    )
    return _from_template(template, port=port, crypto=crypto)


def _from_template(template: MediaDescription, *, port: int, crypto: Sequence[str]) -> MediaDescription:
    """Our audio section: ``template`` with its own ``port`` and SRTP keys ``crypto``."""
    attributes, text = template.attributes, template._attribute_text
    # SRTP passthrough: the keys are the phones' (or mss's placeholder), each line verbatim; they were
    # checked when read, so a bad one here is ours.
    if crypto:
        text = None  # (its a= lines are written out when it is)
        keys = []
        for line in crypto:
            try:
                keys.append(Attribute(name="crypto", value=CryptoLine.parse(line).value))
            except SdpError as exc:
                raise LocalProtocolError(f"our SDP's {exc.reason}") from None
        attributes += tuple(keys)
    check_port(port, "local media port")
    # The template's fields were checked, the keys and the port just now; the keys change no codec
    # and nothing else the template read (read_once): the copy keeps its readings (shared: immutable).
    return _trusted_media(
        port=port, proto=_PROFILE[bool(crypto)], formats=template.formats, attributes=attributes,
        _codecs=template._codecs, _readings=template._readings, _attribute_text=text,
    )


def _session(
    *, host: str, session_id: int | str, version: int, media: Sequence[MediaDescription]
) -> SessionDescription:
    conn = _local_connection(host)
    # A numeric session id and a version >= 0 are nothing Origin would refuse; the session's
    # other fields are ours. A session id given as text is checked.
    origin = (_trusted_origin if isinstance(session_id, int) and version >= 0 else Origin)(
        session_id=str(session_id), version=version, addrtype=conn.addrtype, address=conn.address
    )
    return _trusted_session(origin=origin, session_name="mss", connection=conn, media=tuple(media))


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
    crypto: Sequence[str] = (),
) -> SessionDescription:
    """The offer to user1: one audio stream at ``host:port`` with ``codecs`` in order of preference.

    ``codecs`` are names of :data:`PASSTHROUGH_CODECS` (``[callback] audio_codecs``), offered with
    their static payload types; ``telephone_event_pt`` (None: no telephone-event) is offered at
    8000 Hz with events 0-16; ``fmtp`` maps a codec name to its format parameters, e.g.
    ``{"G729": "annexb=no"}`` (without it G.729 implies Annex B, RFC 4856 §2.1.9). ``crypto``
    (a=crypto values, SRTP passthrough) makes the stream RTP/SAVP with those lines.
    """
    if isinstance(codecs, str) or not codecs:
        raise LocalProtocolError(f"codecs must be a non-empty sequence of names, not {codecs!r}")
    _check_te_pt(telephone_event_pt)
    te = None if telephone_event_pt is None else (telephone_event_pt, DEFAULT_TELEPHONE_EVENTS)
    template = _offer_template(tuple(codecs), tuple(fmtp.items()) if fmtp else (), te, ptime, direction)
    audio = _from_template(template, port=port, crypto=crypto)
    return _session(host=host, session_id=session_id, version=version, media=[audio])


#: Codec lists of :func:`make_offer` kept (:func:`_offered_codecs`): the configured ``audio_codecs``,
#: one or two in a running mss.
OFFERED_CODEC_LISTS = 16


@functools.lru_cache(maxsize=OFFERED_CODEC_LISTS)
def _offered_codecs(
    codecs: tuple[str, ...], fmtp: tuple[tuple[str, str], ...]
) -> tuple[tuple[int, Codec], ...]:
    """The (payload type, codec) pairs :func:`make_offer` offers for ``codecs`` with ``fmtp``."""
    params = {name.upper(): value for name, value in fmtp}
    chosen: list[tuple[int, Codec]] = []
    for name in codecs:
        pt, codec = _passthrough(name)
        if any(pt == other for other, _ in chosen):
            raise LocalProtocolError(f"codec {name!r} is listed twice")
        value = params.get(name.upper())
        chosen.append((pt, codec if value is None else replace(codec, fmtp=value)))
    return tuple(chosen)


@functools.lru_cache(maxsize=OFFERED_CODEC_LISTS)
def _offer_template(
    codecs: tuple[str, ...],
    fmtp: tuple[tuple[str, str], ...],
    telephone_event: tuple[int, str] | None,
    ptime: int | None,
    direction: Direction,
) -> MediaDescription:
    """:func:`make_offer`'s audio template, found by the names of its codecs (hashing the codecs
    themselves, as :func:`_audio_template` does, is a Python-level call per codec). Every argument
    is from mss's configuration, so the templates are few."""
    return _audio_template(_offered_codecs(codecs, fmtp), telephone_event, ptime, direction)


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
    crypto: Sequence[str] = (),
) -> SessionDescription:
    """The offer to user2: only the codec user1 chose, plus telephone-event.

    The codec keeps user1's payload type and fmtp, and telephone-event defaults to user1's payload
    type (else :data:`DEFAULT_TELEPHONE_EVENT_PT`), so that in the usual case RTP crosses the relay
    without any rewrite (see :func:`pt_mapping`). ``telephone_event_pt`` overrides the number.
    ``crypto`` (SRTP passthrough: the other phone's a=crypto lines, verbatim) makes it RTP/SAVP.
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
        crypto=crypto,
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
    crypto: str | None = None,
) -> tuple[SessionDescription, Negotiated]:
    """Answer a far-end offer (a re-INVITE or UPDATE): the answer and what it agrees on.

    The first RTP/AVP (with ``crypto``: RTP/SAVP) audio stream with a port is used; every other stream
    is rejected with port 0 (RFC 3264 §6). The codec is the offer's first one whose name is in
    ``codecs`` (names of :data:`PASSTHROUGH_CODECS`), under the offer's payload type and fmtp;
    telephone-event is answered with the offer's payload type and events (RFC 3264 §6.1: "the same
    payload type number SHOULD be used"). ``direction`` is what mss wants for the stream (sendrecv
    normally); the answer mirrors the offer within it (RFC 3264 §6.1): sendonly → recvonly, recvonly →
    sendonly, inactive → inactive. Raises :class:`~mss.errors.SdpError` when nothing is usable (→ 488).

    ``crypto`` (SRTP passthrough: the other phone's a=crypto value, the key mss's answer carries)
    requires an RTP/SAVP stream offering a line of the same suite; the answer carries ``crypto``
    under that line's tag (RFC 4568 §5.1.2), and :attr:`Negotiated.crypto` is the accepted line.
    Without it only RTP/AVP is taken.
    """
    if isinstance(codecs, str) or not codecs:
        raise LocalProtocolError(f"codecs must be a non-empty sequence of names, not {codecs!r}")
    allowed = [_passthrough(name)[1] for name in codecs]
    secure = crypto is not None
    index = _audio_index(offer, secure)
    if index is None:
        raise SdpError(f"the offer has no {_PROFILE[secure]} audio stream with a port")
    theirs = offer.media[index]
    accepted = ours = None
    if crypto is not None:
        ours = CryptoLine.parse(crypto)
        suite = ours.suite.upper()
        accepted = next((line for line in crypto_lines(theirs) if line.suite.upper() == suite), None)
        if accepted is None:
            raise SdpError(f"the offer has no a=crypto line of suite {ours.suite}")
        ours = ours.with_tag(accepted.tag)
    offered = codec_table(theirs)
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
    remote = _remote_stream(offer, index)
    _check_family(remote.connection, host)
    # RFC 3264 §6.1: "If a stream is offered as sendonly, the corresponding stream MUST be marked
    # as recvonly or inactive in the answer. If a media stream is listed as recvonly in the offer,
    # the answer MUST be marked as sendonly or inactive in the answer. [...] If an offered media
    # stream is listed as inactive, it MUST be marked as inactive in the answer."
    local_direction = Direction.from_flags(
        send=direction.sends and remote.direction.receives,
        receive=direction.receives and remote.direction.sends,
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
                    crypto=() if ours is None else (ours.value,),
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
    negotiated = _negotiated(
        remote,
        codec=codec,
        pts=(pt, pt),
        te_pts=None if te is None else (te[0], te[0]),
        local_direction=local_direction,
        crypto=None if accepted is None else accepted.value,
    )
    return answer, negotiated


def with_direction(sd: SessionDescription, direction: Direction) -> SessionDescription:
    """``sd`` with the direction of its audio stream set to ``direction`` (a re-offer for hold/resume).

    The media-level direction attribute is replaced in place (or added last); a session-level one is
    dropped so that it cannot contradict. Stamp the result with :meth:`LocalSdp.stamp`.
    """
    index, _ = _our_audio(sd)
    media = sd.media[index]
    attributes = [a for a in media.attributes if not (a.value is None and a.name in DIRECTION_NAMES)]
    position = next(
        (i for i, a in enumerate(media.attributes) if a.value is None and a.name in DIRECTION_NAMES),
        len(attributes),
    )
    attributes.insert(position, Attribute(name=direction.value))
    streams = list(sd.media)
    streams[index] = replace(media, attributes=tuple(attributes))
    session_attributes = tuple(
        a for a in sd.attributes if not (a.value is None and a.name in DIRECTION_NAMES)
    )
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


#: The numeric session ids that SESSION_VERSION takes (its digits, at most).
_MAX_SESSION_ID = 10**MAX_SESSION_VERSION_DIGITS


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
        if type(session_id) is int and 0 <= session_id < _MAX_SESSION_ID:  # the usual: mss's own number
            numeric = True
            if version is None:
                version = session_id
        else:
            numeric = SESSION_VERSION.fullmatch(self.session_id) is not None
            if version is None:
                version = int(self.session_id) if numeric else 1
        self.first_version = version
        # A numeric id and a version >= 0 make an o= line Origin would not refuse: stamps copy it
        # without the checks. Any other is checked when the first SDP is stamped.
        self._known_valid = numeric and version >= 0
        self.last: SessionDescription | None = None
        """The last SDP stamped, None before the first."""

    def stamp(self, sd: SessionDescription) -> SessionDescription:
        """``sd`` with this leg's o= line and the right version; remembered as :attr:`last`."""
        if self.last is None:
            origin = sd.origin
            if origin.session_id == self.session_id and origin.version == self.first_version:
                stamped = sd  # made with this leg's o= line already (the usual first offer)
            else:
                copy = trusted_copy if self._known_valid else replace
                origin = copy(origin, session_id=self.session_id, version=self.first_version)
                stamped = trusted_copy(sd, origin=origin)  # the rest of sd is as it was
        else:
            # Copies without the checks: the origin is a checked one, its version one more.
            stamped = trusted_copy(sd, origin=self.last.origin)
            if stamped != self.last:
                last = self.last.origin
                stamped = trusted_copy(sd, origin=trusted_copy(last, version=last.version + 1))
        self.last = stamped
        return stamped
