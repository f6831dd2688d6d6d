"""`mss demo` finds its peers (mss_peers/, in the source tree and in no wheel), or says where they are."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from mss.demo import PEERS, find_peers

ROOT = Path(__file__).parent.parent


def _tree(path: Path, *, package: bool) -> Path:
    (path / PEERS).mkdir(parents=True)
    if package:
        (path / PEERS / "__init__.py").write_text("", encoding="utf-8")
    return path


def test_find_peers_takes_the_first_place_that_holds_the_package(tmp_path: Path) -> None:
    bare = _tree(tmp_path / "bare", package=False)  # a directory of that name is not the package
    first = _tree(tmp_path / "first", package=True)
    second = _tree(tmp_path / "second", package=True)
    assert find_peers([tmp_path / "nowhere", bare, first, second]) == first
    assert find_peers([bare]) is None
    assert find_peers([]) is None
    assert find_peers([ROOT]) == ROOT  # this source tree


def test_mss_demo_outside_a_source_tree_says_where_the_peers_are(tmp_path: Path) -> None:
    # mss as a wheel installs it: the package alone (sources and the built extensions), run from a
    # directory that is no source tree, with Python's own path isolated (-I: no current directory).
    site = tmp_path / "site"
    shutil.copytree(ROOT / "mss", site / "mss", ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.pyx"))
    assert not (site / "mss" / "peers").exists()
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "mss_command.py"
    script.write_text(
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import mss.cli\n"
        "assert mss.cli.__file__.startswith(sys.argv[1]), mss.cli.__file__\n"
        "sys.exit(mss.cli.main(sys.argv[2:]))\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-I", str(script), str(site), "demo"],
        cwd=work, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    expected = "mss demo: the demo's peers (mss_peers/ of mss's source tree) are not here"
    assert done.stderr.startswith(expected), done.stderr
    assert done.stdout == ""
