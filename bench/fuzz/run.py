"""``python -m bench.fuzz``: fuzz every parser of mss and report inputs, speed and crashes.

Each target (:mod:`bench.fuzz.targets`, and the relay's packet path in :mod:`bench.fuzz.rtp`) gets
a share of ``--inputs``. An input is a seed mutated by :class:`~bench.fuzz.mutate.Mutator`; inputs
that make a parser answer in a way not seen before (a new error message, with numbers blurred) join
the corpus, so the mutations reach deeper than the seeds (a cheap guide where there is no coverage
feedback). A crash is any exception but the target's documented errors, a broken promise
(:class:`~bench.fuzz.targets.Broken`), or a hang (an input that takes longer than ``--timeout``).
Crashes are deduplicated by exception type and the innermost mss source line; the first input of
each is shrunk (bounded) and saved under ``bench/fuzz/crashes/``.

Every loop is bounded in count and in time: ``--inputs`` and ``--seconds`` both stop the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from bench.fuzz.mutate import Mutator
from bench.fuzz.targets import ROOT, TARGETS, Broken, Target

CRASHES = Path(__file__).resolve().parent / "crashes"

#: Most inputs the corpus of one target grows to (beyond it new finds replace random old ones).
MAX_CORPUS = 4000
#: Most attempts to shrink one crashing input.
MAX_SHRINK_STEPS = 3000
#: Share of the inputs for the relay's packet path (real sockets: slower per input).
RTP_WEIGHT = 10


class Hang(BaseException):
    """An input ran past the time bound (a BaseException so ``except Exception`` does not eat it)."""


def _alarm(_signum: int, _frame: FrameType | None) -> None:
    raise Hang


@dataclass
class Crash:
    """One distinct crash: where it was raised, how often, the first input that did it."""

    target: str
    kind: str
    where: str
    message: str
    data: bytes
    count: int = 1
    trace: str = ""


@dataclass
class Stats:
    """What one target's run did."""

    name: str
    inputs: int = 0
    seconds: float = 0.0
    refused: int = 0
    corpus: int = 0
    slowest: float = 0.0
    slowest_input: bytes = b""
    crashes: dict[tuple[str, str], Crash] = field(default_factory=dict)


