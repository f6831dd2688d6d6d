"""mss under load: a generated config.ini with default values, ``mss run`` as a subprocess.

The config differs from mss's defaults only where a test bench must: ports and paths, server-to-
server mode towards the far end (``external_line_mode = no`` with a ``default_caller``), and
``extended_response = yes`` so every RESPONSE says why a callback failed (it adds two fields and
changes nothing else). Further keys (``max_calls``, ``[journal] keep_days`` ...) come from
``overrides``, section by section.

Why server-to-server: the per-callback path is the same in both modes (the stateless far end
challenges nothing), and a registration would only add a start-up dependency to the measurement.

``MssProcess`` starts ``python -m mss run --config <workdir>/config.ini`` (stderr to
``<workdir>/mss.log``), through ``mssprobe.py`` unless ``probe=False`` (it measures the event
loop's lag and the garbage collections inside mss), and with ``tree`` the mss of that directory
instead of the installed one (e.g. an export of another commit with its extension built). It
waits for "mss ready", and stops mss with SIGTERM, then SIGKILL after a bound. ``warnings()``
groups the WARNING and ERROR lines of its log, numbers blanked out, so a report can say what
failed and how often.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from mss_peers.net import check_loopback, free_port, parent_death_signal

__all__ = ["MssProcess"]

# mss with the event-loop and garbage-collection probes (see there).
PROBE_SCRIPT = Path(__file__).with_name("mssprobe.py")
# How long mss may take to say "mss ready".
START_TIMEOUT = 15.0
# A run's calls are over when it stops mss: the drain that SIGTERM starts should end at once; a
# second SIGTERM releases what is left (mss run), then the exit must follow within STOP_TIMEOUT.
STOP_GRACE = 5.0
STOP_TIMEOUT = 15.0
# How often start() looks at the log while waiting.
POLL_INTERVAL = 0.05
# The caller number of server-to-server mode.
DEFAULT_CALLER = "5550100"
# Warning groups kept in a summary (the most frequent first), and examples per group.
MAX_WARNING_GROUPS = 12
# Log lines quoted per failed callback.
MAX_LINES_PER_CALLBACK = 6
_LEVEL = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (.*)$")
_NUMBER = re.compile(r"\d+")


class MssProcess:
    """One ``mss run`` on loopback, talking to the far end at ``pss``."""

    def __init__(
        self,
        workdir: Path,
        *,
        pss: tuple[str, int],
        rtp_range: tuple[int, int] = (30000, 40000),
        host: str = "127.0.0.1",
        overrides: Mapping[str, Mapping[str, object]] | None = None,
        cpu: int | None = None,
        tree: Path | None = None,
        probe: bool = True,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = check_loopback(host)
        self.iif_port = free_port(host)
        self.sip_port = free_port(host)
        self.cpu = cpu
        self.tree = tree
        self.probe_path = workdir / "probe.json" if probe else None
        self.env = dict(os.environ)
        if tree is not None:
            if not (tree / "mss" / "__init__.py").is_file():
                raise ValueError(f"{tree} holds no mss package")
            inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
            self.env["PYTHONPATH"] = os.pathsep.join([str(tree), *inherited])
        sections: dict[str, dict[str, object]] = {
            "callback": {
                "listen_host": host,
                "listen_port": self.iif_port,
                "external_line_mode": "no",
                "default_caller": DEFAULT_CALLER,
                "extended_response": "yes",
            },
            "sip": {"local_host": host, "local_port": self.sip_port, "pss_host": pss[0], "pss_port": pss[1]},
            "rtp": {"host": host, "port_min": rtp_range[0], "port_max": rtp_range[1]},
            "peer_servers": {"as1": host},
            "journal": {"path": "journal.sqlite3"},
        }
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        self.config = sections
        self.workers = int(str(sections["callback"].get("workers", 1)))
        """[callback] workers: mss run is then a supervisor of that many processes."""
        self.config_path = workdir / "config.ini"
        self.config_path.write_text(
            "".join(
                f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())
                for name, values in sections.items()
            )
        )
        self.journal_path = workdir / "journal.sqlite3"
        self.log_path = workdir / "mss.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<mss iif {self.host}:{self.iif_port} sip {self.sip_port}>"

    @property
    def iif_address(self) -> tuple[str, int]:
        """Where an AS connects."""
        return self.host, self.iif_port

    @property
    def pid(self) -> int:
        """The PID of the running mss."""
        if self.process is None:
            raise RuntimeError("mss is not running")
        return self.process.pid

    def source(self) -> dict[str, str]:
        """Which mss runs: the name of the package's tree, and the git commit of that tree (with
        ``+dirty`` when its mss/ has uncommitted changes), when it is a git checkout."""
        probe = subprocess.run(
            [sys.executable, "-c", "import mss, os; print(os.path.dirname(os.path.dirname(mss.__file__)))"],
            cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=30, check=False,
        )
        tree = probe.stdout.strip()
        found = {"tree": os.path.basename(tree) or tree}  # a name, not the machine's path
        git = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
        if git.returncode == 0:
            dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--", "mss"],
                                   capture_output=True, text=True, timeout=10, check=False)
            found["commit"] = git.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        return found

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start mss and return once it logs "mss ready" (RuntimeError with the log tail if not)."""
        preexec = parent_death_signal()
        cpu = self.cpu

        def child_setup() -> None:
            if preexec is not None:
                preexec()
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        offset = len(self.log_text())  # a start again appends to the same log
        with self.log_path.open("ab") as log:
            launcher = ["-m", "mss"] if self.probe_path is None else [str(PROBE_SCRIPT), str(self.probe_path)]
            self.process = subprocess.Popen(
                [sys.executable, *launcher, "run", "--config", str(self.config_path)],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=child_setup,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mss exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._ready_line in self.log_text()[offset:]:
                return
            time.sleep(POLL_INTERVAL)
        self.stop()
        raise RuntimeError(f"mss not ready within {timeout} s:\n{self.log_tail()}")

    @property
    def _ready_line(self) -> str:
        """What mss logs once it takes orders (the supervisor: once every worker does)."""
        return "mss ready" if self.workers == 1 else f"all {self.workers} workers ready"

    def stop(self, grace: float = STOP_GRACE, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (the drain), after ``grace`` seconds a second SIGTERM (release every call now),
        SIGKILL after ``timeout`` more; the exit status."""
        process = self.process
        if process is None:
            return None
        for wait in (grace, timeout):
            if process.poll() is not None:
                break
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        if process.poll() is None:
            process.kill()
            process.wait(5)
        return process.returncode

    def __enter__(self) -> MssProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_text(self) -> str:
        """Everything mss logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def describe(self) -> str:
        """The log tail, for failure reports."""
        return f"--- {self!r} log tail ---\n{self.log_tail()}"

    def probe(self) -> dict[str, object] | None:
        """What the probes inside mss measured (written when mss exits); None without them."""
        if self.probe_path is None:
            return None
        try:
            figures: dict[str, object] = json.loads(self.probe_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return figures

    def lines_about(self, callback_id: str, limit: int = MAX_LINES_PER_CALLBACK) -> list[str]:
        """The first ``limit`` log lines that name the callback (``callback <id>``, ``id=<id>``)."""
        pattern = re.compile(rf"(callback |id=){re.escape(callback_id)}\b")
        found = []
        for line in self.log_text().splitlines():
            if pattern.search(line):
                found.append(line)
                if len(found) >= limit:
                    break
        return found

    def warnings(self) -> list[tuple[int, str, str]]:
        """(count, pattern, first example) of the WARNING/ERROR lines, the most frequent first."""
        groups: collections.Counter[str] = collections.Counter()
        example: dict[str, str] = {}
        for line in self.log_text().splitlines():
            match = _LEVEL.match(line)
            if match is None:
                continue
            key = f"{match.group(1)} {_NUMBER.sub('N', match.group(2))}"
            groups[key] += 1
            example.setdefault(key, line)
        return [(count, key, example[key]) for key, count in groups.most_common(MAX_WARNING_GROUPS)]

