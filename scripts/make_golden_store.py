"""Write a golden store: small data dirs made by this version, for every later version to open.

SPEC-001 §5 promises that an upgrade never touches data. The proof is a set of stores written
by each release that changed a format, committed under ``tests/fixtures/golden/`` and opened,
migrated and verified by ``tests/test_golden_stores.py`` on every later version. Run this once
per release that changes a store, document or backup format:

    .venv/bin/python scripts/make_golden_store.py            # writes format-<N>.tar.gz

It builds a three-device mesh with real node processes: ``desk`` founds it, ``laptop`` and
``phone`` join; both running devices write, edit and delete memory entries of every kind and
set the profile; ``phone`` is revoked for good; ``desk`` takes an encrypted backup. Runtime is
left out (SPEC-001: it is rebuilt), and each LMDB environment is stored compacted. Beside the
data dirs goes ``expected.json``: what every later version must read back.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import lmdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crdt.keys import DeviceKey  # noqa: E402
from crdt.store import format_version  # noqa: E402
from tests.nodes import cli, make_mesh, wait_for  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "golden"
PASSPHRASE = "golden store passphrase"  # a fixture's, not a person's


def _write(node, body: dict) -> dict:
    return node.request("POST", "/v1/memory", body)


def build(work: Path) -> dict:
    desk, laptop, phone = make_mesh(work, ["desk", "laptop", "phone"])
    desk.start()
    laptop.start()
    try:
        laptop.add_peer(desk)
        wait_for(lambda: desk.connected() and laptop.connected(), what="desk and laptop")
        desk.request("PATCH", "/v1/profile", {"display_name": "Ada Golden", "timezone": "UTC"})
        ids = {}
        for kind, text, tags in [
            ("note", "Herons nest in colonies near water", ["birds", "nature"]),
            ("conversation", "Asked about the train timetable to Lyon", ["travel"]),
            ("fact", "The home server has 1 GB of memory", ["hardware"]),
            ("skill", "To rotate the backup passphrase: maia backup change-passphrase", []),
            ("journal", "Migrated the build to the new CI runner", ["work"]),
            ("note", "A note that is deleted later", ["tmp"]),
        ]:
            ids[text] = _write(desk, {"text": text, "kind": kind, "tags": tags})["id"]
        for text in ("Laptop: draft of the talk on CRDTs", "Laptop: packing list for Lyon"):
            ids[text] = _write(laptop, {"text": text, "kind": "note", "tags": ["laptop"]})["id"]
        wait_for(lambda: len(desk.request("GET", "/v1/memory?limit=100")["entries"]) == 8,
                 timeout=30, what="desk to hold the laptop's entries")
        edited = ids["Herons nest in colonies near water"]
        laptop.request("PATCH", f"/v1/memory/{edited}",
                       {"text": "Herons nest in colonies near water (edited on the laptop)",
                        "remove_tags": ["nature"]})
        desk.request("DELETE", f"/v1/memory/{ids['A note that is deleted later']}")
        phone_id = DeviceKey.load(phone.data_dir / "keys" / "device.key").device_id
        desk.request("POST", f"/v1/devices/{phone_id}/revoke", {"reason": "lost on a train",
                                                                 "confirm": phone_id})

        def same() -> bool:
            a = desk.request("GET", "/v1/memory?limit=100")["entries"]
            b = laptop.request("GET", "/v1/memory?limit=100")["entries"]
            return len(a) == 7 and _entries(a) == _entries(b) and any(
                "(edited on the laptop)" in e["text"] for e in a) and phone_id in _devices(
                laptop, "revoked")

        wait_for(same, timeout=30, what="desk and laptop to converge")
        expected = {
            "store_format": {layer: format_version(layer) for layer in ("identity", "memory")},
            "entries": _entries(desk.request("GET", "/v1/memory?limit=100")["entries"]),
            "deleted": [ids["A note that is deleted later"]],
            "profile": desk.request("GET", "/v1/profile"),
            "members": _devices(desk, "member"),
            "revoked": _devices(desk, "revoked"),
            "devices": {n.name: n.device_id() for n in (desk, laptop)} | {"phone": phone_id},
        }
    finally:
        desk.stop()
        laptop.stop()
    env = {**os.environ, "MAIA_BACKUP_PASSPHRASE": PASSPHRASE}
    os.environ.update(env)
    repo = work / "backup-repo"
    assert cli(desk.data_dir, "backup", "init", "--repo", str(repo), "--kdf", "interactive") == 0
    assert cli(desk.data_dir, "backup", "create", "--repo", str(repo)) == 0
    expected["backup_passphrase"] = PASSPHRASE
    return expected


def _devices(node, status: str) -> list[str]:
    return sorted(d["device_id"] for d in node.request("GET", "/v1/devices")["devices"]
                  if d["status"] == status)


def _entries(rows: list[dict]) -> dict:
    return {e["id"]: {"text": e["text"], "kind": e["kind"], "tags": sorted(e["tags"])}
            for e in rows}


def pack(work: Path, expected: dict, dest: Path) -> None:
    """Compacted LMDB copies, keys and config of each data dir; no Runtime, no lock files."""
    stage = work / "stage"
    for name in ("desk", "laptop", "phone"):
        src, dst = work / name, stage / name
        dst.mkdir(parents=True)
        for layer in ("identity", "memory"):
            if (src / layer / "data.mdb").is_file():
                (dst / layer).mkdir()
                env = lmdb.open(str(src / layer), readonly=True, max_dbs=16, lock=False)
                env.copy(str(dst / layer), compact=True)
                env.close()
        shutil.copytree(src / "keys", dst / "keys")
        shutil.copy2(src / "config.toml", dst / "config.toml")
    shutil.copytree(work / "backup-repo", stage / "backup-repo")
    (stage / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(stage.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(stage)), recursive=False)


def main() -> int:
    dest = OUT / f"format-{format_version('memory')}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="maia-golden-") as tmp:
        work = Path(tmp)
        expected = build(work)
        pack(work, expected, dest)
    print(f"wrote {dest.relative_to(ROOT)} ({dest.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
