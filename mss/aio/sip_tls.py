"""SIP over TLS (``[sip] transport = tls``): the :mod:`ssl` contexts and whom a connection must reach.

- Outgoing connections to the PSS (or the outbound proxy) use :func:`client_context`: TLS 1.2 or
  newer; with ``tls_verify`` the PSS's certificate must chain to ``tls_ca`` (the system's CAs when
  unset) and name the PSS as configured: the pss_host entry's DNS name (RFC 5922 §4: the domain
  asked for, not an SRV target) or, for an entry that is an address, that address (an IP
  subjectAltName). :func:`server_name` picks that name for an address; it also goes out as SNI.
- With ``tls_cert``/``tls_key`` the SIP port accepts TLS connections (:func:`server_context`), the
  ones the PSS opens to mss's Contact for its own requests (a BYE from the far end). Only the
  PSS's addresses are served (the stranger check of the TCP listener, before the handshake); no
  client certificate is asked for. The same certificate is shown when the PSS asks mss for one.
  The listener is plain TCP and each accepted connection runs its TLS in :class:`ServerTls`, so that
  a handshake that fails is logged (rate-limited) with :func:`describe_failure`'s words (asyncio's
  own TLS listener drops it without a word).
- :func:`describe_failure` turns a failed handshake into the words of the log line.

SIPS URIs (RFC 5630) are not used: mss writes ``sip:`` URIs with ``;transport=tls``.
"""

from __future__ import annotations

import dataclasses
import ssl

from mss.sip.settings import UASettings
from mss.sip.targets import TargetList

__all__ = [
    "MIN_TLS_VERSION",
    "ServerTls",
    "client_context",
    "describe_failure",
    "server_context",
    "server_name",
]

#: Oldest TLS spoken: 1.0 and 1.1 are deprecated (RFC 8996).
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2


def client_context(settings: UASettings) -> ssl.SSLContext:
    """The context of connections mss opens to the PSS (see the module docstring)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.tls_ca)
    context.minimum_version = MIN_TLS_VERSION
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.tls_cert is not None and settings.tls_key is not None:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def server_context(settings: UASettings) -> ssl.SSLContext | None:
    """The context of the SIP port's TLS listener; None without ``tls_cert``/``tls_key``."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_TLS_VERSION
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def server_name(dest: tuple[str, int], lists: tuple[TargetList | None, ...]) -> str:
    """The name the certificate of ``dest`` must carry: the first configured entry (of the outbound
    proxy, then pss_host) whose addresses include ``dest``; ``dest``'s address when none does."""
    for targets in lists:
        if targets is None:
            continue
        for entry in targets.entries:
            if entry.literal:
                if entry.host == dest[0]:
                    return entry.host
                continue
            # The same answers, for this entry alone (a fresh memo: the list's covers every entry).
            alone = dataclasses.replace(targets, entries=(entry,), _memo=None)
            if dest in alone.candidates(ordered=False):
                return entry.host
    return dest[0]


def describe_failure(exc: BaseException) -> str:
    """``certificate verify failed: <why>`` for a refused certificate, else the error's text."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        for prefix in ("TLSV1_ALERT_", "SSLV3_ALERT_"):  # the peer's alert: what it did not accept
            if reason.startswith(prefix):
                alert = reason.removeprefix(prefix).lower().replace("_", " ")
                return f"handshake refused by the peer: {alert} ({reason})"
        return f"handshake failed: {reason or exc}"
    return str(exc) or type(exc).__name__


#: Bytes of plaintext taken from the TLS layer per read (a SIP message is far smaller).
READ_CHUNK = 65536


class ServerTls:
    """The server side of one TLS connection over memory buffers: bytes from the socket in,
    plaintext and bytes for the socket out. The caller owns the socket (and the handshake's time
    limit); errors are raised as :class:`ssl.SSLError`, whose words :func:`describe_failure` gives."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.established = False
        """The handshake is done: :meth:`receive` gives plaintext, :meth:`send` takes it."""
        self.closed = False
        """The peer ended the session (close_notify)."""

    def receive(self, data: bytes) -> bytes:
        """Take ``data`` from the socket; returns the plaintext it completes (b"" during the
        handshake). Afterwards :meth:`pending` holds what to write to the socket."""
        self._incoming.write(data)
        if not self.established:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.established = True
        plain = []
        while True:
            try:
                chunk = self._tls.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            if not chunk:
                break
            plain.append(chunk)
        return b"".join(plain)

    def send(self, plain: bytes) -> None:
        """Encrypt ``plain`` (after the handshake); :meth:`pending` holds the result."""
        self._tls.write(plain)

    def pending(self) -> bytes:
        """What to write to the socket now (handshake messages, records, alerts)."""
        return self._outgoing.read()

