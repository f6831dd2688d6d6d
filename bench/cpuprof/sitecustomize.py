"""A CPU-time sampling profiler for ``mss run``, loaded by Python's ``site`` through ``PYTHONPATH``.

``MSS_CPUPROF=/tmp/prof PYTHONPATH=$PWD/bench/cpuprof python -m bench.load sweep ...`` (an absolute
path: mss runs in its own directory) samples every
``mss run`` the command starts (other processes see ``MSS_CPUPROF`` and ignore it): every
``INTERVAL`` seconds of the *process's CPU time* (``ITIMER_PROF``, all threads) a SIGPROF records
the main thread's Python stack, and at exit the counts go to ``$MSS_CPUPROF.<pid>`` as collapsed
stacks (``frame;frame;... count``, root first, ``qualname (path:line)``), the format of
flamegraph.pl and of ``bench/cpuprof/top.py``.

Why CPU time and not wall time: a wall-clock sampler (py-spy) also counts the main thread while it
waits for the relay thread or for a CPU (mss pinned to a CPU other processes share), which made the
relay verbs look three times as costly as they are. Python runs the handler at the next bytecode,
so time in a C call (sqlite, a system call, the relay thread's work while a verb waits for it) is
charged to the Python line that made it; uvloop's own work is charged to the next callback it runs.
Signals that arrive while one is pending are merged, so the sample count is below CPU time /
INTERVAL; the shares are what the profile is for. The handler costs about 20 µs a sample (2 % at
the default interval).
"""

from __future__ import annotations

import os

#: Seconds of process CPU time between two samples.
INTERVAL = 0.001
#: Frames kept per sample (from the innermost).
MAX_DEPTH = 80


def _short(path: str) -> str:
    for marker in ("/mss/", "/bench/"):
        i = path.rfind(marker)
        if i >= 0:
            return path[i + 1:]
    i = path.rfind("/python3.")
    if i >= 0:
        return path[path.find("/", i + 1) + 1:]
    return path


def _start() -> None:
    out = os.environ.get("MSS_CPUPROF")
    if not out:
        return
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return
    if b"run" not in argv or not any(a == b"mss" or a.endswith(b"mssprobe.py") for a in argv):
        return
    import atexit
    import collections
    import signal
    from types import FrameType

    counts: collections.Counter[str] = collections.Counter()

    def sample(signum: int, frame: FrameType | None) -> None:
        parts = []
        while frame is not None and len(parts) < MAX_DEPTH:
            code = frame.f_code
            parts.append(f"{code.co_qualname} ({_short(code.co_filename)}:{frame.f_lineno})")
            frame = frame.f_back
        counts[";".join(reversed(parts))] += 1

    def dump() -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        with open(f"{out}.{os.getpid()}", "w") as f:
            f.writelines(f"{stack} {n}\n" for stack, n in counts.items())

    signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)
    atexit.register(dump)


_start()
