"""``python bench/load/mssprobe.py OUT.json run --config config.ini``: mss with two probes inside.

The load benchmark starts mss through this script so it can see what no outside view shows:

* **event-loop lag**: a task on mss's own loop sleeps ``PROBE_INTERVAL`` again and again and
  records how much later than asked it wakes up (a stalled loop answers nothing: IIF, SIP and
  timers all wait for it). It is added by wrapping ``uvloop.run``, which ``mss run`` calls; when
  mss starts its loop some other way the probe reports ``"loop_probe": false``.
  The longest lags are kept with when they happened and how much CPU the loop's thread had in
  them: a lag with little CPU is time the thread did not run (another process, a blocking call).
* **garbage collections**: ``gc.callbacks`` times every collection, by generation, with what it
  freed (a full collection that frees nothing is pure stall).

Everything else is ``python -m mss`` unchanged (the arguments after OUT.json are its own). At exit
(``mss run`` ends with SystemExit after SIGTERM) the figures go to OUT.json. The probe costs about
``1 / PROBE_INTERVAL`` wake-ups per second (0.1-0.2 % of a core).
"""

from __future__ import annotations

import array
import asyncio
import atexit
import gc
import json
import os
import runpy
import sys
import time
from collections.abc import Coroutine
from typing import Any

# Seconds between two wake-ups of the lag probe.
PROBE_INTERVAL = 0.01
# Stall thresholds reported (seconds), and how many of the longest stalls are kept with their time.
THRESHOLDS = (0.005, 0.02, 0.05, 0.1, 0.25)
TOP = 20

_t0 = time.monotonic()
_lags = array.array("d")
_lag_at = array.array("d")  # when each lag sample was taken (seconds since the probe's start)
_lag_cpu = array.array("d")  # CPU seconds the loop's thread ran during each sample's interval
_gc_start = [0.0]
_gc: list[tuple[int, float, int, float]] = []  # generation, seconds, collected, when
_probe_ran = [False]


def _on_gc(phase: str, info: dict[str, int]) -> None:
    now = time.perf_counter()
    if phase == "start":
        _gc_start[0] = now
    else:
        _gc.append((info["generation"], now - _gc_start[0], info["collected"], time.monotonic() - _t0))


async def _probe() -> None:
    _probe_ran[0] = True
    while True:  # cancelled when mss's main coroutine returns
        asked = time.perf_counter() + PROBE_INTERVAL  # loop.time() is whole milliseconds in uvloop
        cpu = time.thread_time()
        await asyncio.sleep(PROBE_INTERVAL)
        _lags.append(max(0.0, time.perf_counter() - asked))
        _lag_at.append(time.monotonic() - _t0)
        _lag_cpu.append(time.thread_time() - cpu)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, int(q / 100 * len(values) + 0.5) - 1))]


def _report(out: str) -> None:
    lags = sorted(_lags)
    by_gen: dict[str, dict[str, Any]] = {}
    for gen, seconds, collected, _ in _gc:
        entry = by_gen.setdefault(str(gen), {"count": 0, "total_s": 0.0, "max_ms": 0.0, "collected": 0,
                                             "over_20ms": 0})
        entry["count"] += 1
        entry["total_s"] += seconds
        entry["max_ms"] = max(entry["max_ms"], seconds * 1000)
        entry["collected"] += collected
        entry["over_20ms"] += seconds > 0.02
    figures = {
        "loop_probe": _probe_ran[0],
        "probe_interval_s": PROBE_INTERVAL,
        "lag_samples": len(lags),
        "lag_p50_ms": (_percentile(lags, 50) or 0.0) * 1000 if lags else None,
        "lag_p99_ms": (_percentile(lags, 99) or 0.0) * 1000 if lags else None,
        "lag_max_ms": lags[-1] * 1000 if lags else None,
        "stalls_over_ms": {str(int(t * 1000)): sum(1 for x in lags if x > t) for t in THRESHOLDS},
        "gc": by_gen,
        "longest_lags": [
            # cpu_ms well below ms + the interval: the loop's thread was not running (another
            # process had the CPU, or a blocking system call), not busy with mss's work
            {"ms": round(lag * 1000, 2), "at_s": round(at, 2), "cpu_ms": round(cpu * 1000, 2)}
            for lag, at, cpu in sorted(zip(_lags, _lag_at, _lag_cpu, strict=True), key=lambda e: -e[0])[:TOP]
        ],
        "longest_gc": [
            {"generation": g, "ms": round(s * 1000, 2), "collected": c, "at_s": round(w, 2)}
            for g, s, c, w in sorted(_gc, key=lambda e: -e[1])[:TOP]
        ],
    }
    with open(out, "w") as f:
        json.dump(figures, f, indent=1)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: mssprobe.py OUT.json <mss arguments>")
    out = sys.argv.pop(1)
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # this directory's modules (run.py ...) must not shadow anything of mss's
    gc.callbacks.append(_on_gc)
    atexit.register(_report, out)
    import uvloop  # a dependency of mss

    original = uvloop.run

    def run(main: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
        async def with_probe() -> Any:
            probe = asyncio.ensure_future(_probe())
            try:
                return await main
            finally:
                probe.cancel()

        return original(with_probe(), **kwargs)

    uvloop.run = run
    sys.argv[0] = "mss"
    runpy.run_module("mss", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
