"""Kamailio as the provider's SIP server (PSS) of the end-to-end tests.

``Kamailio`` writes a kamailio.cfg from the commented template ``kamailio.cfg.in`` beside this
module, runs ``kamailio -DD -E`` in the foreground in its own process group, waits until it
answers an OPTIONS ping (UDP, and TCP when enabled), and kills the whole group on exit::

    with Kamailio(mode="auth", users={"100": "pw100", "101": "pw101"}) as pss:
        ...  # phones register to pss.host:pss.port
        pss.wait_registered("100", timeout=5)

TLS (optional): ``tls=(cert_pem, key_pem)`` adds a TLS listener on ``tls_port`` (picked free unless
given) with that certificate, written into a ``tls.cfg`` beside kamailio.cfg (TLS 1.2 or newer; no
client certificate asked for; as a client, e.g. towards mss's Contact, it verifies nothing). Needs
Debian's ``kamailio-tls-modules``. Without ``tls`` the config is exactly the plain one.

IPv6 (optional): ``host6="::1"`` listens on ``[host6]:port`` too (UDP, and TCP when enabled); a
request goes out from the listener of its destination's family, so phones on ``host`` and mss on
``host6`` reach each other through it. ``mss`` may then be an IPv6 address.

Modes (both listen on UDP and TCP at ``host:port`` and forward between the two transports):

``auth``  (mss in external-line mode)
    Registrar + record-routing proxy. REGISTER is answered 401 (digest, qop=auth) and every
    initial request (INVITE ...) 407, checked against ``users`` plus the mss line
    (``mss_line``, by default user ``mss`` / ``secret``), which registers like any phone.

``trunk``  (mss server-to-server)
    Initial requests from mss's address (``mss`` host and port; over TCP the host alone, since
    a TCP client connects from an ephemeral port) are trusted without auth. Everyone else is a
    phone user: phones register with digest auth (401) and their INVITEs are challenged (407),
    exactly as in auth mode. The mss line is not a user in this mode.

In both modes: an initial request for a user not in the table gets 404, for a known user with
no registration 480; responses of the callee (180/183/200/486/603 ...) pass through; a CANCEL
ends in 487. In-dialog requests (ACK, BYE, re-INVITE, UPDATE, PRACK, INFO) follow the
Record-Route set. The request domain counts as "this server" when it is ``host`` or ``realm``
with this server's port or with no port at all. ``challenge_requests=False`` turns the 407
challenge of initial requests off (registrations are still challenged).

A REGISTER must authenticate as the To user, or as the auth user that ``aors`` names for it:
``aors={"5551000": "mss"}`` lets the mss line register the number 5551000 with the digest user
``mss`` (an external line whose ``auth_username`` differs from its ``username``); such an AOR
counts as a known user for routing (480 until registered).

API: ``start()``/``stop()`` (or the context manager), ``registered(user)``,
``wait_registered(user, timeout)``, ``wait_unregistered(user, timeout)``, ``contacts(user)``,
``kamcmd(*args)``, ``log_text()``, ``log_tail(lines)``, and ``host``, ``port``, ``uri``,
``user_uri(user)``, ``realm``, ``users``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal

from mss_peers.net import WaitTimeout, check_loopback, free_port, parent_death_signal, wait_until
from mss_peers.rawsip import RawSipClient

__all__ = [
    "KAMAILIO_SEARCH_PATH",
    "Kamailio",
    "KamailioError",
    "find_binary",
]

TEMPLATE = Path(__file__).with_name("kamailio.cfg.in")
# Where Debian installs the binaries (sbin may be missing from a non-root PATH).
KAMAILIO_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
# Users (htable keys, unquoted) and passwords (quoted strings) go into the config: keep them to
# characters the config syntax leaves alone. A user is written as in a URI, escaped (RFC 3261
# §25.1: "*31#555" is "*31%23555"), since Kamailio compares $rU, $tU and $au as written.
_SAFE_USER = re.compile(r"[A-Za-z0-9_.+*%-]{1,64}")
_SAFE_PASSWORD = re.compile(r"[A-Za-z0-9_.+*#%@!~-]{1,64}")
# Bounds: how long Kamailio may take to answer its first ping, and to exit on SIGTERM.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
# Memory for one instance (MB): shared, private; plenty for a handful of calls.
SHM_MB = 32
PKG_MB = 8

Mode = Literal["auth", "trunk"]


class KamailioError(RuntimeError):
    """Kamailio could not be started or queried; the message carries its log tail."""


def find_binary(name: str) -> str:
    """The path of a Kamailio binary (``kamailio``, ``kamcmd``); ``KamailioError`` if missing."""
    path = shutil.which(name, path=KAMAILIO_SEARCH_PATH)
    if path is None:
        raise KamailioError(
            f"{name} not found: install the Debian package 'kamailio' "
            "(bash tests/run.sh does it when it is missing)"
        )
    return path


def _check_ipv6_loopback(host: str) -> str:
    """``host`` if it is the IPv6 loopback address (tests talk to loopback only)."""
    if ipaddress.IPv6Address(host) != ipaddress.IPv6Address("::1"):
        raise ValueError(f"{host} is not ::1: tests only talk to loopback")
    return "::1"


class Kamailio:
    """A Kamailio PSS on loopback; see the module docstring."""

    def __init__(
        self,
        mode: Mode = "auth",
        *,
        host: str = "127.0.0.1",
        host6: str | None = None,
        port: int | None = None,
        users: Mapping[str, str] | None = None,
        mss: tuple[str, int] = ("127.0.0.1", 5070),
        mss_line: tuple[str, str] = ("mss", "secret"),
        realm: str | None = None,
        aors: Mapping[str, str] | None = None,
        tcp: bool = True,
        tls: tuple[Path | str, Path | str] | None = None,
        tls_port: int | None = None,
        challenge_requests: bool = True,
        log_path: Path | str | None = None,
        workdir: Path | str | None = None,
    ) -> None:
        if mode not in ("auth", "trunk"):
            raise ValueError(f"mode must be 'auth' or 'trunk', not {mode!r}")
        self.mode: Mode = mode
        self.host = check_loopback(host)
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port(host)
        self.host6 = _check_ipv6_loopback(host6) if host6 is not None else None
        """The IPv6 address listened on too (the same port), or None."""
        mss_host = _check_ipv6_loopback(mss[0]) if ":" in mss[0] else check_loopback(mss[0])
        self.mss = (mss_host, int(mss[1]))
        self.mss_line = mss_line
        self.realm = realm or host
        self.tcp = tcp
        self.tls = (Path(tls[0]), Path(tls[1])) if tls is not None else None
        """(certificate, key) PEM files of the TLS listener; None: no TLS."""
        self.tls_port = (tls_port or free_port(host)) if tls is not None else None
        """The TLS listener's port (None without TLS)."""
        self.challenge_requests = challenge_requests
        self.users: dict[str, str] = dict(users or {})
        if mode == "auth":
            self.users.setdefault(mss_line[0], mss_line[1])
        self.aors: dict[str, str] = dict(aors or {})
        for text in [*self.users, *self.aors, *self.aors.values(), self.realm]:
            if not _SAFE_USER.fullmatch(text):
                raise ValueError(f"{text!r}: users and the realm must match {_SAFE_USER.pattern}")
        for text in self.users.values():
            if not _SAFE_PASSWORD.fullmatch(text):
                raise ValueError(f"{text!r}: passwords must match {_SAFE_PASSWORD.pattern}")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pss-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cfg_path = self.workdir / "kamailio.cfg"
        self.tls_cfg_path = self.workdir / "tls.cfg"
        # A unix socket path must stay under 108 bytes: keep it in a short temp dir of its own.
        self._ctl_dir = Path(tempfile.mkdtemp(prefix="pss-ctl-"))
        self.ctl_socket = self._ctl_dir / "ctl"
        self.log_path = Path(log_path) if log_path else self.workdir / "kamailio.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<Kamailio {self.mode} {self.host}:{self.port}>"

    # ---- addresses ----

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the SIP listeners."""
        return self.host, self.port

    @property
    def uri(self) -> str:
        """The server's own SIP URI, e.g. ``sip:127.0.0.1:5060``."""
        return f"sip:{self.host}:{self.port}"

    def user_uri(self, user: str, transport: str | None = None) -> str:
        """The URI that reaches ``user`` through this server."""
        uri = f"sip:{user}@{self.host}:{self.port}"
        return f"{uri};transport={transport}" if transport else uri

    @property
    def pid(self) -> int | None:
        """The PID of the main Kamailio process while it runs."""
        return self.process.pid if self.process else None

    # ---- configuration ----

    def render_config(self) -> str:
        """The kamailio.cfg text for this instance."""
        defines = [f"#!define MODE_{self.mode.upper()}"]
        if self.tcp:
            defines.append("#!define WITH_TCP")
        if self.challenge_requests:
            defines.append("#!define CHALLENGE_REQUESTS")
        if self.tls is not None:
            defines.append("#!define WITH_TLS")
        if self.host6 is not None:
            defines.append("#!define WITH_IPV6")
        users = "\n".join(
            f'\t$sht(users=>{user}) = "{password}";' for user, password in sorted(self.users.items())
        )
        values = {
            "DEFINES": "\n".join(defines),
            "HOST": self.host,
            "HOST6": self.host6 or "",
            "PORT": str(self.port),
            "REALM": self.realm,
            "CTL_SOCKET": str(self.ctl_socket),
            "MSS_HOST": self.mss[0],
            "MSS_PORT": str(self.mss[1]),
            "USERS": users or "\t# no users",
            "TLS_PORT": str(self.tls_port or 0),
            "TLS_CFG": str(self.tls_cfg_path),
            "AORS": "\n".join(f'\t$sht(aors=>{aor}) = "{user}";' for aor, user in sorted(self.aors.items())),
        }
        text = TEMPLATE.read_text()
        for name, value in values.items():
            text = text.replace(f"@{name}@", value)
        left = re.findall(r"@[A-Z_]+@", text)
        if left:
            raise KamailioError(f"unfilled placeholders in {TEMPLATE.name}: {sorted(set(left))}")
        return text

    def render_tls_config(self) -> str:
        """The tls.cfg text (only used with ``tls``)."""
        if self.tls is None:
            return ""
        cert, key = self.tls
        return (
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
            f"certificate = {cert.resolve()}\nprivate_key = {key.resolve()}\n\n"
            "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
        )

    @property
    def tls_address(self) -> tuple[str, int]:
        """(host, port) of the TLS listener (``KamailioError`` without TLS)."""
        if self.tls_port is None:
            raise KamailioError("this Kamailio has no TLS listener")
        return self.host, self.tls_port

    # ---- life cycle ----

    def __enter__(self) -> Kamailio:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Write the config, start Kamailio, and return once it answers on every listener.

        When the port was picked automatically and turns out to be taken meanwhile, it retries
        on another port (3 tries).
        """
        if self.process is not None:
            raise KamailioError("already started")
        binary = find_binary("kamailio")
        for attempt in range(3):
            self.cfg_path.write_text(self.render_config())
            if self.tls is not None:
                self.tls_cfg_path.write_text(self.render_tls_config())
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [
                        binary,
                        "-DD",
                        "-E",
                        "-f",
                        str(self.cfg_path),
                        "-m",
                        str(SHM_MB),
                        "-M",
                        str(PKG_MB),
                        "-Y",
                        str(self.workdir),
                        "-P",
                        str(self.workdir / "kamailio.pid"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=parent_death_signal(),
                )
            with contextlib.suppress(WaitTimeout):
                if wait_until(self._answers, timeout) and self.process.poll() is None:
                    return
            exited = self.process.poll() is not None
            self._kill()
            if exited and not self._fixed_port and "Address already in use" in self.log_text():
                self.port = free_port(self.host)
                if self.tls is not None:
                    self.tls_port = free_port(self.host)
                continue
            raise KamailioError(
                f"Kamailio ({self.mode} mode, {self.host}:{self.port}) did not answer within "
                f"{timeout} s (attempt {attempt + 1}); log tail:\n{self.log_tail()}"
            )
        raise KamailioError(f"no free port for Kamailio; log tail:\n{self.log_tail()}")

    def _answers(self) -> bool:
        """True when an OPTIONS ping gets 200 on UDP (and TCP); False while starting."""
        if self.process is None or self.process.poll() is not None:
            return True  # stop waiting: start() looks at the exit
        transports = ["udp", "tcp"] if self.tcp else ["udp"]
        try:
            for transport in transports:
                with RawSipClient(self.host, self.port, transport=transport, timeout=0.3) as sip:
                    if sip.request("OPTIONS", self.uri, from_user="ping").status != 200:
                        return False
        except (OSError, TimeoutError, ValueError):
            return False
        return self.tls_port is None or self._tls_handshakes()

    def _tls_handshakes(self) -> bool:
        """True when the TLS listener completes a handshake (its certificate is not checked)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with (
                socket.create_connection((self.host, self.tls_port or 0), timeout=0.5) as raw,
                context.wrap_socket(raw, server_hostname=self.host),
            ):
                return True
        except OSError:  # ssl.SSLError included
            return False

    def stop(self) -> None:
        """Stop Kamailio: SIGTERM to its process group, SIGKILL after a bound; no strays."""
        self._kill()
        shutil.rmtree(self._ctl_dir, ignore_errors=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
        # children that outlived the main process, or a main process that hung
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)

    # ---- registrations ----

    def kamcmd(self, *args: str, timeout: float = 3.0) -> str:
        """Run ``kamcmd`` against this instance's ctl socket; its output (``KamailioError`` on
        failure)."""
        result = subprocess.run(
            [find_binary("kamcmd"), "-s", f"unix:{self.ctl_socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0 or result.stdout.startswith("error:"):
            raise KamailioError(
                f"kamcmd {' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}"
            )
        return result.stdout

    def contacts(self, user: str) -> list[str]:
        """The contact URIs registered for ``user`` (empty when none)."""
        try:
            out = self.kamcmd("ul.lookup", "location", f"s:{user}")  # s: keeps "100" a string
        except KamailioError as exc:
            if "aor not found" in str(exc).lower():
                return []
            raise
        return re.findall(r"Address:\s*(\S+)", out)

    def registered(self, user: str) -> bool:
        """True when ``user`` has at least one registered contact."""
        return bool(self.contacts(user))

    def wait_registered(self, user: str, timeout: float = 5.0) -> list[str]:
        """Wait until ``user`` is registered; return its contacts (``AssertionError`` with the
        log tail on timeout)."""
        try:
            return wait_until(lambda: self.contacts(user), timeout)
        except WaitTimeout:
            raise AssertionError(
                f"{user} not registered at {self.host}:{self.port} within {timeout} s; "
                f"Kamailio log tail:\n{self.log_tail()}"
            ) from None

    def wait_unregistered(self, user: str, timeout: float = 5.0) -> None:
        """Wait until ``user`` has no contact left (``AssertionError`` on timeout)."""
        try:
            wait_until(lambda: not self.contacts(user), timeout)
        except WaitTimeout:
            raise AssertionError(
                f"{user} still registered after {timeout} s; log tail:\n{self.log_tail()}"
            ) from None

    # ---- logs ----

    def log_text(self) -> str:
        """Everything Kamailio logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])
