"""Fixtures of the end-to-end tests: loopback ports, Kamailio as the PSS, pjsua2 phones.

``free_port(host="127.0.0.1") -> int``
    A port free for UDP and TCP on a 127.0.0.x address, never handed out twice in a run.
``kamailio(mode="auth", users=None, **kwargs) -> Kamailio``
    Starts a PSS (see ``mss_peers.kamailio``) with its files in the test's tmp_path; every
    one started is stopped at teardown. Fails (never skips) when Kamailio is not installed.
``phone(user, pss, *, password=<the PSS's>, wait_registered=True, **kwargs) -> Phone``
    Starts a pjsua2 phone registered to ``pss`` (a ``Kamailio`` or a (host, port) pair); the
    password defaults to the one ``pss`` has for ``user``; ``kwargs`` go to ``Phone``. Waits for
    the registration unless ``register=False`` or ``wait_registered=False``. Every phone is
    stopped at teardown (all at once).
``add_peer(obj)``
    Adds another peer (e.g. the mss process) to the test's peers: anything with ``workdir``
    and ``describe()`` or ``log_tail(lines)``.
``peer_logs() -> str``
    The events and log tails of every peer of the test, for assertion messages.
``mss(pss, **config) -> MssServer``
    Starts an mss process (``mss_peers.server``) towards ``pss``; stopped at teardown.

When a test fails, the report carries each peer's log tail, and the full logs (Kamailio's
config and log, each phone's log and recordings, any added peer's workdir) are copied to
``.test-logs/<test>/`` at the root of the repository.

Mark end-to-end tests with ``@pytest.mark.e2e`` (or ``pytestmark = pytest.mark.e2e``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shutil
import stat
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mss_peers.kamailio import Kamailio, KamailioError, Mode, find_binary
from mss_peers.net import free_port as _free_port
from mss_peers.phone import Phone
from mss_peers.server import MssServer

# Lines of each peer's log that a failure report quotes.
REPORT_TAIL_LINES = 150


_PEERS = pytest.StashKey[list[Any]]()


def _peers_of(request: pytest.FixtureRequest) -> list[Any]:
    stash: pytest.Stash = request.node.stash
    return stash.setdefault(_PEERS, [])


def _describe(peer: Any) -> str:
    """A peer's part of a failure report: ``describe()`` when it has one, else its log tail."""
    if isinstance(peer, Kamailio):
        return (
            f"--- Kamailio {peer.mode} {peer.host}:{peer.port} log tail ---\n"
            f"{peer.log_tail(REPORT_TAIL_LINES)}"
        )
    try:
        if hasattr(peer, "describe"):
            return str(peer.describe())
        if hasattr(peer, "log_tail"):
            return f"--- {peer!r} log tail ---\n{peer.log_tail(REPORT_TAIL_LINES)}"
    except Exception as exc:  # a report must not fail because one peer cannot describe itself
        return f"--- {peer!r}: no description ({type(exc).__name__}: {exc}) ---"
    return repr(peer)


def _sockets_and_fifos(directory: str, names: list[str]) -> set[str]:
    """What a failure report does not copy: unix sockets (mss's control socket) and FIFOs, which
    cannot be copied as files."""
    skipped = set()
    for name in names:
        with contextlib.suppress(OSError):
            mode = (Path(directory) / name).lstat().st_mode
            if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
                skipped.add(name)
    return skipped


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On failure: quote every peer's log tail in the report and keep the full logs."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    peers = item.stash.get(_PEERS, [])
    if not report.failed or not peers:
        return
    for peer in peers:
        report.sections.append((f"{peer!r} ({report.when})", _describe(peer)))
    keep = Path(item.config.rootpath) / ".test-logs" / re.sub(r"[^\w.-]+", "_", item.nodeid)
    try:
        keep.mkdir(parents=True, exist_ok=True)
        for index, peer in enumerate(peers):
            workdir = getattr(peer, "workdir", None)
            if workdir is not None and Path(workdir).is_dir():
                target = keep / f"{index}-{Path(workdir).name}"
                shutil.copytree(workdir, target, dirs_exist_ok=True, ignore_dangling_symlinks=True,
                                ignore=_sockets_and_fifos)
        report.sections.append(("peer logs kept in", str(keep)))
    except (OSError, shutil.Error) as exc:
        report.sections.append(("peer logs not kept", str(exc)))


