"""The ``[backup]`` table of config.toml (SPEC-002 §2.1, §7.4, §9.1, §10.1) and the cached
repository key ``keys/backup.key`` (§2.6).

A wrong type or an out-of-range value is refused at start, naming the key (SPEC-001 §3.6).
"""

from __future__ import annotations

import base64
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, NodeConfig, Paths
from ..files import write_atomic
from .retention import RetentionRule

DEFAULT_INTERVAL = 24 * 3600
MIN_INTERVAL = 15 * 60
START_DELAY = 5 * 60
DEFAULT_WARN_AFTER = 7 * 24 * 3600
# Tests (and demos) lower the minimum interval and the start delay (SPEC-002 §10.4).
ENV_MIN_INTERVAL = "MAIA_BACKUP_MIN_INTERVAL"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_KNOWN = {"target", "interval", "keep_daily", "keep_weekly", "keep_monthly", "warn_after"}


def parse_duration(value: Any, key: str) -> float:
    """Seconds, from a number of seconds or a string such as ``"90s"``, ``"15m"``, ``"24h"``,
    ``"7d"`` or ``"1h30m"``."""
    if isinstance(value, bool):
        raise ConfigError(f"config.toml: {key} must be a duration such as \"24h\"")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(r"(\s*\d+(\.\d+)?\s*[smhdw])+\s*", value):
        seconds = sum(float(n) * _UNITS[u]
                      for n, _, u in re.findall(r"(\d+(\.\d+)?)\s*([smhdw])", value))
    else:
        raise ConfigError(f"config.toml: {key} = {value!r} is not a duration such as \"24h\"")
    if seconds <= 0:
        raise ConfigError(f"config.toml: {key} must be positive")
    return seconds


def min_interval() -> float:
    raw = os.environ.get(ENV_MIN_INTERVAL)
    if raw:
        try:
            return max(0.1, float(raw))
        except ValueError:
            pass
    return MIN_INTERVAL


@dataclass(frozen=True)
class BackupSettings:
    target: Path | None = None
    interval: float = DEFAULT_INTERVAL
    warn_after: float = DEFAULT_WARN_AFTER
    rule: RetentionRule = field(default_factory=RetentionRule)

    @property
    def start_delay(self) -> float:
        return min(START_DELAY, min_interval())

    @property
    def retry_after(self) -> float:
        return min(self.interval, 3600.0)

    @classmethod
    def from_config(cls, config: NodeConfig) -> BackupSettings:
        table = config.extra.get("backup", {})
        if not isinstance(table, dict):
            raise ConfigError("config.toml: [backup] must be a table")
        unknown = set(table) - _KNOWN
        if unknown:
            raise ConfigError(f"config.toml: unknown key backup.{sorted(unknown)[0]}")
        target = table.get("target")
        if target is not None and (not isinstance(target, str) or not target.strip()):
            raise ConfigError("config.toml: backup.target must be a directory path")
        interval = parse_duration(table.get("interval", DEFAULT_INTERVAL), "backup.interval")
        if interval < min_interval():
            raise ConfigError(f"config.toml: backup.interval must be at least "
                              f"{min_interval() / 60:g} minutes")
        keep = {}
        for name in ("keep_daily", "keep_weekly", "keep_monthly"):
            value = table.get(name, getattr(RetentionRule(), name))
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000:
                raise ConfigError(f"config.toml: backup.{name} must be a whole number from 0")
            keep[name] = value
        return cls(
            target=Path(target).expanduser() if target else None,
            interval=interval,
            warn_after=parse_duration(table.get("warn_after", DEFAULT_WARN_AFTER),
                                      "backup.warn_after"),
            rule=RetentionRule(**keep),
        )


# -- the cached repository key (SPEC-002 §2.6) ----------------------------------------------------
_CACHE_MAGIC = b"maia-backup-key-v1\n"


def cache_path(paths: Paths) -> Path:
    return paths.root / "keys" / "backup.key"


def save_cached_key(paths: Paths, repo_id: str, master: bytes) -> Path:
    """Atomically write ``keys/backup.key`` (0600), replacing a key for another repository."""
    path = cache_path(paths)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, _CACHE_MAGIC + repo_id.encode() + b" " + base64.b64encode(master) + b"\n")
    return path


def load_cached_key(paths: Paths, repo_id: str) -> bytes | None:
    """The cached master key for ``repo_id``, or None. A key file that group or others can
    access is refused, like ``device.key`` (SPEC-001 §4.2)."""
    path = cache_path(paths)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} has permissions {stat.S_IMODE(st.st_mode):o}; it must be "
                          f"readable by its owner only (run: chmod 600 {path})")
    raw = path.read_bytes()
    if not raw.startswith(_CACHE_MAGIC):
        raise ConfigError(f"{path} is not a cached backup key")
    cached_id, _, b64 = raw[len(_CACHE_MAGIC):].strip().partition(b" ")
    if cached_id.decode(errors="replace") != repo_id:
        return None
    try:
        return base64.b64decode(b64, validate=True)
    except ValueError:
        raise ConfigError(f"{path} is damaged") from None

