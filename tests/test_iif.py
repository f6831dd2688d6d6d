"""IIF, sans-IO: golden messages, TCP framing with a fake clock, the 1024-byte bound, events, properties."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mss.errors import IIFError, LocalProtocolError
from mss.iif import (
    IDLE_COMPLETION,
    MAX_IIF_MESSAGE,
    RESULTS,
    Ack,
    CallbackRequest,
    CallbackResponse,
    Cancel,
    Event,
    IIFConnection,
    ProgressEvent,
    Role,
    parse_datagram,
    parse_message,
    serialize,
)
from tests.helpers import FakeClock, chunkings, feed_three_ways

DATA = Path(__file__).parent / "data" / "iif"
MAX_DURATION = 86400

VALID = b"REQUEST: id=1234;user1=100;user2=101;duration=3600;"
VALID_EVENT = CallbackRequest(id="1234", user1="100", user2="101", duration=3600)


# --- feeding -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Refused:
    """What a refused message turns into: the ACK mss writes and the reason."""

    ack: bytes
    reason: str


def drain(conn: IIFConnection) -> list[Event | Refused]:
    out: list[Event | Refused] = []
    while True:
        try:
            event = conn.next_event()
        except IIFError as exc:
            out.append(Refused(serialize(Ack(id=exc.iif_id, ok=False)), exc.reason))
            continue
        if event is None:
            return out
        out.append(event)


class Fed:
    """A connection with its fake clock, fed by feed_three_ways."""

    def __init__(self, role: Role = Role.SERVER, max_duration: int = MAX_DURATION) -> None:
        self.clock = FakeClock()
        self.conn = IIFConnection(role, max_duration=max_duration)


def maker(role: Role = Role.SERVER, max_duration: int = MAX_DURATION) -> object:
    return lambda: Fed(role, max_duration)


def feed(fed: object, chunk: bytes) -> list[object]:
    assert isinstance(fed, Fed)
    fed.conn.receive_data(chunk, fed.clock())
    assert fed.conn.buffered <= MAX_IIF_MESSAGE
    return list(drain(fed.conn))


def events_of(data: bytes, role: Role = Role.SERVER, trailing: bytes = b"REQUEST: id=next;") -> list[object]:
    """Events of ``data`` fed whole, byte by byte, split in two, and with a partial next message."""
    return feed_three_ways(maker(role), feed, data, trailing)


# --- golden messages -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Golden:
    name: str
    message: bytes
    canonical: bytes | None = None  # accepted: serialize(event) without CRLF
    ack: bytes | None = None  # refused: the ACK line
    reason: str | None = None  # refused: IIFError.reason


_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|t|r)")


def _unescape(raw: bytes) -> bytes:
    def one(m: re.Match[bytes]) -> bytes:
        code = m.group(1)
        return {b"t": b"\t", b"r": b"\r"}.get(code) or bytes([int(code[1:], 16)])

    return _ESCAPE.sub(one, raw)


def load_golden(name: str) -> list[Golden]:
    blocks: list[Golden] = []
    current: dict[str, object] = {}
    for raw in [*(DATA / name).read_bytes().split(b"\n"), b""]:
        if raw.startswith(b"#"):
            continue
        if not raw.strip():
            if current:
                blocks.append(Golden(**current))  # type: ignore[arg-type]
                current = {}
            continue
        if raw.startswith(b"[") and raw.endswith(b"]"):
            current = {"name": raw[1:-1].decode()}
        elif raw.startswith(b"> "):
            current["message"] = _unescape(raw[2:])
        elif raw.startswith(b"= "):
            current["canonical"] = raw[2:]
        elif raw.startswith(b"< "):
            current["ack"] = raw[2:]
        elif raw.startswith(b"! "):
            current["reason"] = raw[2:].decode("utf-8")
        else:
            raise AssertionError(f"{name}: unreadable fixture line {raw!r}")
    return blocks


def golden(name: str) -> list[object]:
    return [pytest.param(g, id=g.name) for g in load_golden(name)]


def test_golden_files_are_well_formed() -> None:
    for name, accepted in [
        ("server_accepted.txt", True),
        ("server_refused.txt", False),
        ("client_accepted.txt", True),
        ("client_refused.txt", False),
    ]:
        blocks = load_golden(name)
        assert len(blocks) >= 6, name
        assert len({g.name for g in blocks}) == len(blocks), f"{name}: duplicate names"
        for g in blocks:
            if accepted:
                assert g.canonical is not None and g.ack is None and g.reason is None, g.name
            else:
                assert g.canonical is None and g.ack is not None and g.reason is not None, g.name


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=["server", "client"])
def test_golden_accepted(role: Role) -> None:
    for g in load_golden(f"{role.value}_accepted.txt"):
        for line_end in (b"\n", b"\r\n"):
            events = events_of(g.message + line_end, role)
            assert len(events) == 1, (g.name, events)
            event = events[0]
            assert not isinstance(event, Refused), (g.name, event)
            assert isinstance(event, CallbackRequest | Cancel | Ack | CallbackResponse)
            assert serialize(event) == g.canonical + b"\r\n", g.name
        # The same message as a datagram (with and without its line end), and parsed alone.
        assert parse_datagram(g.message, role=role) == event
        assert parse_datagram(g.message + b"\r\n", role=role) == event
        assert parse_message(g.message, role=role) == event
        # The canonical form parses back to the same event.
        assert parse_message(g.canonical or b"", role=role) == event


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=["server", "client"])
def test_golden_refused(role: Role) -> None:
    for g in load_golden(f"{role.value}_refused.txt"):
        assert g.reason is not None and g.ack is not None
        expected = Refused(g.ack + b"\r\n", g.reason)
        for line_end in (b"\n", b"\r\n"):
            assert events_of(g.message + line_end, role) == [expected], g.name
        with pytest.raises(IIFError) as info:
            parse_datagram(g.message + b"\r\n", role=role)
        assert (info.value.reason, serialize(Ack(id=info.value.iif_id, ok=False))) == (
            g.reason,
            g.ack + b"\r\n",
        ), g.name


@pytest.mark.parametrize("g", golden("server_accepted.txt"))
def test_golden_server_accepted_is_an_event(g: Golden) -> None:
    # Each accepted REQUEST is what its canonical line says, field by field.
    event = parse_message(g.message)
    if isinstance(event, CallbackRequest):
        params = (g.canonical or b"").decode()[len("REQUEST: ") :].split(";")
        fields = dict(p.split("=", 1) for p in params if p)
        assert event == CallbackRequest(
            id=fields["id"], user1=fields["user1"], user2=fields["user2"], duration=int(fields["duration"])
        )
    else:
        assert isinstance(event, Cancel)
        assert event.id == "1234"


def test_a_refused_message_does_not_spoil_the_next() -> None:
    stream = (
        b"REQUEST: id=1;user1=100;duration=5;\r\n"  # missing user2
        + VALID
        + b"\r\n"
        + b"\x00\xff garbage\n"
        + b"CANCEL: id=1234;\n"
    )
    assert events_of(stream) == [
        Refused(b"ACK: id=1;code=fail;\r\n", "missing parameter 'user2'"),
        VALID_EVENT,
        Refused(b"ACK: id=;code=fail;\r\n", "no METHOD: at the start of the message"),
        Cancel(id="1234"),
    ]


def test_a_readable_id_is_echoed_whatever_else_is_wrong() -> None:
    # SPEC.md: the id is left empty only "when none could be read". An unknown (lowercase) method, a
    # space before the colon or a missing colon still leave a readable id: it is echoed.
    stream = (
        b"request: id=7;user1=100;user2=101;duration=30;\r\n"
        + b"Cancel: id=8;\n"
        + b"REQUEST : id=9;user1=100;user2=101;duration=30;\n"
        + b"REQUEST id=10;user1=100;user2=101;duration=30\n"
        + b"request: id=1 1;user1=100;\n"  # an id that is not valid is never echoed
        + b"GET / HTTP/1.1\r\n"
    )
    assert events_of(stream) == [
        Refused(b"ACK: id=7;code=fail;\r\n", "unknown method 'request'"),
        Refused(b"ACK: id=8;code=fail;\r\n", "unknown method 'Cancel'"),
        Refused(b"ACK: id=9;code=fail;\r\n", "no METHOD: at the start of the message"),
        Refused(b"ACK: id=10;code=fail;\r\n", "no METHOD: at the start of the message"),
        Refused(b"ACK: id=;code=fail;\r\n", "unknown method 'request'"),
        Refused(b"ACK: id=;code=fail;\r\n", "no METHOD: at the start of the message"),
    ]
    with pytest.raises(IIFError) as info:
        parse_datagram(b"request: id=7;user1=100;user2=101;duration=30;")
    assert (info.value.reason, info.value.iif_id) == ("unknown method 'request'", "7")


def test_max_duration_comes_from_the_connection() -> None:
    def make() -> object:
        return Fed(max_duration=60)

    data = b"REQUEST: id=a;user1=1;user2=2;duration=60;\nREQUEST: id=b;user1=1;user2=2;duration=61;\n"
    assert feed_three_ways(make, feed, data) == [
        CallbackRequest(id="a", user1="1", user2="2", duration=60),
        Refused(b"ACK: id=b;code=fail;\r\n", "duration 61 is outside 1..60"),
    ]
    with pytest.raises(IIFError, match=r"^duration 61 is outside 1\.\.60$"):
        parse_datagram(b"REQUEST: id=b;user1=1;user2=2;duration=61;", max_duration=60)


# --- TCP framing ----------------------------------------------------------------------------------

def test_lf_and_crlf_and_blank_lines() -> None:
    stream = VALID + b"\n\r\n\n  \t \r\n" + b"CANCEL: id=1234;\r\n" + b"CANCEL: id=5\n"
    assert events_of(stream) == [VALID_EVENT, Cancel(id="1234"), Cancel(id="5")]


def test_nothing_before_the_line_end() -> None:
    conn = IIFConnection()
    for byte in VALID:
        conn.receive_data(bytes([byte]), 0.0)
        assert conn.next_event() is None
    conn.receive_data(b"\r", 0.0)
    assert conn.next_event() is None
    conn.receive_data(b"\n", 0.0)
    assert conn.next_event() == VALID_EVENT
    assert conn.next_event() is None
    assert conn.buffered == 0


def test_pipelined_messages_come_out_in_order() -> None:
    lines = [f"REQUEST: id=r{i};user1=1{i};user2=2{i};duration={i + 1};".encode() for i in range(50)]
    conn = IIFConnection()
    conn.receive_data(b"\r\n".join(lines) + b"\r\n", 0.0)
    assert drain(conn) == [
        CallbackRequest(id=f"r{i}", user1=f"1{i}", user2=f"2{i}", duration=i + 1) for i in range(50)
    ]


# --- idle completion (200 ms) ---------------------------------------------------------------------

def test_idle_completion_at_200ms_not_before() -> None:
    clock = FakeClock()
    conn = IIFConnection()
    conn.receive_data(VALID, clock())
    assert conn.next_event() is None
    assert conn.get_timer() == clock.now + IDLE_COMPLETION
    conn.handle_timer(clock.now + 0.199)
    assert conn.next_event() is None
    conn.handle_timer(clock.now + IDLE_COMPLETION)
    assert conn.next_event() == VALID_EVENT
    assert conn.next_event() is None
    assert conn.get_timer() is None
    assert conn.buffered == 0


def test_idle_completion_byte_by_byte_restarts_the_timer() -> None:
    clock = FakeClock()
    conn = IIFConnection()
    for byte in VALID:
        conn.receive_data(bytes([byte]), clock.advance(0.15))
        conn.handle_timer(clock())
        assert conn.next_event() is None
    # The last byte arrived at clock.now: the timer counts from it.
    assert conn.get_timer() == pytest.approx(clock.now + IDLE_COMPLETION)
    conn.handle_timer(clock.advance(0.19))
    assert conn.next_event() is None
    conn.handle_timer(clock.advance(0.01))
    assert conn.next_event() == VALID_EVENT


def test_idle_completion_of_several_messages_without_line_ends() -> None:
    clock = FakeClock()
    conn = IIFConnection()
    for i in range(3):
        conn.receive_data(f"REQUEST: id={i};user1=1;user2=2;".encode(), clock.advance(1))
        conn.receive_data(b"duration=5;  ", clock.advance(0.1))
        conn.handle_timer(clock.advance(0.1))
        assert conn.next_event() is None
        conn.handle_timer(clock.advance(0.1))
        assert conn.next_event() == CallbackRequest(id=str(i), user1="1", user2="2", duration=5)


@pytest.mark.parametrize(
    "partial",
    [
        b"REQUEST: id=1234;user1=100;user2=101;duration=3600",  # no final ';': may go on
        b"REQUEST: id=1234;user1=100;user2=101;dura",
        b"REQUEST: id=1234;user1=100;user2=101;duration=3600;x",
    ],
)
def test_no_idle_completion_without_a_final_semicolon(partial: bytes) -> None:
    clock = FakeClock()
    conn = IIFConnection()
    conn.receive_data(partial, clock())
    assert conn.get_timer() is None
    conn.handle_timer(clock.advance(3600))
    assert conn.next_event() is None
    assert conn.buffered == len(partial)


def test_idle_completion_then_line_end_is_not_a_second_message() -> None:
    clock = FakeClock()
    conn = IIFConnection()
    conn.receive_data(VALID, clock())
    conn.handle_timer(clock.advance(IDLE_COMPLETION))
    assert drain(conn) == [VALID_EVENT]
    conn.receive_data(b"\r\n", clock.advance(1))
    assert drain(conn) == []


def test_idle_completion_of_a_refused_message() -> None:
    clock = FakeClock()
    conn = IIFConnection()
    conn.receive_data(b"REQUEST: id=77;user1=100;", clock())
    conn.handle_timer(clock.advance(IDLE_COMPLETION))
    assert drain(conn) == [Refused(b"ACK: id=77;code=fail;\r\n", "missing parameter 'user2'")]


def test_handle_timer_without_a_deadline_does_nothing() -> None:
    conn = IIFConnection()
    conn.handle_timer(5.0)
    assert conn.next_event() is None
    conn.receive_data(VALID + b"\n", 5.0)
    conn.handle_timer(100.0)
    assert drain(conn) == [VALID_EVENT]


# --- end of stream --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (VALID, [VALID_EVENT]),
        (VALID + b"\r", [VALID_EVENT]),
        (b"REQUEST: id=1234;user1=100;user2=101;duration=3600", [VALID_EVENT]),
        (b"REQUEST: id=9;user1=100;us", [Refused(b"ACK: id=9;code=fail;\r\n", "malformed parameter 'us'")]),
        (b"REQUEST: id=9;user1=100;", [Refused(b"ACK: id=9;code=fail;\r\n", "missing parameter 'user2'")]),
        (b"  \r", []),
        (b"", []),
    ],
)
def test_end_of_stream_completes_what_is_buffered(tail: bytes, expected: list[object]) -> None:
    for _name, chunks in chunkings(b"CANCEL: id=1;\n" + tail):
        conn = IIFConnection()
        for chunk in chunks:
            conn.receive_data(chunk, 0.0)
        conn.receive_data(b"", 0.0)
        assert conn.closed
        assert drain(conn) == [Cancel(id="1"), *expected]
        assert conn.buffered == 0
        assert conn.get_timer() is None
        conn.receive_data(VALID + b"\n", 1.0)  # nothing after the end
        assert drain(conn) == []


def test_end_of_stream_inside_an_oversized_message() -> None:
    conn = IIFConnection()
    conn.receive_data(b"REQUEST: id=big;" + b"x" * 2000, 0.0)
    conn.receive_data(b"", 0.0)
    assert drain(conn) == [Refused(b"ACK: id=big;code=fail;\r\n", "message longer than 1024 bytes")]


# --- the 1024-byte bound --------------------------------------------------------------------------

def padded(size: int, head: bytes = b"REQUEST: id=big;user1=100;user2=101;duration=60;pad=") -> bytes:
    """A REQUEST of exactly ``size`` bytes (line end excluded), padded with an unknown parameter."""
    message = head + b"p" * (size - len(head) - 1) + b";"
    assert len(message) == size
    return message


BIG_EVENT = CallbackRequest(id="big", user1="100", user2="101", duration=60)
OVERSIZED = Refused(b"ACK: id=big;code=fail;\r\n", "message longer than 1024 bytes")


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_exactly_1024_bytes_accepted(line_end: bytes) -> None:
    assert events_of(padded(MAX_IIF_MESSAGE) + line_end + VALID + line_end) == [BIG_EVENT, VALID_EVENT]


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_1025_bytes_refused_then_the_next_message_parsed(line_end: bytes) -> None:
    assert events_of(padded(MAX_IIF_MESSAGE + 1) + line_end + VALID + line_end) == [OVERSIZED, VALID_EVENT]


def test_exactly_1024_bytes_by_idle_completion() -> None:
    clock = FakeClock()
    conn = IIFConnection()
    conn.receive_data(padded(MAX_IIF_MESSAGE), clock())
    assert conn.buffered == MAX_IIF_MESSAGE
    conn.handle_timer(clock.advance(IDLE_COMPLETION))
    assert drain(conn) == [BIG_EVENT]


def test_1024_bytes_then_cr_then_more_is_oversized() -> None:
    # The CR after a full buffer is kept as a flag, not a byte: what follows decides.
    assert events_of(padded(MAX_IIF_MESSAGE) + b"\rx\n" + VALID + b"\n") == [OVERSIZED, VALID_EVENT]


def test_oversized_stream_is_discarded_up_to_its_line_end() -> None:
    data = b"REQUEST: id=big;" + b"A" * 5000 + b"\r\n" + VALID + b"\r\n"
    assert events_of(data) == [OVERSIZED, VALID_EVENT]
    # The refusal comes as soon as the bound is passed, not at the line end.
    conn = IIFConnection()
    conn.receive_data(b"REQUEST: id=big;" + b"A" * (MAX_IIF_MESSAGE - 16), 0.0)
    assert drain(conn) == []
    conn.receive_data(b"A", 0.0)
    assert drain(conn) == [OVERSIZED]
    for _ in range(100):
        conn.receive_data(b"B" * 999, 0.0)
        assert conn.buffered == 0
    conn.receive_data(b"still discarded\n" + VALID + b"\n", 0.0)
    assert drain(conn) == [VALID_EVENT]


@pytest.mark.parametrize(
    ("head", "ack"),
    [
        (b"REQUEST: id=big;", b"ACK: id=big;code=fail;\r\n"),
        (b"REQUEST: user1=1;", b"ACK: id=;code=fail;\r\n"),  # no id
        (b"\xff\xfe garbage ", b"ACK: id=;code=fail;\r\n"),  # no method
        (b"REQUEST: id=bad id;", b"ACK: id=;code=fail;\r\n"),  # unreadable id
    ],
)
def test_oversized_refusal_echoes_a_readable_id(head: bytes, ack: bytes) -> None:
    message = head + b"z" * (MAX_IIF_MESSAGE + 10 - len(head))
    assert events_of(message + b"\n") == [Refused(ack, "message longer than 1024 bytes")]


def test_oversized_refusal_does_not_echo_an_id_cut_at_the_bound() -> None:
    head = b"REQUEST: pad=" + b"p" * (MAX_IIF_MESSAGE - 13 - 6) + b";"
    message = head + b"id=123456;"  # "id=12" is what lies within 1024 bytes
    assert len(head) + 5 == MAX_IIF_MESSAGE
    assert events_of(message + b"\n") == [
        Refused(b"ACK: id=;code=fail;\r\n", "message longer than 1024 bytes")
    ]


def test_oversized_message_without_line_ends_ends_after_idle() -> None:
    # An AS that sends no line ends: its oversized message ends at the ';' and 200 ms of silence.
    clock = FakeClock()
    conn = IIFConnection()
    conn.receive_data(padded(2000), clock())
    assert drain(conn) == [OVERSIZED]
    assert conn.buffered == 0
    assert conn.get_timer() == clock.now + IDLE_COMPLETION
    conn.handle_timer(clock.advance(0.1))
    conn.receive_data(b"more;", clock())  # still the same message
    conn.handle_timer(clock.advance(0.15))
    assert conn.get_timer() is not None
    conn.handle_timer(clock.advance(0.051))
    assert conn.get_timer() is None
    conn.receive_data(VALID, clock.advance(1))
    conn.handle_timer(clock.advance(IDLE_COMPLETION))
    assert drain(conn) == [VALID_EVENT]


def test_oversized_message_not_ending_with_semicolon_waits_for_its_line_end() -> None:
    clock = FakeClock()
    conn = IIFConnection()
    conn.receive_data(padded(2000) + b"tail", clock())
    assert drain(conn) == [OVERSIZED]
    assert conn.get_timer() is None
    conn.handle_timer(clock.advance(60))
    conn.receive_data(VALID, clock())  # still part of the oversized message
    conn.handle_timer(clock.advance(IDLE_COMPLETION))
    assert drain(conn) == []
    conn.receive_data(b"\n" + VALID + b"\n", clock())
    assert drain(conn) == [VALID_EVENT]


@given(st.lists(st.binary(min_size=0, max_size=700), max_size=12))
def test_buffer_never_above_the_bound(chunks: list[bytes]) -> None:
    conn = IIFConnection()
    for chunk in chunks:
        conn.receive_data(chunk + b"x" * 100, 0.0)
        assert conn.buffered <= MAX_IIF_MESSAGE
        drain(conn)


# --- datagrams ------------------------------------------------------------------------------------

def test_datagram_is_one_message() -> None:
    assert parse_datagram(VALID) == VALID_EVENT
    assert parse_datagram(VALID + b"\n") == VALID_EVENT
    assert parse_datagram(VALID + b"\r\n") == VALID_EVENT
    with pytest.raises(IIFError) as info:
        parse_datagram(VALID + b"\r\nCANCEL: id=1;\r\n")
    assert (info.value.reason, info.value.iif_id) == ("more than one line in a datagram", "1234")
    with pytest.raises(IIFError) as info:
        parse_datagram(b"")
    assert (info.value.reason, info.value.iif_id) == ("no METHOD: at the start of the message", "")


def test_datagram_bound() -> None:
    assert parse_datagram(padded(MAX_IIF_MESSAGE) + b"\r\n") == BIG_EVENT
    with pytest.raises(IIFError) as info:
        parse_datagram(padded(MAX_IIF_MESSAGE + 1))
    assert info.value.reason == "message longer than 1024 bytes"
    assert info.value.iif_id == ""


# --- serialization --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (Ack(id="1234", ok=True), b"ACK: id=1234;code=ok;\r\n"),
        (Ack(id="1234", ok=False), b"ACK: id=1234;code=fail;\r\n"),
        (Ack(id="", ok=False), b"ACK: id=;code=fail;\r\n"),
        (CallbackResponse(id="1234", real_duration=180), b"RESPONSE: id=1234;real_duration=180;\r\n"),
        (CallbackResponse(id="1234", real_duration=0), b"RESPONSE: id=1234;real_duration=0;\r\n"),
        (
            CallbackResponse(id="7", real_duration=0, result="user2_busy", code=486),
            b"RESPONSE: id=7;real_duration=0;result=user2_busy;code=486;\r\n",
        ),
        (VALID_EVENT, VALID + b"\r\n"),
        (Cancel(id="1234"), b"CANCEL: id=1234;\r\n"),
        (ProgressEvent(id="1234", state="user1_ringing"), b"EVENT: id=1234;state=user1_ringing;\r\n"),
        (ProgressEvent(id="9", state="bridged"), b"EVENT: id=9;state=bridged;\r\n"),
    ],
)
def test_serialize_exact(event: Event, wire: bytes) -> None:
    assert serialize(event) == wire


def test_send_by_role() -> None:
    server, client = IIFConnection(Role.SERVER), IIFConnection(Role.CLIENT)
    assert server.send(Ack(id="1", ok=True)) == b"ACK: id=1;code=ok;\r\n"
    assert server.send(CallbackResponse(id="1", real_duration=3)) == b"RESPONSE: id=1;real_duration=3;\r\n"
    assert client.send(VALID_EVENT) == VALID + b"\r\n"
    assert client.send(Cancel(id="1")) == b"CANCEL: id=1;\r\n"
    with pytest.raises(LocalProtocolError, match=r"^a server does not send CallbackRequest$"):
        server.send(VALID_EVENT)
    with pytest.raises(LocalProtocolError, match=r"^a server does not send Cancel$"):
        server.send(Cancel(id="1"))
    with pytest.raises(LocalProtocolError, match=r"^a client does not send Ack$"):
        client.send(Ack(id="1", ok=True))
    with pytest.raises(LocalProtocolError, match=r"^a client does not send CallbackResponse$"):
        client.send(CallbackResponse(id="1", real_duration=3))


# --- events cannot be built invalid ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CallbackRequest(id="", user1="1", user2="2", duration=5), "invalid IIF id ''"),
        (
            lambda: CallbackRequest(id="a" * 32, user1="1", user2="2", duration=5),
            f"invalid IIF id '{'a' * 32}'",
        ),
        (lambda: CallbackRequest(id="a;b", user1="1", user2="2", duration=5), "invalid IIF id 'a;b'"),
        (lambda: CallbackRequest(id="a", user1="", user2="2", duration=5), "invalid IIF user ''"),
        (lambda: CallbackRequest(id="a", user1="1", user2="x=y", duration=5), "invalid IIF user 'x=y'"),
        (
            lambda: CallbackRequest(id="a", user1="1", user2="2" * 32, duration=5),
            f"invalid IIF user '{'2' * 32}'",
        ),
        (lambda: CallbackRequest(id="a", user1="1", user2="2", duration=0), "invalid IIF duration 0"),
        (lambda: CallbackRequest(id="a", user1="1", user2="2", duration=-1), "invalid IIF duration -1"),
        (
            lambda: CallbackRequest(id="a", user1="1", user2="2", duration=10**10),
            "invalid IIF duration 10000000000",
        ),
        (lambda: CallbackRequest(id="a", user1="1", user2="2", duration=True), "invalid IIF duration True"),
        (lambda: CallbackRequest(id="a", user1="1", user2="2", duration="5"), "invalid IIF duration '5'"),
        (lambda: CallbackRequest(id=5, user1="1", user2="2", duration=5), "invalid IIF id 5"),
        (lambda: Cancel(id="é"), "invalid IIF id 'é'"),
        (lambda: Ack(id="", ok=True), "invalid IIF id ''"),
        (lambda: Ack(id="a b", ok=False), "invalid IIF id 'a b'"),
        (lambda: Ack(id="a", ok=1), "ACK ok must be True or False, not 1"),
        (lambda: CallbackResponse(id="a", real_duration=-1), "invalid IIF real_duration -1"),
        (lambda: CallbackResponse(id="a", real_duration=10**10), "invalid IIF real_duration 10000000000"),
        (lambda: CallbackResponse(id="a", real_duration=1, result="answered"), "result and code go together"),
        (lambda: CallbackResponse(id="a", real_duration=1, code=200), "result and code go together"),
        (lambda: CallbackResponse(id="a", real_duration=1, result="won", code=200), "unknown result 'won'"),
        (
            lambda: CallbackResponse(id="a", real_duration=1, result="answered", code=700),
            "invalid SIP code 700",
        ),
        (
            lambda: CallbackResponse(id="a", real_duration=1, result="answered", code=-1),
            "invalid SIP code -1",
        ),
    ],
)
def test_events_cannot_be_built_invalid(build: object, message: str) -> None:
    assert callable(build)
    with pytest.raises(LocalProtocolError) as info:
        build()
    assert str(info.value) == message


def test_events_are_frozen() -> None:
    with pytest.raises(AttributeError):
        VALID_EVENT.duration = 5  # type: ignore[misc]


# --- properties -----------------------------------------------------------------------------------

ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
USER_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+*#._-"
ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=31)
users = st.text(alphabet=USER_CHARS, min_size=1, max_size=31)
requests = st.builds(CallbackRequest, id=ids, user1=users, user2=users, duration=st.integers(1, MAX_DURATION))
cancels = st.builds(Cancel, id=ids)
acks = st.one_of(st.builds(Ack, id=ids, ok=st.booleans()), st.just(Ack(id="", ok=False)))
responses = st.one_of(
    st.builds(CallbackResponse, id=ids, real_duration=st.integers(0, 10**10 - 1)),
    st.builds(
        CallbackResponse,
        id=ids,
        real_duration=st.integers(0, 10**10 - 1),
        result=st.sampled_from(sorted(RESULTS)),
        code=st.integers(0, 699),
    ),
)


@given(st.lists(st.one_of(requests, cancels), min_size=1, max_size=8), st.data())
def test_round_trip_server(events: list[Event], data: st.DataObject) -> None:
    wire = b"".join(serialize(e) for e in events)
    for e in events:
        assert parse_message(serialize(e)[:-2]) == e
        assert parse_datagram(serialize(e)) == e
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    conn = IIFConnection()
    got: list[object] = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        if a < b:  # b"" would end the stream
            conn.receive_data(wire[a:b], 0.0)
            got.extend(drain(conn))
    assert got == events


progress_events = st.builds(
    ProgressEvent, id=ids,
    state=st.sampled_from(["user1_ringing", "user1_answered", "user2_ringing", "bridged"]),
)


@given(st.lists(st.one_of(acks, responses, progress_events), min_size=1, max_size=8))
def test_round_trip_client(events: list[Event]) -> None:
    wire = b"".join(serialize(e) for e in events)
    conn = IIFConnection(Role.CLIENT)
    conn.receive_data(wire, 0.0)
    assert drain(conn) == events
    for e in events:
        assert parse_datagram(serialize(e), role=Role.CLIENT) == e


@given(requests)
def test_round_trip_without_line_ends_by_idle_completion(request: CallbackRequest) -> None:
    clock = FakeClock()
    conn = IIFConnection()
    conn.receive_data(serialize(request)[:-2], clock())
    conn.handle_timer(clock.advance(IDLE_COMPLETION))
    assert drain(conn) == [request]


def _valid(event: object, role: Role, max_duration: int) -> None:
    """An event that came out of the parser is one the constructors accept and round-trips."""
    expected = (CallbackRequest, Cancel) if role is Role.SERVER else (Ack, CallbackResponse)
    assert isinstance(event, expected)
    if isinstance(event, CallbackRequest):
        assert 1 <= event.duration <= max_duration
    assert parse_message(serialize(event)[:-2], role=role, max_duration=max_duration) == event


_hostile = st.one_of(
    st.binary(max_size=1500),
    st.lists(
        st.sampled_from(
            [b"REQUEST:", b"CANCEL:", b"ACK:", b"RESPONSE:", b" ", b"id=", b"user1=", b"user2=", b"duration=",
             b"real_duration=", b"code=ok", b"result=answered", b"1", b"0", b"a", b";", b"=", b"\r", b"\n",
             b"\xff", b"\x00", b"p" * 300]
        ),
        max_size=40,
    ).map(b"".join),
)


@settings(max_examples=150)
@given(_hostile, st.sampled_from([Role.SERVER, Role.CLIENT]), st.data())
def test_arbitrary_bytes_raise_only_iif_error(data: bytes, role: Role, draw: st.DataObject) -> None:
    max_duration = 3600
    try:
        _valid(parse_datagram(data, role=role, max_duration=max_duration), role, max_duration)
    except IIFError as exc:
        assert exc.iif_id == "" or re.fullmatch(r"[A-Za-z0-9._-]{1,31}", exc.iif_id)
        # The refusal can always be answered.
        serialize(Ack(id=exc.iif_id, ok=False))

    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=8)))
    clock = FakeClock()
    conn = IIFConnection(role, max_duration=max_duration)
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        conn.receive_data(data[a:b], clock.advance(draw.draw(st.sampled_from([0.0, 0.1, 0.3]))))
        assert conn.buffered <= MAX_IIF_MESSAGE
        if draw.draw(st.booleans()):
            conn.handle_timer(clock())
        while True:
            try:
                event = conn.next_event()
            except IIFError:
                continue
            if event is None:
                break
            _valid(event, role, max_duration)


@given(st.text(max_size=40), st.text(max_size=40), st.integers(-5, 10**11))
def test_constructors_accept_exactly_the_valid(ident: str, user: str, number: int) -> None:
    id_ok = re.fullmatch(r"[A-Za-z0-9._-]{1,31}", ident) is not None
    user_ok = re.fullmatch(r"[A-Za-z0-9+*#._-]{1,31}", user) is not None
    number_ok = 1 <= number < 10**10
    try:
        CallbackRequest(id=ident, user1=user, user2=user, duration=number)
    except LocalProtocolError:
        assert not (id_ok and user_ok and number_ok)
    else:
        assert id_ok and user_ok and number_ok
    try:
        Cancel(id=ident)
    except LocalProtocolError:
        assert not id_ok
    else:
        assert id_ok
    try:
        CallbackResponse(id=ident, real_duration=number)
    except LocalProtocolError:
        assert not (id_ok and 0 <= number < 10**10)
    else:
        assert id_ok and 0 <= number < 10**10


def test_event_lines_are_for_the_as_only_and_checked() -> None:
    line = b"EVENT: id=7;state=user2_ringing;"
    assert parse_message(line, role=Role.CLIENT) == ProgressEvent(id="7", state="user2_ringing")
    assert IIFConnection(Role.SERVER).send(ProgressEvent(id="7", state="bridged")) == (
        b"EVENT: id=7;state=bridged;\r\n"
    )
    with pytest.raises(IIFError, match="unknown method 'EVENT'") as refused:
        parse_message(line)  # an AS does not send EVENT to mss
    assert refused.value.iif_id == "7"
    with pytest.raises(IIFError, match="state 'talking' is not one of bridged, user1_answered"):
        parse_message(b"EVENT: id=7;state=talking;", role=Role.CLIENT)
    with pytest.raises(IIFError, match="missing parameter 'state'"):
        parse_message(b"EVENT: id=7;", role=Role.CLIENT)
    with pytest.raises(LocalProtocolError, match="unknown callback state 'talking'"):
        ProgressEvent(id="7", state="talking")  # type: ignore[arg-type]
