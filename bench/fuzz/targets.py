"""The parsers under fuzz, each with its seeds and the error types it documents.

A target takes one input (bytes) and drives a parser as mss does, then reads every field of what was
accepted (accessors parse lazily, so an unread field hides bugs) and checks the round trips the
modules promise. Only the errors a parser documents may come out (:attr:`Target.allowed`, from
``mss/errors.py``): anything else is a crash, and so is a broken promise (:class:`Broken`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mss import iif, sdp
from mss.errors import IIFError, SdpError, SipError
from mss.sip import auth, framing, message, uri

__all__ = ["TARGETS", "Broken", "Target"]

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


class Broken(Exception):
    """A promise of the module broke (a round trip, an invariant): a finding like a crash."""


@dataclass(frozen=True, slots=True)
class Target:
    """One fuzzed parser."""

    name: str
    """Name on the command line and in the report."""
    run: Callable[[bytes], str]
    """Drives the parser with one input: what it answered (refusals in words, numbers blurred),
    or raises what is not a refusal."""
    seeds: tuple[bytes, ...]
    """Well-formed (and some malformed) inputs the mutations start from."""
    allowed: tuple[type[BaseException], ...]
    """The error types the parser documents: these are refusals, not crashes."""
    max_size: int
    """Largest input made: a little above the parser's own bound, so the bound is exercised."""
    weight: int
    """Share of the inputs given to this target."""


# --- IIF ----------------------------------------------------------------------------------------

_IIF_LINE = re.compile(r"^> (.*)$", re.MULTILINE)


def _iif_seeds() -> tuple[bytes, ...]:
    seeds: list[bytes] = []
    for path in sorted((DATA / "iif").glob("*.txt")):
        for raw in _IIF_LINE.findall(path.read_text(encoding="utf-8")):
            text = raw.replace("\\t", "\t").replace("\\r", "\r")
            text = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m[1], 16)), text)
            seeds.append(text.encode("latin-1"))
    seeds += [
        b"REQUEST: id=1234;user1=100;user2=101;duration=3600;\r\n",
        b"CANCEL: id=1234;\r\n",
        b"ACK: id=1234;code=ok;\r\n",
        b"RESPONSE: id=1234;real_duration=180;result=answered;code=200;\r\n",
        b"REQUEST: id=a;user1=*31#555;user2=+4930123;duration=1;\nCANCEL: id=a;\nREQUEST: id=b;",
    ]
    return tuple(seeds)


