"""The control plane's hot modules, compiled by Cython, and never run stale.

The build (setup.py) compiles each module of :data:`COMPILED` from its own ``.py`` source (pure
Python; Cython only makes the interpreter's work cheaper: about a quarter less CPU for the SIP, SDP
and call-flow work of a callback, bench/README.md "CPU per callback") and writes the SHA-256 of each
source it compiled into :data:`MANIFEST`, next to this file.

An extension module is found before its ``.py`` by Python's own import system, so a source edited
after the build would silently not run. :func:`install` (called once by ``mss/__init__.py``) puts a
finder first on ``sys.meta_path`` that, for the modules of :data:`COMPILED` only, compares the
source's digest with the one the build recorded and loads the source when they differ (or when no
build recorded it): a compiled module runs only while it is its source's exact translation.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = ["COMPILED", "MANIFEST", "install", "is_compiled"]

#: The modules setup.py compiles: what a callback's signalling runs most (SIP parse, build and
#: transactions, SDP offer/answer, the call flow and its engine, IIF).
COMPILED: tuple[str, ...] = (
    "mss.callflow",
    "mss.engine",
    "mss.iif",
    "mss.sdp.offer_answer",
    "mss.sdp.syntax",
    "mss.sip._grammar",
    "mss.sip._timers",
    "mss.sip.dialog",
    "mss.sip.leg",
    "mss.sip.message",
    "mss.sip.transaction",
    "mss.sip.ua",
    "mss.sip.uri",
)

#: The build's record: module name -> SHA-256 (hex) of the source it compiled.
MANIFEST = Path(__file__).with_name("_compiled.json")


def source_digest(path: Path) -> str:
    """SHA-256 (hex) of a source file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _SourceWhenStale(importlib.abc.MetaPathFinder):
    """Finds the source of a compiled module whose source changed since the build."""

    def __init__(self, recorded: dict[str, str]) -> None:
        self._recorded = recorded

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or spec.origin.endswith(".py"):
            return None  # no extension here: the usual search finds the source
        source = Path(spec.origin).with_name(fullname.rpartition(".")[2] + ".py")
        if not source.exists():
            return None  # an install without sources: the extension is all there is
        if self._recorded.get(fullname) == source_digest(source):
            return None  # the extension is this source's translation
        return importlib.util.spec_from_file_location(fullname, source)


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if any(isinstance(finder, _SourceWhenStale) for finder in sys.meta_path):
        return
    try:
        recorded = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = {}  # no build recorded anything: every extension found is treated as stale
    if not isinstance(recorded, dict):
        recorded = {}
    sys.meta_path.insert(0, _SourceWhenStale(recorded))


def is_compiled(module: ModuleType) -> bool:
    """True when ``module`` runs from an extension (not from its ``.py``)."""
    origin = getattr(module, "__file__", None) or ""
    return not origin.endswith(".py")
