"""mss's SIP stack against a real PSS (Kamailio) and real phones (pjsua2), UDP and TCP.

The stack runs as in the service (``SipTransport`` + ``UserAgent`` on uvloop), in a thread of
this test process; the test drives it like the call flow would and watches the phones. Kamailio
runs in both of its modes: registrar + proxy with digest auth (external line) and trusted trunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

import pytest
import uvloop

from mss.aio.sip_transport import SipTransport
from mss.errors import TransportError
from mss.sip.events import (
    LegAnswered,
    LegEnded,
    LegFailed,
    LegOffer,
    LegRinging,
    Registered,
    RegistrationFailed,
    UAEvent,
    Unregistered,
)
from mss.sip.settings import UASettings
from mss.sip.ua import UserAgent
from mss_peers.kamailio import Kamailio
from mss_peers.phone import Phone

pytestmark = pytest.mark.e2e

USERS = {"100": "pw100", "101": "pw101", "102": "pw102", "103": "pw103"}
KamailioFactory = Callable[..., Kamailio]
PhoneFactory = Callable[..., Phone]
E = TypeVar("E")

#: Bounds (seconds) of every wait on mss's side.
WAIT = 8.0


def offer(port: int, version: int = 1) -> bytes:
    return (
        f"v=0\r\no=mss 4242 {version} IN IP4 127.0.0.1\r\ns=mss\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
    ).encode()


class Mss:
    """mss's SIP stack on its own uvloop thread; commands are passed to it thread-safely.

    ``sent``/``received`` keep every message on the wire (bytes), ``events`` every UA event.
    """

    def __init__(self, settings: UASettings, *, other_port: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self._other_port = other_port
        self.events: list[UAEvent] = []
        self._queue: queue.Queue[UAEvent] = queue.Queue()
        self._taken: set[int] = set()
        self.sent: list[bytes] = []
        self.received: list[bytes] = []
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mss-sip", daemon=True)
        self.sip: SipTransport | None = None

    def __enter__(self) -> Mss:
        self._thread.start()
        for attempt in range(3):
            try:
                self._run(self._open())
                break
            except TransportError:
                # The port went to another process since it was picked: take another one when
                # the PSS does not need to know it (auth mode).
                if self._other_port is None or attempt == 2:
                    self.__exit__(None, None, None)
                    raise
                self.settings = replace(self.settings, local_port=self._other_port())
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.sip is not None:
                self._run(self.sip.close(timeout=3.0), timeout=6.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def _run(self, coro: Any, timeout: float = WAIT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _open(self) -> None:
        self.sip = SipTransport(self.settings, on_event=self._queue.put)
        ua = self.sip.ua
        send, receive = ua.data_to_send, ua.receive_data

        def spy_send() -> list[tuple[bytes, tuple[str, int]]]:
            out = send()
            self.sent.extend(data for data, _dest in out)
            return out

        def spy_receive(
            data: bytes, source: tuple[str, int], now: float, *, stream: object | None = None
        ) -> None:
            self.received.append(data)
            receive(data, source, now, stream=stream)

        ua.data_to_send = spy_send  # type: ignore[method-assign]
        ua.receive_data = spy_receive  # type: ignore[method-assign]
        await self.sip.open()

    def do(self, command: Callable[[UserAgent, float], None]) -> None:
        """Run ``command(ua, now)`` on the stack's loop, then flush."""

        async def step() -> None:
            assert self.sip is not None
            command(self.sip.ua, time.monotonic())
            self.sip.flush()

        self._run(step())

    def wait(self, kind: type[E], leg_id: str | None = None, timeout: float = WAIT) -> E:
        """The next event of ``kind`` (for ``leg_id``) not yet taken."""
        deadline = time.monotonic() + timeout
        while True:
            while True:
                try:
                    self.events.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for i, event in enumerate(self.events):
                if i in self._taken or not isinstance(event, kind):
                    continue
                if leg_id is not None and getattr(event, "leg_id", None) != leg_id:
                    continue
                self._taken.add(i)
                return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {kind.__name__} for {leg_id} within {timeout}s; events: {self.events}"
                )
            with contextlib.suppress(queue.Empty):
                self.events.append(self._queue.get(timeout=min(left, 0.2)))

    def count_sent(self, pattern: str) -> int:
        """Messages sent whose start line matches ``pattern`` (a regex)."""
        rx = re.compile(pattern.encode())
        return sum(1 for data in self.sent if rx.match(data))


def settings_for(
    pss: Kamailio | tuple[str, int],
    port: int,
    transport: str,
    *,
    register: bool,
    password: str = "secret",
    **kw: Any,
) -> UASettings:
    host, pss_port = pss.address if isinstance(pss, Kamailio) else pss
    return UASettings(
        local_host="127.0.0.1",
        local_port=port,
        transport=transport,
        pss_host=host,
        pss_port=pss_port,
        caller="mss" if register else "5550000",
        domain=host,
        register=register,
        line_user="mss" if register else None,
        auth_user="mss",
        password=password,
        **kw,
    )