def _refusal(exc: Exception) -> str:
    """A refusal in words with numbers and quoted input blurred: a new one means a new path."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "Q", str(exc))[:60]
    return "!" + re.sub(r"[0-9]+", "N", text) + "|"


def _iif_round_trip(event: iif.Event, role: iif.Role) -> None:
    again = iif.parse_message(iif.serialize(event)[:-2], role=role, max_duration=10**9)
    if again != event:
        raise Broken(f"IIF round trip changed {event!r} into {again!r}")


def run_iif(data: bytes) -> str:
    """``parse_datagram`` for both roles, and an :class:`~mss.iif.IIFConnection` fed in three cuts."""
    out = ""
    for role in (iif.Role.SERVER, iif.Role.CLIENT):
        try:
            event = iif.parse_datagram(data, role=role)
            _iif_round_trip(event, role)
            out += type(event).__name__ + "|"
        except IIFError as exc:
            out += _refusal(exc)
    conn = iif.IIFConnection(iif.Role.SERVER)
    now = 1000.0
    cuts = (0, len(data) // 3, 2 * len(data) // 3, len(data))
    for start, end in itertools.pairwise(cuts):
        if end > start:
            conn.receive_data(data[start:end], now)
        now += 0.05
        out += _drain_iif(conn, len(data))
        timer = conn.get_timer()
        if timer is not None and timer < now - 0.05:
            raise Broken(f"IIF timer {timer} is in the past at {now}")
    timer = conn.get_timer()
    if timer is not None:
        conn.handle_timer(timer)
        out += _drain_iif(conn, len(data))
    conn.receive_data(b"", now + 1)
    out += _drain_iif(conn, len(data))
    if conn.buffered > iif.MAX_IIF_MESSAGE:
        raise Broken(f"IIF connection buffers {conn.buffered} bytes")
    return out


def _drain_iif(conn: iif.IIFConnection, size: int) -> str:
    out = ""
    for _ in range(size + 8):  # every event consumes at least one byte of input
        try:
            event = conn.next_event()
        except IIFError as exc:
            out += _refusal(exc)
            continue
        if event is None:
            return out
        _iif_round_trip(event, iif.Role.SERVER)
        out += type(event).__name__ + "|"
    raise Broken("IIFConnection yields more events than its input has bytes")


# --- SIP ----------------------------------------------------------------------------------------


def _sip_seeds() -> tuple[bytes, ...]:
    return tuple(path.read_bytes() for path in sorted((DATA / "sip").rglob("*.sip")))


def _read_fields(msg: message.Request | message.Response) -> None:
    """Every parsed field, as the layers above read them."""
    for via in msg.via:
        _ = (via.branch, via.received, via.rport, via.host, via.port, str(via))
    _ = (msg.top_via, msg.call_id, msg.cseq, msg.content_type)
    for addr in (msg.from_, msg.to, *msg.contacts, *msg.route, *msg.record_route):
        _ = (addr.tag, str(addr), addr.uri)
        if isinstance(addr.uri, uri.SipUri):
            _ = (addr.uri.hostport, addr.uri.param("transport"), uri.unescape(addr.uri.user or ""))
    for name in ("Supported", "Require", "Allow", "Accept"):
        msg.headers.tokens(name)
    for name in ("WWW-Authenticate", "Proxy-Authenticate"):
        for value in msg.headers.get_all(name):
            auth.parse_challenge(value, proxy=name.startswith("Proxy"))
    for name, parse in _NUMBER_HEADERS.items():
        number = msg.headers.get(name)
        if number is not None and parse is not None:
            parse(number)


def _session_expires(value: str) -> object:
    from mss.sip import leg  # imported late: it pulls in the whole stack

    return leg.parse_session_expires(value)


def _number(what: str, limit: int) -> Callable[[str], object] | None:
    try:
        from mss.sip._grammar import parse_number
    except ImportError:  # an older tree: no shared number parser
        return None
    return lambda value: parse_number(value.partition(";")[0], what, limit)


#: The numeric headers the UA reads from messages it received (RFC 3262 RSeq/RAck, RFC 4028).
_NUMBER_HEADERS: dict[str, Callable[[str], object] | None] = {
    "Session-Expires": _session_expires,
    "Min-SE": _number("Min-SE", 2**32 - 1),
    "RSeq": _number("RSeq", 2**31 - 1),
    "Retry-After": _number("Retry-After", 2**32 - 1),
}


def _comparable(msg: message.Request | message.Response) -> object:
    # encode() writes Content-Length from the body (adding it when missing): not a change.
    head = (msg.method, str(msg.uri)) if isinstance(msg, message.Request) else (msg.status, msg.reason)
    fields = [(n.lower(), v) for n, v in msg.headers if n.lower() != "content-length"]
    return head, fields, msg.body


def run_sip(data: bytes) -> str:
    """``parse_message`` (datagram), its fields and its answer; :class:`StreamFramer` in two cuts."""
    out = ""
    try:
        msg = message.parse_message(data)
        _read_fields(msg)
        out += type(msg).__name__ + "|"
    except SipError as exc:
        msg = None
        out += _refusal(exc)
    if msg is not None:
        encoded = msg.encode() if len(data) < message.MAX_MESSAGE_SIZE // 2 else None
        if encoded is not None:
            again = message.parse_message(encoded)
            if _comparable(again) != _comparable(msg):
                raise Broken("SIP message changed when written and read again")
        if isinstance(msg, message.Request) and msg.method != "ACK":
            message.make_response(msg, 200, to_tag="fuzz")
    else:
        message.error_response(data, 400, "fuzz")
    framer = framing.StreamFramer()
    cut = len(data) // 2
    try:
        for piece in (data[:cut], data[cut:]):
            for frame in framer.feed(piece):
                if isinstance(frame, bytes):
                    try:
                        _read_fields(message.parse_message(frame, exact=True))
                        out += "frame|"
                    except SipError as exc:
                        out += _refusal(exc)
    except SipError as exc:
        out += "stream:" + _refusal(exc)
    return out


def _value_seeds() -> tuple[bytes, ...]:
    values: set[bytes] = set()
    for seed in _sip_seeds():
        head = seed.split(b"\r\n\r\n", 1)[0].split(b"\n")
        values.update(part for part in head[0].split(b" ") if b":" in part)
        for line in head[1:]:
            _name, colon, value = line.partition(b":")
            if colon:
                values.add(value.strip(b" \t\r"))
    values.update({
        b"1800;refresher=uac", b"90", b"4294967295", b'Digest realm="x", nonce="y", qop="auth,auth-int"',
        b"SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1;rport=5061;received=1.2.3.4",
    })
    return tuple(sorted(values))


def run_sip_values(data: bytes) -> str:
    """The URI, name-addr, Via, parameter and challenge parsers on one header value."""
    text = data.decode("utf-8", "surrogateescape")
    out = ""
    for parse in (
        lambda: uri.parse_uri(text),
        lambda: uri.parse_name_addr(text, "Contact"),
        lambda: uri.parse_via(text),
        lambda: uri.parse_params(text, "fuzz"),
        lambda: uri.split_commas(text),
        lambda: auth.parse_challenge(text, proxy=False),
        lambda: auth.parse_auth_params(text),
    ):
        try:
            value = parse()
            out += "ok|"
        except SipError as exc:
            out += _refusal(exc)
            continue
        if isinstance(value, uri.Via):
            _ = (value.rport, value.branch, value.received)
            if uri.parse_via(str(value)) != value:
                raise Broken(f"Via {text!r} changed when written and read again")
        elif isinstance(value, uri.SipUri | uri.AbsoluteUri | uri.NameAddr):
            if isinstance(value, uri.NameAddr):
                again: object = uri.parse_name_addr(str(value), "Contact")
            else:
                again = uri.parse_uri(str(value))
            if again != value:
                raise Broken(f"{text!r} changed when written and read again")
    for parse_value in _NUMBER_HEADERS.values():
        if parse_value is not None:
            try:
                parse_value(text)
                out += "ok|"
            except SipError as exc:
                out += _refusal(exc)
    return out


# --- SDP ----------------------------------------------------------------------------------------


def _sdp_seeds() -> tuple[bytes, ...]:
    return tuple(path.read_bytes() for path in sorted((DATA / "sdp").rglob("*.sdp")))


_OUR_OFFER = sdp.make_offer(
    host="127.0.0.1", port=30000, codecs=("PCMU", "PCMA", "G729"), session_id=3921400000,
    version=3921400000, fmtp={"G729": "annexb=no"},
)
_CODECS = ("PCMU", "PCMA", "G729")


def run_sdp(data: bytes) -> str:
    """``parse_sdp``, every field, the round trip, and offer/answer against a fixed offer."""
    try:
        sd = sdp.parse_sdp(data)
    except SdpError as exc:
        return _refusal(exc)
    out = "ok|"
    for media in sd.media:
        for prop in ("codecs", "rtcp", "ptime", "maxptime"):
            try:
                getattr(media, prop)
            except SdpError as exc:
                out += _refusal(exc)
        _ = (media.direction, sd.direction_of(media), sd.connection_for(media))
    written = bytes(sd)
    if len(written) <= sdp.MAX_SDP_SIZE and sdp.parse_sdp(written) != sd:
        raise Broken("SDP changed when written and read again")
    negotiated = []
    try:
        negotiated.append(sdp.read_answer(_OUR_OFFER, sd))  # sd as user1's answer to our offer
        out += "answer|"
    except SdpError as exc:
        out += _refusal(exc)
    try:
        answer, theirs = sdp.make_answer(  # sd as a far-end re-INVITE offer
            sd, host="127.0.0.1", port=30002, codecs=_CODECS, session_id=7, version=8
        )
        sdp.parse_sdp(bytes(answer))
        negotiated.append(theirs)
        out += "offer|"
    except SdpError as exc:
        out += _refusal(exc)
    for n in negotiated:
        try:
            bridge = sdp.make_bridge_offer(n, host="127.0.0.1", port=30004, session_id=9, version=1)
            sdp.pt_mapping(n, sdp.read_answer(bridge, bridge))
        except SdpError as exc:
            out += _refusal(exc)
        _ = sdp.with_direction(_OUR_OFFER, n.remote_direction.reverse())
    return out


def _ua_target() -> Target:
    from bench.fuzz.sip_ua import run_ua, ua_seeds

    # The UA must take anything: no error type is a refusal here.
    return Target("sip-ua", run_ua, ua_seeds(), (), message.MAX_MESSAGE_SIZE, 10)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("iif", run_iif, _iif_seeds(), (IIFError,), iif.MAX_IIF_MESSAGE * 6, 25),
        Target("sip", run_sip, _sip_seeds(), (SipError,), message.MAX_MESSAGE_SIZE + 512, 25),
        Target("sip-values", run_sip_values, _value_seeds(), (SipError,), 6144, 15),
        Target("sdp", run_sdp, _sdp_seeds(), (SdpError,), sdp.MAX_SDP_SIZE + 512, 25),
        _ua_target(),
    )
}
