"""One load run end to end: far end + mss + driver + /proc samples → a result dict.

``run_load(spec, workdir)`` starts the media sink and the stateless Kamailio far end, then mss
(``mss run`` with a generated config), opens the driver's connections, and runs the paced and the
sequential traffic of ``spec`` together while a sampler reads mss's CPU, RSS, descriptors and
journal size from /proc every ``sample_interval`` seconds (with the ACKs of that interval and the
slowest of them, so a stall shows on the timeline). It then waits (bounded) for every
RESPONSE, reads the CPU seconds of mss and of every Kamailio process, stops everything, and
returns the figures: the driver's summary (see ``driver.summarize``), CPU per callback on each
side, the samples, and mss's WARNING/ERROR lines grouped.

``soak`` and ``sweep`` are the two commands of ``python -m bench.load``; both print a markdown
table and write JSON + markdown under ``bench/load/results/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.load import procstat
from bench.load.driver import Driver, summarize
from bench.load.farend import FarEnd, MediaSink
from bench.load.mssproc import MssProcess

__all__ = ["LoadSpec", "run_load", "soak_verdict"]

RESULTS = Path(__file__).with_name("results")
# After the last REQUEST: how long the answered callbacks may take beyond their duration to
# send their RESPONSE before the run stops waiting (a lost stateless 200 rings until ring_timeout,
# and is reported as missing rather than waited for).
SETTLE_SLACK = 10.0
# Seconds mss is watched with no traffic before a run, for its idle CPU (timers, heartbeats).
IDLE_WINDOW = 2.0
# Longest run the runner accepts (seconds of traffic): every loop here is bounded.
MAX_SECONDS = 3600.0
# Sequential callbacks in a run: far more than fit in MAX_SECONDS at one per second.
MAX_SEQUENTIAL = 10_000
# RSS growth from the second minute's peak to the last minute's that still counts as a plateau.
RSS_PLATEAU_GROWTH = 1.10


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    """What traffic a run makes."""

    seconds: float
    """How long REQUESTs are sent."""
    rate: float = 0.0
    """Paced REQUESTs per second (0: none)."""
    durations: tuple[int, ...] = (2,)
    """``duration`` of the paced callbacks, taken in turn."""
    sequential: bool = False
    """Also run one sequential stream (each REQUEST after the previous RESPONSE)."""
    sequential_duration: int = 1
    """``duration`` of the sequential callbacks."""
    connections: int = 4
    """TCP connections of the paced traffic."""
    overrides: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """config.ini keys beyond the defaults, by section."""
    rtp_range: tuple[int, int] = (30000, 40000)
    """mss's ``[rtp] port_min``/``port_max``."""
    far_children: int = 4
    """Kamailio worker processes per transport."""
    mss_cpu: int | None = None
    """Pin mss to this CPU (None: no pinning)."""
    far_cpu: int | None = None
    """Pin the far end's processes to this CPU (None: no pinning)."""
    mss_tree: str | None = None
    """Run the mss package of this directory (None: the installed one)."""
    probe: bool = True
    """Measure the event loop's lag and the garbage collections inside mss (``mssprobe.py``)."""
    sample_interval: float = 1.0
    """Seconds between two /proc samples of mss."""

    def __post_init__(self) -> None:
        if not 0 < self.seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be in (0, {MAX_SECONDS}], not {self.seconds}")
        if self.rate < 0 or (self.rate == 0 and not self.sequential):
            raise ValueError("no traffic: give a positive rate, or sequential")
        if not self.durations or min(self.durations) < 1:
            raise ValueError("durations must be whole seconds >= 1")
        level = str(self.overrides.get("log", {}).get("level", "info")).lower()
        if level not in ("debug", "info"):
            # the harness knows mss is ready from its INFO line, and tallies failures from its log
            raise ValueError(f"[log] level must be debug or info for the load benchmark, not {level}")


def _sample(mss: MssProcess, driver: Driver, t0: float) -> dict[str, Any]:
    """/proc figures of mss now, with the ACKs that arrived since the previous sample."""
    figures = asdict(
        procstat.sample(mss.pid, mss.journal_path, t=time.monotonic() - t0, done=driver.finished_count)
    )
    figures.update(driver.take_interval())
    return figures


def _sample_loop(
    mss: MssProcess, driver: Driver, t0: float, interval: float, out: list[dict[str, Any]]
) -> Callable[[], None]:
    """Start sampling mss every ``interval`` s on the running loop; returns the stopper."""
    loop = asyncio.get_running_loop()
    handle: list[asyncio.TimerHandle] = []

    def tick() -> None:
        try:
            out.append(_sample(mss, driver, t0))
        except ProcessLookupError:
            return  # mss died: the run reports it
        handle[:] = [loop.call_later(interval, tick)]

    def stop() -> None:
        for h in handle:
            h.cancel()

    tick()
    return stop


