"""What each device made this node store, and dropping a device's unseen documents.

A member's key can write documents that pass every check yet list no entry anyone sees (a
buggy client, a stolen laptop): they cost disk on every node and show nowhere. The owner sees
the bytes per device here and may free them on this node (SPEC-005 §6.6, §6.7). Revocation,
not this, stops a device writing.
"""

from __future__ import annotations

import logging
from typing import Any

from crdt import Repo, device_id

from ..memory.entries import Memory
from .members import find_device

log = logging.getLogger(__name__)


class CannotDrop(ValueError):
    """The device's documents cannot be dropped (this device's own)."""


def _names(repo: Repo) -> dict[bytes, str]:
    return {c.body["subject"]: c.body["name"] for c in repo.roster.certs.values()
            if c.kind == "endorse"}


def _standing(repo: Repo, key: bytes) -> str:
    if key in repo.roster.members:
        return "member"
    return "revoked" if key in repo.roster.revoked else "unknown"


def _authors(repo: Repo, doc_id: str) -> frozenset[bytes]:
    """The device keys with changes held in ``doc_id``."""
    return frozenset(bytes(a[:32]) for a in repo.store.doc_actors(doc_id))


def _admissions(repo: Repo) -> dict[bytes, set[bytes]]:
    """Who admitted whom: each endorsing key and the device keys it endorsed."""
    admitted: dict[bytes, set[bytes]] = {}
    for c in repo.roster.certs.values():
        if c.kind == "endorse":
            admitted.setdefault(c.signer, set()).add(c.body["subject"])
    return admitted


def family(repo: Repo, key: bytes,
           admitted: dict[bytes, set[bytes]] | None = None) -> frozenset[bytes]:
    """``key`` and every device it admitted, directly or down a chain: a flooder that admits a
    second key to write into its dropped documents only makes them droppable again."""
    admitted = _admissions(repo) if admitted is None else admitted
    out, frontier = {key}, [key]
    while frontier:
        nxt = [s for k in frontier for s in admitted.get(k, ()) if s not in out]
        out.update(nxt)
        frontier = nxt
    return frozenset(out)


def _droppable(authors: frozenset[bytes], key: bytes, kin: frozenset[bytes]) -> bool:
    return key in authors and authors <= kin


def unseen_documents(repo: Repo, memory: Memory, key: bytes) -> list[str]:
    """Memory documents that only ``key`` (and devices it admitted) wrote and that hold no
    entry, live, superseded or deleted."""
    kin = family(repo, key)
    return [doc_id for doc_id in repo.store.doc_ids("memory")
            if _droppable(_authors(repo, doc_id), key, kin) and not memory.holds_entries(doc_id)]


def storage_by_device(repo: Repo, memory: Memory | None = None) -> list[dict[str, Any]]:
    """Bytes of signed changes held per author device (every member, even with none), largest
    first; with ``memory``, also how many Memory documents only that device (and devices it
    admitted) wrote, and how many of those nobody sees."""
    names = _names(repo)
    held = dict.fromkeys(repo.roster.members, 0) | repo.store.bytes_by_key()
    authors = ({d: _authors(repo, d) for d in repo.store.doc_ids("memory")}
               if memory is not None else {})
    seen: dict[str, bool] = {}
    admitted = _admissions(repo)
    rows = []
    for key, size in sorted(held.items(), key=lambda kv: (-kv[1], device_id(kv[0]))):
        row: dict[str, Any] = {"device_id": device_id(key), "name": names.get(key, ""),
                               "roster": _standing(repo, key), "bytes": size,
                               "this_device": key == repo.key.public_key}
        if memory is not None:
            kin = family(repo, key, admitted)
            docs = [d for d, a in authors.items() if _droppable(a, key, kin)]
            for d in docs:
                if d not in seen:
                    seen[d] = memory.holds_entries(d)
            row["documents_alone"] = len(docs)
            row["unseen_documents"] = sum(1 for d in docs if not seen[d])
        rows.append(row)
    return rows


def drop_unseen(repo: Repo, memory: Memory, text: str) -> dict[str, Any]:
    """Drop on this node the Memory documents of device ``text`` that nobody sees; a tombstone
    keeps them from coming back while only that device writes to them (SPEC-005 §6.7)."""
    key = find_device(repo, text)
    if key == repo.key.public_key:
        raise CannotDrop("this device's own documents cannot be dropped")
    docs = unseen_documents(repo, memory, key)
    freed = repo.drop_documents(docs, family(repo, key)) if docs else 0
    if docs:
        log.warning("dropped %d unseen document(s) of device %s (%d bytes)",
                    len(docs), device_id(key), freed)
    return {"device_id": device_id(key), "documents": len(docs), "bytes": freed}
