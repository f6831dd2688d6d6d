"""RFC 3261 §25 grammar pieces, as character sets and regexes.

Each rule is quoted from RFC 3261 §25.1 above the Python that implements it. Header values are
unfolded before they reach these rules (folding, ``CRLF 1*WSP``, is replaced by one SP), so ``LWS``
and ``SWS`` below are plain runs of SP and HTAB.
"""

from __future__ import annotations

import re

from mss.errors import SipError

__all__ = [
    "ABSOLUTE_URI_RE",
    "CALL_ID_RE",
    "CSEQ_FAST_RE",
    "HOST_RE",
    "MAX_NUMBER_DIGITS",
    "METHOD_RE",
    "NAME_ADDR_FAST_RE",
    "PARAM_VALUE_CHARS",
    "PASSWORD_RE",
    "SCHEME_RE",
    "SIP_URI_FAST_RE",
    "SIP_URI_NOUSER_RE",
    "SIP_URI_RE",
    "TOKEN_CHARS",
    "TOKEN_RE",
    "URI_HEADER_RE",
    "URI_PARAM_RE",
    "USER_RE",
    "VIA_FAST_RE",
    "WS",
    "is_token",
    "parse_number",
]

#: ``WSP = SP / HTAB``; after unfolding this is all of LWS.
WS = " \t"

# alphanum = ALPHA / DIGIT
_ALNUM = "A-Za-z0-9"

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~")
_TOKEN_CLASS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN_RE = re.compile(rf"[{_TOKEN_CLASS}]+")

# Method = INVITEm / ACKm / OPTIONSm / BYEm / CANCELm / REGISTERm / extension-method
# extension-method = token
METHOD_RE = TOKEN_RE

#: gen-value = token / host / quoted-string: the unquoted characters a parameter value may use.
PARAM_VALUE_CHARS = TOKEN_CHARS | frozenset("[]:")

# escaped = "%" HEXDIG HEXDIG
_ESCAPED = r"%[0-9A-Fa-f]{2}"
# unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
_UNRESERVED = rf"{_ALNUM}\-_.!~*'()"

# user = 1*( unreserved / escaped / user-unreserved )
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+")

# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")

# host = hostname / IPv4address / IPv6reference
# hostname = *( domainlabel "." ) toplabel [ "." ]  (labels: alphanum and "-"; "_" accepted, seen in
# the wild); IPv6reference = "[" IPv6address "]"
HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?")

# uri-parameter = transport-param / ... / other-param ; other-param = pname [ "=" pvalue ]
# pname = 1*paramchar ; pvalue = 1*paramchar
# paramchar = param-unreserved / unreserved / escaped
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
_PARAMCHAR = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})"
URI_PARAM_RE = re.compile(rf"({_PARAMCHAR}+)(?:=({_PARAMCHAR}+))?")

# header = hname "=" hvalue ; hname = 1*( hnv-unreserved / unreserved / escaped )
# hvalue = *( hnv-unreserved / unreserved / escaped )
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
_HCHAR = rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})"
URI_HEADER_RE = re.compile(rf"({_HCHAR}+)=({_HCHAR}*)")

# SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]  (and SIPS-URI), whole:
# one match validates every part (the parts are split afterwards without further checks).
_USER = rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+"
_PASSWORD = rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*"
_HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?"
_PARAM = rf"{_PARAMCHAR}+(?:={_PARAMCHAR}+)?"
_HEADER = rf"{_HCHAR}+={_HCHAR}*"
_HOSTPORT_REST = rf"({_HOST})(?::([0-9]{{1,5}}))?((?:;{_PARAM})*)(?:\?({_HEADER}(?:&{_HEADER})*))?"
SIP_URI_RE = re.compile(rf"([Ss][Ii][Pp][Ss]?):({_USER})(?::({_PASSWORD}))?@{_HOSTPORT_REST}")
#: The same without userinfo (``sip:host;lr``): cheaper than letting the user part backtrack.
SIP_URI_NOUSER_RE = re.compile(rf"([Ss][Ii][Pp][Ss]?):{_HOSTPORT_REST}")

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")

# absoluteURI = scheme ":" ( hier-part / opaque-part ): no white space, no delimiters of the
# header around it (RFC 2396 excludes "<" ">" DQUOTE and controls from a URI).
ABSOLUTE_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>\"\x00-\x1f\x7f]+")

# callid = word [ "@" word ]
# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" / "(" / ")" /
#        "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
_WORD = rf"[{_TOKEN_CLASS}()<>:\\\"/\[\]?{{}}]+"
CALL_ID_RE = re.compile(rf"{_WORD}(?:@{_WORD})?")


# --- fast shapes --------------------------------------------------------------------------------
# Not RFC rules: the shapes real peers write, each matched whole by one regex whose groups give every
# part. Each accepts a subset of what the general parsers in uri.py accept, and the value built from
# its groups equals what the general parser returns; a value of another shape takes the general
# parser (which also names what is wrong). So one match validates a header and its value can be
# built later, only if it is used (mss.sip.message). Ports are matched as 1-5 digits: the caller
# checks ``<= 65535`` and takes the general parser otherwise.

# Quantifiers are possessive (``++``, ``*+``): each repeated class excludes the delimiter that
# follows it, so giving characters back could never lead to a match; not trying it keeps a failed
# match linear and a successful one quick.


