"""The source itself: I/O only in the adapters, ruff clean, mypy strict clean."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent

#: Modules that do I/O; only the adapters may import them (STYLE.md principle 1).
IO_MODULES = frozenset({"asyncio", "socket", "selectors", "uvloop"})


def may_do_io(path: Path) -> bool:
    """The adapters and the relay pair."""
    rel = path.relative_to(ROOT).as_posix()
    adapters = ("mss/relay.py", "mss/_rtp.pyx")
    return rel.startswith("mss/aio/") or rel in adapters


#: Known exceptions, each with its reason; (file, enclosing function, module).
EXEMPT: set[tuple[str, str, str]] = set()


def io_imports(path: Path) -> list[tuple[str, str, int, str]]:
    """(file, enclosing function, line, module) of every import of an I/O module in ``path``."""
    return imports_in(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def imports_in(text: str, rel: str) -> list[tuple[str, str, int, str]]:
    """The same for source ``text`` named ``rel``: imports at any depth, ``from`` imports included."""
    found: list[tuple[str, str, int, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, child.name)
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                if name.split(".")[0] in IO_MODULES:
                    found.append((rel, where, child.lineno, name.split(".")[0]))
            visit(child, where)

    visit(ast.parse(text, filename=rel), "<module>")
    return found


def test_the_scanner_sees_nested_and_from_imports() -> None:
    text = (
        "import os, socket\n"
        "from selectors import DefaultSelector\n"
        "def f():\n"
        "    import asyncio.events\n"
        "    if True:\n"
        "        from uvloop import run\n"
        "from . import asyncio\n"  # a relative import of a sibling is not the standard module
    )
    assert imports_in(text, "mss/probe.py") == [
        ("mss/probe.py", "<module>", 1, "socket"),
        ("mss/probe.py", "<module>", 2, "selectors"),
        ("mss/probe.py", "f", 4, "asyncio"),
        ("mss/probe.py", "f", 6, "uvloop"),
    ]


def test_only_adapters_import_io_modules() -> None:
    sources = sorted((ROOT / "mss").rglob("*.py"))
    assert len(sources) > 10
    offenders = [
        f"{file}:{line} ({where}) imports {module}"
        for path in sources
        if not may_do_io(path)
        for file, where, line, module in io_imports(path)
        if (file, where, module) not in EXEMPT
    ]
    assert offenders == []


def test_exemptions_are_still_needed() -> None:
    present = {
        (file, where, module)
        for path in sorted((ROOT / "mss").rglob("*.py"))
        for file, where, _line, module in io_imports(path)
    }
    assert not EXEMPT - present, f"remove from EXEMPT: {EXEMPT - present}"


def test_the_adapters_are_where_the_io_is() -> None:
    # The rule has teeth: the adapters do import these modules.
    assert io_imports(ROOT / "mss" / "aio" / "iif_server.py")
    assert may_do_io(ROOT / "mss" / "relay.py") and may_do_io(ROOT / "mss" / "_rtp.pyx")
    assert not may_do_io(ROOT / "mss" / "iif.py") and not may_do_io(ROOT / "mss" / "cli.py")


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.timeout(300)
def test_ruff_clean() -> None:
    done = run_tool(str(BIN / "ruff"), "check", "--output-format", "concise",
                    "mss", "mss_peers", "tests", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(300)
def test_mypy_strict_clean() -> None:
    done = run_tool(str(BIN / "mypy"))  # strict, files = mss and mss_peers: from pyproject.toml
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def test_the_wheel_holds_every_package_of_mss_and_nothing_else() -> None:
    # The package list is explicit: a package under mss/ missing from it would be missing from the
    # wheel, and the test peers (mss_peers/, STYLE.md: "Test peers are not product") stay out.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    inits = (ROOT / "mss").rglob("__init__.py")
    on_disk = {init.parent.relative_to(ROOT).as_posix().replace("/", ".") for init in inits}
    assert listed == on_disk
    assert (ROOT / "mss_peers" / "__init__.py").is_file() and not (ROOT / "mss" / "peers").exists()