def _sip_drops(mss: MssProcess) -> int:
    """SIP datagrams dropped at mss's sockets (worker i's at local_port + i)."""
    return sum(procstat.udp_drops(mss.sip_port + i) for i in range(mss.workers))


async def _drive(spec: LoadSpec, mss: MssProcess, far: FarEnd) -> dict[str, Any]:
    driver = Driver(mss.iif_address, connections=spec.connections)
    await driver.open()
    idle0 = procstat.tree_cpu_seconds(mss.pid)
    await asyncio.sleep(IDLE_WINDOW)
    idle_cpu = procstat.tree_cpu_seconds(mss.pid) - idle0
    samples: list[dict[str, Any]] = []
    far_pids = far.process_ids()
    mss_cpu0 = procstat.tree_cpu_seconds(mss.pid)
    far_cpu0 = procstat.total_cpu_seconds(far_pids)
    mss_drops0, far_drops0 = _sip_drops(mss), procstat.udp_drops(far.port)
    t0 = time.monotonic()
    stop_sampling = _sample_loop(mss, driver, t0, spec.sample_interval, samples)
    longest = max([*spec.durations, spec.sequential_duration])
    end_sending = t0 + spec.seconds
    deadline = end_sending + longest + SETTLE_SLACK
    tasks = []
    if spec.rate > 0:
        count = int(spec.seconds * spec.rate)
        tasks.append(
            driver.paced(rate=spec.rate, count=count, durations=spec.durations, deadline=end_sending)
        )
    if spec.sequential:
        tasks.append(
            driver.sequential(
                duration=spec.sequential_duration,
                until=end_sending,
                deadline=deadline,
                max_count=MAX_SEQUENTIAL,
            )
        )
    try:
        await asyncio.gather(*tasks)
        sent_at = time.monotonic()
        settled = await driver.settle(deadline)
        t_end = time.monotonic()
        mss_cpu = procstat.tree_cpu_seconds(mss.pid) - mss_cpu0
        far_cpu = procstat.total_cpu_seconds(far_pids) - far_cpu0
        drops = {"mss_sip": _sip_drops(mss) - mss_drops0,
                 "far_end": procstat.udp_drops(far.port) - far_drops0}
    finally:
        stop_sampling()
    with contextlib.suppress(ProcessLookupError):
        samples.append(_sample(mss, driver, t0))
    await driver.close()
    summary = summarize(driver.callbacks.values())
    failure_examples: dict[str, str] = {}
    for cb in driver.callbacks.values():
        if cb.result != "answered":
            if cb.responses:
                outcome = f"{cb.result} code={cb.code}"
            elif cb.ack_code == "ok":
                outcome = "no RESPONSE"
            else:
                outcome = f"ACK code={cb.ack_code}"
            failure_examples.setdefault(outcome, cb.id)
    done = driver.finished_count
    return {
        "summary": summary,
        "settled": settled,
        "traffic_s": round(sent_at - t0, 3),
        "elapsed_s": round(t_end - t0, 3),
        "achieved_rate": round(summary["by_kind"].get("paced", 0) / max(sent_at - t0, 1e-9), 2),
        "finished": done,
        "sip_udp_drops": drops,
        "mss_idle_cpu_pct": round(100 * idle_cpu / IDLE_WINDOW, 2),
        "mss_cpu_s": round(mss_cpu, 3),
        "far_cpu_s": round(far_cpu, 3),
        "mss_cpu_ms_per_callback": round(1000 * mss_cpu / done, 3) if done else None,
        "far_cpu_ms_per_callback": round(1000 * far_cpu / done, 3) if done else None,
        "unexpected_lines": driver.unexpected_count,
        "unexpected_examples": driver.unexpected,
        "connection_errors": driver.connection_errors,
        "samples": samples,
        "failure_examples": failure_examples,
    }