# --- external line: registrar + proxy with digest auth ------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_external_line_register_refresh_calls_and_unregister(
    kamailio: KamailioFactory,
    phone: PhoneFactory,
    free_port: Callable[..., int],
    peer_logs: Callable[[], str],
    transport: str,
) -> None:
    port = free_port()
    pss = kamailio("auth", USERS, mss=("127.0.0.1", port))
    callee = phone("100", pss, transport=transport, behaviour="answer")
    with Mss(settings_for(pss, port, transport, register=True, expires=10), other_port=free_port) as mss:
        # REGISTER: 401, answered with the digest, then 200
        reg = mss.wait(Registered)
        assert reg.expires == 10, peer_logs()
        assert pss.wait_registered("mss", timeout=5)
        assert mss.count_sent("REGISTER ") == 2  # the challenged one and the answered one

        # call 1: INVITE → 407 → INVITE with credentials → answered; mss hangs up
        mss.do(lambda ua, now: ua.invite("c1", "100", offer(free_port()), now))
        incoming = callee.wait_event("incoming")
        assert incoming["from_user"] == "mss", peer_logs()
        answered = mss.wait(LegAnswered, "c1")
        assert b"m=audio" in answered.sdp
        assert mss.count_sent("INVITE ") == 2
        callee.wait_event("confirmed")
        mss.do(lambda ua, now: ua.hangup("c1", now))
        ended = mss.wait(LegEnded, "c1")
        assert (ended.by_remote, ended.answered) == (False, True)
        callee.wait_event("disconnected")

        # call 2: the phone hangs up
        mss.do(lambda ua, now: ua.invite("c2", "100", offer(free_port()), now))
        mss.wait(LegAnswered, "c2")
        callee.wait_event("confirmed")
        callee.hangup()
        ended = mss.wait(LegEnded, "c2")
        assert ended.by_remote, peer_logs()
        callee.wait_event("disconnected")

        # the registration was refreshed (at 5 s of 10) without a failure
        mss.wait(Registered, timeout=8)
        assert not [e for e in mss.events if isinstance(e, RegistrationFailed)]
    # leaving: REGISTER with Expires: 0
    assert any(isinstance(e, Unregistered) for e in mss.events) or mss.wait(Unregistered)
    pss.wait_unregistered("mss", timeout=5)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_cancel_and_failure_outcomes(
    kamailio: KamailioFactory,
    phone: PhoneFactory,
    free_port: Callable[..., int],
    peer_logs: Callable[[], str],
    transport: str,
) -> None:
    port = free_port()
    pss = kamailio("auth", USERS, mss=("127.0.0.1", port))
    ringing = phone("100", pss, behaviour="ring")
    busy = phone("101", pss, behaviour="busy")
    rejecting = phone("102", pss, behaviour="reject:603")
    # 103 is a known user that is not registered; 999 is unknown
    with Mss(settings_for(pss, port, transport, register=True), other_port=free_port) as mss:
        mss.wait(Registered)
        mss.do(lambda ua, now: ua.invite("ring", "100", offer(free_port()), now))
        progress = mss.wait(LegRinging, "ring")
        assert progress.status == 180
        ringing.wait_event("incoming")
        mss.do(lambda ua, now: ua.hangup("ring", now))
        ended = mss.wait(LegEnded, "ring")
        assert (ended.by_remote, ended.answered, ended.reason) == (False, False, "cancelled")
        gone = ringing.wait_event("disconnected")
        assert gone["code"] == 487, peer_logs()
        assert mss.count_sent("CANCEL ") == 1

        for leg, user, status in [("busy", "101", 486), ("reject", "102", 603), ("offline", "103", 480),
                                  ("unknown", "999", 404)]:  # fmt: skip
            sdp = offer(free_port())

            def place(ua: UserAgent, now: float, leg: str = leg, user: str = user, sdp: bytes = sdp) -> None:
                ua.invite(leg, user, sdp, now)

            mss.do(place)
            failed = mss.wait(LegFailed, leg)
            assert failed.status == status, (failed, peer_logs())
        assert busy.events("incoming") and rejecting.events("incoming")
        assert not [e for e in mss.events if isinstance(e, LegAnswered)]