def crash_key(exc: BaseException) -> tuple[str, str]:
    """(exception type, innermost line of mss or bench/fuzz it came from)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = "?"
    for fr in reversed(frames):
        path = Path(fr.filename)
        if ROOT in path.parents or path.is_relative_to(ROOT):
            where = f"{path.relative_to(ROOT)}:{fr.lineno} ({fr.name})"
            break
    return type(exc).__name__, where


def run_one(target: Target, data: bytes, timeout: float) -> str | BaseException:
    """Run ``target`` on ``data``: what the parser answered, or the crash it raised."""
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return target.run(data)
    except Hang as exc:
        return exc
    except Exception as exc:
        if isinstance(exc, target.allowed) and not isinstance(exc, Broken):
            return f"{type(exc).__name__}: escaped the target"  # a target's own bug: refusals are caught
        return exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def shrink(target: Target, data: bytes, key: tuple[str, str], timeout: float) -> bytes:
    """A shorter input with the same crash key: chunks removed, halving the chunk size (bounded)."""
    steps = 0

    def same(candidate: bytes) -> bool:
        nonlocal steps
        steps += 1
        exc = run_one(target, candidate, timeout)
        return isinstance(exc, BaseException) and crash_key(exc) == key

    size = max(1, len(data) // 2)
    while size >= 1 and steps < MAX_SHRINK_STEPS:
        i = 0
        while i < len(data) and steps < MAX_SHRINK_STEPS:
            candidate = data[:i] + data[i + size :]
            if same(candidate):
                data = candidate
            else:
                i += size
        size //= 2
    return data


class Slow(Exception):
    """An input took longer than ``--slow`` twice in a row: a CPU cost an attacker can buy."""


def confirm_slow(target: Target, data: bytes, slow: float, timeout: float) -> Slow | None:
    """Run a slow input again (the machine is shared): a :class:`Slow` finding if it is slow again."""
    t0 = time.perf_counter()
    run_one(target, data, timeout)
    took = time.perf_counter() - t0
    if took <= slow:
        return None
    try:
        raise Slow(f"{len(data)} bytes took {took * 1000:.0f} ms (bound {slow * 1000:.0f} ms)")
    except Slow as exc:
        return exc


def fuzz_target(
    target: Target, inputs: int, seconds: float, rng: random.Random, timeout: float, slow: float
) -> Stats:
    """Up to ``inputs`` inputs, for at most ``seconds``."""
    stats = Stats(target.name)
    mutator = Mutator(rng, target.max_size)
    corpus: list[bytes] = list(target.seeds)
    seen: set[str] = set()
    for seed in target.seeds:  # the seeds first, unmutated
        answer = run_one(target, seed, timeout)
        if isinstance(answer, BaseException):
            record(stats, target, answer, seed)
        else:
            seen.add("|".join(sorted(set(answer.split("|")))))
    start = time.monotonic()
    deadline = start + seconds
    for n in range(inputs):
        if n % 256 == 0 and time.monotonic() > deadline:
            break
        data = mutator.mutate(rng.choice(corpus), corpus)
        t0 = time.perf_counter()
        answer = run_one(target, data, timeout)
        took = time.perf_counter() - t0
        stats.inputs += 1
        if took > stats.slowest:
            stats.slowest, stats.slowest_input = took, data
        if took > slow and not isinstance(answer, BaseException):
            answer = confirm_slow(target, data, slow, timeout) or answer
        if isinstance(answer, BaseException):
            record(stats, target, answer, data)
            continue
        if "!" in answer:  # the parser refused (part of) the input
            stats.refused += 1
        sig = "|".join(sorted(set(answer.split("|"))))  # which answers, not how many of each
        if sig not in seen:
            seen.add(sig)
            if len(corpus) < MAX_CORPUS:
                corpus.append(data)
            else:
                corpus[rng.randrange(len(target.seeds), MAX_CORPUS)] = data
    stats.seconds = time.monotonic() - start
    stats.corpus = len(corpus)
    for key, crash in stats.crashes.items():
        if crash.kind not in ("Hang", "Slow"):  # shrinking those would take too long
            crash.data = shrink(target, crash.data, key, timeout)
    return stats


def record(stats: Stats, target: Target, exc: BaseException, data: bytes) -> None:
    key = crash_key(exc)
    found = stats.crashes.get(key)
    if found is not None:
        found.count += 1
        if len(data) < len(found.data):
            found.data = data
        return
    trace = "".join(traceback.format_exception(exc))
    stats.crashes[key] = Crash(target.name, key[0], key[1], str(exc)[:300], data, trace=trace[-4000:])
    print(f"  CRASH {target.name}: {key[0]} at {key[1]}: {str(exc)[:120]}", flush=True)


def save(crash: Crash) -> Path:
    CRASHES.mkdir(exist_ok=True)
    digest = hashlib.sha1(crash.data).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{crash.target}-{crash.kind}-{crash.where}").strip("_")[:100]
    path = CRASHES / f"{slug}-{digest}.bin"
    path.write_bytes(crash.data)
    path.with_suffix(".txt").write_text(
        f"target: {crash.target}\nkind: {crash.kind}\nwhere: {crash.where}\ncount: {crash.count}\n"
        f"message: {crash.message}\n\n{crash.trace}",
        encoding="utf-8",
    )
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [*TARGETS, "rtp"]
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=100_000, help="inputs in total, shared by the targets")
    p.add_argument("--seconds", type=float, default=600.0, help="time bound of the whole run")
    p.add_argument("--targets", default=",".join(names), help=f"comma-separated, of {', '.join(names)}")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds one input may take (a hang)")
    p.add_argument("--slow", type=float, default=0.25,
                   help="seconds beyond which an input is a finding when it is slow twice in a row")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file too")
    p.add_argument(
        "--engine", choices=("auto", "guided", "mutate"), default="auto",
        help="guided: coverage-guided by atheris (libFuzzer) in a child per target; mutate: the seed "
        "mutations alone; auto: guided when atheris is installed. The relay is always fuzzed by mutation.",
    )
    args = p.parse_args(argv)
    args.names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = set(args.names) - set(names)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fuzzers; exit 1 when a crash was found, 0 otherwise."""
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    weights = {name: (RTP_WEIGHT if name == "rtp" else TARGETS[name].weight) for name in args.names}
    total_weight = sum(weights.values())
    signal.signal(signal.SIGALRM, _alarm)
    engine = args.engine
    if engine != "mutate":
        from bench.fuzz.guided import available

        if not available():
            if engine == "guided":
                print("bench.fuzz: atheris is not installed (pip install atheris)", file=sys.stderr)
                return 2
            engine = "mutate"
        else:
            engine = "guided"
    print(f"bench.fuzz: {args.inputs} inputs over {', '.join(args.names)}, seed {seed}, engine {engine}",
          flush=True)
    results: list[Stats] = []
    started = time.monotonic()
    for name in args.names:
        share = args.inputs * weights[name] // total_weight
        left = args.seconds - (time.monotonic() - started)
        budget = left * weights[name] / sum(weights[n] for n in args.names[len(results) :])
        rng = random.Random(f"{seed}-{name}")
        print(f"- {name}: up to {share} inputs, {budget:.0f} s", flush=True)
        if name == "rtp":
            from bench.fuzz.rtp import fuzz_relay

            stats = fuzz_relay(share, budget, rng)
        elif engine == "guided":
            from bench.fuzz.guided import fuzz_guided

            stats = fuzz_guided(name, share, budget, rng.randrange(1, 2**31), args.timeout, args.slow)
        else:
            stats = fuzz_target(TARGETS[name], share, budget, rng, args.timeout, args.slow)
        results.append(stats)
    return report(results, seed, args.json)


