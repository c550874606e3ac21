"""Service mode: a systemd unit that runs ``maia up`` and restarts it when it fails.

The unit is written idempotently (the same inputs give the same bytes, and an unchanged file is
left alone) and carries a marker line, so ``uninstall`` removes only a unit this tool wrote.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..files import write_atomic

UNIT_NAME = "maia-node.service"
MARKER = "# Written by 'maia service install'; 'maia service uninstall' removes it."


@dataclass(frozen=True)
class UnitPlan:
    path: Path
    text: str
    system: bool

    @property
    def ctl(self) -> str:
        return "systemctl" if self.system else "systemctl --user"

    @property
    def journal(self) -> str:
        return "journalctl" if self.system else "journalctl --user"


def maia_executable() -> str:
    """The ``maia`` next to this interpreter (a venv's), else the one on PATH."""
    candidate = Path(sys.executable).with_name("maia")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("maia")
    return found or f"{sys.executable} -m node.cli"


def unit_dir(system: bool) -> Path:
    if system:
        return Path("/etc/systemd/system")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def plan_unit(
    data_dir: Path,
    *,
    system: bool = False,
    listen: str | None = None,
    log_level: str = "INFO",
    directory: Path | None = None,
    user: str | None = None,
) -> UnitPlan:
    exe = maia_executable()
    args = [*shlex.split(exe), "--data-dir", str(data_dir), "--log-level", log_level,
            "--log-format", "json", "up"]
    if listen:
        args += ["--listen", listen]
    lines = [
        MARKER,
        "[Unit]",
        "Description=maia-node: your identity and memory, synced across your own devices",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(shlex.quote(a) for a in args),
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=30",
        "KillSignal=SIGTERM",
        "Environment=PYTHONUNBUFFERED=1",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ]
    if system:
        lines += [f"User={user or getpass.getuser()}", "ProtectSystem=strict",
                  f"ReadWritePaths={data_dir}"]
    lines += ["", "[Install]", f"WantedBy={'multi-user.target' if system else 'default.target'}",
              ""]
    return UnitPlan((directory or unit_dir(system)) / UNIT_NAME, "\n".join(lines), system)


def install(plan: UnitPlan) -> str:
    """Write the unit; returns 'created', 'updated' or 'unchanged'."""
    if plan.path.exists():
        current = plan.path.read_text()
        if MARKER not in current:
            raise FileExistsError(
                f"{plan.path} exists and was not written by maia; leaving it alone"
            )
        if current == plan.text:
            return "unchanged"
        state = "updated"
    else:
        state = "created"
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(plan.path, plan.text, mode=0o644)
    return state


def uninstall(path: Path) -> bool:
    """Remove the unit if this tool wrote it; False when there was none."""
    if not path.exists():
        return False
    if MARKER not in path.read_text():
        raise FileExistsError(f"{path} was not written by maia; leaving it alone")
    path.unlink()
    return True
