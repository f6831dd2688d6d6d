"""``python -m bench.load soak|sweep``: run the load benchmark, print a table, write the results.

soak   minutes of paced callbacks (``--rate``/s, durations ``--durations`` in turn) and, beside
       them, one sequential stream (each REQUEST after the previous RESPONSE), against one mss at
       the default config; pass = no callback failed by mss's own limits, every IIF promise kept,
       RSS on a plateau, the journal bounded when ``[journal] keep_days`` exists.
sweep  one fresh far end and mss per rate, paced callbacks only, ``--seconds`` each.

Results: ``bench/load/results/<soak|sweep>-<UTC time>[-tag].json`` (everything, samples included)
and ``.md`` (the table printed). The exit status is 0 when every run passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.load.run import LoadSpec, run_load, soak_verdict, write_results

# The journal retention of a soak: 0.0005 days = 43 s, so retention runs inside 3 minutes.
SOAK_KEEP_DAYS = "0.0005"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _causes(summary: Mapping[str, Any]) -> str:
    failures = {k: v for k, v in summary["outcomes"].items() if not k.startswith("answered")}
    return ", ".join(f"{k}: {v}" for k, v in failures.items()) or "none"


def _inexact(summary: Mapping[str, Any]) -> str:
    off = ", ".join(f"{k}: {v}" for k, v in summary["real_duration_off"].items())
    return f"{summary['real_duration_inexact']:,}" + (f" ({off})" if off else "")


def _source(result: Mapping[str, Any]) -> str:
    source = result.get("mss_source", {})
    return f"{source.get('tree', '?')}" + (f" at {source['commit']}" if "commit" in source else "")


def _lag(result: Mapping[str, Any]) -> str:
    """Event-loop lag from the probe inside mss: p99 / max, and stalls over 20 ms."""
    probe = result.get("mss_probe") or {}
    if not probe.get("loop_probe"):
        return "not measured"
    return (f"{_fmt(probe['lag_p99_ms'])} / {_fmt(probe['lag_max_ms'])} ms, "
            f"{probe['stalls_over_ms'].get('20', 0)} over 20 ms")


def _drops(result: Mapping[str, Any]) -> str:
    drops = result.get("sip_udp_drops") or {}
    return f"{_fmt(drops.get('mss_sip'))} / {_fmt(drops.get('far_end'))}"


def _gc(result: Mapping[str, Any]) -> str:
    """Full (generation 2) collections: how many, the longest, what they freed."""
    probe = result.get("mss_probe") or {}
    full = probe.get("gc", {}).get("2")
    if not probe:
        return "not measured"
    if not full:
        return "none"
    return f"{full['count']} (longest {full['max_ms']:.0f} ms, {full['collected']:,} objects freed)"


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    overrides: dict[str, dict[str, object]] = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not name:
            raise SystemExit(f"--set {item!r}: expected section.key=value")
        overrides.setdefault(section, {})[name] = value
    return overrides


def _warnings(result: Mapping[str, Any]) -> list[str]:
    """mss's WARNING/ERROR lines grouped, then the log lines of one callback per failure cause."""
    lines = [f"    {w['count']} × {w['example']}" for w in result.get("mss_warnings", [])]
    for outcome, log in result.get("failure_log", {}).items():
        lines.append(f"  a callback that ended {outcome}:")
        lines += [f"    {line}" for line in log]
    return lines


def soak(args: argparse.Namespace) -> int:
    """The soak command."""
    overrides = _overrides(args)
    keep_days = args.keep_days
    if keep_days is None:
        keep_days = SOAK_KEEP_DAYS
    if keep_days:
        overrides.setdefault("journal", {})["keep_days"] = keep_days
    spec = LoadSpec(
        seconds=args.minutes * 60,
        rate=args.rate,
        durations=args.durations,
        sequential=True,
        sequential_duration=args.sequential_duration,
        connections=args.connections,
        overrides=overrides,
        rtp_range=(args.rtp_min, args.rtp_max),
        far_children=args.far_children,
        mss_cpu=args.cpu,
        far_cpu=args.far_cpu,
        mss_tree=args.mss_tree,
        probe=not args.no_probe,
    )
    result = run_load(spec)
    verdict = soak_verdict(result, args.minutes)
    result["verdict"] = verdict
    table = soak_table(result, verdict, args.minutes)
    print(table)
    json_path, _ = write_results("soak", result, table, args.tag)
    print(f"\nresults: {json_path}")
    if plot_soak(result, json_path.with_suffix(".png")):
        print(f"plot: {json_path.with_suffix('.png')}")
    return 0 if verdict["pass"] else 1


