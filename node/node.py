"""The node process: one device's store, documents, HTTP API and peer connections, together.

A node owns its data dir exclusively (an advisory lock), so a CLI command never writes the
store behind a running node's back: it talks to the node over the API instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from crdt.identity import (
    IDENTITY_DOC,
    get_profile,
    import_roster_from_doc,
    mesh_info,
    open_repo,
    update_profile,
)
from crdt.keys import DeviceKey, device_id
from crdt.store import LAYERS, Store

from .api.app import build_app, make_runner
from .api.auth import load_or_create_token
from .api.middleware import HostPolicy, Limits
from .api.peer_listener import peer_listener_routes
from .api.routes_devices import PEERS_STATE_KEY, REPO_KEY, device_routes
from .api.routes_memory import MEMORY_KEY, memory_routes
from .api.routes_memory_versions import memory_version_routes
from .api.routes_peers import PEER_CONFIG_KEY, PEERS_KEY, peer_routes
from .config import NodeConfig, Paths
from .features import Feature, load_features
from .memory import Memory
from .peers import PeerManager

log = logging.getLogger(__name__)

UPKEEP_INTERVAL = 5.0
IDLE_EVICT_SECONDS = 30.0
INDEX_SHARDS_PER_TURN = 8  # memory index shards per event-loop turn in upkeep


class DataDirBusy(Exception):
    """Another process (a running node) holds this data dir."""


class DataDirLock:
    """Exclusive advisory lock on ``<data>/node.lock``; released when the process dies."""

    def __init__(self, root: Path) -> None:
        self.path = root / "node.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirBusy(f"a maia node is already running on {self.path.parent}") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def locked_store(root: Path) -> Iterator[Store]:
    """The store, opened under the data-dir lock, for commands that run without a node."""
    lock = DataDirLock(root)
    lock.acquire()
    store = Store(root)
    try:
        yield store
    finally:
        store.close()
        lock.release()


class Node:
    """Everything one device runs. ``start``/``stop`` are idempotent and safe to interrupt."""

    def __init__(self, data_dir: Path, config: NodeConfig | None = None) -> None:
        self.paths = Paths(Path(data_dir))
        self.config = config or NodeConfig.load(self.paths.config)
        self.lock = DataDirLock(self.paths.root)
        self.store: Store | None = None
        self.started_at = 0.0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._peer_runner: web.AppRunner | None = None
        self.peer_port = 0
        self._tasks: list[asyncio.Task] = []
        self.features: list[Feature] = []
        self._started_features: list[Feature] = []
        self._revoked_seen: frozenset[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, host: str | None = None, port: int | None = None) -> None:
        self.lock.acquire()
        try:
            self.key = DeviceKey.load(self.paths.key)
            self.store = Store(self.paths.root)
            self.repo = open_repo(self.store, self.key)
            self.memory = Memory(self.repo)
            self.peers = PeerManager(self.repo)
            self.peers.on_roster_change = self.roster_changed
            self.repo.subscribe(self._on_change)
            # A crash between learning a tombstone and re-checking the store is repaired here.
            self.roster_changed()
            self.features = load_features()
            for feature in self.features:
                feature.setup(self)
            token = load_or_create_token(self.paths.token)
            # memory_version_routes first: /v1/memory/deleted before /v1/memory/{entry_id}
            tables = [memory_version_routes, memory_routes, peer_routes, device_routes]
            for feature in self.features:
                tables.extend(feature.route_tables())
            # Features may add credential kinds (SPEC-004 session tokens) via authenticators().
            authenticators = [
                a for f in self.features for a in getattr(f, "authenticators", tuple)()
            ]
            host = host or self.config.listen
            app = build_app(
                self, token=token, limits=api_limits(self.config), extra_tables=tables,
                authenticators=authenticators, host_policy=api_host_policy(self.config, host),
            )
            app[MEMORY_KEY] = self.memory
            app[REPO_KEY] = self.repo
            app[PEERS_STATE_KEY] = self.peers
            app[PEERS_KEY] = self.peers
            app[PEER_CONFIG_KEY] = self._persist_peer
            for feature in self.features:
                feature.configure_app(app)
            app.on_response_prepare.append(self._say_if_revoked)
            await self.peers.start()
            self._runner = make_runner(app, name="local API")
            await self._runner.setup()
            api_port = self.config.port if port is None else port
            self.port = await _listen(self._runner, host, api_port)
            self.host = host
            if not _is_loopback(host):
                log.warning(
                    "the local API listens on %s: its bearer token crosses the network in "
                    "clear text; prefer the default 127.0.0.1 (SPEC-003 §2.2)", host,
                )
            peer_app = build_app(
                self, token=token, limits=api_limits(self.config),
                extra_tables=[peer_listener_routes], include_core=False,
                host_policy=HostPolicy(check_host=False, serves_page=False),
            )
            peer_app[PEERS_KEY] = self.peers
            for feature in self.features:
                feature.configure_app(peer_app)
            self._peer_runner = make_runner(peer_app, name="peer listener")
            await self._peer_runner.setup()
            self.peer_port = await _listen(
                self._peer_runner, self.config.peer_listen, self.config.peer_port
            )
            self.started_at = time.time()
            self._write_node_info()
            for address in self.config.static_peers:
                self.peers.add_static(address)
            self._tasks.append(asyncio.create_task(self._upkeep(), name="upkeep"))
            for feature in self.features:
                try:
                    await feature.start()
                except Exception:
                    # One feature failing (mDNS on an odd network, a bad cortex config) must
                    # not take the node down: sync and the API keep working.
                    log.exception("feature %s failed to start; the node runs without it",
                                  feature.name)
                    continue
                self._started_features.append(feature)
            log.info(
                "node %s (%s): local API on http://%s:%d, peers on %s:%d",
                self.key.device_id, self.config.name, host, self.port,
                self.config.peer_listen, self.peer_port,
            )
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for feature in reversed(self._started_features):
            try:
                await feature.stop()
            except Exception:
                log.exception("feature %s failed to stop cleanly", feature.name)
        self._started_features.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        if getattr(self, "peers", None) is not None:
            await self.peers.stop()
            self.peers = None  # type: ignore[assignment]
        for runner in (self._peer_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._peer_runner = None
        with contextlib.suppress(FileNotFoundError):
            self.paths.node_info.unlink()
        if self.store is not None:
            if getattr(self, "memory", None) is not None:
                self.memory.write_pending()  # index rows held back from the last writes
            self.store.close()
            self.store = None
        self.lock.release()

    def _write_node_info(self) -> None:
        info = {
            "pid": os.getpid(),
            "host": self.host,
            "port": self.port,
            "peer_port": self.peer_port,
            "device_id": self.key.device_id,
            "started_at": self.started_at,
        }
        path = self.paths.node_info
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        os.replace(tmp, path)

    def _on_change(self, doc_id: str, local: bool) -> None:
        if doc_id != IDENTITY_DOC:
            return
        if not local and import_roster_from_doc(self.repo):
            log.info("roster updated from the identity document")
        self.roster_changed()

    def roster_changed(self) -> None:
        """Apply the roster now: quarantine post-revocation changes, cut revoked peers off."""
        # Membership is a function of the certificate set: any new certificate may change it.
        seen = frozenset(self.repo.roster.certs)
        if seen == self._revoked_seen:
            return
        self._revoked_seen = seen
        for doc_id in self.repo.recheck():
            for conn in self.peers.connections.values():
                conn.sync.reset(doc_id)
                conn.mark_dirty(doc_id)
        self.peers.enforce_roster()
        self.peers.share_certs()
        self.peers.redial_now()

    async def _say_if_revoked(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer of a revoked device carries who revoked it and when, so each CLI
        command and client can say so (issue 15.6); a dict lookup when it is not revoked."""
        info = self.repo.roster.revocation(self.key.public_key)
        if info is not None:
            response.headers["X-Maia-Device-Revoked"] = (
                f"by {info['by_name'] or info['by']} at {info['at']}")

    async def _upkeep(self) -> None:
        """Background care: compact grown change logs, index, and unload idle documents.

        After documents are unloaded, ``memtrim.release`` hands the freed heap and the LMDB
        pages the work left mapped back to the system, so a node idles small again after a
        catch-up or a burst of work (docs/benchmarks.md: idle memory).
        """
        from .memtrim import release

        while True:
            await asyncio.sleep(UPKEEP_INTERVAL)
            try:
                if self.repo.certs_pending and (
                    import_roster_from_doc(self.repo)
                    + self.repo.add_certs(self.repo.take_cert_backlog())
                ):
                    self.roster_changed()  # the rest of a large batch of certificates
                # only documents already in memory (Repo.compact_loaded says why)
                for doc_id in self.repo.loaded_ids():
                    if self.repo.compact(doc_id, quiet=2.0):
                        log.info("compacted %s", doc_id)
                        release(self.paths.root)
                    await asyncio.sleep(0)
                indexed = 0
                while True:  # a few shards a turn: the node keeps answering meanwhile
                    done = self.memory.flush_index(quiet=2.0, limit=INDEX_SHARDS_PER_TURN)
                    indexed += done
                    if done:
                        release(self.paths.root)
                    if done < INDEX_SHARDS_PER_TURN:
                        break
                    await asyncio.sleep(0)
                if self.repo.evict_idle(IDLE_EVICT_SECONDS) or indexed:
                    release(self.paths.root)
            except Exception:
                log.exception("upkeep failed; will retry")

    def _persist_peer(self, address: str, add: bool) -> None:
        cfg = NodeConfig.load(self.paths.config)
        if add and address not in cfg.static_peers:
            cfg.static_peers.append(address)
        elif not add and address in cfg.static_peers:
            cfg.static_peers.remove(address)
        cfg.save(self.paths.config)

    # -- services for the API (node/api/services.py) ---------------------------------------------
    async def status(self) -> dict[str, Any]:
        return node_status(self.store, self.repo, self.config, self.key) | {
            "listening": f"{self.host}:{self.port}",
            "peer_listener": f"{self.config.peer_listen}:{self.peer_port}",
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "peers": self.peers.status(),
            "memory_entries": self.memory.count(),
        } | {f.name: f.status() for f in self.features}

    async def get_profile(self) -> dict[str, Any]:
        return get_profile(self.repo)

    async def update_profile(self, changes: dict[str, Any]) -> dict[str, Any]:
        return update_profile(self.repo, changes)