@pytest.fixture(scope="session")
def free_port() -> Callable[..., int]:
    """``free_port(host="127.0.0.1")``: a port free for UDP and TCP on that loopback address."""
    return _free_port


@pytest.fixture
def kamailio(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Kamailio]]:
    """Factory: ``kamailio(mode, users, **kwargs)`` starts a PSS, stopped at teardown."""
    started: list[Kamailio] = []

    def make(mode: Mode = "auth", users: dict[str, str] | None = None, **kwargs: Any) -> Kamailio:
        try:
            find_binary("kamailio")
            find_binary("kamcmd")
        except KamailioError as exc:
            pytest.fail(str(exc), pytrace=False)
        pss = Kamailio(mode, users=users, workdir=tmp_path / f"pss-{len(started)}", **kwargs)
        _peers_of(request).append(pss)
        started.append(pss)
        pss.start()
        return pss

    try:
        yield make
    finally:
        for pss in reversed(started):
            pss.stop()


@pytest.fixture
def phone(
    request: pytest.FixtureRequest, tmp_path: Path, kamailio: Callable[..., Kamailio]
) -> Iterator[Callable[..., Phone]]:
    """Factory: ``phone(user, pss, **kwargs)`` starts a registered phone, stopped at teardown
    (before any Kamailio of the test, so the phones can still unregister)."""
    if importlib.util.find_spec("pjsua2") is None:
        pytest.fail(
            "pjsua2 is not installed: pip install 'pjsua2-python==2.15.1.post1' "
            "(bash tests/run.sh installs the test extras)",
            pytrace=False,
        )
    phones: list[Phone] = []

    def make(
        user: str,
        pss: Kamailio | tuple[str, int],
        *,
        password: str | None = None,
        wait_registered: bool = True,
        **kwargs: Any,
    ) -> Phone:
        if isinstance(pss, Kamailio):
            registrar = pss.address
            if password is None:
                password = pss.users.get(user)
        else:
            registrar = pss
        workdir = tmp_path / f"phone-{user}-{len(phones)}"
        device = Phone(user, password, registrar, workdir=workdir, **kwargs)
        _peers_of(request).append(device)
        phones.append(device)
        device.start()
        if wait_registered and kwargs.get("register", True):
            device.wait_registered()
        return device

    try:
        yield make
    finally:
        for device in phones:
            device.begin_stop()
        for device in phones:
            device.stop()


@pytest.fixture
def add_peer(request: pytest.FixtureRequest) -> Callable[[Any], None]:
    """``add_peer(obj)``: include another peer (e.g. the mss process) in ``peer_logs()`` and in
    the failure report. It should have ``workdir`` (copied on failure) and ``describe()`` or
    ``log_tail(lines)``."""
    return _peers_of(request).append


@pytest.fixture
def peer_logs(request: pytest.FixtureRequest) -> Callable[[], str]:
    """``peer_logs()``: events and log tails of all peers of this test, for assertion messages."""

    def text() -> str:
        return "\n".join(_describe(peer) for peer in _peers_of(request))

    return text


@pytest.fixture
def mss(add_peer: Callable[[Any], None], tmp_path: Path) -> Iterator[Callable[..., MssServer]]:
    """Factory: ``mss(pss, **config)`` starts an mss process, stopped at teardown (log kept on failure)."""
    started: list[MssServer] = []

    def make(pss: Kamailio, **kwargs: Any) -> MssServer:
        server = MssServer(tmp_path / f"mss-{len(started)}", pss=pss.address, sip_port=pss.mss[1], **kwargs)
        started.append(server)
        add_peer(server)
        return server.start()

    yield make
    for server in started:
        server.stop()
