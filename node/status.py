"""``maia status`` and ``GET /v1/status``: one report, whether the node runs or not.

``node_status`` is what the store itself says (device, mesh, members, layers); the running node
adds its live sections (listeners, uptime, connected peers, each feature's ``status()``), and
with no node running ``offline_report`` adds what can be known from disk (the static peer list,
each feature's ``offline_status()``), so the two answers share their keys and meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from crdt import LAYERS, DeviceKey, Repo, Store, device_id, mesh_info

from .config import NodeConfig

if TYPE_CHECKING:
    from .features import Feature
    from .memory import Memory


def node_status(
    store: Store, repo: Repo | None, config: NodeConfig, key: DeviceKey
) -> dict[str, Any]:
    """Status readable with or without a running node (the CLI uses it offline too)."""
    docs = store.doc_ids()
    layers = {}
    for layer in LAYERS:
        layers[layer] = {
            "format_version": store.layer_format(layer),
            "size_bytes": store.layer_size(layer),
            "documents": sum(1 for d in docs if (d == "identity") == (layer == "identity"))
            if layer != "runtime" else 0,
        }
    mesh = mesh_info(repo) if repo is not None else None
    revoked = repo.roster.revocation(key.public_key) if repo is not None else None
    members = (
        [{"device_id": device_id(k), "name": n} for k, n in repo.roster.members.items()]
        if repo is not None else []
    )
    stored = store.bytes_by_key()
    return {
        "device_id": key.device_id,
        "name": config.name,
        "mesh": mesh,
        "members": members,
        # Set when this device's own key is revoked in the roster it holds (issue 15.6).
        "revoked": revoked,
        "layers": layers,
        # Set aside: a roster re-check's excluded changes, the owner's dropped documents
        # (SPEC-005 §5.10, §6.7).
        "quarantine": store.quarantine_counts(),
        # Bytes of signed changes held, by the device that signed them (issue 18.5).
        "storage_by_device": [
            {"device_id": device_id(k), "bytes": n,
             "roster": ("member" if k in repo.roster.members else "revoked"
                        if k in repo.roster.revoked else "unknown") if repo is not None else None}
            for k, n in sorted(stored.items(), key=lambda kv: -kv[1])
        ],
    }


def offline_report(store: Store, repo: Repo, config: NodeConfig, key: DeviceKey, memory: Memory,
                   features: Sequence[Feature]) -> dict[str, Any]:
    """The status with no node running: the same keys as the node's, from disk."""
    return node_status(store, repo, config, key) | {
        "running": False,
        "memory_entries": memory.count(),
        "peers": [{"address": a, "device_id": None, "connected": False}
                  for a in config.static_peers],
    } | {f.name: section for f in features if (section := f.offline_status(store, config))}
