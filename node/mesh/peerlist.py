"""The static peer list in ``config.toml``: the one place that decides what may be on it.

The local API (node running) and the offline CLI target (node stopped) both edit the list
through these functions, so ``maia peer add/remove`` gives the same answers either way; the
running node then dials or forgets the address.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, NodeConfig, parse_host_port


class BadPeerAddress(ValueError):
    """Not HOST:PORT."""


class NotAStaticPeer(LookupError):
    def __str__(self) -> str:
        return f"{self.args[0]!r} is not a static peer"


def static_peers(config_path: Path) -> list[str]:
    return list(NodeConfig.load(config_path).static_peers)


def add_static_peer(config_path: Path, address: str) -> None:
    """Check ``address`` is HOST:PORT and keep it (adding it twice keeps it once)."""
    try:
        parse_host_port(address)
    except ConfigError as exc:
        raise BadPeerAddress(str(exc)) from None
    cfg = NodeConfig.load(config_path)
    if address not in cfg.static_peers:
        cfg.static_peers.append(address)
        cfg.save(config_path)


def remove_static_peer(config_path: Path, address: str) -> None:
    cfg = NodeConfig.load(config_path)
    if address not in cfg.static_peers:
        raise NotAStaticPeer(address)
    cfg.static_peers.remove(address)
    cfg.save(config_path)
