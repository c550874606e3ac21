"""Where a node keeps its files and how it is configured (``config.toml`` in the data dir).

Resolution order for the data dir: ``--data-dir``, then ``MAIA_DATA_DIR``, then the per-user
default ``$XDG_DATA_HOME/maia`` (``~/.local/share/maia``) — SPEC-001 §layout.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .files import write_atomic

DEFAULT_PORT = 7411
DEFAULT_PEER_PORT = 7412
ENV_DATA_DIR = "MAIA_DATA_DIR"


class ConfigError(Exception):
    """The configuration file is unreadable or holds a value that makes no sense."""


def resolve_data_dir(cli_value: str | None = None) -> Path:
    if cli_value:
        return Path(cli_value).expanduser()
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "maia"


@dataclass(frozen=True)
class Paths:
    """Every file a node owns, derived from its data dir (SPEC-001)."""

    root: Path

    @property
    def key(self) -> Path:
        return self.root / "keys" / "device.key"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def token(self) -> Path:
        return self.root / "runtime" / "api.token"

    @property
    def node_info(self) -> Path:
        return self.root / "runtime" / "node.json"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass
class _Reader:
    """Typed reads of config.toml values: a wrong type names the file and the key (SPEC-001
    §3.6), where ``str()`` and ``int()`` used to turn ``port = "x"`` into a traceback and
    ``static = "host:1"`` into a list of characters."""

    path: Path

    def _wrong(self, where: str, key: str, want: str, got: Any) -> ConfigError:
        return ConfigError(f"{self.path}: {where}.{key} must be {want}, not "
                           f"{type(got).__name__} {got!r}"[:300])

    def table(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        got = data.get(name, {})
        if not isinstance(got, dict):
            raise ConfigError(f"{self.path}: [{name}] must be a table, not {type(got).__name__}")
        return got

    def text(self, table: dict[str, Any], where: str, key: str, default: str) -> str:
        got = table.get(key, default)
        if not isinstance(got, str):
            raise self._wrong(where, key, "a string", got)
        return got

    def integer(self, table: dict[str, Any], where: str, key: str, default: int) -> int:
        got = table.get(key, default)
        if not isinstance(got, int) or isinstance(got, bool):
            raise self._wrong(where, key, "a whole number", got)
        return got

    def texts(self, table: dict[str, Any], where: str, key: str) -> list[str]:
        got = table.get(key, [])
        if not isinstance(got, list) or not all(isinstance(v, str) for v in got):
            raise self._wrong(where, key, "a list of strings", got)
        return got


@dataclass
class NodeConfig:
    name: str = field(default_factory=lambda: socket.gethostname() or "device")
    listen: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    static_peers: list[str] = field(default_factory=list)
    #: ``[peers] advertise``: extra HOST:PORT this node publishes in its address record
    #: (SPEC-005 §12.9), e.g. a port forwarded on a VPS; names are resolved by this node.
    advertise: list[str] = field(default_factory=list)
    peer_listen: str = "0.0.0.0"
    peer_port: int = DEFAULT_PEER_PORT
    log_level: str = "INFO"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        if not path.exists():
            return cls()
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        read = _Reader(path)
        node, peers = read.table(data, "node"), read.table(data, "peers")
        level = read.text(node, "node", "log_level", "INFO")
        if level.upper() not in LOG_LEVELS:
            raise ConfigError(f"{path}: node.log_level {level!r} is not one of "
                              f"{', '.join(LOG_LEVELS)}")
        cfg = cls(
            name=read.text(node, "node", "name", "") or cls().name,
            listen=read.text(node, "node", "listen", "127.0.0.1"),
            port=read.integer(node, "node", "port", DEFAULT_PORT),
            static_peers=read.texts(peers, "peers", "static"),
            advertise=read.texts(peers, "peers", "advertise"),
            peer_listen=read.text(peers, "peers", "listen", "0.0.0.0"),
            peer_port=read.integer(peers, "peers", "port", DEFAULT_PEER_PORT),
            log_level=level.upper(),
            extra={k: v for k, v in data.items() if k not in ("node", "peers")},
        )
        for name, port in (("node.port", cfg.port), ("peers.port", cfg.peer_port)):
            if not 0 <= port <= 65535:
                raise ConfigError(f"{path}: {name} {port} is not a TCP port")
        return cfg

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {
            "node": {
                "name": self.name,
                "listen": self.listen,
                "port": self.port,
                "log_level": self.log_level,
            },
            "peers": {
                "listen": self.peer_listen,
                "port": self.peer_port,
                "static": self.static_peers,
                **({"advertise": self.advertise} if self.advertise else {}),
            },
            **self.extra,
        }
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, tomli_w.dumps(data))  # 0600 (SPEC-001 §4.6), fsynced (§9.4)


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"'{text}' is not HOST:PORT")
    return host.strip("[]"), int(port)
