"""The relay benchmark: mss, rtpengine and a plain C forwarder side by side on the same load.

    python bench/relay/run.py                 # everything: 3 runs of every point, table + plot
    python bench/relay/run.py --runs 1 --points g711-1000 --measure 3    # a quick look

Builds the C load generator and reference forwarder (gcc), checks the mss extension is built,
then for each run and each point starts each relay pinned to CPU 0 and the generator pinned to
CPU 1, measures, stops them. Within a run the relays take turns on the same point (in a rotating
order), so a ratio compares measurements taken minutes apart at most. Results: raw JSON per
measurement, a markdown table of medians with their spread (min..max) and the per-run ratios,
and a plot, in ``bench/relay/results/``.

The relay's CPU time is every thread of its process (``/proc/<pid>/task/*/schedstat``) over the
measurement window; packets are what the generator received from the relay in that window.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BUILD = HERE / "build"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from rtpengine import RtpEngine  # noqa: E402

RELAY_CPU = 0
GEN_CPU = 1
RELAY_HOST = "127.0.0.1"
PHONE_HOST = "127.0.0.2"  # the phones live on another loopback address than the relay ports
FLOOD_HOST = "127.0.0.3"
PORT_MIN, PORT_MAX = 20000, 29999


@dataclass(frozen=True)
class Point:
    name: str
    calls: int
    payload: int = 160
    pt: int = 0
    codec: str = "PCMU"
    flood_pps: int = 0


POINTS = [
    Point("g711-100", 100),
    Point("g711-500", 500),
    Point("g711-1000", 1000),
    Point("g711-2000", 2000),
    Point("g729-1000", 1000, payload=20, pt=18, codec="G729"),
    # 50 calls plus junk from a stray source at 2000 packets/s into each call's leg a
    Point("flood-50", 50, flood_pps=100_000),
]
RELAYS = ["mss", "rtpengine", "cfwd"]


def build() -> None:
    BUILD.mkdir(exist_ok=True)
    for name in ("gen", "fwd"):
        src, exe = HERE / f"{name}.c", BUILD / name
        header = ROOT / "mss" / "_rtp_uring.h"
        newest = max(src.stat().st_mtime, header.stat().st_mtime)
        if not exe.exists() or exe.stat().st_mtime < newest:
            subprocess.run(
                ["gcc", "-O2", "-Wall", "-I", str(ROOT / "mss"), "-o", str(exe), str(src)],
                check=True, cwd=HERE,
            )
    try:
        subprocess.run(
            [sys.executable, "-c", "import mss._rtp"], check=True, cwd=ROOT, capture_output=True
        )
    except subprocess.CalledProcessError:
        print("building the mss extension", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "."], check=True, cwd=ROOT)
    if not shutil.which("rtpengine") and not Path("/usr/bin/rtpengine").exists():
        raise SystemExit("rtpengine is missing: apt-get install rtpengine-daemon")


def read_tagged(proc: subprocess.Popen[str], tag: str, timeout: float = 60) -> list[int]:
    """Read stdout lines until one starts with ``tag``; its numbers."""
    assert proc.stdout is not None
    result: list[int] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(tag):
                result.extend(int(x) for x in line.split()[1:])
                return

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    th.join(timeout)
    if not result:
        raise RuntimeError(f"no {tag} line from {proc.args}")
    return result


def rt(opts: argparse.Namespace) -> list[str]:
    """Run under SCHED_FIFO so other load on the machine does not preempt relay or generator."""
    return ["chrt", "-f", str(opts.rt_prio)] if opts.rt_prio else []


def start_relay(kind: str, calls: int, opts: argparse.Namespace) -> tuple[subprocess.Popen[str] | None, RtpEngine | None, int]:
    if kind == "rtpengine":
        engine = RtpEngine(
            RELAY_HOST, 22222, PORT_MIN, PORT_MAX, cpu=RELAY_CPU, threads=opts.rtpengine_threads,
            prefix=rt(opts),
        )
        return None, engine, engine.pid
    if kind == "mss":
        cmd = [
            sys.executable,
            str(HERE / "mss_host.py"),
            "--calls",
            str(calls),
            "--port-min",
            str(PORT_MIN),
            "--port-max",
            str(PORT_MAX),
            "--backend",
            opts.mss_backend,
            "--gather-us",
            str(opts.mss_gather_us),
        ]
    else:
        cmd = [str(BUILD / "fwd"), RELAY_HOST, str(PORT_MIN), str(calls)]
    proc = subprocess.Popen(
        [*rt(opts), "taskset", "-c", str(RELAY_CPU), *cmd],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if kind != "mss" else None,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc, None, proc.pid


def measure(kind: str, point: Point, opts: argparse.Namespace, perf: bool = False) -> dict[str, object]:
    proc, engine, pid = start_relay(kind, point.calls, opts)
    gen = None
    perf_proc = None
    try:
        pairs_flat: list[int] = []
        if proc is not None:
            pairs_flat = read_tagged(proc, "PAIRS")
        gen_cmd = [
            *rt(opts), "taskset", "-c", str(GEN_CPU), str(BUILD / "gen"),
            "--calls", str(point.calls),
            "--payload", str(point.payload),
            "--pt", str(point.pt),
            "--warmup", str(opts.warmup),
            "--measure", str(opts.measure),
            "--relay-pid", str(pid),
            "--relay-cpu", str(RELAY_CPU),
            "--src", PHONE_HOST,
            "--dst", RELAY_HOST,
            "--flood-src", FLOOD_HOST,
        ]
        if point.flood_pps:
            gen_cmd += ["--flood-calls", str(point.calls), "--flood-pps", str(point.flood_pps)]
        gen = subprocess.Popen(gen_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        phones = read_tagged(gen, "PORTS")
        if engine is not None:
            for c in range(point.calls):
                a, b = engine.call(
                    f"bench-{c}", (PHONE_HOST, phones[2 * c]), (PHONE_HOST, phones[2 * c + 1]),
                    point.pt, point.codec,
                )
                pairs_flat += [a, b]
        assert gen.stdin is not None and gen.stdout is not None
        gen.stdin.write("".join(f"{pairs_flat[2 * c]} {pairs_flat[2 * c + 1]}\n" for c in range(point.calls)))
        gen.stdin.close()
        if perf:
            perf_out = BUILD / f"perf-{kind}.txt"

            def run_perf() -> None:
                nonlocal perf_proc
                time.sleep(opts.warmup + 0.05)
                perf_proc = subprocess.Popen(
                    ["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter",
                     "-p", str(pid), "-o", str(perf_out), "--", "sleep", str(opts.measure - 0.1)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                perf_proc.wait()

            pt = threading.Thread(target=run_perf)
            pt.start()
        out = gen.stdout.read()
        gen.wait(timeout=60)
        if perf:
            pt.join()
        result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        if perf:
            for line in perf_out.read_text().splitlines():
                if "raw_syscalls:sys_enter" in line:
                    result["syscalls"] = int(line.split(",")[0])
                    result["syscalls_window_s"] = opts.measure - 0.1
        result.update(relay=kind, point=point.name)
        cpu = float(result["relay_cpu_s"])  # type: ignore[arg-type]
        rx = int(result["rx_in_window"])  # type: ignore[call-overload]
        result["pps_per_cpu_s"] = rx / cpu if cpu > 0 else 0.0
        result["forwarded_pps"] = rx / opts.measure
        return result
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
            gen.wait()
        if proc is not None:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                proc.kill()
                proc.wait()
        if engine is not None:
            engine.close()


def summarize(results: list[dict[str, object]], points: list[Point], relays: list[str]) -> tuple[str, dict[str, object]]:
    """Markdown table: medians and spread per point and relay, and per-run ratios."""

    def vals(point: str, relay: str, key: str) -> list[float]:
        return [float(r[key]) for r in results if r["point"] == point and r["relay"] == relay]  # type: ignore[arg-type]

    def runs_of(point: str, relay: str) -> dict[int, dict[str, object]]:
        return {int(r["run"]): r for r in results if r["point"] == point and r["relay"] == relay}  # type: ignore[call-overload]

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    def spread(xs: list[float], fmt: str) -> str:
        if not xs:
            return "-"
        return f"{format(med(xs), fmt)} ({format(min(xs), fmt)}..{format(max(xs), fmt)})"

    lines = [
        "| point | relay | forwarded pkt / relay-CPU-s | relay CPU % of a core | loss | p50 µs | p99 µs | streams flowing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, object] = {}
    for p in points:
        for relay in relays:
            eff = vals(p.name, relay, "pps_per_cpu_s")
            if not eff:
                continue
            cpu = [float(r["relay_cpu_s"]) / float(r["measure_s"]) * 100 for r in results  # type: ignore[arg-type]
                   if r["point"] == p.name and r["relay"] == relay]
            loss = vals(p.name, relay, "loss")
            p50 = vals(p.name, relay, "lat_p50_us")
            p99 = vals(p.name, relay, "lat_p99_us")
            flowing = [
                float(r["streams"]) - float(r["streams_below_half"])  # type: ignore[arg-type]
                for r in results if r["point"] == p.name and r["relay"] == relay
            ]
            streams = int(results[0]["streams"]) if False else int(p.calls * 2)
            lines.append(
                f"| {p.name} | {relay} | {spread(eff, ',.0f')} | {spread(cpu, '.1f')} "
                f"| {spread([x * 100 for x in loss], '.3f')} % | {spread(p50, '.0f')} "
                f"| {spread(p99, '.0f')} | {med(flowing):.0f} / {streams} |"
            )
            summary[f"{p.name}/{relay}"] = {
                "pps_per_cpu_s": med(eff), "cpu_pct": med(cpu), "loss": med(loss),
                "p50_us": med(p50), "p99_us": med(p99), "flowing": med(flowing),
                "streams": streams, "n": len(eff),
            }
    lines += ["", "| point | mss / rtpengine | mss / C forwarder |", "|---|---|---|"]
    for p in points:
        ratios: dict[str, list[float]] = {"rtpengine": [], "cfwd": []}
        m = runs_of(p.name, "mss")
        for other in ratios:
            o = runs_of(p.name, other)
            for run, r in m.items():
                if run in o and float(o[run]["pps_per_cpu_s"]) > 0:  # type: ignore[arg-type]
                    ratios[other].append(float(r["pps_per_cpu_s"]) / float(o[run]["pps_per_cpu_s"]))  # type: ignore[arg-type]
        if ratios["rtpengine"] or ratios["cfwd"]:
            lines.append(
                f"| {p.name} | {spread(ratios['rtpengine'], '.2f')} | {spread(ratios['cfwd'], '.2f')} |"
            )
            summary[f"{p.name}/ratios"] = {k: med(v) for k, v in ratios.items()}
    return "\n".join(lines) + "\n", summary


def plot(results: list[dict[str, object]], points: list[Point], relays: list[str], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g711 = [p for p in points if p.name.startswith("g711")]
    colors = {"mss": "tab:blue", "rtpengine": "tab:red", "cfwd": "tab:gray"}
    labels = {"mss": "mss", "rtpengine": "rtpengine (userspace)", "cfwd": "C forwarder (epoll+mmsg)"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for relay in relays:
        xs, ys, lo, hi, p99 = [], [], [], [], []
        for p in g711:
            v = [float(r["pps_per_cpu_s"]) for r in results if r["point"] == p.name and r["relay"] == relay]  # type: ignore[arg-type]
            q = [float(r["lat_p99_us"]) for r in results if r["point"] == p.name and r["relay"] == relay]  # type: ignore[arg-type]
            if not v:
                continue
            xs.append(p.calls)
            ys.append(statistics.median(v) / 1000)
            lo.append(statistics.median(v) / 1000 - min(v) / 1000)
            hi.append(max(v) / 1000 - statistics.median(v) / 1000)
            p99.append(statistics.median(q) / 1000)
        if xs:
            axes[0].errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=colors[relay], label=labels[relay])
            axes[1].plot(xs, p99, marker="o", color=colors[relay], label=labels[relay])
    axes[0].set_xlabel("concurrent G.711 calls (50 pps each way)")
    axes[0].set_ylabel("forwarded packets per relay-CPU-second (thousands)")
    axes[0].set_title("Efficiency (median of runs, bars: min..max)")
    axes[0].set_ylim(bottom=0)
    axes[1].set_xlabel("concurrent G.711 calls")
    axes[1].set_ylabel("p99 one-way latency (ms)")
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="black", lw=0.8, ls="--")
    axes[1].set_title("p99 latency (relay on one core)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--points", default="all", help="comma-separated point names, or 'all'")
    ap.add_argument("--relays", default=",".join(RELAYS))
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--measure", type=float, default=5.0)
    ap.add_argument("--mss-backend", default="auto")
    ap.add_argument("--mss-gather-us", type=int, default=200)
    ap.add_argument("--rtpengine-threads", type=int, default=1)
    ap.add_argument("--rt-prio", type=int, default=10 if os.geteuid() == 0 else 0,
                    help="SCHED_FIFO priority for relay and generator (0: normal scheduling)")
    ap.add_argument("--syscalls", action="store_true", help="also count syscalls per packet (perf) at 1000 calls")
    ap.add_argument("--tag", default="", help="suffix for the result files")
    opts = ap.parse_args()
    points = POINTS if opts.points == "all" else [p for p in POINTS if p.name in opts.points.split(",")]
    relays = [r for r in opts.relays.split(",") if r]
    if not points or not relays or opts.runs < 1 or opts.runs > 20:
        raise SystemExit("nothing to run")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("the benchmark pins the relay and the generator to two different CPUs")
    build()
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S") + (f"-{opts.tag}" if opts.tag else "")
    results: list[dict[str, object]] = []
    raw_path = RESULTS / f"raw-{stamp}.json"
    for run in range(opts.runs):
        for i, p in enumerate(points):
            order = relays[(run + i) % len(relays):] + relays[:(run + i) % len(relays)]
            for relay in order:
                r = measure(relay, p, opts)
                r["run"] = run
                results.append(r)
                print(
                    f"run {run} {p.name:10} {relay:9} {float(r['pps_per_cpu_s']):>9,.0f} pkt/CPU-s "  # type: ignore[arg-type]
                    f"cpu {float(r['relay_cpu_s']) / opts.measure * 100:5.1f}% "  # type: ignore[arg-type]
                    f"loss {float(r['loss']) * 100:.3f}% p50 {r['lat_p50_us']}us p99 {r['lat_p99_us']}us "  # type: ignore[arg-type]
                    f"flowing {int(r['streams']) - int(r['streams_below_half'])}/{r['streams']} "  # type: ignore[call-overload]
                    f"gen-cpu {float(r['gen_cpu_s']) / opts.measure * 100:.0f}%",  # type: ignore[arg-type]
                    flush=True,
                )
                raw_path.write_text(json.dumps(results, indent=1))
    if opts.syscalls:
        sc_point = next((p for p in POINTS if p.name == "g711-1000"))
        for relay in relays:
            r = measure(relay, sc_point, opts, perf=True)
            r["run"] = -1
            r["syscall_pass"] = True
            per_pkt = int(r.get("syscalls", 0)) / max(1.0, float(r["forwarded_pps"]) * float(r["syscalls_window_s"]))  # type: ignore[call-overload,arg-type]
            r["syscalls_per_packet"] = per_pkt
            print(f"syscalls {relay:9} {per_pkt:.3f} per forwarded packet", flush=True)
            results.append(r)
        raw_path.write_text(json.dumps(results, indent=1))
    timed = [r for r in results if not r.get("syscall_pass")]
    table, summary = summarize(timed, points, relays)
    sc = {str(r["relay"]): r["syscalls_per_packet"] for r in results if r.get("syscall_pass")}
    if sc:
        table += "\n| relay | syscalls per forwarded packet (g711-1000) |\n|---|---|\n"
        table += "".join(f"| {k} | {float(v):.3f} |\n" for k, v in sc.items())  # type: ignore[arg-type]
        summary["syscalls_per_packet"] = sc
    (RESULTS / f"table-{stamp}.md").write_text(table)
    (RESULTS / f"summary-{stamp}.json").write_text(json.dumps(summary, indent=1))
    plot(timed, points, relays, RESULTS / f"relay-{stamp}.png")
    print(table)
    print(f"results in {RESULTS}/*-{stamp}.*")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
