"""The compiled control-plane modules (mss/_compiled.py): built by the test command, and never run
when their source changed after the build."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mss import _compiled

ROOT = Path(__file__).parent.parent


def _built() -> bool:
    return _compiled.MANIFEST.exists()


def test_the_build_compiled_every_listed_module() -> None:
    if not _built():
        pytest.skip("built with MSS_PURE_PYTHON=1 (no compiled modules)")
    for name in _compiled.COMPILED:
        module = importlib.import_module(name)
        assert _compiled.is_compiled(module), f"{name} runs from {module.__file__}"


def _copy_package(tmp_path: Path) -> Path:
    """The built package (sources, extensions and manifest) in a directory of its own."""
    shutil.copytree(ROOT / "mss", tmp_path / "mss", ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    return tmp_path


def _where(tree: Path, *modules: str) -> list[str]:
    """For each module, "compiled" or "source" as a fresh interpreter on ``tree`` imports it."""
    code = (
        "import importlib, sys\n"
        "from mss import _compiled\n"
        "for name in sys.argv[1:]:\n"
        "    m = importlib.import_module(name)\n"
        "    print('compiled' if _compiled.is_compiled(m) else 'source', getattr(m, 'EDITED', False))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *modules], cwd=tree, capture_output=True, text=True,
                          check=True, env={"PYTHONPATH": str(tree)})
    return done.stdout.split("\n")[:-1]


def test_a_source_edited_after_the_build_runs_as_source(tmp_path: Path) -> None:
    if not _built():
        pytest.skip("built with MSS_PURE_PYTHON=1 (no compiled modules)")
    tree = _copy_package(tmp_path)
    with (tree / "mss" / "iif.py").open("a", encoding="utf-8") as source:
        source.write("\nEDITED = True\n")
    # the edited module runs its source, with the edit; the others stay compiled
    assert _where(tree, "mss.iif", "mss.sip.uri") == ["source True", "compiled False"]


def test_without_the_build_record_every_module_runs_as_source(tmp_path: Path) -> None:
    if not _built():
        pytest.skip("built with MSS_PURE_PYTHON=1 (no compiled modules)")
    tree = _copy_package(tmp_path)
    (tree / "mss" / "_compiled.json").unlink()
    assert _where(tree, "mss.iif", "mss.sip.uri") == ["source False", "source False"]


def test_the_finder_is_installed_once() -> None:
    _compiled.install()
    _compiled.install()
    assert sum(type(f).__name__ == "_SourceWhenStale" for f in sys.meta_path) == 1
