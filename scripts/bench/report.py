"""Write benchmark results into ``docs/benchmarks.md``: one section per benchmark.

Every section starts with the date and the machine it was measured on, and a re-run
replaces its own section (matched by title) while every other section is kept as it is::

    from scripts.bench.report import write_section
    write_section("Catch-up: 100,000 signed changes", "| what | value |\\n|---|---|\\n...")
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
LOCK = ROOT / "scripts" / "bench" / ".scratch" / "report.lock"

HEADER = """# maia-node benchmarks

Figures measured by the scripts in `scripts/bench/` on real `maia up` processes over loopback
(see `scripts/bench/run_sync_benchmarks.py`). Each section says when and on which machine it
was measured; re-running a benchmark replaces its own section. Targets come from the design
brief (§10).
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _node_version() -> str:
    node = shutil.which("node")
    if not node:
        return "not installed"
    try:
        return subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _code_version() -> str:
    """The commit measured, and whether the node's code in the working tree differed from it."""
    git = shutil.which("git")
    if not git:
        return "unknown"
    try:
        head = subprocess.run([git, "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(
            [git, "-C", str(ROOT), "status", "--porcelain", "--", "node", "crdt",
             "pyproject.toml"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if not head:
        return "unknown"
    return f"{head} + uncommitted changes to the code" if dirty else head


@functools.cache
def machine_info() -> dict[str, str]:
    """What the figures were measured on (cached: the machine does not change mid-run)."""
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count() or "?"),
        "RAM": _ram(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "automerge (Python binding)": _version("automerge"),
        "Node.js": _node_version(),
        "maia-node commit": _code_version(),
    }


def machine_line(extra: dict[str, str] | None = None) -> str:
    info = {**machine_info(), **(extra or {})}
    return "; ".join(f"{k}: {v}" for k, v in info.items())


def _split(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The preamble and the ``## title`` sections (title, full text) of the document."""
    parts = re.split(r"(?m)^(?=## )", text)
    preamble, sections = parts[0], []
    for part in parts[1:]:
        title = part.splitlines()[0][3:].strip()
        sections.append((title, part))
    return preamble, sections


def write_section(
    title: str,
    markdown_body: str,
    *,
    extra_machine: dict[str, str] | None = None,
    path: Path = DOC,
) -> Path:
    """Put ``markdown_body`` under ``## title`` in the report, with date and machine.

    The section replaces one with the same title (keeping its place); a new one is appended.
    ``extra_machine`` adds versions that matter to this benchmark (e.g. an npm package).
    """
    title = title.strip()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"## {title}\n\n"
        f"Measured {when}. Machine: {machine_line(extra_machine)}.\n\n"
        f"{markdown_body.strip()}\n\n"
    )
    with _locked():  # benchmarks may finish at the same time: no section may be lost
        text = path.read_text() if path.exists() else HEADER
        preamble, sections = _split(text)
        if not preamble.strip():
            preamble = HEADER
        for i, (existing, _) in enumerate(sections):
            if existing == title:
                sections[i] = (title, section)
                break
        else:
            sections.append((title, section))
        out = preamble.rstrip() + "\n\n" + "".join(s.rstrip() + "\n\n" for _, s in sections)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".md.{os.getpid()}.tmp")
        tmp.write_text(out.rstrip() + "\n")
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _locked():
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def table(rows: list[tuple], header: tuple) -> str:
    """A markdown table from ``header`` and ``rows`` (cells are str()-ed)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":  # print the machine line, for a quick look
    sys.stdout.write(machine_line() + "\n")


def summary(values: list[float]) -> str:
    """A figure over several runs as it is written: median (min-max)."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
