"""The control socket: the JSON-lines protocol (sans-IO), and the server and client on real unix sockets."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mss.aio import control as control_server
from mss.aio.control import MAX_CONNECTIONS, MAX_SUN_PATH, ControlServer
from mss.aio.control_client import ask
from mss.control import (
    MAX_LINE,
    CallInfo,
    ControlError,
    ControlRequest,
    StatusInfo,
    encode_answer,
    encode_request,
    parse_request,
    read_answer,
    render_calls,
    render_status,
)
from mss.errors import MssError

T = TypeVar("T")

STATUS = StatusInfo(version="0.1.0", pid=42, uptime=3725.0, state="serving", registration="registered",
                    calls=1, max_calls=1000, relay_sessions=1, loop_lag_ms=0.4, overloaded=False)
CALL = CallInfo(id="cb-7", peer="as1", state="bridged", user1="5551001", user2="5551002", age=75.2,
                ports=(30000, 30002), packets_from_user1=3750, packets_to_user1=3760,
                packets_from_user2=3749, packets_to_user2=3750)


def _handler(request: ControlRequest) -> bytes:
    if request.cmd == "status":
        return encode_answer("status", STATUS)
    if request.cmd == "calls":
        return encode_answer("calls", [CALL])
    if request.id == "boom":
        raise RuntimeError("a bug")
    if request.id != CALL.id:
        raise ControlError(f"no callback {request.id} in progress")
    return encode_answer("hangup", request.id)


# --- the protocol ---------------------------------------------------------------------------------


@pytest.mark.parametrize("request_", [
    ControlRequest(cmd="status"), ControlRequest(cmd="calls"), ControlRequest(cmd="hangup", id="a.b_c-9"),
])
def test_requests_round_trip(request_: ControlRequest) -> None:
    line = encode_request(request_)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_request(line.rstrip(b"\n")) == request_


@pytest.mark.parametrize(("line", "reason"), [
    (b"status", "not a JSON request"),
    (b"[1]", "a request is a JSON object"),
    (b"{}", 'a request needs "cmd"'),
    (b'{"cmd": "reboot"}', "unknown command 'reboot' (known: status, calls, hangup)"),
    (b'{"cmd": "status", "x": 1}', "unknown field(s): x"),
    (b'{"cmd": "hangup"}', "hangup needs a callback id"),
    (b'{"cmd": "hangup", "id": "no spaces"}', "hangup needs a callback id"),
    (b'{"cmd": "hangup", "id": "' + b"x" * 32 + b'"}', "hangup needs a callback id"),
    (b'{"cmd": "hangup", "id": 7}', '"id" must be a string'),
    (b'{"cmd": "calls", "id": "7"}', "calls takes no id"),
    (b'{"cmd": "status"}' + b" " * MAX_LINE, f"request longer than {MAX_LINE} bytes"),
    (b"\xff\xfe", "not a JSON request"),
])
def test_bad_requests_get_their_reason(line: bytes, reason: str) -> None:
    with pytest.raises(ControlError) as caught:
        parse_request(line)
    assert reason in str(caught.value)


def test_answers_carry_dataclasses_as_objects() -> None:
    assert read_answer(encode_answer("status", STATUS), "status")["uptime"] == 3725.0
    (call,) = read_answer(encode_answer("calls", [CALL]), "calls")
    assert call["ports"] == [30000, 30002] and call["packets_to_user2"] == 3750
    with pytest.raises(ControlError, match="no callback x in progress"):
        read_answer(b'{"ok": false, "error": "no callback x in progress"}', "hangup")
    with pytest.raises(ControlError, match="not JSON"):
        read_answer(b"HTTP/1.1 400", "status")
    with pytest.raises(ControlError, match="not a control answer"):
        read_answer(b'{"status": 1}', "status")


def test_status_and_calls_for_people() -> None:
    text = render_status(json.loads(encode_answer("status", STATUS))["status"])
    assert text.splitlines() == [
        "mss:          0.1.0 (pid 42), serving",
        "uptime:       1h02m",
        "registration: registered",
        "calls:        1 in progress (max 1000), 1 relay sessions",
        "load:         loop lag 0.4 ms",
    ]
    table = render_calls(json.loads(encode_answer("calls", [CALL]))["calls"]).splitlines()
    assert table[0].split() == ["ID", "PEER", "STATE", "USER1", "USER2", "AGE", "PORTS", "USER1", "IN/OUT",
                                "USER2", "IN/OUT"]
    assert table[1].split() == ["cb-7", "as1", "bridged", "5551001", "5551002", "1m15s", "30000/30002",
                                "3750/3760", "3749/3750"]
    assert render_calls([]) == "no callbacks in progress"


# --- the server and the client on real sockets ----------------------------------------------------


def _serve(path: Path, body: Callable[[ControlServer], Awaitable[T]]) -> T:
    """Run ``body`` with a started server at ``path``; the server is closed afterwards."""

    async def main() -> T:
        server = ControlServer(str(path), _handler)
        await server.start()
        try:
            return await body(server)
        finally:
            await server.close()

    return asyncio.run(main())


def _ask(path: Path, cmd: str, cb_id: str | None = None) -> Awaitable[Any]:
    return asyncio.to_thread(ask, str(path), ControlRequest(cmd=cmd, id=cb_id), timeout=5.0)  # type: ignore[arg-type]


def test_commands_over_the_socket_and_its_file(tmp_path: Path) -> None:
    path = tmp_path / "mss.sock"

    async def body(server: ControlServer) -> None:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
        assert (await _ask(path, "status"))["pid"] == 42
        assert (await _ask(path, "calls"))[0]["id"] == "cb-7"
        assert await _ask(path, "hangup", "cb-7") == "cb-7"
        with pytest.raises(ControlError, match="no callback cb-8 in progress"):
            await _ask(path, "hangup", "cb-8")
        with pytest.raises(ControlError, match="hangup failed inside mss: RuntimeError; see the log"):
            await _ask(path, "hangup", "boom")
        assert (await _ask(path, "status"))["state"] == "serving"  # still serving after the bug

    _serve(path, body)
    assert not path.exists()  # removed at exit


def test_a_long_path_is_reached_through_its_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "mss.sock"
    assert len(os.fsencode(path)) > MAX_SUN_PATH

    async def body(server: ControlServer) -> Any:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        return await _ask(path, "calls")

    assert _serve(path, body)[0]["user2"] == "5551002"
    assert not path.exists()


def _stale_socket(path: Path) -> None:
    """A socket file nobody listens on: what a crashed mss leaves."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