def report(results: list[Stats], seed: int, json_path: Path | None) -> int:
    print()
    print(f"{'target':<12}{'inputs':>10}{'seconds':>9}{'inputs/s':>10}{'refused':>10}{'corpus':>8}"
          f"{'slowest ms':>12}{'crashes':>9}")
    total_inputs = 0
    total_seconds = 0.0
    crashes: list[Crash] = []
    for s in results:
        rate = s.inputs / s.seconds if s.seconds else 0.0
        print(f"{s.name:<12}{s.inputs:>10}{s.seconds:>9.1f}{rate:>10.0f}{s.refused:>10}{s.corpus:>8}"
              f"{s.slowest * 1000:>12.1f}{len(s.crashes):>9}")
        total_inputs += s.inputs
        total_seconds += s.seconds
        crashes.extend(s.crashes.values())
    rate = total_inputs / total_seconds if total_seconds else 0.0
    print(f"{'total':<12}{total_inputs:>10}{total_seconds:>9.1f}{rate:>10.0f}{'':>30}{len(crashes):>9}")
    for s in results:
        if s.slowest_input:
            CRASHES.mkdir(exist_ok=True)
            (CRASHES / f"slowest-{s.name}.bin").write_bytes(s.slowest_input)
    for c in crashes:
        path = save(c)
        print(f"\ncrash [{c.target}] {c.kind} at {c.where} x{c.count}: {c.message[:160]}")
        print(f"  input ({len(c.data)} bytes): {c.data[:200]!r}")
        print(f"  saved: {path.relative_to(ROOT)}")
    if json_path is not None:
        json_path.write_text(json.dumps({
            "seed": seed,
            "targets": {s.name: {"inputs": s.inputs, "seconds": round(s.seconds, 2), "refused": s.refused,
                                 "slowest_ms": round(s.slowest * 1000, 1), "crashes": len(s.crashes)}
                        for s in results},
            "crashes": [{"target": c.target, "kind": c.kind, "where": c.where, "count": c.count,
                         "message": c.message} for c in crashes],
        }, indent=2), encoding="utf-8")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