def _many(chars: str, escaped: bool = True, least: int = 1) -> str:
    """``1*( [chars] / escaped )`` (``*`` when ``least`` is 0), possessive."""
    unit = rf"[{chars}]++|{_ESCAPED}" if escaped else rf"[{chars}]++"
    return rf"(?:{unit})++" if least else rf"(?:{unit})*+"


# generic-param = token [ EQUAL gen-value ], with no white space and no quoted-string
_GEN_VALUE_CHARS = rf"{_TOKEN_CLASS}\[\]:"  # token / host
_GEN_PARAMS = rf"(?:;{_many(_TOKEN_CLASS, False)}(?:={_many(_GEN_VALUE_CHARS, False)})?)*+"
_PCHARS = rf"{_UNRESERVED}\[\]/:&+$"  # paramchar without escaped
_HCHARS = rf"{_UNRESERVED}\[\]/?:+$"  # hnv-unreserved / unreserved
_FAST_DISPLAY = rf'"([^"\\]*+)"[ \t]*+|({_many(_TOKEN_CLASS, False)})[ \t]*+'  # quoted / one token
# host, as _HOST: the last character of a hostname is not "-" (checked behind, not by backtracking)
_FAST_HOST = r"\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9_][A-Za-z0-9_.\-]*+(?<!-)"
_FAST_PARAM = rf"{_many(_PCHARS)}(?:={_many(_PCHARS)})?"
_FAST_HEADER = rf"{_many(_HCHARS)}={_many(_HCHARS, least=0)}"

#: A ``sip:``/``sips:`` URI with a lowercase scheme (str() writes it lowercase) and a port without
#: leading zeros (str() writes the int), so the text is what ``str()`` of the parsed URI gives.
#: Groups: scheme, user, password, host, port, uri-parameters, headers.
SIP_URI_FAST_RE = re.compile(
    rf"(sips?):(?:({_many(_UNRESERVED + '&=+$,;?/')})(?::({_many(_UNRESERVED + '&=+$,', least=0)}))?@)?"
    rf"({_FAST_HOST})(?::([1-9][0-9]{{0,4}}|0))?((?:;{_FAST_PARAM})*+)(?:\?({_FAST_HEADER}(?:&{_FAST_HEADER})*+))?"
)

#: ``[ "display" / token ] <sip-uri> *( ;param )``: From, To, Contact, Route, Record-Route as
#: written by real peers. Groups: quoted display (without the quotes, no quoted-pair), token
#: display, then SIP_URI_FAST_RE's seven, then the header parameters.
NAME_ADDR_FAST_RE = re.compile(rf"(?:{_FAST_DISPLAY})?<{SIP_URI_FAST_RE.pattern}>({_GEN_PARAMS})")

#: ``SIP/2.0/transport SP host [ : port ] *( ;param )``. Groups: transport, host, port, parameters.
VIA_FAST_RE = re.compile(rf"SIP/2\.0/([A-Za-z]++) ({_FAST_HOST})(?::([0-9]{{1,5}}))?({_GEN_PARAMS})")

#: ``1*10DIGIT SP Method`` (the caller checks the number is below 2**31). Groups: number, method.
CSEQ_FAST_RE = re.compile(rf"([0-9]{{1,10}}) ([{_TOKEN_CLASS}]++)")


_token_fullmatch = TOKEN_RE.fullmatch


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 token."""
    return _token_fullmatch(text) is not None


#: Significant digits a number read off the wire may have. Every number mss reads is at most 32 bits:
#: RFC 3261 §20.16 CSeq < 2**31, §20.22 Max-Forwards 0-255, §20.14 Content-Length, §25.1
#: delta-seconds (Expires, Retry-After; "a value larger than 2**32-1" is out of range), RFC 3262
#: RSeq/RAck 1 .. 2**31-1, RFC 4028 Session-Expires/Min-SE (delta-seconds). 2**32-1 has 10 digits, so
#: a longer number is refused before ``int()`` sees it (which, past 4,300 digits, raises ValueError).
MAX_NUMBER_DIGITS = 10

#: ``1*DIGIT`` in ASCII (``str.isdigit`` also takes other scripts' digits, which ``int()`` reads too).
_DIGITS_RE = re.compile(r"[0-9]+")


def parse_number(text: str, what: str, limit: int = 2**32 - 1) -> int:
    """``text`` (``1*DIGIT``, white space around it ignored) as an int no larger than ``limit``.

    Raises :class:`~mss.errors.SipError` (400) naming ``what`` when it is not a number, has more
    than :data:`MAX_NUMBER_DIGITS` significant digits, or is larger than ``limit``.
    """
    if len(text) <= MAX_NUMBER_DIGITS and text.isdigit() and text.isascii():  # the common case
        n = int(text)
        if n > limit:
            raise SipError(f"{what} {n} is larger than {limit}")
        return n
    v = text.strip(WS)
    if _DIGITS_RE.fullmatch(v) is None:
        raise SipError(f"{what} {v[:40]!r} is not a number")
    digits = v.lstrip("0") or "0"
    if len(digits) > MAX_NUMBER_DIGITS:
        raise SipError(f"{what} has {len(digits)} digits (at most {MAX_NUMBER_DIGITS})")
    n = int(digits)
    if n > limit:
        raise SipError(f"{what} {n} is larger than {limit}")
    return n
