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
# mss on its fallback back end (--relays ...,mss-epoll); mss with the kernel fast path, and no
# relay at all (the phones send to each other: the baseline the kernel path is measured against)
OPTIONAL = ["mss-epoll", "mss-kernel", "direct"]
#: The kernel fast path's comparison (--kernel): whole-machine attributable CPU per packet.
KERNEL_RELAYS = ["mss-kernel", "mss", "rtpengine", "direct"]
KERNEL_POINTS = ["g711-500", "g711-1000"]
LABELS = {
    "mss": "mss",
    "mss-epoll": "mss, epoll fallback",
    "mss-kernel": "mss, kernel fast path",
    "direct": "no relay",
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
    if kind == "direct":
        return None, None, 0
    if kind in ("mss", "mss-epoll", "mss-kernel"):
        cmd = [
            sys.executable,
            str(HERE / "mss_host.py"),
            f"--calls={calls}",
            f"--port-min={PORT_MIN}",
            f"--port-max={PORT_MAX}",
            f"--backend={'epoll' if kind == 'mss-epoll' else opts.mss_backend}",
            f"--gather-us={opts.mss_gather_us}",
            f"--kernel-forwarding={'yes' if kind == 'mss-kernel' else 'no'}",
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


def softirq_pids() -> str:
    """The ksoftirqd threads: softirq work deferred out of the sender's context lands there."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("ksoftirqd/"):
                    pids.append(entry.name)
            except OSError:
                continue
    return ",".join(pids)


def kernel_stats(kind: str) -> dict[str, int]:
    """The KSTATS line mss_host wrote to its log (the kernel path's control-plane counters)."""
    for line in (BUILD / f"{kind}.log").read_text().splitlines():
        if line.startswith("KSTATS "):
            installs, install_ns, entries, errors = (int(x) for x in line.split()[1:])
            return {"installs": installs, "install_ns": install_ns, "entries": entries,
                    "errors": errors}
    return {}


def bpf_runs() -> dict[int, tuple[int, int]]:
    """run_time_ns and run_cnt of every loaded kf_ingress program (bpftool; kept by the kernel only
    while the kernel.bpf_stats_enabled sysctl is 1)."""
    if not shutil.which("bpftool"):
        return {}
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=False)
    try:
        progs = json.loads(out.stdout or "[]")
    except json.JSONDecodeError:
        return {}
    return {
        p["id"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0))
        for p in progs
        if p.get("name") == "kf_ingress"
    }


def measure(
    kind: str, point: Point, opts: argparse.Namespace, perf: bool = False, bpf_stats: bool = False
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
            *("--relay-cpu", str(RELAY_CPU), "--src", PHONE_HOST),
            *("--dst", PHONE_HOST if kind == "direct" else RELAY_HOST),
            *("--flood-src", FLOOD_HOST, "--also-pids", softirq_pids()),
        ]
        if point.flood_pps:
            gen_cmd += ["--flood-calls", str(point.calls), "--flood-pps", str(point.flood_pps)]
        gen = subprocess.Popen(gen_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        phones = read_tagged(gen, "PORTS")
        if kind == "direct":  # each phone sends straight to the other one
            relay_ports = [port for c in range(point.calls) for port in (phones[2 * c + 1], phones[2 * c])]
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
        runs0 = bpf_runs() if kind == "mss-kernel" and bpf_stats else {}
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
        runs1 = bpf_runs() if runs0 else {}
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
        # everything the run costs the machine: relay, generator (its sends' loopback delivery and
        # softirqs, where an in-kernel forwarder's work lands) and the ksoftirqd threads
        machine = cpu + num(result, "gen_cpu_s") + num(result, "also_cpu_s")
        result["machine_us_per_pkt"] = machine / rx * 1e6 if rx else 0.0
        ran = [(runs1[i][0] - t, runs1[i][1] - n) for i, (t, n) in runs0.items() if i in runs1]
        if ran and sum(n for _, n in ran):
            result["bpf_ns_per_run"] = sum(t for t, _ in ran) / sum(n for _, n in ran)
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
            gen.wait()
        stop_relay(proc, engine)
    if kind == "mss-kernel":
        result["kernel"] = kernel_stats(kind)
    return result


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


def summarize_kernel(
    results: list[dict[str, object]], points: list[Point], relays: list[str]
) -> tuple[str, dict[str, object]]:
    """The kernel fast path's table: whole-machine CPU per forwarded packet attributable to the
    relay (the run's machine CPU per packet minus the no-relay run's, same run and point), and the
    ratios to mss in userspace and rtpengine, run by run; the BPF program's own run time from the
    rows of the statistics pass."""
    stats_rows = [r for r in results if r.get("bpf_stats_pass")]
    results = [r for r in results if not r.get("bpf_stats_pass")]
    base = {
        (r["run"], r["point"]): num(r, "machine_us_per_pkt") for r in results if r["relay"] == "direct"
    }

    def attributable(r: dict[str, object]) -> float | None:
        b = base.get((r["run"], r["point"]))
        return None if b is None else num(r, "machine_us_per_pkt") - b

    def spread(xs: list[float], fmt: str) -> str:
        if not xs:
            return "-"
        mid = format(statistics.median(xs), fmt)
        return f"{mid} ({format(min(xs), fmt)}..{format(max(xs), fmt)})" if len(xs) > 1 else mid

    lines = [
        "| point | relay | attributable CPU, µs per forwarded packet | machine CPU, µs per packet "
        "| relay process CPU, % of a core | loss % | p50 µs | p99 µs | streams flowing |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, object] = {}
    for p in points:
        for relay in relays:
            rs = [r for r in results if r["point"] == p.name and r["relay"] == relay]
            if not rs:
                continue
            att = [a for r in rs if (a := attributable(r)) is not None]
            whole = [num(r, "machine_us_per_pkt") for r in rs]
            cpu = [num(r, "relay_cpu_s") / num(r, "measure_s") * 100 for r in rs]
            loss = [num(r, "loss") * 100 for r in rs]
            p50 = [num(r, "lat_p50_us") for r in rs]
            p99 = [num(r, "lat_p99_us") for r in rs]
            flowing = [num(r, "streams") - num(r, "streams_below_half") for r in rs]
            lines.append(
                f"| {p.name} | {LABELS[relay]} | {'(baseline)' if relay == 'direct' else spread(att, '.2f')} "
                f"| {spread(whole, '.2f')} | {spread(cpu, '.1f')} | {spread(loss, '.3f')} "
                f"| {spread(p50, '.0f')} | {spread(p99, '.0f')} "
                f"| {statistics.median(flowing):.0f} / {2 * p.calls} |"
            )
            summary[f"{p.name}/{relay}"] = {
                "attributable_us_per_pkt": statistics.median(att) if att else None,
                "machine_us_per_pkt": statistics.median(whole),
                "loss_pct": statistics.median(loss),
                "p99_us": statistics.median(p99),
                "runs": len(rs),
            }
    lines += [
        "",
        "Ratios of attributable CPU per packet to the kernel path's, run by run, median (min..max):",
        "",
        "| point | mss userspace / mss kernel | rtpengine / mss kernel |",
        "|---|---|---|",
    ]
    for p in points:
        kern = {
            r["run"]: attributable(r) for r in results if r["point"] == p.name and r["relay"] == "mss-kernel"
        }
        cells = []
        for other in ("mss", "rtpengine"):
            xs = []
            for r in results:
                if r["point"] == p.name and r["relay"] == other:
                    k, a = kern.get(r["run"]), attributable(r)
                    if k and a is not None and k > 0:
                        xs.append(a / k)
            cells.append(spread(xs, ".1f"))
            summary[f"{p.name}/{other}_over_kernel"] = statistics.median(xs) if xs else None
        lines.append(f"| {p.name} | {cells[0]} | {cells[1]} |")
    bpf = [num(r, "bpf_ns_per_run") / 1000 for r in stats_rows if "bpf_ns_per_run" in r]
    if bpf:
        lines += ["", f"The BPF program's own run time (bpf_stats): {spread(bpf, '.3f')} µs per packet."]
        summary["bpf_us_per_run"] = statistics.median(bpf)
    setup = [r["kernel"] for r in results if r["relay"] == "mss-kernel" and r.get("kernel")]
    per_entry = [k["install_ns"] / k["installs"] / 1000 for k in setup if k.get("installs")]  # type: ignore[index,operator]
    if per_entry:
        lines += [
            "",
            f"Handing a direction to the kernel (one map entry, in the packet loop): "
            f"{spread(per_entry, '.1f')} µs; a call is four entries (RTP and RTCP each way): "
            f"{spread([4 * x for x in per_entry], '.1f')} µs.",
        ]
        summary["install_us_per_entry"] = statistics.median(per_entry)
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
    colors = {"mss": "tab:blue", "mss-epoll": "tab:cyan", "mss-kernel": "tab:green", "direct": "black",
              "rtpengine": "tab:red", "cfwd": "tab:gray"}
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
    ap.add_argument(
        "--bpf-stats",
        action="store_true",
        help="with mss-kernel: one more mss-kernel run per point for the BPF program's own run time per"
        " packet (kernel.bpf_stats_enabled set during it only; bpftool)",
    )
    ap.add_argument(
        "--kernel",
        action="store_true",
        help=f"the kernel fast path's comparison: {','.join(KERNEL_RELAYS)} on {','.join(KERNEL_POINTS)}"
        " (unless --relays/--points say otherwise), whole-machine CPU per packet",
    )
    opts = ap.parse_args()
    if opts.kernel:
        if opts.points == "all":
            opts.points = ",".join(KERNEL_POINTS)
        if opts.relays == ",".join(RELAYS):
            opts.relays = ",".join(KERNEL_RELAYS)
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
    if opts.bpf_stats and "mss-kernel" in relays:
        # apart from the runs above: the statistics cost the program two clock reads per packet
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
        try:
            for p in points:
                r = measure("mss-kernel", p, opts, bpf_stats=True)
                r.update(run=-1, bpf_stats_pass=True)
                results.append(r)
                print(f"bpf-stats {p.name:10} {num(r, 'bpf_ns_per_run'):.0f} ns per run", flush=True)
        finally:
            subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=False)
        raw_path.write_text(json.dumps(results, indent=1))
    stats_pass = [r for r in results if r.get("bpf_stats_pass")]
    results = [r for r in results if not r.get("bpf_stats_pass")]
    table, summary = summarize(results, points, relays)
    if "direct" in relays:
        ktable, ksummary = summarize_kernel(results + stats_pass, points, relays)
        table += "\n" + ktable
        summary["kernel"] = ksummary
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
