"""The relay's control verbs: what one callback costs the relay without media (pytest-benchmark;
not part of the test suite).

Run: .venv/bin/pytest bench/test_bench_relay.py --benchmark-only --benchmark-timer=time.process_time

A real :class:`mss.relay.Relay` on 127.0.0.1 (its packet loop running): process CPU time counts the
loop thread too, which is right, since a verb that wakes the loop costs the process that wake-up.

- ``relay_callback``: one callback's verbs in the order the engine carries them out: open a
  session (not bridged), user1's remote (and a re-latch), ringback into user1, user2's remote (and a
  re-latch), stop the ringback, the payload-type rewrites both ways, bridge, the statistics for the
  CDR, close.
- ``relay_open_close``, ``relay_stats``, ``relay_play_stop``, ``relay_remote``: the parts of it.

A close returns at once: the packet loop closes the session's sockets on its next turn (within
10 ms), many sessions' at a time here, so that work lands in a few rounds: the median leaves it
out, the mean has it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mss import tones
from mss.relay import Relay

HOST = "127.0.0.1"
# an unusual range, away from the e2e tests' and the default one
PORT_MIN, PORT_MAX = 47000, 47999
FRAMES = tones.ringback_frames("PCMU", ptime_ms=20)
FRAME_BYTES = tones.frame_bytes("PCMU", 20)


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    with Relay(HOST, PORT_MIN, PORT_MAX) as r:
        yield r


def test_relay_callback(benchmark: Any, relay: Relay) -> None:
    def callback() -> int:
        session = relay.open_session(bridged=False)
        session.set_remote("a", "127.0.0.2", 4000, 4001)
        session.relatch("a")
        session.play("a", FRAMES, frame_bytes=FRAME_BYTES, payload_type=0, ptime_ms=20,
                     samples_per_frame=160)
        session.set_remote("b", "127.0.0.3", 4002, 4003)
        session.relatch("b")
        session.stop_play("a")
        session.set_pt_rewrite("a", {})
        session.set_pt_rewrite("b", {})
        session.bridge()
        stats = session.stats()
        session.close()
        return stats.a.rtp_packets_in

    assert benchmark(callback) == 0
    assert relay.session_count == 0


def test_relay_open_close(benchmark: Any, relay: Relay) -> None:
    def open_close() -> None:
        relay.open_session(bridged=False).close()

    benchmark(open_close)
    assert relay.session_count == 0


def test_relay_stats(benchmark: Any, relay: Relay) -> None:
    with relay.open_session() as session:
        session.set_remote("a", "127.0.0.2", 4000)
        stats = benchmark(session.stats)
    assert stats.a.remote == ("127.0.0.2", 4000)


def test_relay_play_stop(benchmark: Any, relay: Relay) -> None:
    def play_stop() -> None:
        session.play("a", FRAMES, frame_bytes=FRAME_BYTES, payload_type=0, ptime_ms=20,
                     samples_per_frame=160)
        session.stop_play("a")

    with relay.open_session() as session:
        session.set_remote("a", "127.0.0.2", 4000)
        benchmark(play_stop)


def test_relay_remote(benchmark: Any, relay: Relay) -> None:
    def remotes() -> None:
        session.set_remote("a", "127.0.0.2", 4000, 4001)
        session.relatch("a")
        session.set_pt_rewrite("a", {8: 0})

    with relay.open_session() as session:
        benchmark(remotes)
