"""``python bench/cpuprof/top.py PROFILE [N]``: the shares of a collapsed-stack profile.

Prints the total samples, then the share of each module (where the innermost frame is: "self"
time), of each function (self), and of each function with everything it calls (inclusive).
"""

from __future__ import annotations

import collections
import re
import sys

_LINE = re.compile(r":\d+\)$")


def main(path: str, top: int = 30) -> None:
    """Print the tables for the profile at ``path``."""
    by_module: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
            by_function[frames[-1]] += n
            by_module[frames[-1].rpartition(" (")[2].rstrip(")")] += n
            for frame in set(frames):
                inclusive[frame] += n
    print(f"{total} samples")
    for title, table in (("module (self)", by_module), ("function (self)", by_function),
                         ("function (inclusive)", inclusive)):
        print(f"\n{title}")
        for name, n in table.most_common(top):
            print(f"{100 * n / total:6.1f} %  {name}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30)