def soak_table(result: Mapping[str, Any], verdict: Mapping[str, Any], minutes: float) -> str:
    """The soak's figures as a markdown table, then what mss warned about."""
    s = result["summary"]
    ack = s["ack_latency_ms"]
    late = s["response_lateness_ms"]
    samples = result["samples"]
    rows = [
        ("callbacks ordered (paced / sequential)",
         f"{s['requests']:,} ({s['by_kind'].get('paced', 0):,} / {s['by_kind'].get('sequential', 0):,})"),
        ("answered", _fmt(s["answered"])),
        ("callbacks in progress at once, peak", _fmt(s["peak_concurrent"])),
        ("failed by mss's own limits", _fmt(s["own_limit_failures"])),
        ("failures by cause", _causes(s)),
        ("answered with real_duration ≠ duration", _inexact(s)),
        ("IIF promise broken", ", ".join(f"{k}: {v}" for k, v in s["problems"].items()) or "never"),
        ("RSS at " + " / ".join(f"{m} min" for m in verdict["rss_mb_at_min"]),
         " / ".join(f"{v} MB" for v in verdict["rss_mb_at_min"].values())),
        ("journal at " + " / ".join(f"{m} min" for m in verdict["journal_kb_at_min"]),
         " / ".join(f"{v:,.0f} KiB" for v in verdict["journal_kb_at_min"].values())),
        ("journal database file (without WAL) at same",
         " / ".join(f"{v:,.0f} KiB" for v in verdict["journal_db_kb_at_min"].values())),
        (f"journal database growth per callback (from {verdict.get('journal_growth_from_s')} s on)",
         f"{_fmt(verdict.get('journal_db_bytes_per_callback'))} B"),
        ("descriptors, peak", _fmt(max((x["fds"] for x in samples), default=None))),
        ("mss CPU per callback", f"{_fmt(result['mss_cpu_ms_per_callback'], 2)} ms"),
        ("mss CPU when idle (before the traffic)", f"{_fmt(result['mss_idle_cpu_pct'], 2)} % of a core"),
        ("Kamailio CPU per callback", f"{_fmt(result['far_cpu_ms_per_callback'], 2)} ms"),
        ("event-loop lag p99 / max (probe inside mss)", _lag(result)),
        ("SIP datagrams dropped by the kernel (mss / far end)", _drops(result)),
        ("full garbage collections", _gc(result)),
        ("ACK latency p50 / p99 / max", f"{_fmt(ack['p50'])} / {_fmt(ack['p99'])} / {_fmt(ack['max'])} ms"),
        ("RESPONSE lateness p50 / p99 / max",
         f"{_fmt(late['p50'])} / {_fmt(late['p99'])} / {_fmt(late['max'])} ms"),
        ("driver send lag p99", f"{_fmt(s['send_lag_ms']['p99'])} ms"),
        ("verdict", "PASS" if verdict["pass"] else "FAIL"),
    ]
    spec = result["spec"]
    head = (
        f"soak: {minutes:g} min, paced {spec['rate']:g}/s (durations {spec['durations']}) + sequential "
        f"(duration {spec['sequential_duration']}), config overrides {spec['overrides'] or 'none'}"
    )
    lines = [head, f"mss: {_source(result)}", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    warnings = _warnings(result)
    if warnings:
        lines += ["", "mss WARNING/ERROR lines (count × first example), failures' log lines:", *warnings]
    return "\n".join(lines)


def sweep(args: argparse.Namespace) -> int:
    """The sweep command."""
    results = []
    for rate in args.rates:
        spec = LoadSpec(
            seconds=args.seconds,
            rate=rate,
            durations=args.durations,
            connections=args.connections,
            overrides=_overrides(args),
            rtp_range=(args.rtp_min, args.rtp_max),
            far_children=args.far_children,
            mss_cpu=args.cpu,
            far_cpu=args.far_cpu,
            mss_tree=args.mss_tree,
            probe=not args.no_probe,
        )
        print(f"rate {rate:g}/s ...", file=sys.stderr, flush=True)
        results.append(run_load(spec))
    table = sweep_table(results)
    print(table)
    json_path, _ = write_results("sweep", {"runs": results}, table, args.tag)
    print(f"\nresults: {json_path}")
    if plot_sweep(results, json_path.with_suffix(".png")):
        print(f"plot: {json_path.with_suffix('.png')}")
    clean = all(r["summary"]["own_limit_failures"] == 0 and not r["summary"]["problems"] for r in results)
    return 0 if clean else 1


def plot_sweep(results: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Rate against ACK latency and CPU per callback, and peak concurrent callbacks against RSS,
    as a PNG at ``path``; False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rates = [r["spec"]["rate"] for r in results]
    fig, (lat, cpu, mem) = plt.subplots(1, 3, figsize=(15, 4.5))
    for key, style in (("p50", "o-"), ("p99", "s-"), ("max", "^:")):
        lat.plot(rates, [r["summary"]["ack_latency_ms"][key] for r in results], style, label=f"ACK {key}")
    lat.plot(rates, [r["summary"]["response_lateness_ms"]["p99"] for r in results], "d--",
             label="RESPONSE lateness p99")
    lat.set(xlabel="callbacks per second", ylabel="ms", yscale="log", title="latency")
    lat.legend()
    cpu.plot(rates, [r["mss_cpu_ms_per_callback"] for r in results], "o-", label="mss")
    cpu.plot(rates, [r["far_cpu_ms_per_callback"] for r in results], "s-", label="Kamailio (far end)")
    cpu.set(xlabel="callbacks per second", ylabel="CPU ms per callback", title="CPU per callback")
    cpu.set_ylim(bottom=0)
    cpu.legend()
    mem.plot([r["summary"]["peak_concurrent"] for r in results],
             [max((x["rss"] for x in r["samples"]), default=0) / 2**20 for r in results], "o-")
    mem.set(xlabel="callbacks in progress at once (peak)", ylabel="mss RSS peak, MB", title="memory")
    mem.set_ylim(bottom=0)
    for ax in (lat, cpu, mem):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_soak(result: Mapping[str, Any], path: Path) -> bool:
    """The soak's timeline as a PNG at ``path``: RSS and descriptors, journal size, the slowest ACK
    of each second; False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = result["samples"]
    t = [s["t"] for s in samples]
    fig, (mem, journal, ack) = plt.subplots(1, 3, figsize=(15, 4.5))
    mem.plot(t, [s["rss"] / 2**20 for s in samples], "-", label="RSS, MB")
    mem.plot(t, [s["fds"] / 10 for s in samples], "-", label="descriptors / 10")
    mem.set(xlabel="seconds", title="mss memory and descriptors")
    mem.set_ylim(bottom=0)
    mem.legend()
    journal.plot(t, [s["journal"] / 1024 for s in samples], "-", label="database + WAL + shm")
    journal.plot(t, [s["journal_db"] / 1024 for s in samples], "-", label="database file")
    journal.set(xlabel="seconds", ylabel="KiB", title="journal on disk")
    journal.set_ylim(bottom=0)
    journal.legend()
    with_acks = [s for s in samples if s.get("acks")]
    ack.plot([s["t"] for s in with_acks], [s["ack_max_ms"] for s in with_acks], ".", markersize=3)
    ack.set(xlabel="seconds", ylabel="ms", yscale="log", title="slowest ACK of each second")
    for ax in (mem, journal, ack):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def sweep_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per rate."""
    sources = sorted({_source(r) for r in results})
    lines = [
        f"mss: {', '.join(sources)}; durations {results[0]['spec']['durations'] if results else '-'}",
        "",
        "| rate /s | achieved | callbacks | answered | own-limit failures | other failures | "
        "ACK p50 / p99 ms | lateness p50 / p99 ms | mss CPU ms/cb | Kamailio CPU ms/cb | ratio | "
        "peak concurrent | RSS peak MB | fds peak | loop lag p99 / max | full GCs | "
        "SIP UDP drops mss / far |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in results:
        s = r["summary"]
        other = s["requests"] - s["answered"] - s["own_limit_failures"]
        mss_ms, far_ms = r["mss_cpu_ms_per_callback"], r["far_cpu_ms_per_callback"]
        ratio = mss_ms / far_ms if mss_ms and far_ms else None
        rss = max((x["rss"] for x in r["samples"]), default=0) / 2**20
        fds = max((x["fds"] for x in r["samples"]), default=None)
        ack, late = s["ack_latency_ms"], s["response_lateness_ms"]
        lines.append(
            f"| {r['spec']['rate']:g} | {r['achieved_rate']:g} | {s['requests']:,} | {s['answered']:,} | "
            f"{s['own_limit_failures']:,} | {other:,} | {_fmt(ack['p50'])} / {_fmt(ack['p99'])} | "
            f"{_fmt(late['p50'])} / {_fmt(late['p99'])} | {_fmt(mss_ms, 2)} | {_fmt(far_ms, 2)} | "
            f"{_fmt(ratio)} | {_fmt(s['peak_concurrent'])} | {rss:.1f} | {_fmt(fds)} | {_lag(r)} | "
            f"{_gc(r)} | {_drops(r)} |"
        )
        if s["problems"] or other:
            notes.append(f"- {r['spec']['rate']:g}/s: {_causes(s)}; problems {s['problems'] or 'none'}")
            notes += _warnings(r)
    return "\n".join(lines + (["", *notes] if notes else []))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--durations", type=_ints, default=(1, 2), help="durations of paced callbacks (1,2)")
        p.add_argument("--connections", type=int, default=4, help="TCP connections of paced traffic (4)")
        p.add_argument("--far-children", type=int, default=4, help="Kamailio workers per transport (4)")
        p.add_argument("--rtp-min", type=int, default=30000, help="mss [rtp] port_min (30000)")
        p.add_argument("--rtp-max", type=int, default=40000, help="mss [rtp] port_max (40000)")
        p.add_argument("--cpu", type=int, help="pin mss to this CPU")
        p.add_argument("--far-cpu", type=int, help="pin the far end (Kamailio) to this CPU")
        p.add_argument("--mss-tree", metavar="DIR",
                       help="run the mss of DIR (a checkout or export with its extension built)")
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="a config.ini key beyond the defaults, e.g. callback.max_calls=2")
        p.add_argument("--tag", default="", help="suffix of the result files")
        p.add_argument("--no-probe", action="store_true",
                       help="run mss bare: no loop-lag or collection probe inside it")

    p_soak = sub.add_parser("soak", help="minutes of paced + sequential callbacks against one mss")
    p_soak.add_argument("--minutes", type=float, default=3.0, help="length of the traffic (3)")
    p_soak.add_argument("--rate", type=float, default=40.0, help="paced callbacks per second (40)")
    p_soak.add_argument("--sequential-duration", type=int, default=1, help="duration of sequential ones (1)")
    p_soak.add_argument("--keep-days", help=f"[journal] keep_days (default {SOAK_KEEP_DAYS} when mss has it)")
    common(p_soak)
    p_sweep = sub.add_parser("sweep", help="a fresh mss per rate, paced callbacks only")
    p_sweep.add_argument("--rates", type=_floats, default=(20.0, 50.0, 100.0), help="callbacks/s (20,50,100)")
    p_sweep.add_argument("--seconds", type=float, default=20.0, help="traffic per rate (20)")
    common(p_sweep)
    args = parser.parse_args(argv)
    return soak(args) if args.command == "soak" else sweep(args)


if __name__ == "__main__":
    raise SystemExit(main())