def test_wrong_password_gives_up_without_a_flood(
    kamailio: KamailioFactory,
    phone: PhoneFactory,
    free_port: Callable[..., int],
) -> None:
    port = free_port()
    pss = kamailio("auth", USERS, mss=("127.0.0.1", port))
    phone("100", pss, behaviour="answer")
    with Mss(settings_for(pss, port, "udp", register=True, password="wrong"), other_port=free_port) as mss:
        failed = mss.wait(RegistrationFailed)
        assert failed.status == 401
        assert 3.0 <= failed.retry_at - time.monotonic() <= 5.0  # the first back-off is 5 s
        mss.do(lambda ua, now: ua.invite("c1", "100", offer(free_port()), now))
        leg = mss.wait(LegFailed, "c1")
        assert leg.status == 407
        time.sleep(1.0)
        assert mss.count_sent("REGISTER ") == 2
        assert mss.count_sent("INVITE ") == 2
        assert not pss.registered("mss")


def test_reliable_provisional_is_pracked_and_reinvite_update_from_the_phone(
    kamailio: KamailioFactory,
    phone: PhoneFactory,
    free_port: Callable[..., int],
    peer_logs: Callable[[], str],
) -> None:
    port, pss_port = free_port(), free_port()
    # mss binds first (trunk mode sends nothing at start): the PSS trusts this very port
    with Mss(settings_for(("127.0.0.1", pss_port), port, "udp", register=False)) as mss:
        pss = kamailio("trunk", USERS, port=pss_port, mss=("127.0.0.1", port))
        callee = phone("100", pss, behaviour="ring", early_media=True, prack="mandatory")
        mss.do(lambda ua, now: ua.invite("c1", "100", offer(free_port()), now))
        incoming = callee.wait_event("incoming")
        assert incoming["from_user"] == "5550000"
        assert "100rel" in " ".join(incoming["headers"].get("supported", []))
        early = mss.wait(LegRinging, "c1")
        assert early.status == 183 and early.sdp and b"m=audio" in early.sdp, peer_logs()
        callee.wait_sip("PRACK")
        callee.answer(200)
        mss.wait(LegAnswered, "c1")
        callee.wait_event("confirmed")

        # re-INVITE from the phone (hold): LegOffer, answered by the "call flow"
        mark = callee.mark()
        callee.hold()
        first = mss.wait(LegOffer, "c1")
        assert first.kind == "reinvite" and b"sendonly" in first.sdp
        mss.do(
            lambda ua, now: ua.answer_offer(
                "c1", offer(free_port(), 2).replace(b"sendrecv", b"recvonly"), now
            )
        )
        callee.wait_event("media", since=mark, status="local_hold")

        # UPDATE from the phone
        mark = callee.mark()
        callee.update()
        second = mss.wait(LegOffer, "c1")
        assert second.kind == "update"
        mss.do(lambda ua, now: ua.answer_offer("c1", offer(free_port(), 3), now))
        callee.wait_sip(200, since=mark)

        mss.do(lambda ua, now: ua.hangup("c1", now))
        mss.wait(LegEnded, "c1")
        callee.wait_event("disconnected")


# --- server-to-server: trusted trunk, no REGISTER --------------------------------------------------


@pytest.mark.parametrize(("transport", "phone_transport"), [("udp", "tcp"), ("tcp", "udp"), ("tcp", "tcp")])
def test_trunk_calls_without_registration(
    kamailio: KamailioFactory,
    phone: PhoneFactory,
    free_port: Callable[..., int],
    peer_logs: Callable[[], str],
    transport: str,
    phone_transport: str,
) -> None:
    port, pss_port = free_port(), free_port()
    with Mss(settings_for(("127.0.0.1", pss_port), port, transport, register=False)) as mss:
        pss = kamailio("trunk", USERS, port=pss_port, mss=("127.0.0.1", port))
        callee = phone("101", pss, transport=phone_transport, behaviour="answer")
        mss.do(lambda ua, now: ua.invite("c1", "101", offer(free_port()), now))
        assert callee.wait_event("incoming")["from_user"] == "5550000"
        mss.wait(LegAnswered, "c1")
        callee.wait_event("confirmed")
        assert mss.count_sent("REGISTER ") == 0 and mss.count_sent("INVITE ") == 1  # trusted: no 407

        # a re-INVITE from the phone reaches mss over the route set, then the phone hangs up
        mark = callee.mark()
        callee.reinvite()
        reoffer = mss.wait(LegOffer, "c1")
        mss.do(lambda ua, now: ua.answer_offer("c1", offer(free_port(), 2), now))
        callee.wait_sip(200, since=mark)
        assert reoffer.kind == "reinvite"
        callee.hangup()
        assert mss.wait(LegEnded, "c1").by_remote
        callee.wait_event("disconnected")

        # and a second call that mss ends
        mss.do(lambda ua, now: ua.invite("c2", "101", offer(free_port()), now))
        mss.wait(LegAnswered, "c2")
        callee.wait_event("confirmed")
        mss.do(lambda ua, now: ua.hangup("c2", now))
        assert not mss.wait(LegEnded, "c2").by_remote
        callee.wait_event("disconnected")
        assert mss.sip is not None and mss.sip.ua.counters["parse_errors"] == 0, peer_logs()
