"""Dialog state (RFC 3261 §12) for the dialogs mss creates as UAC.

A :class:`Dialog` is created from the request that opened it and a response with a To tag
(§12.1.2): the route set is the response's Record-Route in reverse, the remote target its Contact.
An early dialog (from a 1xx) is replaced by the confirmed one when the 2xx arrives (its route set
is recomputed from the 2xx, §13.2.2.4). :meth:`Dialog.create_request` builds in-dialog requests
(§12.2.1.1, loose and strict routing); :meth:`Dialog.check_remote_cseq` orders incoming requests
(§12.2.2); :meth:`Dialog.refresh_target` applies a target refresh (re-INVITE, UPDATE, their 2xx).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from mss.errors import LocalProtocolError, SipError
from mss.sip.message import MAX_MESSAGE_SIZE, Message, Request, Response, canonical_name, trusted_cseq
from mss.sip.uri import NameAddr, SipUri, Uri, fast_via, wrote_name_addr

__all__ = ["Dialog", "DialogKey"]

#: (Call-ID, local tag, remote tag).
DialogKey = tuple[str, str, str]

# URI parameters that may not appear in a Request-URI taken from a Route (RFC 3261 §19.1.1 table).
_NOT_IN_RURI = ("method", "ttl")

_Item = tuple[str, str, str]
_MAX_FORWARDS: _Item = ("max-forwards", "Max-Forwards", "70")
_MAX_FORWARDS_LINE = f"{_MAX_FORWARDS[1]}: {_MAX_FORWARDS[2]}"

#: What every request of a dialog writes alike, made once (see Dialog.create_request): what it was
#: made from, then the From and To values with their tags and the From, To and Call-ID fields, and
#: those fields' lines as written.
_Fixed = tuple[tuple[NameAddr, str, NameAddr, str, str], NameAddr, NameAddr, tuple[_Item, _Item, _Item], str]
#: The route set and remote target it was made from, the Request-URI and its text, the Route fields.
_Target = tuple[tuple[NameAddr, ...], Uri, Uri, str, list[_Item]]


@dataclass(slots=True)
class Dialog:
    """A dialog's state as seen by mss (always the UAC of the dialog-creating INVITE)."""

    call_id: str
    """Call-ID."""
    local_tag: str
    """Our tag (From of our requests)."""
    remote_tag: str
    """Their tag (To of our requests)."""
    local_uri: NameAddr
    """Our From value, without tag."""
    remote_uri: NameAddr
    """Their address (To of our INVITE), without tag."""
    local_seq: int
    """CSeq of the last request we sent in the dialog."""
    remote_target: Uri
    """Their Contact: the Request-URI of our requests."""
    route_set: tuple[NameAddr, ...] = ()
    """Route set, first hop first."""
    remote_seq: int | None = None
    """CSeq of the last request they sent; None before the first."""
    confirmed: bool = False
    """False for an early dialog (1xx), True after a 2xx."""
    secure: bool = False
    """True for sips."""
    remote_allow: frozenset[str] = field(default_factory=frozenset)
    """Methods the far end said it allows (Allow of its responses/requests)."""
    _fixed: _Fixed | None = field(default=None, init=False, repr=False, compare=False)
    _target: _Target | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key(self) -> DialogKey:
        """(Call-ID, local tag, remote tag)."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_response(cls, request: Request, response: Response) -> Dialog:
        """The UAC's dialog created by ``response`` (1xx/2xx with a To tag) to ``request``."""
        remote_tag = response.to.tag
        local_tag = request.from_.tag
        if remote_tag is None or local_tag is None:
            raise SipError("a dialog needs a From tag and a To tag")
        contacts = response.contacts
        if not contacts:
            # RFC 3261 §12.1.2 requires a Contact; without one, fall back to the Request-URI.
            target: Uri = request.uri
        else:
            target = contacts[0].uri
        dialog = cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=request.from_.without_params(),
            remote_uri=request.to.without_params(),
            local_seq=request.cseq.seq,
            remote_target=target,
            route_set=tuple(reversed(response.record_route)),
            confirmed=200 <= response.status < 300,
            secure=isinstance(request.uri, SipUri) and request.uri.scheme == "sips",
        )
        dialog.note_allow(response)
        return dialog

    def fork(self, response: Response, *, invite_seq: int) -> Dialog:
        """The dialog the 2xx of another fork (another To tag) to this dialog's INVITE creates: the same
        local side, its own remote tag, target and route set (§12.1.2, §13.2.2.4). ``invite_seq`` is
        the INVITE's CSeq; without a Contact the target is the remote URI (the INVITE's Request-URI)."""
        remote_tag = response.to.tag
        if remote_tag is None:
            raise SipError("a dialog needs a To tag")
        contacts = response.contacts
        dialog = Dialog(
            call_id=self.call_id,
            local_tag=self.local_tag,
            remote_tag=remote_tag,
            local_uri=self.local_uri,
            remote_uri=self.remote_uri,
            local_seq=invite_seq,
            remote_target=contacts[0].uri if contacts else self.remote_uri.uri,
            route_set=tuple(reversed(response.record_route)),
            confirmed=True,
            secure=self.secure,
        )
        dialog.note_allow(response)
        return dialog

    def confirm(self, request: Request, response: Response) -> None:
        """The 2xx of the dialog's INVITE arrived: recompute the route set and the target."""
        self.route_set = tuple(reversed(response.record_route))
        self.refresh_target(response)
        self.confirmed = True
        self.note_allow(response)

    def refresh_target(self, message: Message) -> None:
        """Take the remote target from the Contact of a target-refresh request or its response."""
        contacts = message.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    def note_allow(self, message: Message) -> None:
        """Remember the far end's Allow list (to choose UPDATE for session refreshes)."""
        allow = message.headers.get_list("Allow")
        if allow:
            self.remote_allow = frozenset(a.upper() for a in allow)

    def check_remote_cseq(self, request: Request) -> None:
        """Order an incoming request (§12.2.2): a lower CSeq than the last one is refused with 500."""
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return
        if self.remote_seq is not None and seq < self.remote_seq:
            raise SipError(f"CSeq {seq} is lower than {self.remote_seq}", status=500)
        if self.remote_seq is None or seq > self.remote_seq:
            self.remote_seq = seq

    def matches(self, message: Message, *, incoming_request: bool) -> bool:
        """True when ``message`` belongs to this dialog."""
        if message.call_id != self.call_id:
            return False
        if incoming_request:
            return message.to.tag == self.local_tag and message.from_.tag == self.remote_tag
        return message.from_.tag == self.local_tag and message.to.tag == self.remote_tag

    def next_seq(self) -> int:
        """Take the next local CSeq number."""
        self.local_seq += 1
        return self.local_seq

    def request_target(self) -> tuple[Uri, tuple[NameAddr, ...]]:
        """Request-URI and Route values of the next request (§12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, ()
        first = self.route_set[0]
        if isinstance(first.uri, SipUri) and first.uri.param("lr") is not None:
            return self.remote_target, self.route_set
        # Strict routing (RFC 2543 proxies): the first route becomes the Request-URI and the remote
        # target goes last in Route.
        ruri = first.uri
        if isinstance(ruri, SipUri):
            ruri = replace(
                ruri,
                params=tuple((k, v) for k, v in ruri.params if k.lower() not in _NOT_IN_RURI),
                headers=(),
            )
        return ruri, (*self.route_set[1:], NameAddr(self.remote_target))

    def _fixed_and_target(self) -> tuple[_Fixed, _Target]:
        """What every request of the dialog writes alike, made again only when its source changed."""
        # From, To, Call-ID, the Request-URI and Route are the same in every request of the dialog
        # (ACK, BYE, PRACK, refreshes): their values and text are made once and the requests are
        # built from them with their fields set, so nothing is written or parsed twice.
        source = (self.local_uri, self.local_tag, self.remote_uri, self.remote_tag, self.call_id)
        fixed = self._fixed
        if fixed is None or fixed[0] != source:
            from_ = self.local_uri.with_tag(self.local_tag)
            to = self.remote_uri.with_tag(self.remote_tag)
            call_id = ("call-id", "Call-ID", self.call_id)
            lines = (("from", "From", str(from_)), ("to", "To", str(to)), call_id)
            wrote_name_addr(lines[0][2], from_)  # the answers copy them
            wrote_name_addr(lines[1][2], to)
            text = "\r\n".join(f"{name}: {value}" for _key, name, value in lines)
            fixed = self._fixed = (source, from_, to, lines, text)
        target = self._target
        if target is None or target[0] is not self.route_set or target[1] is not self.remote_target:
            ruri, routes = self.request_target()
            routes_items = [("route", "Route", str(r)) for r in routes]
            target = (self.route_set, self.remote_target, ruri, str(ruri), routes_items)
            self._target = target
        return fixed, target

    def create_request(
        self,
        method: str,
        *,
        via: str,
        contact: NameAddr | None = None,
        cseq: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Request:
        """An in-dialog request (§12.2.1.1); ``cseq`` defaults to the next local number."""
        fixed, target = self._fixed_and_target()
        seq = cseq if cseq is not None else self.next_seq()
        items = [("via", "Via", via), _MAX_FORWARDS, *fixed[3], ("cseq", "CSeq", f"{seq} {method}")]
        items += target[4]
        if contact is not None:
            items.append(("contact", "Contact", str(contact)))
        for name, value in headers:
            key, spelling = canonical_name(name)
            items.append((key, spelling, value))
        cseq_value = trusted_cseq(seq, method)
        return Request._local(method, target[2], items, body, via=fast_via(via), from_=fixed[1], to=fixed[2],
                              call_id=self.call_id, cseq=cseq_value, uri_text=target[3])  # fmt: skip

    def encode_ack(self, *, via: str, cseq: int, headers: Iterable[tuple[str, str]] = ()) -> bytes:
        """The ACK of a 2xx in this dialog (§13.2.2.4), on the wire: the bytes
        ``create_request("ACK", via=via, cseq=cseq, headers=headers).encode()`` gives, written
        directly (an ACK is sent and kept as bytes, never read back as a request)."""
        fixed, target = self._fixed_and_target()
        lines = [f"ACK {target[3]} SIP/2.0", f"Via: {via}", _MAX_FORWARDS_LINE, fixed[4], f"CSeq: {cseq} ACK"]
        lines += [f"Route: {value}" for _key, _name, value in target[4]]
        if headers:
            items = [(*canonical_name(name), value) for name, value in headers]
            if any(key == "content-length" for key, _n, _v in items):  # Message.encode rewrites it
                named = [(name, value) for _key, name, value in items]
                return self.create_request("ACK", via=via, cseq=cseq, headers=named).encode()
            lines += [f"{name}: {value}" for _key, name, value in items]
        lines.append("Content-Length: 0\r\n\r\n")
        data = "\r\n".join(lines).encode("utf-8", "surrogateescape")
        if len(data) > MAX_MESSAGE_SIZE:
            raise LocalProtocolError(f"SIP message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
        return data