def run_load(spec: LoadSpec, workdir: Path | None = None) -> dict[str, Any]:
    """Run ``spec`` against a fresh far end and a fresh mss; see the module docstring."""
    own_dir = workdir is None
    base = Path(tempfile.mkdtemp(prefix="mss-load-")) if workdir is None else workdir
    base.mkdir(parents=True, exist_ok=True)
    overrides = {k: dict(v) for k, v in spec.overrides.items()}
    result: dict[str, Any] = {"spec": {**asdict(spec), "overrides": overrides}}
    try:
        with MediaSink() as sink:
            far = FarEnd(media=(sink.host, sink.port), children=spec.far_children, workdir=base / "far")
            with far:
                if spec.far_cpu is not None:
                    far.pin(spec.far_cpu)
                mss = MssProcess(
                    base / "mss",
                    pss=far.address,
                    rtp_range=spec.rtp_range,
                    overrides=spec.overrides,
                    cpu=spec.mss_cpu,
                    tree=Path(spec.mss_tree) if spec.mss_tree else None,
                    probe=spec.probe,
                )
                result["mss_source"] = mss.source()
                result["config"] = {k: {kk: str(vv) for kk, vv in v.items()} for k, v in mss.config.items()}
                with mss:
                    result.update(asyncio.run(_drive(spec, mss, far)))
                    result["mss_alive_at_end"] = mss.process is not None and mss.process.poll() is None
                result["mss_exit"] = mss.process.returncode if mss.process else None
                result["mss_probe"] = mss.probe()
                result["mss_warnings"] = [
                    {"count": c, "pattern": p, "example": e} for c, p, e in mss.warnings()
                ]
                result["mss_log_tail"] = mss.log_tail(30).splitlines()
                examples = result.pop("failure_examples", {})
                result["failure_log"] = {outcome: mss.lines_about(i) for outcome, i in examples.items()}
    finally:
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
    return result


def _at(samples: Sequence[Mapping[str, Any]], t: float) -> Mapping[str, Any] | None:
    """The last sample taken at or before ``t`` seconds."""
    before = [s for s in samples if s["t"] <= t + 0.5]
    return before[-1] if before else None


def soak_verdict(result: Mapping[str, Any], minutes: float) -> dict[str, Any]:
    """Pass/fail of a soak: no own-limit failure, no broken IIF promise, RSS on a plateau (the
    last minute's peak within ``RSS_PLATEAU_GROWTH`` of the second minute's), and the journal
    bounded when retention is on (else its growth per callback)."""
    summary = result["summary"]
    samples = result["samples"]
    verdict: dict[str, Any] = {
        "own_limit_failures": summary["own_limit_failures"],
        "problems": summary["problems"],
        "rss_mb_at_min": {},
        "journal_kb_at_min": {},
        "journal_db_kb_at_min": {},
    }
    for minute in range(1, int(minutes) + 1):
        s = _at(samples, minute * 60)
        if s is not None:
            verdict["rss_mb_at_min"][minute] = round(s["rss"] / 2**20, 1)
            verdict["journal_kb_at_min"][minute] = round(s["journal"] / 1024, 1)
            verdict["journal_db_kb_at_min"][minute] = round(s["journal_db"] / 1024, 1)

    def peak(lo: float, hi: float, key: str) -> int | None:
        window = [s[key] for s in samples if lo <= s["t"] <= hi]
        return max(window) if window else None

    ok = summary["own_limit_failures"] == 0 and not summary["problems"]
    if minutes >= 3:
        second = peak(60, 120, "rss")
        last = peak(60 * (minutes - 1), 60 * minutes, "rss")
        verdict["rss_second_minute_peak_mb"] = round(second / 2**20, 1) if second else None
        verdict["rss_last_minute_peak_mb"] = round(last / 2**20, 1) if last else None
        plateau = bool(second and last and last <= RSS_PLATEAU_GROWTH * second)
        verdict["rss_plateau"] = plateau
        ok = ok and plateau
        j_second = peak(60, 120, "journal")
        j_last = peak(60 * (minutes - 1), 60 * minutes, "journal")
        # Retention was on when the run's config set a keep_days (0 keeps everything).
        retention = bool(result["spec"]["overrides"].get("journal", {}).get("keep_days"))
        verdict["journal_retention"] = retention
        if retention and j_second and j_last:
            verdict["journal_plateau"] = j_last <= RSS_PLATEAU_GROWTH * j_second
            ok = ok and verdict["journal_plateau"]
    # Growth from the first minute on (when the run is that long): retention keeps everything
    # younger than keep_days, so the file first fills up to that horizon.
    first = (_at(samples, 60) if minutes >= 2 else None) or (samples[0] if samples else None)
    final = samples[-1] if samples else None
    verdict["journal_growth_from_s"] = round(first["t"]) if first else None
    if first and final and final["done"] > first["done"]:
        verdict["journal_db_bytes_per_callback"] = round(
            (final["journal_db"] - first["journal_db"]) / (final["done"] - first["done"]), 1
        )
    verdict["pass"] = ok
    return verdict


def write_results(kind: str, payload: Mapping[str, Any], table: str, tag: str = "") -> tuple[Path, Path]:
    """Write ``<kind>-<time>[-tag].json`` and ``.md`` under ``bench/load/results/``."""
    RESULTS.mkdir(exist_ok=True)
    stem = f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}" + (f"-{tag}" if tag else "")
    json_path = RESULTS / f"{stem}.json"
    md_path = RESULTS / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    md_path.write_text(table + "\n")
    return json_path, md_path