def test_a_stale_socket_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "mss.sock"
    _stale_socket(path)
    with pytest.raises(ControlError, match="mss is not running: nothing answers on"):
        ask(str(path), ControlRequest(cmd="status"))

    async def body(server: ControlServer) -> Any:
        return await _ask(path, "status")

    assert _serve(path, body)["calls"] == 1
    assert "left by a previous mss; replacing it" in caplog.text


def test_start_refuses_when_another_mss_answers(tmp_path: Path) -> None:
    path = tmp_path / "mss.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen(1)
        with pytest.raises(MssError, match="another mss answers there"):
            _serve(path, lambda server: asyncio.sleep(0))
        assert path.exists()  # left to its owner


def test_start_never_removes_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "mss.sock"
    path.write_text("notes\n")
    with pytest.raises(MssError, match="exists and is not a socket; not replacing it"):
        _serve(path, lambda server: asyncio.sleep(0))
    assert path.read_text() == "notes\n"


def test_close_leaves_a_socket_file_that_is_no_longer_its_own(tmp_path: Path) -> None:
    path = tmp_path / "mss.sock"

    async def body(server: ControlServer) -> None:
        path.unlink()
        _stale_socket(path)  # e.g. a second mss started after this one's file was deleted

    _serve(path, body)
    assert path.exists()


def test_client_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"mss is not running: no control socket at .*missing\.sock"):
        ask(str(tmp_path / "missing.sock"), ControlRequest(cmd="status"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ControlError, match=r"mss is not running: nothing answers on|is not a control socket"):
        ask(str(tmp_path / "file"), ControlRequest(cmd="status"))


async def _raw(path: Path, data: bytes, *, eof: bool = True) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    if eof:
        writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def test_bounded_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mss.sock"
    monkeypatch.setattr(control_server, "REQUEST_TIMEOUT", 0.2)

    async def body(server: ControlServer) -> list[Any]:
        return [
            json.loads(await _raw(path, b"x" * (MAX_LINE + 10) + b"\n")),
            json.loads(await _raw(path, b"{nope\n")),
            json.loads(await _raw(path, b'{"cmd": "status"}')),  # a last line without its line end
            json.loads(await _raw(path, b'{"cmd": "sta', eof=False)),  # never completed
            await _raw(path, b""),  # connected and left: nothing to answer
        ]

    too_long, bad, unended, stalled, empty = _serve(path, body)
    assert too_long == {"ok": False, "error": f"request longer than {MAX_LINE} bytes"}
    assert bad["ok"] is False and "not a JSON request" in bad["error"]
    assert unended["ok"] is True and unended["status"]["pid"] == 42
    assert stalled == {"ok": False, "error": "no request line within 0.2s"}
    assert empty == b""


def test_connections_beyond_the_bound_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mss.sock"

    async def body(server: ControlServer) -> tuple[bytes, Any]:
        idle = [await asyncio.open_unix_connection(str(path)) for _ in range(MAX_CONNECTIONS)]
        await asyncio.sleep(0.1)  # let the server take them
        reader, writer = await asyncio.open_unix_connection(str(path))
        refused = await asyncio.wait_for(reader.read(), 10)  # answered before it asked anything
        writer.close()
        for _, idle_writer in idle:
            idle_writer.close()
        await asyncio.sleep(0.1)
        return refused, await _ask(path, "status")

    refused, served = _serve(path, body)
    assert json.loads(refused) == {"ok": False, "error": f"busy: {MAX_CONNECTIONS} control connections open"}
    assert served["pid"] == 42  # served again once they went


def test_close_ends_open_connections(tmp_path: Path) -> None:
    path = tmp_path / "mss.sock"

    async def body(server: ControlServer) -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(path))
        await asyncio.sleep(0.05)
        await server.close()
        try:
            return await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            return b""
        finally:
            writer.close()

    assert _serve(path, body) == b""
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_is_told_permission_denied() -> None:
    """The socket is 0660: a user neither mss's nor in its group cannot connect, and is told so. The
    client runs in a forked child that became ``nobody`` (root itself is never refused)."""
    shared = Path(tempfile.mkdtemp(prefix="mss-perm-"))  # reachable by others; the socket is not
    path = shared / "mss.sock"
    try:
        shared.chmod(0o755)

        async def body(server: ControlServer) -> str:
            return await asyncio.to_thread(_ask_as_nobody, path)

        said = _serve(path, body)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert said.startswith(f"permission denied on {path}: run as the user mss runs as"), said


def _ask_as_nobody(path: Path) -> str:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, ask, report the error text, exit at once
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                ask(str(path), ControlRequest(cmd="status"), timeout=5.0)
                text = "answered"
            except ControlError as exc:
                text = str(exc)
            os.write(write, text.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(pid, 0)
    return said
