"""What a UAS refuses before any dialog sees a request (RFC 3261 §8.2.1-§8.2.3).

:func:`check_request` runs the checks in the RFC's order: method (405), Request-URI scheme (416),
required extensions (420), body type and encoding (415), and whether the requester accepts the
body mss would answer with (406). It returns the refusal to send, or None when the request may go on.
"""

from __future__ import annotations

from collections.abc import Collection

from mss.sip.message import Request, Response, make_response
from mss.sip.uri import SipUri

__all__ = ["ACCEPTED_TYPES", "ALLOWED_METHODS", "SUPPORTED", "check_request"]

#: Methods mss answers (others get 405 with this list in Allow).
ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "PRACK", "UPDATE")

#: Extensions mss supports (Supported / Require option tags, lowercase).
SUPPORTED = ("100rel", "timer")

#: Body types mss reads.
ACCEPTED_TYPES = ("application/sdp",)


def check_request(
    request: Request,
    *,
    to_tag: str,
    allow: Collection[str] = ALLOWED_METHODS,
    supported: Collection[str] = SUPPORTED,
    accept: Collection[str] = ACCEPTED_TYPES,
) -> Response | None:
    """The error response ``request`` gets before dialog processing, or None when it passes."""
    method = request.method
    if method not in allow:
        return make_response(request, 405, to_tag=to_tag, headers=[("Allow", ", ".join(allow))])
    if not isinstance(request.uri, SipUri):
        return make_response(request, 416, to_tag=to_tag)
    if method not in ("ACK", "CANCEL"):  # RFC 3261 §8.2.2.3: Require of ACK/CANCEL is not checked
        unknown = [tag for tag in request.headers.get_list("Require") if tag.lower() not in supported]
        if unknown:
            return make_response(request, 420, to_tag=to_tag, headers=[("Unsupported", ", ".join(unknown))])
    if request.body and method != "ACK":
        ctype = request.content_type
        encodings = [e for e in request.headers.tokens("Content-Encoding") if e != "identity"]
        if ctype not in accept or encodings:
            return make_response(
                request,
                415,
                to_tag=to_tag,
                headers=[("Accept", ", ".join(accept)), ("Accept-Encoding", "identity")],
            )
    if method in ("INVITE", "UPDATE") and "Accept" in request.headers:
        accepted = [a.partition(";")[0].strip().lower() for a in request.headers.get_list("Accept")]
        if not any(a in accepted for a in (*accept, "application/*", "*/*")):
            return make_response(request, 406, to_tag=to_tag)
    return None
