"""A tiny raw SIP client for probing the PSS: build a request, send it, read the final response.

It is deliberately independent of mss's own SIP stack, so a test can check Kamailio's behaviour
(digest challenges, routing answers) without trusting the code under test::

    with RawSipClient("127.0.0.1", pss_port, transport="udp") as sip:
        r1 = sip.request("REGISTER", f"sip:127.0.0.1:{pss_port}", from_user="mss", to_user="mss")
        assert r1.status == 401
        auth = digest_authorization(r1.header("WWW-Authenticate"), "REGISTER",
                                    f"sip:127.0.0.1:{pss_port}", "mss", "secret")
        r2 = sip.request("REGISTER", ..., headers={"Authorization": auth}, cseq=2, call_id=r1.call_id)

``request()`` skips provisional responses and waits for the final one, bounded by ``timeout``;
``build()`` + ``send()`` + ``receive()`` give finer control, and ``ack()`` acknowledges a
non-2xx final response to an INVITE.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from mss_peers.net import check_loopback

__all__ = [
    "RawSipClient",
    "SipResponse",
    "digest_authorization",
    "parse_challenge",
]

# Largest SIP message read from the socket (RFC 3261 §18.1.1 keeps UDP well under this).
MAX_MESSAGE = 65535


@dataclass(frozen=True, slots=True, kw_only=True)
class SipResponse:
    """A parsed SIP response."""

    status: int
    """The status code, e.g. 401."""
    reason: str
    """The reason phrase."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    """Header fields in order, names as sent."""
    body: str = ""
    """The body (empty for most answers here)."""
    raw: str = ""
    """The whole message as received, for assertion messages."""

    def header(self, name: str) -> str:
        """The first value of header ``name`` (case-insensitive); ``KeyError`` when absent."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        raise KeyError(f"no {name} header in:\n{self.raw}")

    def header_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive)."""
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def call_id(self) -> str:
        """The Call-ID header."""
        return self.header("Call-ID")


def parse_response(text: str) -> SipResponse:
    """Parse one response message (status line, headers, body)."""
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    match = re.match(r"SIP/2\.0 (\d{3}) ?(.*)", lines[0])
    if not match:
        raise ValueError(f"not a SIP response: {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # RFC 3261 §7.3.1 line folding
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return SipResponse(
        status=int(match.group(1)), reason=match.group(2), headers=headers, body=body, raw=text
    )


def parse_challenge(value: str) -> dict[str, str]:
    """The parameters of a ``Digest`` challenge (WWW-/Proxy-Authenticate value), names lowercased."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest challenge: {value!r}")
    params: dict[str, str] = {}
    for m in re.finditer(r'([A-Za-z-]+)\s*=\s*("([^"]*)"|[^,\s]+)', rest):
        params[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return params


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_authorization(
    challenge: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    cnonce: str | None = None,
    nc: int = 1,
) -> str:
    """The Authorization/Proxy-Authorization value answering ``challenge`` (RFC 2617, MD5).

    Uses qop=auth when the challenge offers it, else the RFC 2069 form.
    """
    params = parse_challenge(challenge)
    realm, nonce = params["realm"], params["nonce"]
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    fields = [
        f'username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        "algorithm=MD5",
    ]
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce = cnonce or secrets.token_hex(8)
        nc_text = f"{nc:08x}"
        response = _md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', "qop=auth", f'cnonce="{cnonce}"', f"nc={nc_text}"]
    else:
        fields.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(fields)


class RawSipClient:
    """One UDP socket or TCP connection from a loopback address (``local_port`` 0: any) to a
    SIP server.

    ``request()`` sends a request and returns its final response. Use as a context manager (or
    call ``close()``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        transport: str = "udp",
        local_host: str = "127.0.0.1",
        local_port: int = 0,
        timeout: float = 2.0,
    ) -> None:
        check_loopback(host)
        check_loopback(local_host)
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be udp or tcp, not {transport!r}")
        self.server = (host, port)
        self.transport = transport
        self.timeout = timeout
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.settimeout(timeout)
        if local_port:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((local_host, local_port))
        if transport == "tcp":
            self.sock.connect(self.server)
        self.local = self.sock.getsockname()
        self._buffer = b""
        self._cseq = 0

    def __enter__(self) -> RawSipClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def build(
        self,
        method: str,
        uri: str,
        *,
        from_user: str,
        to_user: str | None = None,
        domain: str | None = None,
        call_id: str | None = None,
        cseq: int | None = None,
        headers: dict[str, str] | None = None,
        body: str = "",
    ) -> str:
        """The text of a request from this client's address (Via with rport, a Contact)."""
        if cseq is None:
            self._cseq += 1
            cseq = self._cseq
        host, port = self.local
        domain = domain or f"{self.server[0]}:{self.server[1]}"
        to_user = to_user if to_user is not None else from_user
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {host}:{port};rport;branch=z9hG4bK{secrets.token_hex(8)}",
            "Max-Forwards: 70",
            f"From: <sip:{from_user}@{domain}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{to_user}@{domain}>",
            f"Call-ID: {call_id or secrets.token_hex(12)}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{from_user}@{host}:{port};transport={self.transport}>",
        ]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def request(self, method: str, uri: str, **kwargs: Any) -> SipResponse:
        """Send a request built by ``build(method, uri, **kwargs)``; return the final response."""
        text = self.build(method, uri, **kwargs)
        self.send(text)
        return self.final_response()

    def send(self, text: str) -> None:
        """Send one message as it is."""
        data = text.encode()
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def receive(self) -> SipResponse:
        """The next response (within ``timeout``; ``TimeoutError`` otherwise)."""
        if self.transport == "udp":
            data, _ = self.sock.recvfrom(MAX_MESSAGE)
            return parse_response(data.decode(errors="replace"))
        deadline = time.monotonic() + self.timeout
        while True:
            head, sep, rest = self._buffer.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                length = int(m.group(1)) if m else 0
                if len(rest) >= length:
                    self._buffer = rest[length:]
                    return parse_response((head + sep + rest[:length]).decode(errors="replace"))
            if len(self._buffer) > MAX_MESSAGE:
                raise ValueError("SIP message over the size limit")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete response within {self.timeout} s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(MAX_MESSAGE)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self._buffer += chunk

    def ack(self, invite: str, response: SipResponse) -> None:
        """Send the ACK for a non-2xx final ``response`` to ``invite`` (the text sent): same
        branch, the To tag of the response (RFC 3261 §17.1.1.3)."""
        head = invite.split("\r\n\r\n", 1)[0].split("\r\n")
        uri = head[0].split(" ")[1]
        keep = {"via", "from", "call-id", "max-forwards", "route"}
        lines = [f"ACK {uri} SIP/2.0"]
        for line in head[1:]:
            name = line.split(":", 1)[0].strip().lower()
            if name in keep:
                lines.append(line)
            elif name == "cseq":
                lines.append(f"CSeq: {line.split(':', 1)[1].split()[0]} ACK")
        lines.append(f"To: {response.header('To')}")
        lines.append("Content-Length: 0")
        self.send("\r\n".join(lines) + "\r\n\r\n")

    def final_response(self) -> SipResponse:
        """Skip provisional (1xx) responses; return the first final one."""
        for _ in range(20):  # a handful of 1xx at most precede a final answer
            response = self.receive()
            if response.status >= 200:
                return response
        raise RuntimeError("too many provisional responses")
