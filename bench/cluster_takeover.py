"""``python -m bench.cluster_takeover``: a node killed with callbacks in flight; how soon, how
completely and how exactly once a survivor delivers their RESPONSEs.

Real parts: a PostgreSQL server (``tests/pg.py``, in a temp directory), Kamailio as a stateless far
end that answers every INVITE (``bench/load/farend.py``), and two ``mss run`` nodes on one database
(``[journal] backend = postgresql``, ``[cluster] node = n1`` / ``n2``, ``lease = --lease``).

Each repetition: an AS orders ``--callbacks`` callbacks (``duration`` long enough to outlast the
run) on node 1 over a few TCP connections, waits for every ACK and for the calls to be bridged,
then node 1 is killed with SIGKILL. The AS connects to node 2 at once and reads until it has a
RESPONSE for every callback (or ``--lease`` + :data:`GIVE_UP` seconds pass), then
:data:`DOUBLE_WATCH` seconds more for anything written twice; node 1 is started again with its name
and the AS listens to it as long for anything it would write again.

Reported per repetition: RESPONSEs delivered of those owed, doubles, the delivery times after the
kill (first, median, last) and the bound on the time after the lease expired (node 1's last
heartbeat is at most :data:`HEARTBEAT` before the kill, so expiry is at least kill + lease −
HEARTBEAT), and the spread of ``real_duration`` against the talk time each call really had up to
the kill. Results: ``bench/load/results/takeover-<UTC time>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.load.farend import FarEnd, MediaSink
from bench.load.mssproc import MssProcess
from tests.pg import start_postgres

#: Seconds between two heartbeats of a node (mss.aio.service.HEARTBEAT_INTERVAL).
HEARTBEAT = 1.0

#: Seconds past the lease the AS waits for the RESPONSEs before it counts the rest as lost.
GIVE_UP = 30.0

#: Seconds the AS keeps listening after the last RESPONSE, for anything written twice.
DOUBLE_WATCH = 3.0

#: TCP connections of the AS to each node.
CONNECTIONS = 4

#: Callback duration (seconds): longer than any repetition, so node 1's death cuts every call.
DURATION = 600

RESULTS = Path(__file__).parent / "load" / "results"


class As:
    """An AS: a few TCP connections to one node; every line it reads, with its arrival time."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, address: tuple[str, int]) -> None:
        for _ in range(CONNECTIONS):
            reader, writer = await asyncio.open_connection(*address)
            self._writers.append(writer)
            self._tasks.append(asyncio.create_task(self._read(reader)))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while raw := await reader.readline():
            self.lines.append((time.monotonic(), raw.decode("ascii", "replace").strip()))

    def send(self, index: int, text: str) -> None:
        self._writers[index % len(self._writers)].write(text.encode("ascii") + b"\r\n")

    def said(self, kind: str) -> dict[str, list[tuple[float, str]]]:
        """Lines of ``kind`` (ACK, RESPONSE) by callback id."""
        found: dict[str, list[tuple[float, str]]] = {}
        for at, line in self.lines:
            if line.startswith(kind + ":"):
                cb_id = line.split("id=", 1)[1].split(";", 1)[0]
                found.setdefault(cb_id, []).append((at, line))
        return found

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return bool(check())


def _param(line: str, name: str) -> str | None:
    for part in line.partition(":")[2].strip().rstrip(";").split(";"):
        key, _, value = part.partition("=")
        if key == name:
            return value
    return None