async def _listen(runner: web.AppRunner, host: str, port: int) -> int:
    site = web.TCPSite(runner, host, port)
    await site.start()
    return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_host_policy(config: NodeConfig, listen: str) -> HostPolicy:
    """SPEC-003 §2.4: the names the local API answers besides loopback ones."""
    names = config.extra.get("api", {}).get("allowed_hosts", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError("[api] allowed_hosts must be a list of host names (strings)")
    wildcard = listen in ("0.0.0.0", "::", "")
    return HostPolicy(
        any_ip=not _is_loopback(listen),
        names=frozenset(n.strip().lower().rstrip(".") for n in names)
        | (frozenset() if wildcard else {listen.strip("[]").lower()}),
    )


def api_limits(config: NodeConfig) -> Limits:
    """SPEC-003 limits, overridable in config.toml's [api] table (bounds stay positive)."""
    api = config.extra.get("api", {})
    known = {"max_body_bytes", "handler_timeout", "rate_per_second", "rate_burst",
             "max_in_flight"}
    return Limits(**{k: v for k, v in api.items() if k in known})


def node_status(store: Store, repo: Any, config: NodeConfig, key: DeviceKey) -> dict[str, Any]:
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
        # Bytes of signed changes held, by the device that signed them (issue 18.5).
        "storage_by_device": [
            {"device_id": device_id(k), "bytes": n,
             "roster": ("member" if k in repo.roster.members else "revoked"
                        if k in repo.roster.revoked else "unknown") if repo is not None else None}
            for k, n in sorted(stored.items(), key=lambda kv: -kv[1])
        ],
    }
