"""Helpers for the real-node adversary harness (tests/adversary/test_real_nodes.py).

Three honest ``maia up`` processes (a, the founder; b; c) on loopback, static peers b->a, c->a,
c->b, and an attacker who holds a member key endorsed by the founder. A second member key, the
"courier", is part of the owner's intended set and carries the attacker's signed material once
the attacker's own key is refused at the handshake: it stands for any member that accepted the
thief's changes before it learnt the tombstone and relays them (SPEC-005 §5.10). It never signs
a change of its own.

The attacker builds its changes the way a member can: it reads a node's documents (here from the
node's LMDB store, read-only, what a member would get by syncing) and signs changes on top of
them with an incarnation of its key (SPEC-005 §2.2), then speaks the wire protocol through
tests/hostile.py. Invariants are checked from each node's API and its store opened read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import urllib.error
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from automerge.core import ROOT, Document, ObjType, ScalarType, Transaction

from crdt.batches import SignedBatch
from crdt.chunks import ChangeInfo, parse_change
from crdt.identity import open_repo, record_certs
from crdt.keys import DeviceKey, device_id
from crdt.roster import CertError, Roster, actor_key, new_endorsement, parse_cert
from crdt.store import Store, layer_of
from node.memory import new_entry_id, shard_of
from tests.hostile import NodeClosed, StoreView, hostile_peer, sync_frame
from tests.nodes import NodeProc, make_mesh, wait_for

CERT_DOMAIN = b"maia-cert-v1\x00"  # SPEC-005 005.5.2, written here from the spec
NAMES = ("a", "b", "c")
DIALS = (("b", "a"), ("c", "a"), ("c", "b"))  # static peers: dialler -> listener


# -- the mesh: built once (CLI), copied per run --------------------------------------------------
@dataclass
class Template:
    """Stopped data dirs of a founded mesh with the attacker and courier endorsed."""

    root: Path
    keys: dict[str, DeviceKey]
    mesh_id: bytes
    attacker: DeviceKey
    courier: DeviceKey
    attacker_chain: list[bytes]
    courier_chain: list[bytes]
    genesis: bytes


def build_template(root: Path) -> Template:
    nodes = make_mesh(root, list(NAMES))
    keys = {n.name: DeviceKey.load(n.data_dir / "keys" / "device.key") for n in nodes}
    attacker, courier = DeviceKey.generate(), DeviceKey.generate()
    store = Store(nodes[0].data_dir)
    try:
        repo = open_repo(store, keys["a"])
        new = [new_endorsement(keys["a"], repo.mesh_id, attacker.public_key, "laptop"),
               new_endorsement(keys["a"], repo.mesh_id, courier.public_key, "phone")]
        record_certs(repo, new)
        mesh_id = repo.mesh_id
        attacker_chain = [c.encode() for c in repo.roster.chain_of(attacker.public_key)]
        courier_chain = [c.encode() for c in repo.roster.chain_of(courier.public_key)]
        genesis = attacker_chain[0]
    finally:
        store.close()
    for node in nodes[1:]:  # as tests/test_sync_bad_input.py: every node holds them from start
        store = Store(node.data_dir)
        try:
            record_certs(open_repo(store, keys[node.name]), new)
        finally:
            store.close()
    return Template(root, keys, mesh_id, attacker, courier, attacker_chain, courier_chain,
                    genesis)


def copy_nodes(template: Template, dest: Path) -> dict[str, NodeProc]:
    dest.mkdir(parents=True)
    out = {}
    for name in NAMES:
        shutil.copytree(template.root / name, dest / name, symlinks=True)
        out[name] = NodeProc(dest / name, name)
    return out


# -- partitions ------------------------------------------------------------------------------------
def addr(node: NodeProc) -> str:
    return f"127.0.0.1:{node.peer_port}"


def set_links(nodes: dict[str, NodeProc], isolated: set[str], linked: set[tuple[str, str]]
              ) -> set[tuple[str, str]]:
    """Add or remove static peers so exactly the dials between non-isolated nodes exist.
    ``linked`` is what is configured now; returns the new configuration."""
    want = {(x, y) for x, y in DIALS if x not in isolated and y not in isolated}
    for x, y in sorted(linked - want):
        with contextlib.suppress(urllib.error.HTTPError):
            nodes[x].request("DELETE", f"/v1/peers/{addr(nodes[y])}")
    for x, y in sorted(want - linked):
        nodes[x].add_peer(nodes[y])
    return want


# -- the attacker's material ---------------------------------------------------------------------
def raw_cert(key: DeviceKey, body: dict[str, Any]) -> bytes:
    """Sign any body as a certificate (no field checks: that is the receiver's job)."""
    raw = msgpack.packb(body, use_bin_type=True)
    return msgpack.packb([raw, key.sign(CERT_DOMAIN + raw)], use_bin_type=True)


def load_doc(data_dir: Path, doc_id: str) -> Document | None:
    """A node's document as its store holds it (read-only, while the node runs)."""
    store = Store(data_dir, readonly=True, layers=(layer_of(doc_id),))
    try:
        snap, chunks = store.load_doc(doc_id)
    finally:
        store.close()
    data = snap + b"".join(chunks)
    return Document.load(data) if data else None


def changes_on(doc: Document | None, actor: bytes, *edits: Callable[[Transaction], None],
               at: Sequence[bytes] | None = None) -> list[ChangeInfo]:
    """One change per edit by ``actor``, chained, on top of ``doc`` (at its heads, or at
    ``at``)."""
    base = Document(actor_id=actor) if doc is None else (
        doc.fork(list(at)) if at is not None else doc.fork())
    base.set_actor(actor)
    heads = base.get_heads()
    for edit in edits:
        with base.transaction() as tx:
            edit(tx)
    return [parse_change(bytes(c.bytes)) for c in base.get_changes(heads)]


def put_entry(name: str, text: str) -> Callable[[Transaction], None]:
    def edit(tx: Transaction) -> None:
        obj = tx.put_object(ROOT, name, ObjType.Map)
        tx.put(obj, "text", ScalarType.Str, text)
    return edit


def put_certs(certs: Iterable[tuple[str, bytes]]) -> Callable[[Transaction], None]:
    """An Identity change placing bytes under roster/<id>, as record_certs does."""
    def edit(tx: Transaction) -> None:
        got = tx.get(ROOT, "roster")
        obj = got[1] if got is not None else tx.put_object(ROOT, "roster", ObjType.Map)
        for cid, raw in certs:
            tx.put(obj, cid, ScalarType.Bytes, raw)
    return edit


def memory_doc(bucket: int) -> str:
    """One of this month's shards, where the honest API writes too."""
    while True:
        entry = new_entry_id("note")
        doc = shard_of(entry)
        if doc.endswith(f"/{bucket}"):
            return doc


@dataclass
class Sent:
    doc_id: str
    changes: list[ChangeInfo]
    batch: bytes
    target: str  # the node whose store the change was built on and sent to


# -- talking to a node as a hostile peer ---------------------------------------------------------
async def _deliver(port: int, key: DeviceKey, mesh_id: bytes, certs: Sequence[bytes],
                   frames: Sequence[dict[str, Any]], view: StoreView,
                   wanted: Sequence[tuple[str, bytes]], settle: float) -> str:
    try:
        async with hostile_peer(port, key, mesh_id, certs) as peer:
            if peer.pending:
                first = peer.pending[0]
                if isinstance(first, dict) and first.get("t") == "error":
                    return f"refused:{first.get('code')}"
            for frame in frames:
                await peer.send(frame)
            if not frames:
                return "connected"
            deadline = time.monotonic() + settle
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    got = await peer.next_frame(
                        lambda f: isinstance(f, dict) and f.get("t") in ("reject", "error"), 0.1)
                    return f"{got['t']}:{got.get('code')}"
                if wanted and all(view.known(d, [h]) for d, h in wanted):
                    return "stored"
            return "quiet"
    except NodeClosed as exc:
        return f"closed:{exc.reason or exc.code}"
    except (OSError, TimeoutError) as exc:
        return f"unreachable:{type(exc).__name__}"


def deliver(node: NodeProc, key: DeviceKey, mesh_id: bytes, certs: Sequence[bytes],
            frames: Sequence[dict[str, Any]] = (), wanted: Sequence[tuple[str, bytes]] = (),
            settle: float = 1.5) -> str:
    """Connect to ``node`` as ``key`` (presenting ``certs``), send ``frames``; the outcome:
    ``refused:CODE`` at the handshake, ``reject:CODE`` / ``error:CODE`` from the node,
    ``stored`` when every ``wanted`` (doc, hash) is in its store, else ``quiet``."""
    return asyncio.run(_deliver(node.peer_port, key, mesh_id, certs, frames,
                                StoreView(node.data_dir), wanted, settle))


def frames_for(doc_id: str, changes: Sequence[ChangeInfo], batch: bytes, final: bool = True
               ) -> list[dict[str, Any]]:
    return [sync_frame(doc_id, [c.chunk for c in changes], [batch], final=final)]


def sign_batch(key: DeviceKey, mesh_id: bytes, doc_id: str, changes: Sequence[ChangeInfo]
               ) -> bytes:
    return SignedBatch.sign(key, mesh_id, doc_id, [c.hash for c in changes]).encode()


# -- the invariants --------------------------------------------------------------------------------
def store_heads(data_dir: Path) -> dict[str, tuple[bytes, ...]]:
    """Heads of every document holding anything (an emptied one counts as absent)."""
    store = Store(data_dir, readonly=True, layers=("identity", "memory"))
    try:
        out = {}
        for doc_id in store.doc_ids():
            meta = store.doc_meta(doc_id)
            if meta and meta.heads:
                out[doc_id] = tuple(sorted(meta.heads))
        return out
    finally:
        store.close()


def store_roster(store: Store, mesh_id: bytes) -> Roster:
    certs = []
    for raw in store.certs():
        try:
            cert = parse_cert(raw)
        except CertError:
            continue
        if cert.verify():
            certs.append(cert)
    return Roster.build(mesh_id, certs)


def unauthorised(data_dir: Path, mesh_id: bytes) -> list[str]:
    """Every change the store holds that its own final roster does not authorise: its author
    must be a member, or revoked with the change an ancestor of (or equal to) the author's
    cutoff head in that document (SPEC-005 §5.4, §5.10). Also every document that no longer
    loads. Empty when the store is clean."""
    store = Store(data_dir, readonly=True, layers=("identity", "memory"))
    problems: list[str] = []
    try:
        roster = store_roster(store, mesh_id)
        for doc_id in store.doc_ids():
            snap, chunks = store.load_doc(doc_id)
            data = snap + b"".join(chunks)
            if not data:
                continue
            try:
                changes = Document.load(data).get_changes([])
            except Exception as exc:  # a stored change Automerge refuses bricks the document
                problems.append(f"{doc_id}: does not load ({exc})")
                continue
            deps_of = {c.hash: list(c.deps) for c in changes}
            allowed: set[bytes] = set()
            for cutoff in roster.revoked.values():
                for head in cutoff.get(doc_id, {}).values():
                    stack = [head.hash] if head.hash in deps_of else []
                    while stack:
                        h = stack.pop()
                        if h not in allowed:
                            allowed.add(h)
                            stack.extend(deps_of.get(h, []))
            for c in changes:
                key = actor_key(c.actor_id)
                if key in roster.members or c.hash in allowed:
                    continue
                status = "revoked" if key in roster.revoked else "not a member"
                problems.append(f"{doc_id}: change {c.hash.hex()[:12]} (seq {c.seq}) by "
                                f"{device_id(key)[:7]} ({status})")
    finally:
        store.close()
    return problems


def members_of(node: NodeProc) -> tuple[set[str], set[str]]:
    devices = node.request("GET", "/v1/devices")["devices"]
    return ({d["device_id"] for d in devices if d["status"] == "member"},
            {d["device_id"] for d in devices if d["status"] == "revoked"})


def settled_members(node: NodeProc, intended: set[str], timeout: float = 15.0) -> set[str]:
    """The node's members once they equal ``intended`` (or what they are after ``timeout``)."""
    last: list[set[str]] = [set()]

    def same() -> bool:
        last[0] = members_of(node)[0]
        return last[0] == intended

    with contextlib.suppress(AssertionError):
        wait_for(same, timeout=timeout, interval=0.25, what=f"{node.name}'s members")
    return last[0]


def serves(node: NodeProc) -> str:
    """'' when the process is alive and answers /health (API and peer port) and /v1/status."""
    if node.proc is None or node.proc.poll() is not None:
        return f"{node.name} is not running"
    try:
        assert node.request("GET", "/health", auth=False) == {"status": "ok"}
        node.request("GET", "/v1/status")
    except Exception as exc:
        return f"{node.name} does not serve: {exc}"
    return ""


def converge(nodes: Sequence[NodeProc], timeout: float) -> dict[str, dict[str, tuple]]:
    """Wait until every node's store holds identical heads for every document; returns the
    last heads seen (identical on success)."""
    last: dict[str, dict[str, tuple]] = {}

    def same() -> bool:
        last.clear()
        last.update({n.name: store_heads(n.data_dir) for n in nodes})
        first = next(iter(last.values()))
        return all(h == first for h in last.values())

    with contextlib.suppress(AssertionError):
        wait_for(same, timeout=timeout, interval=0.25, what="honest nodes converge")
    return dict(last)


def heads_diff(heads: dict[str, dict[str, tuple]]) -> str:
    docs = sorted({d for h in heads.values() for d in h})
    lines = []
    for doc in docs:
        per = {n: len(h.get(doc, ())) and h[doc][0].hex()[:10] for n, h in heads.items()}
        if len({heads[n].get(doc) for n in heads}) > 1:
            lines.append(f"{doc}: " + ", ".join(f"{n}={v or '-'}" for n, v in per.items()))
    return "; ".join(lines)


@dataclass
class Tally:
    """What the harness tried, by kind and outcome, over every run of a session."""

    actions: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    seconds: float = 0.0

    def add(self, kind: str, outcome: str = "") -> None:
        key = f"{kind} -> {outcome}" if outcome else kind
        self.actions[key] = self.actions.get(key, 0) + 1

    def total(self) -> int:
        return sum(self.actions.values())

    def report(self, profile: str) -> str:
        lines = [f"real-node adversary ({profile}): {self.runs} runs, {self.total()} actions, "
                 f"{self.seconds:.1f} s"]
        lines += [f"  {n:4d}  {k}" for k, n in sorted(self.actions.items())]
        return "\n".join(lines)
