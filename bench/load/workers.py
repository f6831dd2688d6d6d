"""``python -m bench.load.workers``: ``[callback] workers = 1`` against ``workers = 2`` in one run.

For each rate of ``--rates`` (callbacks/s, paced, ``--seconds`` each, durations ``--durations``) both
configurations run on a fresh far end and a fresh mss, one after the other (the order alternating
from one rate to the next, so that a drift of the shared machine does not favour one of them). A
rate is *sustained* when every callback was answered, no IIF promise was broken and the ACK p99 is
under :data:`ACK_P99_LIMIT_MS`; the highest sustained rate of each configuration and their ratio
close the table. CPU is that of mss's whole process tree (the supervisor and its workers).

``[callback] max_calls`` is 4000 for both (``--max-calls``): at the default 1000 the single process
refuses REQUESTs for capacity from about 450/s (durations of 2 s keep ~1000 callbacks in progress)
while two workers hold 1000 each, which would measure the limit, not the CPU.

The AS side opens ``--connections`` TCP connections (16 by default): the kernel spreads connections,
not REQUESTs, over the workers, so a handful of connections may land unevenly.

Results: ``bench/load/results/workers-<UTC time>[-tag].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from bench.load.run import LoadSpec, run_load, write_results

#: A rate counts as sustained only with every ACK's p99 under this many milliseconds.
ACK_P99_LIMIT_MS = 100.0


def sustained(result: Mapping[str, Any]) -> bool:
    """Every callback answered, no promise broken, ACK p99 under the limit."""
    s = result["summary"]
    return (s["answered"] == s["requests"] and s["own_limit_failures"] == 0 and not s["problems"]
            and s["ack_latency_ms"]["p99"] is not None and s["ack_latency_ms"]["p99"] < ACK_P99_LIMIT_MS)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(runs: Sequence[Mapping[str, Any]]) -> str:
    """One row per run, then the highest sustained rate of each configuration and the ratio."""
    rows = ["| rate /s | workers | callbacks | answered | ACK p50 / p99 ms | mss CPU s | mss CPU ms/cb | "
            "achieved /s | sustained |", "|---|---|---|---|---|---|---|---|---|"]
    best: dict[int, float] = {}
    for run in runs:
        s, workers, rate = run["summary"], run["workers"], run["spec"]["rate"]
        ok = sustained(run)
        if ok:
            best[workers] = max(best.get(workers, 0.0), rate)
        rows.append(
            f"| {rate:g} | {workers} | {s['requests']:,} | {s['answered']:,} | "
            f"{_ms(s['ack_latency_ms']['p50'])} / {_ms(s['ack_latency_ms']['p99'])} | {run['mss_cpu_s']} | "
            f"{run['mss_cpu_ms_per_callback']} | {run['achieved_rate']} | {'yes' if ok else 'no'} |"
        )
    one, two = best.get(1), best.get(2)
    rows.append("")
    rows.append(f"highest sustained rate: workers = 1: {one or '-'}/s, workers = 2: {two or '-'}/s"
                + (f", ratio {two / one:.2f}" if one and two else ""))
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load.workers", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="100,200,300", help="callbacks/s, comma-separated (100,200,300)")
    parser.add_argument("--seconds", type=float, default=10.0, help="traffic per run (10)")
    parser.add_argument("--durations", default="2", help="durations of the callbacks (2)")
    parser.add_argument("--connections", type=int, default=16, help="TCP connections of the AS (16)")
    parser.add_argument("--far-children", type=int, default=4, help="Kamailio workers per transport (4)")
    parser.add_argument("--max-calls", type=int, default=4000,
                        help="[callback] max_calls of each worker and of the single process (4000)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    for n, rate in enumerate(float(r) for r in args.rates.split(",") if r.strip()):
        for workers in ((1, 2) if n % 2 == 0 else (2, 1)):
            print(f"rate {rate:g}/s, workers = {workers} ...", file=sys.stderr, flush=True)
            spec = LoadSpec(
                seconds=args.seconds, rate=rate,
                durations=tuple(int(d) for d in args.durations.split(",") if d.strip()),
                connections=args.connections, far_children=args.far_children, probe=False,
                overrides={"callback": {"workers": workers, "max_calls": args.max_calls}},
            )
            result = run_load(spec)
            result["workers"] = workers
            result.pop("samples", None)
            runs.append(result)
    text = table(runs)
    print(text)
    json_path, _ = write_results("workers", {"runs": runs}, text, args.tag)
    print(f"\nresults: {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
