"""What /proc says about a process: CPU seconds, resident memory, open descriptors.

Every reader takes a PID and returns a number, or raises ``ProcessLookupError`` when the process
is gone. CPU time is the scheduler's run time of every thread (``/proc/<pid>/task/*/schedstat``, in
nanoseconds: the tick-based user + system times of ``/proc/<pid>/stat`` lose time in this VM);
children are not included, except by the ``tree_`` readers and :func:`sample` (``mss run`` with
``[callback] workers`` > 1 is a supervisor whose children do the work).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcSample",
    "cpu_seconds",
    "file_size",
    "open_fds",
    "process_tree",
    "rss_bytes",
    "sample",
    "total_cpu_seconds",
    "tree_cpu_seconds",
    "udp_drops",
]

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _read(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` so far: the scheduler's run time of every live thread
    (``/proc/<pid>/task/*/schedstat``, nanoseconds), or user + system from ``/proc/<pid>/stat``
    (clock ticks, which this kind of VM undercounts) when schedstat is not available."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    total_ns = 0
    try:
        for task in tasks:
            try:
                total_ns += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            except FileNotFoundError:
                continue  # a thread that ended meanwhile
        return total_ns / 1e9
    except (OSError, ValueError, IndexError):
        stat = _read(pid, "stat")
        fields = stat[stat.rindex(")") + 2 :].split()  # after "(comm) ": field 3 is fields[0]
        return (int(fields[11]) + int(fields[12])) / _TICK


def total_cpu_seconds(pids: Iterable[int]) -> float:
    """The CPU seconds of several processes together; those gone meanwhile count 0."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except ProcessLookupError:
            continue
    return total


#: Generations of children :func:`process_tree` follows (mss's supervisor and its workers: 1).
TREE_DEPTH = 3


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (parents read from ``/proc/*/stat``); ProcessLookupError when
    ``pid`` is gone."""
    _read(pid, "stat")
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    tree, level = [pid], [pid]
    for _ in range(TREE_DEPTH):
        level = [child for parent in level for child in parents.get(parent, ())]
        tree += level
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (a worker that died and was replaced takes
    its seconds with it)."""
    return total_cpu_seconds(process_tree(pid))


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (``/proc/<pid>/statm``, second field)."""
    return int(_read(pid, "statm").split()[1]) * _PAGE


def open_fds(pid: int) -> int:
    """How many descriptors ``pid`` has open."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None


def file_size(path: Path, suffixes: Iterable[str] = ("", "-wal", "-shm")) -> int:
    """Bytes of ``path`` and its companions (sqlite's WAL and shared-memory files); missing is 0."""
    total = 0
    for suffix in suffixes:
        try:
            total += Path(str(path) + suffix).stat().st_size
        except FileNotFoundError:
            continue
    return total


def udp_drops(port: int, table: Path = Path("/proc/net/udp")) -> int:
    """Datagrams the kernel dropped on the UDP sockets bound to local ``port`` (a full receive
    buffer, mostly): the last column of ``/proc/net/udp``, summed."""
    total = 0
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 13 and int(fields[1].rpartition(":")[2], 16) == port:
            total += int(fields[12])
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcSample:
    """One look at the mss process."""

    t: float
    """Seconds since the traffic started."""
    cpu_s: float
    """CPU seconds of mss so far (since its start)."""
    rss: int
    """Resident memory, bytes."""
    fds: int
    """Open descriptors."""
    journal: int
    """Journal size on disk (database + WAL + shared memory), bytes."""
    journal_db: int
    """The database file alone (without the WAL, which sqlite reuses once checkpointed), bytes."""
    done: int
    """Callbacks finished (RESPONSE received, or refused) so far."""


def _or_zero(read: Callable[[int], int], pid: int) -> int:
    try:
        return read(pid)
    except ProcessLookupError:
        return 0


def sample(pid: int, journal: Path, *, t: float, done: int) -> ProcSample:
    """Read every figure of ``pid`` and its descendants (mss's workers) now."""
    tree = process_tree(pid)
    return ProcSample(
        t=t,
        cpu_s=total_cpu_seconds(tree),
        rss=rss_bytes(pid) + sum(_or_zero(rss_bytes, child) for child in tree[1:]),
        fds=open_fds(pid) + sum(_or_zero(open_fds, child) for child in tree[1:]),
        journal=file_size(journal),
        journal_db=file_size(journal, ("",)),
        done=done,
    )
