"""``mss demo``: one whole callback on this machine, with real peers; the scenario is ``mss_peers.demo``.

The peers (Kamailio as the provider, pjsua2 phones, audio checks, mss as a process) are test tools,
not part of the mss package: they are the ``mss_peers`` package of mss's source tree, which no wheel
carries. ``mss demo`` imports them from where Python finds them, else from the source tree of the
running mss (an editable install, as ``bash tests/run.sh`` makes), else from the current directory
(the source tree ``pip install '.[demo]'`` was run in); without them it says so and exits with 2.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PEERS", "find_peers", "main"]

#: The peers' package: a directory of this name in mss's source tree, beside ``mss/``.
PEERS = "mss_peers"

#: What ``mss demo`` says when it finds no peers.
MISSING = (
    f"the demo's peers ({PEERS}/ of mss's source tree) are not here: they are not part of the mss "
    "package. Run mss demo in the source tree mss was installed from (pip install '.[demo]' there), "
    "or install mss editable from one (pip install -e '.[demo]')."
)


def find_peers(places: Iterable[Path]) -> Path | None:
    """The first of ``places`` that holds the peers' package (a ``mss_peers/__init__.py``), or None."""
    for place in places:
        if (place / PEERS / "__init__.py").is_file():
            return place
    return None


def _places() -> list[Path]:
    """Where a source tree may be: the one the running mss package is in, then the current directory."""
    return [Path(__file__).resolve().parents[1], Path.cwd()]


def main(*, duration: int = 5, transport: str = "udp", keep: bool = False) -> int:
    """Run the demo; exit status 0 when the callback and the audio check both succeed."""
    spec = importlib.util.find_spec(PEERS)
    if spec is None or spec.origin is None:  # not found, or a bare directory of that name
        tree = find_peers(_places())
        if tree is None:
            print(f"mss demo: {MISSING}", file=sys.stderr)
            return 2
        sys.path.insert(0, str(tree))
    from mss_peers.demo import main as run

    return run(duration=duration, transport=transport, keep=keep)
