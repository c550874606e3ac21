"""What CLI commands act on: the running node's API, or the store itself when no node runs.

Both backends offer the same operations with the same results, so each command is written
once. The offline backend holds the data-dir lock for its lifetime: it can never write behind
a running node's back.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Protocol

from .client import NodeClient
from .config import NodeConfig, Paths, parse_host_port

log = logging.getLogger(__name__)


class Backend(Protocol):
    def status(self) -> dict[str, Any]: ...
    def profile_get(self) -> dict[str, Any]: ...
    def profile_set(self, changes: dict[str, Any]) -> dict[str, Any]: ...
    def memory_add(self, text: str, kind: str, tags: list[str]) -> dict[str, Any]: ...
    def memory_list(self, filters: dict[str, Any]) -> list[dict[str, Any]]: ...
    def memory_search(self, query: str, mode: str,
                      filters: dict[str, Any]) -> list[dict[str, Any]]: ...
    def memory_import(self, items: list[dict[str, Any]]) -> int: ...
    def memory_show(self, entry_id: str) -> dict[str, Any]: ...
    def memory_edit(self, entry_id: str, changes: dict[str, Any]) -> dict[str, Any]: ...
    def memory_history(self, entry_id: str) -> list[dict[str, Any]]: ...
    def memory_delete(self, entry_id: str) -> dict[str, Any]: ...
    def memory_show_at(self, entry_id: str, version: str) -> dict[str, Any]: ...
    def memory_restore(self, entry_id: str, version: str) -> dict[str, Any]: ...
    def memory_undelete(self, entry_id: str) -> dict[str, Any]: ...
    def memory_deleted(self, limit: int) -> list[dict[str, Any]]: ...
    def peers(self) -> list[dict[str, Any]]: ...
    def peer_add(self, address: str) -> None: ...
    def peer_remove(self, address: str) -> None: ...
    def devices(self) -> list[dict[str, Any]]: ...
    def device_add(self, request: str, name: str) -> dict[str, Any]: ...
    def device_revoke(self, device: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def close(self) -> None: ...


class NotFound(Exception):
    pass


class ApiBackend:
    def __init__(self, client: NodeClient) -> None:
        self.c = client

    def status(self) -> dict[str, Any]:
        return self.c.request("GET", "/v1/status") | {"running": True}

    def profile_get(self) -> dict[str, Any]:
        return self.c.request("GET", "/v1/profile")

    def profile_set(self, changes: dict[str, Any]) -> dict[str, Any]:
        return self.c.request("PATCH", "/v1/profile", changes)

    def memory_add(self, text: str, kind: str, tags: list[str]) -> dict[str, Any]:
        return self.c.request("POST", "/v1/memory", {"text": text, "kind": kind, "tags": tags})

    def memory_import(self, items: list[dict[str, Any]]) -> int:
        return self.c.request("POST", "/v1/memory/import", {"entries": items})["added"]

    def memory_list(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        query = {("q" if k == "query" else k): v for k, v in filters.items() if v is not None}
        return self.c.request("GET", "/v1/memory", query=query)["entries"]

    def memory_search(self, query: str, mode: str,
                      filters: dict[str, Any]) -> list[dict[str, Any]]:
        params = {"q": query, "mode": mode} | {k: v for k, v in filters.items() if v is not None}
        return self.c.request("GET", "/v1/memory/search", query=params)["entries"]

    def memory_show(self, entry_id: str) -> dict[str, Any]:
        return self.c.request("GET", f"/v1/memory/{entry_id}")

    def memory_edit(self, entry_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self.c.request("PATCH", f"/v1/memory/{entry_id}", changes)

    def memory_history(self, entry_id: str) -> list[dict[str, Any]]:
        return self.c.request("GET", f"/v1/memory/{entry_id}/history")["history"]

    def memory_delete(self, entry_id: str) -> dict[str, Any]:
        return self.c.request("DELETE", f"/v1/memory/{entry_id}")

    def memory_show_at(self, entry_id: str, version: str) -> dict[str, Any]:
        return self.c.request("GET", f"/v1/memory/{entry_id}", query={"at": version})

    def memory_restore(self, entry_id: str, version: str) -> dict[str, Any]:
        return self.c.request("POST", f"/v1/memory/{entry_id}/restore", {"version": version})

    def memory_undelete(self, entry_id: str) -> dict[str, Any]:
        return self.c.request("POST", f"/v1/memory/{entry_id}/undelete")

    def memory_deleted(self, limit: int) -> list[dict[str, Any]]:
        return self.c.request("GET", "/v1/memory/deleted", query={"limit": limit})["entries"]

    def peers(self) -> list[dict[str, Any]]:
        return self.c.request("GET", "/v1/peers")["peers"]

    def peer_add(self, address: str) -> None:
        self.c.request("POST", "/v1/peers", {"address": address})

    def peer_remove(self, address: str) -> None:
        from urllib.parse import quote

        self.c.request("DELETE", f"/v1/peers/{quote(address, safe='')}")

    def devices(self) -> list[dict[str, Any]]:
        return self.c.request("GET", "/v1/devices")["devices"]

    def device_add(self, request: str, name: str) -> dict[str, Any]:
        return self.c.request("POST", "/v1/devices", {"request": request, "name": name})

    def device_revoke(self, device: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.c.request("POST", f"/v1/devices/{device}/revoke", body)

    def close(self) -> None:
        pass


class OfflineBackend:
    """Acts on the store directly; only while no node runs (it takes the node's lock)."""

    def __init__(self, paths: Paths) -> None:
        from crdt.identity import open_repo
        from crdt.keys import DeviceKey
        from crdt.store import Store

        from .memory import Memory
        from .node import DataDirLock

        self.paths = paths
        self.lock = DataDirLock(paths.root)
        self.lock.acquire()
        try:
            self.key = DeviceKey.load(paths.key)
            self.store = Store(paths.root)
            self.repo = open_repo(self.store, self.key)
            self.memory = Memory(self.repo)
            revoked = self.repo.roster.revocation(self.key.public_key)
            if revoked is not None:  # every command says so (issue 15.6)
                print(f"Warning: this device was revoked by {revoked['by_name'] or revoked['by']}"
                      f" at {revoked['at']}; it can no longer change the mesh's documents.",
                      file=sys.stderr)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            # fold what this command wrote while its documents are still in memory: the node
            # only compacts documents it has loaded anyway (crdt Repo.compact_loaded)
            repo = getattr(self, "repo", None)
            try:
                if getattr(self, "memory", None) is not None:
                    self.memory.write_pending()  # index rows held back from the last writes
                for doc_id in repo.compact_loaded() if repo is not None else ():
                    log.info("compacted %s", doc_id)
            except Exception as exc:  # the log stays as it is; the node folds it later
                log.warning("could not compact after this command: %s", exc)
            store.close()
            self.store = None
        self.lock.release()

    def status(self) -> dict[str, Any]:
        from .node import node_status

        cfg = NodeConfig.load(self.paths.config)
        from .backup.feature import offline_status

        return node_status(self.store, self.repo, cfg, self.key) | {
            "running": False,
            "memory_entries": self.memory.count(),
            "peers": [{"address": a, "connected": False} for a in cfg.static_peers],
            "backup": offline_status(self.store, cfg),
        }

    def profile_get(self) -> dict[str, Any]:
        from crdt.identity import get_profile

        return get_profile(self.repo)

    def profile_set(self, changes: dict[str, Any]) -> dict[str, Any]:
        from crdt.identity import update_profile

        return update_profile(self.repo, changes)

    def memory_add(self, text: str, kind: str, tags: list[str]) -> dict[str, Any]:
        return self.memory.add(text, kind, tags)

    def memory_import(self, items: list[dict[str, Any]]) -> int:
        return len(self.memory.add_many(items))

    def memory_list(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return self.memory.list(**{k: v for k, v in filters.items() if v is not None})

    def memory_search(self, query: str, mode: str,
                      filters: dict[str, Any]) -> list[dict[str, Any]]:
        from .search.offline import search_offline

        return search_offline(self.repo, self.paths.root, query, mode,
                              {k: v for k, v in filters.items() if v is not None})

    def memory_show(self, entry_id: str) -> dict[str, Any]:
        from .memory import EntryNotFound
        from .memory_versions import versions_of

        try:
            return versions_of(self.memory).get(entry_id)
        except EntryNotFound:
            raise NotFound(entry_id) from None

    def memory_edit(self, entry_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        from .memory import EntryNotFound

        try:
            return self.memory.update(entry_id, **changes)
        except EntryNotFound:
            raise NotFound(entry_id) from None

    def memory_history(self, entry_id: str) -> list[dict[str, Any]]:
        from .memory import EntryNotFound

        try:
            return self.memory.history(entry_id)
        except EntryNotFound:
            raise NotFound(entry_id) from None

    def memory_delete(self, entry_id: str) -> dict[str, Any]:
        from .memory import EntryNotFound

        try:
            return self.memory.delete(entry_id)
        except EntryNotFound:
            raise NotFound(entry_id) from None

    def _versions(self, op: str, *args: Any) -> Any:
        """A version operation (node/memory_versions.py); an unknown entry is NotFound, an
        unknown version a ValueError naming it, as the API's 404 problems say."""
        from .memory import EntryNotFound
        from .memory_versions import UnknownVersion, versions_of

        try:
            return getattr(versions_of(self.memory), op)(*args)
        except EntryNotFound:
            raise NotFound(args[0] if args else "") from None
        except UnknownVersion as exc:
            raise ValueError(f"{exc.args[0]!r} is not a version of {args[0]} "
                             "(see its history)") from None

    def memory_show_at(self, entry_id: str, version: str) -> dict[str, Any]:
        return self._versions("show_at", entry_id, version)

    def memory_restore(self, entry_id: str, version: str) -> dict[str, Any]:
        return self._versions("restore", entry_id, version)

    def memory_undelete(self, entry_id: str) -> dict[str, Any]:
        return self._versions("undelete", entry_id)

    def memory_deleted(self, limit: int) -> list[dict[str, Any]]:
        return self._versions("deleted", limit)

    def peers(self) -> list[dict[str, Any]]:
        cfg = NodeConfig.load(self.paths.config)
        return [{"address": a, "connected": False, "device_id": None} for a in cfg.static_peers]

    def peer_add(self, address: str) -> None:
        parse_host_port(address)
        cfg = NodeConfig.load(self.paths.config)
        if address not in cfg.static_peers:
            cfg.static_peers.append(address)
            cfg.save(self.paths.config)

    def peer_remove(self, address: str) -> None:
        cfg = NodeConfig.load(self.paths.config)
        if address not in cfg.static_peers:
            raise NotFound(address)
        cfg.static_peers.remove(address)
        cfg.save(self.paths.config)

    def devices(self) -> list[dict[str, Any]]:
        from .api.routes_devices import list_devices

        return list_devices(self.repo)

    def device_add(self, request: str, name: str) -> dict[str, Any]:
        from crdt.identity import enrol_device, parse_join_request
        from crdt.keys import device_id

        subject = parse_join_request(request)
        invitation = enrol_device(self.repo, subject, name)
        return {"device_id": device_id(subject), "invitation": invitation}

    def device_revoke(self, device: str, body: dict[str, Any]) -> dict[str, Any]:
        from crdt.identity import revoke_device
        from crdt.keys import device_id, normalize_device_id

        wanted = normalize_device_id(device)
        keys = [k for k in [*self.repo.roster.members, *self.repo.roster.revoked,
                                  *self.repo.roster.ever]
                if device_id(k) == wanted]
        if not keys:
            raise ValueError(f"{wanted} is not in this mesh")
        cert = revoke_device(self.repo, keys[0], keep=body.get("keep"),
                             keep_all=body.get("keep_all", False), reason=body.get("reason", ""))
        return {"device_id": wanted, "revoked": True, "cutoff": cert.cutoff_summary(),
                "kept": cert.body["kept"]}
