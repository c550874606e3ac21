"""Helpers for the backup tests: real data dirs (made with the real CLI and the node's own
Memory), real repositories, the real ``maia backup`` commands run in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from automerge.core import Document

from crdt.identity import open_repo
from crdt.keys import DeviceKey
from crdt.roster import Roster, decode_cert
from crdt.store import DOC_LAYERS, Store
from node.config import NodeConfig
from node.memory import Memory
from tests.nodes import cli

PASSPHRASE = "correct horse battery staple"
KEY_PASSPHRASE = "a different one for the key"


def make_device(root: Path, name: str = "a", entries: int = 0) -> Path:
    """A data dir that founded its own mesh, holding ``entries`` memory entries."""
    data = root / name
    assert cli(data, "init", "--new-mesh", "--name", name) == 0
    if entries:
        add_entries(data, entries)
    return data


def add_entries(
    data: Path, n: int, prefix: str = "entry", kind: str = "note", noise: int = 8
) -> list[str]:
    """Add entries through the node's own Memory (as ``maia memory import`` does offline);
    each text ends in ``noise`` random bytes (hex), so it compresses as little as wanted."""
    store = Store(data)
    try:
        repo = open_repo(store, DeviceKey.load(data / "keys" / "device.key"))
        rows = Memory(repo).add_many(
            [{"text": f"{prefix} {i} " + os.urandom(noise).hex(), "kind": kind}
             for i in range(n)]
        )
        return [r["id"] for r in rows]
    finally:
        store.close()


def entries_of(data: Path) -> dict[str, str]:
    """entry id -> text, read from the documents themselves (no index)."""
    out = {}
    for doc_id, doc in _docs(data).items():
        if not doc_id.startswith("memory/"):
            continue
        from automerge.core import ROOT, extract

        for entry_id, e in extract(doc, ROOT).items():
            if isinstance(e, dict):  # entries; the root also holds `schema` (SPEC-001 §6.5)
                out[entry_id] = e["text"]
    return out


def doc_heads(data: Path) -> dict[str, list[str]]:
    """Every document's heads, from the documents as they load."""
    return {d: sorted(h.hex() for h in doc.get_heads()) for d, doc in _docs(data).items()}


def _docs(data: Path) -> dict[str, Any]:
    store = Store(data, readonly=True, layers=DOC_LAYERS)
    try:
        out = {}
        for layer in DOC_LAYERS:
            with store.read_layer(layer) as view:
                for doc_id in view.doc_ids():
                    snap, changes = view.load_doc(doc_id)
                    out[doc_id] = Document.load(snap + b"".join(changes))
        return out
    finally:
        store.close()


def backup(data: Path, *args: str) -> int:
    return cli(data, "backup", *args)


def backup_json(capsys, data: Path, *args: str) -> Any:
    capsys.readouterr()
    code = cli(data, "backup", *args, "--json")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and modification time: to prove nothing changed."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(path))] = (st.st_size, st.st_mtime_ns)
    return out


def files(path: Path, pattern: str) -> list[Path]:
    return sorted(p for p in path.glob(pattern) if p.is_file())


def set_backup_config(data: Path, **values: Any) -> None:
    """Set keys of the [backup] table in the data dir's config.toml."""
    path = data / "config.toml"
    cfg = NodeConfig.load(path)
    cfg.extra.setdefault("backup", {}).update(values)
    cfg.save(path)


def roster_of(data: Path) -> Roster:
    """The roster a data dir holds, read without opening it for writing."""
    store = Store(data, readonly=True, layers=DOC_LAYERS)
    try:
        with store.read_layer("identity") as view:
            mesh = view.identity_value("mesh_id")
            certs = [decode_cert(raw) for raw in view.certs()]
        return Roster.build(mesh, certs)
    finally:
        store.close()
