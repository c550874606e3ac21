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
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        node = data.get("node", {})
        peers = data.get("peers", {})
        cfg = cls(
            name=str(node.get("name") or cls().name),
            listen=str(node.get("listen", "127.0.0.1")),
            port=int(node.get("port", DEFAULT_PORT)),
            static_peers=[str(p) for p in peers.get("static", [])],
            advertise=[str(p) for p in peers.get("advertise", [])],
            peer_listen=str(peers.get("listen", "0.0.0.0")),
            peer_port=int(peers.get("port", DEFAULT_PEER_PORT)),
            log_level=str(node.get("log_level", "INFO")),
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