async def repetition(
    one: MssProcess, two: MssProcess, callbacks: int, lease: float, rep: int
) -> dict[str, Any]:
    ids = [f"r{rep}c{i}" for i in range(callbacks)]
    first = As()
    await first.connect(one.iif_address)
    ordered = time.monotonic()
    for i, cb_id in enumerate(ids):
        first.send(i, f"REQUEST: id={cb_id};user1=1{i:04d};user2=2{i:04d};duration={DURATION};")
    if not await _until(lambda: len(first.said("ACK")) == callbacks, 30):
        raise RuntimeError(f"{len(first.said('ACK'))} of {callbacks} ACKs from node 1")
    refused = [i for i, lines in first.said("ACK").items() if "code=ok" not in lines[0][1]]
    if refused:
        raise RuntimeError(f"node 1 refused {len(refused)} callbacks (e.g. {refused[:3]})")
    acked = time.monotonic()
    # the far end answers at once: every call is bridged well within this (the log says each)
    if not await _until(lambda: one.log_text().count(": bridged (") >= callbacks, 30):
        raise RuntimeError("not every callback was bridged on node 1")
    bridged = time.monotonic()
    await asyncio.sleep(2.0)  # talk time before the crash
    assert one.process is not None
    one.process.kill()
    killed = time.monotonic()
    one.process.wait(5)
    await first.close()

    survivor = As()
    await survivor.connect(two.iif_address)
    got = await _until(lambda: len(survivor.said("RESPONSE")) >= callbacks, lease + GIVE_UP)
    await asyncio.sleep(DOUBLE_WATCH)
    await survivor.close()
    responses = survivor.said("RESPONSE")

    one.start()  # the same name again
    again = As()
    await again.connect(one.iif_address)
    await asyncio.sleep(DOUBLE_WATCH)
    await again.close()
    rewritten = again.said("RESPONSE")

    times = sorted(lines[0][0] - killed for lines in responses.values())
    talks = [int(_param(lines[0][1], "real_duration") or -1) for lines in responses.values()]
    # talk time up to the kill: the last call bridged had this, the first at most (killed - acked)
    talk_up_to_kill = killed - bridged
    return {
        "callbacks": callbacks,
        "lease_s": lease,
        "all_delivered": got,
        "delivered": len(responses),
        "doubled_by_survivor": sum(len(v) > 1 for v in responses.values()),
        "written_again_by_restarted_node": len(rewritten),
        "results": sorted({_param(v[0][1], "result") or "" for v in responses.values()}),
        "delivery_after_kill_s": {
            "first": round(times[0], 2) if times else None,
            "median": round(statistics.median(times), 2) if times else None,
            "last": round(times[-1], 2) if times else None,
        },
        "after_lease_expiry_at_most_s": round(times[-1] - lease + HEARTBEAT, 2) if times else None,
        "real_duration": {"min": min(talks, default=None), "max": max(talks, default=None)},
        "talk_time_up_to_kill_s": [round(talk_up_to_kill, 2), round(killed - acked, 2)],
        "order_to_ack_s": round(acked - ordered, 2),
    }


def _node(base: Path, name: str, far: FarEnd, dsn: str, lease: float, rtp: tuple[int, int]) -> MssProcess:
    return MssProcess(
        base / name, pss=far.address, rtp_range=rtp, probe=False,
        overrides={
            "journal": {"backend": "postgresql", "dsn": dsn},
            "cluster": {"node": name, "lease": lease},
            "callback": {"max_calls": 4000},
            "log": {"level": "debug"},
        },
    )


def run(callbacks: int, lease: float, reps: int) -> list[dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="mss-takeover-"))
    out = []
    try:
        # a directory of its own (mkdtemp's is private to this user; the server may run as postgres)
        pg_dir = Path(tempfile.mkdtemp(prefix="mss-takeover-pg-"))
        server = start_postgres(pg_dir)
        try:
            with MediaSink() as sink:
                far = FarEnd(media=(sink.host, sink.port), workdir=base / "far")
                with far:
                    for rep in range(reps):
                        dsn = server.create_database()
                        one = _node(base / f"rep{rep}", "n1", far, dsn, lease, (30000, 34999))
                        two = _node(base / f"rep{rep}", "n2", far, dsn, lease, (35000, 39999))
                        with two:
                            one.start()
                            try:
                                out.append(asyncio.run(repetition(one, two, callbacks, lease, rep)))
                            finally:
                                one.stop()
                        print(json.dumps(out[-1]), flush=True)
        finally:
            server.stop()
            shutil.rmtree(pg_dir, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def table(runs: list[dict[str, Any]]) -> str:
    rows = ["| rep | owed | delivered | doubled | written again | delivery after kill s (first / median / "
            "last) | after lease expiry ≤ s | real_duration min..max |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(runs):
        d = r["delivery_after_kill_s"]
        rows.append(f"| {i + 1} | {r['callbacks']} | {r['delivered']} | {r['doubled_by_survivor']} | "
                    f"{r['written_again_by_restarted_node']} | {d['first']} / {d['median']} / {d['last']} | "
                    f"{r['after_lease_expiry_at_most_s']} | "
                    f"{r['real_duration']['min']}..{r['real_duration']['max']} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_takeover",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--callbacks", type=int, default=200, help="callbacks in flight on node 1 (200)")
    parser.add_argument("--lease", type=float, default=5.0, help="[cluster] lease of both nodes (5)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (3)")
    args = parser.parse_args()
    runs = run(args.callbacks, args.lease, args.reps)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (RESULTS / f"takeover-{stamp}.json").write_text(json.dumps(runs, indent=1))
    text = table(runs)
    (RESULTS / f"takeover-{stamp}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
