"""Coverage-guided fuzzing of one target with atheris (libFuzzer), run in a child process.

``python -m bench.fuzz.guided TARGET INPUTS SECONDS SEED OUT`` instruments mss, then lets libFuzzer
pick, mutate and keep inputs by the code they reach; half the mutations are libFuzzer's own, half
those of :class:`~bench.fuzz.mutate.Mutator` (digit inflation, boundary numbers, header
duplication, ...), which coverage alone finds slowly. Each input goes through the same
:func:`~bench.fuzz.run.run_one` as the plain engine, so a crash means the same thing; the child
never stops at one: it counts, deduplicates and keeps going until INPUTS or SECONDS, then writes its
figures and crashes to OUT (JSON) and exits. :func:`fuzz_guided` is the parent's side.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.fuzz.run import Stats

# Nothing of mss is imported at module level: the child must import it under instrumentation.

__all__ = ["available", "fuzz_guided"]

#: Seconds the parent waits beyond the child's own time bound before it kills it.
GRACE = 60.0


def available() -> bool:
    """atheris is installed (``pip install atheris``; wheels exist for CPython 3.11)."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def fuzz_guided(name: str, inputs: int, seconds: float, seed: int, timeout: float, slow: float) -> Stats:
    """Run the child for target ``name`` and read its figures back."""
    from bench.fuzz.run import Crash, Stats
    from bench.fuzz.targets import ROOT

    with tempfile.TemporaryDirectory(prefix="mss-fuzz-") as tmp:
        out = Path(tmp) / "result.json"
        log = Path(tmp) / "libfuzzer.log"
        cmd = [sys.executable, "-m", "bench.fuzz.guided", name, str(inputs), str(seconds), str(seed),
               str(out), str(timeout), str(slow)]
        with log.open("wb") as err:
            try:
                code: int | str = subprocess.run(
                    cmd, cwd=ROOT, stdout=err, stderr=err, timeout=seconds + GRACE, check=False
                ).returncode
            except subprocess.TimeoutExpired:  # the child is killed; its figures are lost
                code = "killed after its time bound"
        stats = Stats(name)
        if not out.exists():
            tail = log.read_bytes()[-3000:].decode("utf-8", "replace")
            stats.crashes[("ChildDied", name)] = Crash(
                name, "ChildDied", f"bench/fuzz/guided.py (exit {code})", tail, b""
            )
            return stats
        result = json.loads(out.read_text(encoding="utf-8"))
    stats.inputs = result["inputs"]
    stats.seconds = result["seconds"]
    stats.refused = result["refused"]
    stats.slowest = result["slowest"]
    stats.slowest_input = bytes.fromhex(result["slowest_input"])
    stats.corpus = result["corpus"]
    for c in result["crashes"]:
        crash = Crash(name, c["kind"], c["where"], c["message"], bytes.fromhex(c["data"]), c["count"],
                      c["trace"])
        stats.crashes[(c["kind"], c["where"])] = crash
        print(f"  CRASH {name}: {c['kind']} at {c['where']}: {c['message'][:120]}", flush=True)
    return stats


def _child(name: str, inputs: int, seconds: float, seed: int, out: Path, timeout: float, slow: float) -> None:
    import atheris

    with atheris.instrument_imports(include=["mss"]):
        import mss.iif
        import mss.sdp
        import mss.sip.auth
        import mss.sip.framing
        import mss.sip.leg
        import mss.sip.message
        import mss.sip.ua
        import mss.sip.uri  # noqa: F401
    from bench.fuzz import targets
    from bench.fuzz.mutate import Mutator
    from bench.fuzz.run import Stats, _alarm, confirm_slow, record, run_one, shrink

    target = targets.TARGETS[name]
    stats = Stats(name)
    seen: set[str] = set()
    mutator = Mutator(random.Random(seed), target.max_size)
    seeds = list(target.seeds)
    start = time.monotonic()
    deadline = start + seconds

    def finish() -> None:
        for key, crash in stats.crashes.items():
            if crash.kind not in ("Hang", "Slow"):
                crash.data = shrink(target, crash.data, key, timeout)
        out.write_text(json.dumps({
            "inputs": stats.inputs, "seconds": time.monotonic() - start, "refused": stats.refused,
            "slowest": stats.slowest, "slowest_input": stats.slowest_input.hex(), "corpus": len(seen),
            "crashes": [{"kind": c.kind, "where": c.where, "message": c.message, "data": c.data.hex(),
                         "count": c.count, "trace": c.trace} for c in stats.crashes.values()],
        }), encoding="utf-8")
        sys.stdout.flush()
        os._exit(0)

    def one(data: bytes) -> None:
        t0 = time.perf_counter()
        answer = run_one(target, data, timeout)
        took = time.perf_counter() - t0
        if took > stats.slowest:
            stats.slowest, stats.slowest_input = took, data
        if took > slow and not isinstance(answer, BaseException):
            answer = confirm_slow(target, data, slow, timeout) or answer
        stats.inputs += 1
        if isinstance(answer, BaseException):
            record(stats, target, answer, data)
        else:
            if "!" in answer:  # the parser refused (part of) the input
                stats.refused += 1
            seen.add("|".join(sorted(set(answer.split("|")))))
        if stats.inputs >= inputs or (stats.inputs % 256 == 0 and time.monotonic() > deadline):
            finish()

    def mutate(data: bytes, max_size: int, mutation_seed: int) -> bytes:
        mutator.rng.seed(mutation_seed)
        if mutator.rng.random() < 0.5:
            return bytes(atheris.Mutate(data, max_size))
        return mutator.mutate(data, seeds)[:max_size]

    corpus_dir = Path(tempfile.mkdtemp(prefix="mss-fuzz-corpus-"))
    for i, seed_bytes in enumerate(seeds):
        (corpus_dir / f"seed{i}").write_bytes(seed_bytes)
    signal.signal(signal.SIGALRM, _alarm)
    argv = [sys.argv[0], f"-seed={seed % 2**31 or 1}", f"-max_len={target.max_size}", "-timeout=0",
            f"-max_total_time={int(seconds) + 5}", "-rss_limit_mb=4096", "-print_final_stats=0",
            str(corpus_dir)]
    atheris.Setup(argv, one, custom_mutator=mutate)
    atheris.Fuzz()
    finish()  # libFuzzer's own time bound came first


if __name__ == "__main__":
    _, target_name, n, secs, rng_seed, result_path, per_input, slow_input = sys.argv
    # Instrumented code runs about 3 times slower: the bounds grow with it.
    _child(target_name, int(n), float(secs), int(rng_seed), Path(result_path), 3 * float(per_input),
           3 * float(slow_input))
