"""The relay benchmark: mss, rtpengine and a plain C forwarder side by side on the same load.

    python bench/relay/run.py                  # every point, 3 runs, table + plot
    python bench/relay/run.py --runs 1 --points g711-1000 --measure 3     # a quick look

Builds the C load generator and the reference forwarder (gcc), checks the mss extension is
built, then for each run and each point starts each relay pinned to CPU 0 and the generator pinned
to CPU 1 (both SCHED_FIFO when run as root, so other load on the machine does not preempt them),
measures, stops them. Within a run the relays take turns on the same point, in an order that
rotates from run to run, so a ratio compares measurements taken a minute apart at most.

Measured over the window (after a warm-up in which every leg has latched):
- the relay's CPU time: every thread of its process (``/proc/<pid>/task/*/schedstat``);
- forwarded packets: what the generator received from the relay in the window;
- loss and one-way latency (kernel receive timestamp minus the send time in the payload);
- streams flowing: legs that got at least half of what their peer sent;
- UDP receive-buffer drops (``/proc/net/udp``) on the relay's sockets and on the phones' sockets,
  so a loss can be told apart: the relay was too slow, or the generator was.

Results go to ``bench/relay/results/``: raw JSON of every measurement, a markdown table (medians
with min..max over the runs, and the per-run ratios), a JSON summary and a PNG plot.
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
PHONE_HOST = "127.0.0.2"  # the phones live on another loopback address than the relay
FLOOD_HOST = "127.0.0.3"  # and the flood on a third
PORT_MIN, PORT_MAX = 20000, 29999
NG_PORT = 22222


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
    # 50 calls, and junk from a stray source at 2000 packets/s into each call's leg a
    Point("flood-50", 50, flood_pps=100_000),
]
RELAYS = ["mss", "rtpengine", "cfwd"]
OPTIONAL = ["mss-epoll"]  # mss on its fallback back end, for comparison (--relays ...,mss-epoll)
LABELS = {
    "mss": "mss",
    "mss-epoll": "mss, epoll fallback",
    "rtpengine": "rtpengine (userspace)",
    "cfwd": "C forwarder (epoll + mmsg)",
}


def build() -> None:
    BUILD.mkdir(exist_ok=True)
    header = ROOT / "mss" / "_rtp_uring.h"
    for name in ("gen", "fwd"):
        src, exe = HERE / f"{name}.c", BUILD / name
        newest = max(src.stat().st_mtime, header.stat().st_mtime)
        if not exe.exists() or exe.stat().st_mtime < newest:
            cmd = ["gcc", "-O2", "-Wall", "-I", str(ROOT / "mss"), "-o", str(exe), str(src)]
            subprocess.run(cmd, check=True, cwd=HERE)
    probe = [sys.executable, "-c", "import mss._rtp"]
    if subprocess.run(probe, cwd=ROOT, capture_output=True).returncode:
        print("building the mss extension", file=sys.stderr)
        pip = [sys.executable, "-m", "pip", "install", "-q", "-e", "."]
        subprocess.run(pip, check=True, cwd=ROOT)
    if not shutil.which("rtpengine") and not Path("/usr/bin/rtpengine").exists():
        raise SystemExit("rtpengine is missing: apt-get install rtpengine-daemon")


def rt(opts: argparse.Namespace) -> list[str]:
    """SCHED_FIFO, so other load on the machine does not preempt the relay or the generator."""
    return ["chrt", "-f", str(opts.rt_prio)] if opts.rt_prio else []


def read_tagged(proc: subprocess.Popen[str], tag: str, timeout: float = 120) -> list[int]:
    """Read stdout lines until one starts with ``tag``; its numbers."""
    result: list[int] = []
    name = " ".join(str(a) for a in proc.args) if isinstance(proc.args, list) else str(proc.args)

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
        raise RuntimeError(f"no {tag} line from {name}")
    return result


def udp_drops(ports: dict[str, set[int]]) -> dict[str, int]:
    """Receive-buffer drops of the UDP sockets bound to these (host, port)s, from /proc/net/udp."""
    wanted: dict[str, str] = {}
    for host in ports:
        a, b, c, d = (int(x) for x in host.split("."))
        wanted[f"{d:02X}{c:02X}{b:02X}{a:02X}"] = host
    totals = dict.fromkeys(ports, 0)
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            ip, port = fields[1].split(":")
            owner = wanted.get(ip)
            if owner is not None and int(port, 16) in ports[owner]:
                totals[owner] += int(fields[-1])
    return totals


def start_relay(
    kind: str, calls: int, opts: argparse.Namespace
) -> tuple[subprocess.Popen[str] | None, RtpEngine | None, int]:
    if kind == "rtpengine":
        engine = RtpEngine(
            RELAY_HOST,
            NG_PORT,
            PORT_MIN,
            PORT_MAX,
            cpu=RELAY_CPU,
            threads=opts.rtpengine_threads,
            log=str(BUILD / "rtpengine.log"),
            prefix=rt(opts),
        )
        return None, engine, engine.pid
    if kind in ("mss", "mss-epoll"):
        cmd = [
            sys.executable,
            str(HERE / "mss_host.py"),
            f"--calls={calls}",
            f"--port-min={PORT_MIN}",
            f"--port-max={PORT_MAX}",
            f"--backend={'epoll' if kind == 'mss-epoll' else opts.mss_backend}",
            f"--gather-us={opts.mss_gather_us}",
        ]
    else:
        cmd = [str(BUILD / "fwd"), RELAY_HOST, str(PORT_MIN), str(calls)]
    proc = subprocess.Popen(
        [*rt(opts), "taskset", "-c", str(RELAY_CPU), *cmd],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(BUILD / f"{kind}.log", "w"),  # noqa: SIM115 - closed with the process
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc, None, proc.pid


def stop_relay(proc: subprocess.Popen[str] | None, engine: RtpEngine | None) -> None:
    if proc is not None:
        try:
            assert proc.stdin is not None
            proc.stdin.close()  # mss_host and fwd stop when their stdin closes
            proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            proc.kill()
            proc.wait()
    if engine is not None:
        engine.close()


def measure(
    kind: str, point: Point, opts: argparse.Namespace, perf: bool = False
) -> dict[str, object]:
    """One relay on one point: set up the calls, run the generator, collect its report."""
    proc, engine, pid = start_relay(kind, point.calls, opts)
    gen = None
    try:
        relay_ports: list[int] = read_tagged(proc, "PAIRS") if proc is not None else []
        gen_cmd = [
            *rt(opts),
            "taskset",
            "-c",
            str(GEN_CPU),
            str(BUILD / "gen"),
            *("--calls", str(point.calls), "--payload", str(point.payload)),
            *("--pt", str(point.pt), "--warmup", str(opts.warmup)),
            *("--measure", str(opts.measure), "--relay-pid", str(pid)),
            *("--relay-cpu", str(RELAY_CPU), "--src", PHONE_HOST, "--dst", RELAY_HOST),
            *("--flood-src", FLOOD_HOST),
        ]
        if point.flood_pps:
            gen_cmd += ["--flood-calls", str(point.calls), "--flood-pps", str(point.flood_pps)]
        gen = subprocess.Popen(gen_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        phones = read_tagged(gen, "PORTS")
        if engine is not None:
            for c in range(point.calls):
                a = (PHONE_HOST, phones[2 * c])
                b = (PHONE_HOST, phones[2 * c + 1])
                relay_ports += engine.call(f"bench-{c}", a, b, point.pt, point.codec)
        assert gen.stdin is not None and gen.stdout is not None
        pairs = zip(relay_ports[0::2], relay_ports[1::2], strict=True)
        gen.stdin.write("".join(f"{a} {b}\n" for a, b in pairs))
        gen.stdin.close()
        sockets = {RELAY_HOST: set(relay_ports), PHONE_HOST: set(phones)}
        time.sleep(opts.warmup * 0.8)
        drops0 = udp_drops(sockets)
        perf_thread = None
        if perf:
            perf_out = BUILD / f"perf-{kind}.txt"
            window = opts.measure - 0.2

            def run_perf() -> None:
                time.sleep(opts.warmup * 0.2 + 0.1)
                cmd = ["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", str(pid)]
                cmd += ["-o", str(perf_out), "--", "sleep", str(window)]
                subprocess.run(cmd, capture_output=True)

            perf_thread = threading.Thread(target=run_perf)
            perf_thread.start()
        out = gen.stdout.read()
        gen.wait(timeout=60)
        drops1 = udp_drops(sockets)
        if perf_thread is not None:
            perf_thread.join()
        result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        result.update(relay=kind, point=point.name, loadavg=os.getloadavg()[0])
        result["relay_socket_drops"] = drops1[RELAY_HOST] - drops0[RELAY_HOST]
        result["phone_socket_drops"] = drops1[PHONE_HOST] - drops0[PHONE_HOST]
        if perf:
            for line in perf_out.read_text().splitlines():
                if "raw_syscalls:sys_enter" in line and line.split(",")[0].isdigit():
                    result["syscalls_per_s"] = int(line.split(",")[0]) / window
        cpu = float(result["relay_cpu_s"])  # type: ignore[arg-type]
        rx = int(result["rx_in_window"])  # type: ignore[call-overload]
        result["pps_per_cpu_s"] = rx / cpu if cpu > 0 else 0.0
        result["forwarded_pps"] = rx / num(result, "measure_s")
        return result
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
            gen.wait()
        stop_relay(proc, engine)


def num(r: dict[str, object], key: str) -> float:
    return float(r[key])  # type: ignore[arg-type]


def summarize(
    results: list[dict[str, object]], points: list[Point], relays: list[str]
) -> tuple[str, dict[str, object]]:
    """Markdown tables: medians (min..max) per point and relay, then per-run ratios."""

    def of(point: str, relay: str) -> list[dict[str, object]]:
        return [r for r in results if r["point"] == point and r["relay"] == relay]

    def spread(xs: list[float], fmt: str) -> str:
        if not xs:
            return "-"
        mid = format(statistics.median(xs), fmt)
        return f"{mid} ({format(min(xs), fmt)}..{format(max(xs), fmt)})" if len(xs) > 1 else mid

    lines = [
        "| point | relay | forwarded pkt per relay-CPU-s | relay CPU, % of a core | loss % "
        "| p50 µs | p99 µs | streams flowing | drops at relay / phones |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, object] = {}
    for p in points:
        for relay in relays:
            rs = of(p.name, relay)
            if not rs:
                continue
            eff = [num(r, "pps_per_cpu_s") for r in rs]
            cpu = [num(r, "relay_cpu_s") / num(r, "measure_s") * 100 for r in rs]
            loss = [num(r, "loss") * 100 for r in rs]
            p50 = [num(r, "lat_p50_us") for r in rs]
            p99 = [num(r, "lat_p99_us") for r in rs]
            flowing = [num(r, "streams") - num(r, "streams_below_half") for r in rs]
            drops_relay = [num(r, "relay_socket_drops") for r in rs]
            drops_phone = [num(r, "phone_socket_drops") for r in rs]
            lines.append(
                f"| {p.name} | {relay} | {spread(eff, ',.0f')} | {spread(cpu, '.1f')} "
                f"| {spread(loss, '.3f')} | {spread(p50, '.0f')} | {spread(p99, '.0f')} "
                f"| {statistics.median(flowing):.0f} / {2 * p.calls} "
                f"| {statistics.median(drops_relay):.0f} / {statistics.median(drops_phone):.0f} |"
            )
            summary[f"{p.name}/{relay}"] = {
                "pps_per_cpu_s": statistics.median(eff),
                "cpu_pct": statistics.median(cpu),
                "loss_pct": statistics.median(loss),
                "p50_us": statistics.median(p50),
                "p99_us": statistics.median(p99),
                "streams_flowing": statistics.median(flowing),
                "streams": 2 * p.calls,
                "runs": len(rs),
            }
    lines += [
        "",
        "Ratios of forwarded packets per relay-CPU-second, taken run by run (same load, "
        "minutes apart at most), median (min..max):",
        "",
        "| point | mss / rtpengine | mss / C forwarder |",
        "|---|---|---|",
    ]
    for p in points:
        mine = {int(r["run"]): num(r, "pps_per_cpu_s") for r in of(p.name, "mss")}  # type: ignore[call-overload]
        ratios: dict[str, list[float]] = {}
        for other in ("rtpengine", "cfwd"):
            theirs = {int(r["run"]): num(r, "pps_per_cpu_s") for r in of(p.name, other)}  # type: ignore[call-overload]
            ratios[other] = [mine[k] / theirs[k] for k in mine if theirs.get(k, 0) > 0]
        if any(ratios.values()):
            lines.append(
                f"| {p.name} | {spread(ratios['rtpengine'], '.2f')} "
                f"| {spread(ratios['cfwd'], '.2f')} |"
            )
            summary[f"{p.name}/ratios"] = {
                k: statistics.median(v) if v else None for k, v in ratios.items()
            }
    return "\n".join(lines) + "\n", summary


def plot(
    results: list[dict[str, object]], points: list[Point], relays: list[str], path: Path
) -> None:
    try:
        import matplotlib
    except ImportError:
        pip = [sys.executable, "-m", "pip", "install", "-q", "matplotlib"]
        subprocess.run(pip, check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g711 = [p for p in points if p.name.startswith("g711")]
    colors = {"mss": "tab:blue", "mss-epoll": "tab:cyan", "rtpengine": "tab:red", "cfwd": "tab:gray"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for relay in relays:
        xs: list[int] = []
        mid: list[float] = []
        err: list[list[float]] = [[], []]
        p99: list[float] = []
        for p in g711:
            rs = [r for r in results if r["point"] == p.name and r["relay"] == relay]
            if not rs:
                continue
            v = [num(r, "pps_per_cpu_s") / 1000 for r in rs]
            m = statistics.median(v)
            xs.append(p.calls)
            mid.append(m)
            err[0].append(m - min(v))
            err[1].append(max(v) - m)
            p99.append(statistics.median(num(r, "lat_p99_us") / 1000 for r in rs))
        if xs:
            kw = {"marker": "o", "color": colors[relay], "label": LABELS[relay]}
            axes[0].errorbar(xs, mid, yerr=err, capsize=3, **kw)
            axes[1].plot(xs, p99, **kw)
    axes[0].set_xlabel("concurrent G.711 calls (50 packets/s each way)")
    axes[0].set_ylabel("forwarded packets per relay-CPU-second (thousands)")
    axes[0].set_title("Efficiency: median of runs, bars min..max")
    axes[0].set_ylim(bottom=0)
    axes[1].set_xlabel("concurrent G.711 calls")
    axes[1].set_ylabel("p99 one-way latency (ms)")
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="black", lw=0.8, ls="--")
    axes[1].set_title("p99 latency, relay on one core")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--points", default="all", help="comma-separated point names, or 'all'")
    ap.add_argument("--relays", default=",".join(RELAYS))
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--measure", type=float, default=5.0)
    ap.add_argument("--mss-backend", default="auto")
    ap.add_argument("--mss-gather-us", type=int, default=200)
    ap.add_argument("--rtpengine-threads", type=int, default=1)
    ap.add_argument(
        "--rt-prio",
        type=int,
        default=10 if os.geteuid() == 0 else 0,
        help="SCHED_FIFO priority of relay and generator (0: normal scheduling)",
    )
    ap.add_argument(
        "--syscalls", action="store_true", help="also count syscalls per packet (perf), g711-1000"
    )
    ap.add_argument("--tag", default="", help="suffix of the result files")
    opts = ap.parse_args()
    names = opts.points.split(",")
    points = POINTS if opts.points == "all" else [p for p in POINTS if p.name in names]
    relays = [r for r in opts.relays.split(",") if r in RELAYS + OPTIONAL]
    if not points or not relays or not 1 <= opts.runs <= 20 or not 0.5 <= opts.measure <= 60:
        raise SystemExit("nothing to run: check --points, --relays, --runs, --measure")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("the benchmark pins the relay and the generator to two different CPUs")
    build()
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S") + (f"-{opts.tag}" if opts.tag else "")
    raw_path = RESULTS / f"raw-{stamp}.json"
    results: list[dict[str, object]] = []
    for run in range(opts.runs):
        for i, p in enumerate(points):
            k = (run + i) % len(relays)
            for relay in relays[k:] + relays[:k]:
                r = measure(relay, p, opts)
                r["run"] = run
                results.append(r)
                raw_path.write_text(json.dumps(results, indent=1))
                print(
                    f"run {run} {p.name:10} {relay:9} "
                    f"{num(r, 'pps_per_cpu_s'):>9,.0f} pkt/CPU-s "
                    f"cpu {num(r, 'relay_cpu_s') / num(r, 'measure_s') * 100:5.1f}% "
                    f"loss {num(r, 'loss') * 100:.3f}% "
                    f"p50 {num(r, 'lat_p50_us'):.0f}us p99 {num(r, 'lat_p99_us'):.0f}us "
                    f"flowing {num(r, 'streams') - num(r, 'streams_below_half'):.0f}"
                    f"/{num(r, 'streams'):.0f} "
                    f"drops {num(r, 'relay_socket_drops'):.0f}/{num(r, 'phone_socket_drops'):.0f} "
                    f"gen-cpu {num(r, 'gen_cpu_s') / num(r, 'measure_s') * 100:.0f}% "
                    f"load {num(r, 'loadavg'):.1f}",
                    flush=True,
                )
    table, summary = summarize(results, points, relays)
    if opts.syscalls:
        g = next(p for p in POINTS if p.name == "g711-1000")
        rows = []
        for relay in relays:
            r = measure(relay, g, opts, perf=True)
            per_packet = num(r, "syscalls_per_s") / max(1.0, num(r, "forwarded_pps"))
            rows.append(f"| {relay} | {per_packet:.3f} |")
            summary[f"syscalls_per_packet/{relay}"] = per_packet
            print(f"syscalls {relay:9} {per_packet:.3f} per forwarded packet", flush=True)
        table += "\n| relay | syscalls per forwarded packet (g711-1000) |\n|---|---|\n"
        table += "\n".join(rows) + "\n"
    (RESULTS / f"table-{stamp}.md").write_text(table)
    (RESULTS / f"summary-{stamp}.json").write_text(json.dumps(summary, indent=1))
    plot(results, points, relays, RESULTS / f"relay-{stamp}.png")
    print(table)
    print(f"results: {RESULTS}/*-{stamp}.*")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
