"""The node process: one device's store, documents, HTTP API and peer connections, together.

A node owns its data dir exclusively (an advisory lock), so a CLI command never writes the
store behind a running node's back: it talks to the node over the API instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from crdt import (
    IDENTITY_DOC,
    DeviceKey,
    Store,
    get_profile,
    import_roster_from_doc,
    open_repo,
    update_profile,
)

from .api.app import build_app, make_runner
from .api.auth import load_or_create_token
from .api.core import listener_routes
from .api.headers import header_text
from .api.middleware import HostPolicy, Limits
from .config import NodeConfig, Paths
from .datadir import DataDirLock
from .features import Feature, load_features, local_api_tables
from .files import write_atomic
from .heap import freeze_settled
from .memory import Memory
from .memtrim import release
from .mesh.peers import PeerManager
from .status import node_status

log = logging.getLogger(__name__)

UPKEEP_INTERVAL = 5.0
IDLE_EVICT_SECONDS = 30.0
#: Peers' changes within this long count as live traffic: upkeep then compacts one document
#: a pass, not every one that grew.
COMPACT_QUIET = 5.0
INDEX_SHARDS_PER_TURN = 8  # memory index shards per event-loop turn in upkeep


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
            self._open_documents()
            self._set_up_features()
            token = load_or_create_token(self.paths.token)
            await self.peers.start()
            await self._serve_local_api(token, host or self.config.listen, port)
            await self._serve_peer_listener(token)
            self.started_at = time.time()
            self._write_node_info()
            self._tasks.append(asyncio.create_task(self._upkeep(), name="upkeep"))
            await self._start_features()
            freeze_settled("node started")
            log.info(
                "node %s (%s): local API on http://%s:%d, peers on %s:%d",
                self.key.device_id, self.config.name, self.host, self.port,
                self.config.peer_listen, self.peer_port,
            )
        except BaseException:
            await self.stop()
            raise

    def _open_documents(self) -> None:
        """The key, the store, the documents, memory and the peer manager: what features use."""
        self.key = DeviceKey.load(self.paths.key)
        self.store = Store(self.paths.root)
        self.repo = open_repo(self.store, self.key)
        # During a catch-up too, not only when idle: the heap freed by evicted shards and the
        # store pages read to load them go back to the system (SPEC-005 §7.7).
        self.repo.on_release = lambda: release(self.paths.root)
        self.memory = Memory(self.repo)
        self.peers = PeerManager(self.repo)
        self.peers.on_roster_change = self.roster_changed
        self.repo.subscribe(self._on_change)
        # A crash between learning a tombstone and re-checking the store is repaired here.
        self.roster_changed()

    def _set_up_features(self) -> None:
        self.features = load_features()
        for feature in self.features:
            feature.setup(self)

    async def _serve_local_api(self, token: str, host: str, port: int | None) -> None:
        app = build_app(
            self, token=token, limits=api_limits(self.config),
            extra_tables=local_api_tables(self.features),
            # Features may add credential kinds (SPEC-004 session tokens, login cookies).
            authenticators=[a for f in self.features for a in f.authenticators()],
            host_policy=api_host_policy(self.config, host),
        )
        for feature in self.features:
            feature.configure_app(app)
        app.on_response_prepare.append(self._say_if_revoked)
        self._runner = make_runner(app, name="local API")
        await self._runner.setup()
        self.port = await _listen(self._runner, host, self.config.port if port is None else port)
        self.host = host
        if not _is_loopback(host):
            log.warning(
                "the local API listens on %s: its bearer token crosses the network in "
                "clear text; prefer the default 127.0.0.1 (SPEC-003 §2.2)", host,
            )

    async def _serve_peer_listener(self, token: str) -> None:
        """SPEC-003 §2.1: the LAN-facing listener serves only what features put on it."""
        tables = [listener_routes, *(t for f in self.features for t in f.peer_listener_tables())]
        peer_app = build_app(
            self, token=token, limits=api_limits(self.config), extra_tables=tables,
            include_core=False, host_policy=HostPolicy(check_host=False, serves_page=False),
        )
        for feature in self.features:
            feature.configure_app(peer_app)
        self._peer_runner = make_runner(peer_app, name="peer listener")
        await self._peer_runner.setup()
        self.peer_port = await _listen(
            self._peer_runner, self.config.peer_listen, self.config.peer_port
        )

    async def _start_features(self) -> None:
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
        write_atomic(path, json.dumps(info))

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
            response.headers["X-Maia-Device-Revoked"] = header_text(  # a member's text
                f"by {info['by_name'] or info['by']} at {info['at']}")

    async def _upkeep(self) -> None:
        """Background care: compact grown change logs, index, and unload idle documents.

        After documents are unloaded, ``memtrim.release`` hands the freed heap and the LMDB
        pages the work left mapped back to the system, so a node idles small again after a
        catch-up or a burst of work (docs/benchmarks.md: idle memory).
        """
        while True:
            await asyncio.sleep(UPKEEP_INTERVAL)
            try:
                if self.repo.certs_pending and (
                    import_roster_from_doc(self.repo)
                    + self.repo.add_certs(self.repo.take_cert_backlog())
                ):
                    self.roster_changed()  # the rest of a large batch of certificates
                # only documents already in memory (Repo.compact_loaded says why); while
                # peers' changes keep coming, one a pass: each is one step of the loop (a
                # shard of 1,250 entries: 25-40 ms), and three in a row made a live write
                # from a peer wait behind them (issue 14)
                live = time.monotonic() - self.repo.peer_changed_at < COMPACT_QUIET
                compacted = 0
                while done := self.repo.compact_loaded(quiet=2.0, limit=1):
                    log.info("compacted %s", done[0])
                    compacted += 1
                    if live:
                        break
                    await asyncio.sleep(0)
                if compacted:
                    release(self.paths.root)
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

    # -- services for the API (node/api/services.py) ---------------------------------------------
    async def status(self) -> dict[str, Any]:
        return node_status(self.store, self.repo, self.config, self.key) | {
            "running": True,
            "listening": f"{self.host}:{self.port}",
            "peer_listener": f"{self.config.peer_listen}:{self.peer_port}",
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "peers": self.peers.status(),
            # SPEC-005 §6.1 f: devices seen signing two different changes with one number
            "equivocations": self.peers.equivocation_status(),
            "memory_entries": self.memory.count(),
        } | {f.name: section for f in self.features if (section := f.status())}

    async def get_profile(self) -> dict[str, Any]:
        return get_profile(self.repo)

    async def update_profile(self, changes: dict[str, Any]) -> dict[str, Any]:
        return update_profile(self.repo, changes)


async def _listen(runner: web.AppRunner, host: str, port: int) -> int:
    site = web.TCPSite(runner, host, port)
    await site.start()
    return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def _is_loopback(host: str) -> bool:
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
