"""What the documents panel shows: each document's heads, size, and sync state per peer.

Read-only, through ``crdt``'s public API (store metadata and heads) and the peer manager's
per-connection sync bookkeeping (``PeerSync.their_heads``), so ``crdt/`` knows nothing of HTTP
and listing never loads a document into memory (SPEC-003 §11.8).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crdt import device_id

if TYPE_CHECKING:
    from crdt import Repo

    from ..mesh.peers import PeerManager


def stored_size(repo: Repo, doc_id: str) -> int:
    """Bytes the document takes in the store: its snapshot plus the changes accepted since."""
    snapshot, chunks = repo.store.load_doc(doc_id)
    return len(snapshot) + sum(len(c) for c in chunks)


def peer_states(repo: Repo, peers: PeerManager | None, doc_id: str,
                ours: tuple[bytes, ...]) -> list[dict[str, Any]]:
    """The sync state of ``doc_id`` with every other member of the mesh."""
    out = []
    mine = repo.key.public_key
    for key, name in repo.roster.members.items():
        if key == mine:
            continue
        conn = peers.connections.get(key) if peers is not None else None
        state = peers.peers.get(key) if peers is not None else None
        entry: dict[str, Any] = {"device_id": device_id(key), "name": str(name)}
        if conn is None:
            entry["state"] = "offline"
            entry["last_seen"] = state.last_seen if state is not None else None
        else:
            theirs = conn.sync.their_heads.get(doc_id)
            if theirs is None:
                entry["state"] = "unknown"
            else:
                entry["state"] = "in_sync" if sorted(theirs) == sorted(ours) else "differs"
        out.append(entry)
    return out


def describe(repo: Repo, peers: PeerManager | None, doc_id: str) -> dict[str, Any]:
    meta = repo.store.doc_meta(doc_id)
    heads = tuple(repo.heads(doc_id))
    return {
        "id": doc_id,
        "layer": "identity" if doc_id == "identity" else "memory",
        "heads": sorted(h.hex() for h in heads),
        "changes": meta.changes if meta is not None else 0,
        "size_bytes": stored_size(repo, doc_id),
        "peers": peer_states(repo, peers, doc_id, heads),
    }


def document_ids(repo: Repo) -> list[str]:
    """Every document this node holds: identity first, then memory shards, newest month first."""
    ids = repo.store.doc_ids()
    memory = sorted(d for d in ids if d != "identity")
    # memory/<collection>/<yyyy-mm>/<n>; sort is stable, so within a month the order stays.
    memory.sort(key=lambda d: d.split("/")[2] if d.count("/") >= 2 else "", reverse=True)
    return (["identity"] if "identity" in ids else []) + memory
