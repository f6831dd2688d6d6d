"""IIF costs per message (pytest-benchmark; not part of the test suite).

Run: .venv/bin/pytest bench/test_bench_iif.py --benchmark-only
"""

from __future__ import annotations

from typing import Any

from mss.iif import (
    Ack,
    CallbackRequest,
    CallbackResponse,
    IIFConnection,
    Role,
    parse_datagram,
    parse_message,
    serialize,
)

LINE = b"REQUEST: id=1234567890;user1=+4930123456;user2=+4930654321;duration=3600;"
EVENT = CallbackRequest(id="1234567890", user1="+4930123456", user2="+4930654321", duration=3600)


def test_parse_request(benchmark: Any) -> None:
    assert benchmark(parse_message, LINE) == EVENT


def test_parse_request_datagram(benchmark: Any) -> None:
    assert benchmark(parse_datagram, LINE + b"\r\n") == EVENT


def test_serialize_ack(benchmark: Any) -> None:
    ack = Ack(id="1234567890", ok=True)
    assert benchmark(serialize, ack) == b"ACK: id=1234567890;code=ok;\r\n"


def test_serialize_response(benchmark: Any) -> None:
    response = CallbackResponse(id="1234567890", real_duration=180)
    assert benchmark(serialize, response) == b"RESPONSE: id=1234567890;real_duration=180;\r\n"


def test_serialize_extended_response(benchmark: Any) -> None:
    response = CallbackResponse(id="1234567890", real_duration=0, result="user2_busy", code=486)
    assert benchmark(serialize, response).startswith(b"RESPONSE: id=1234567890;real_duration=0;result=")


def test_connection_receive_and_next_event(benchmark: Any) -> None:
    conn = IIFConnection(Role.SERVER)
    data = LINE + b"\r\n"

    def one() -> object:
        conn.receive_data(data, 0.0)
        return conn.next_event()

    assert benchmark(one) == EVENT
    assert conn.buffered == 0


def test_connection_receive_pipelined_100(benchmark: Any) -> None:
    # 100 messages in one read, as a busy AS pipelines them: the cost per message is this / 100.
    conn = IIFConnection(Role.SERVER)
    data = (LINE + b"\r\n") * 100

    def hundred() -> int:
        conn.receive_data(data, 0.0)
        count = 0
        while conn.next_event() is not None:
            count += 1
        return count

    assert benchmark(hundred) == 100


def test_build_request_event(benchmark: Any) -> None:
    fields = {"id": "1234567890", "user1": "+4930123456", "user2": "+4930654321", "duration": 3600}
    assert benchmark(CallbackRequest, **fields) == EVENT
