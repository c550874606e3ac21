"""What ``maia`` commands act on: the running node's API, or the store itself when none runs.

Both targets offer the same operations and call the same rules (``Memory``, ``crdt.identity``,
``node.devices.members``, ``node.mesh.peerlist``, ``node.status``), so each command is written
once and answers alike either way (``tests/test_cli_targets.py`` runs every command against
both). A rule's refusal reaches the user as that rule's own sentence: offline directly, online
as the detail of the problem the route table mapped it to. The offline target holds the
data-dir lock for its lifetime: it can never write behind a running node's back.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import quote

from crdt import (
    DeviceKey,
    KeyFileError,
    NoMeshError,
    Store,
    get_profile,
    open_repo,
    update_profile,
)

from ..config import ConfigError, NodeConfig, Paths
from ..datadir import DataDirBusy, DataDirLock
from ..devices import members, storage
from ..features import load_features
from ..memory import Memory
from ..memory.versions import versions_of
from ..mesh import peerlist
from ..status import offline_report
from .client import ApiError, NodeClient, NodeNotRunning
from .common import Target, UserError, problem_sentence

T = TypeVar("T")
log = logging.getLogger(__name__)


class OnlineTarget:
    """The node is running: every operation is one call of its local API."""

    running = True

    def __init__(self, client: NodeClient) -> None:
        self.client = client

    def _call(self, method: str, path: str, body: Any = None,
              query: dict[str, Any] | None = None) -> Any:
        try:
            return self.client.request(method, path, body, query)
        except NodeNotRunning:
            raise UserError("the node stopped answering; is it still running?") from None
        except ApiError as exc:
            raise UserError(problem_sentence(exc)) from None

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status")

    def profile_get(self) -> dict[str, Any]:
        return self._call("GET", "/v1/profile")

    def profile_set(self, changes: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", "/v1/profile", changes)

    def memory_add(self, text: str, kind: str, tags: list[str]) -> dict[str, Any]:
        return self._call("POST", "/v1/memory", {"text": text, "kind": kind, "tags": tags})

    def memory_import(self, items: list[dict[str, Any]]) -> int:
        return self._call("POST", "/v1/memory/import", {"entries": items})["added"]

    def memory_list(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        query = {("q" if k == "query" else k): v for k, v in filters.items() if v is not None}
        return self._call("GET", "/v1/memory", query=query)["entries"]

    def memory_search(self, query: str, mode: str,
                      filters: dict[str, Any]) -> list[dict[str, Any]]:
        params = {"q": query, "mode": mode} | {k: v for k, v in filters.items() if v is not None}
        return self._call("GET", "/v1/memory/search", query=params)["entries"]

    def memory_show(self, entry_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/memory/{quote(entry_id, safe='')}")

    def memory_show_at(self, entry_id: str, version: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/memory/{quote(entry_id, safe='')}",
                          query={"at": version})

    def memory_restore(self, entry_id: str, version: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/memory/{quote(entry_id, safe='')}/restore",
                          {"version": version})

    def memory_undelete(self, entry_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/memory/{quote(entry_id, safe='')}/undelete")

    def memory_deleted(self, limit: int) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/memory/deleted", query={"limit": limit})["entries"]

    def memory_edit(self, entry_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/v1/memory/{quote(entry_id, safe='')}", changes)

    def memory_history(self, entry_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/memory/{quote(entry_id, safe='')}/history")["history"]

    def memory_delete(self, entry_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/memory/{quote(entry_id, safe='')}")

    def peers(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/peers")["peers"]

    def peer_add(self, address: str) -> None:
        self._call("POST", "/v1/peers", {"address": address})

    def peer_remove(self, address: str) -> None:
        self._call("DELETE", f"/v1/peers/{quote(address, safe='')}")

    def devices(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/devices")["devices"]

    def device_add(self, request: str, name: str) -> dict[str, Any]:
        return self._call("POST", "/v1/devices", {"request": request, "name": name})

    def device_revoke(self, device: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/v1/devices/{quote(device, safe='')}/revoke",
                          {**body, "confirm": device})

    def device_storage(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/devices/storage")["devices"]

    def device_drop_unseen(self, device: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/devices/{quote(device, safe='')}/drop-unseen",
                          {"confirm": device})

    def close(self) -> None:
        pass


class OfflineTarget:
    """No node runs: acts on the store directly, holding the node's lock."""

    running = False

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.store: Store | None = None
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
        if self.store is not None:
            # fold what this command wrote while its documents are still in memory: the node
            # only compacts documents it has loaded anyway (crdt Repo.compact_loaded)
            repo = getattr(self, "repo", None)
            try:
                for doc_id in repo.compact_loaded() if repo is not None else ():
                    log.info("compacted %s", doc_id)
            except Exception as exc:  # the log stays as it is; the node folds it later
                log.warning("could not compact after this command: %s", exc)
            self.store.close()
            self.store = None
        self.lock.release()

    def status(self) -> dict[str, Any]:
        assert self.store is not None
        return offline_report(self.store, self.repo, NodeConfig.load(self.paths.config),
                              self.key, self.memory, load_features())

    def profile_get(self) -> dict[str, Any]:
        return get_profile(self.repo)

    def profile_set(self, changes: dict[str, Any]) -> dict[str, Any]:
        return _refusal(update_profile, self.repo, changes)

    def memory_add(self, text: str, kind: str, tags: list[str]) -> dict[str, Any]:
        return _refusal(self.memory.add, text, kind, tags)

    def memory_import(self, items: list[dict[str, Any]]) -> int:
        return len(_refusal(self.memory.add_many, items))

    def memory_list(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return self.memory.list(**{k: v for k, v in filters.items() if v is not None})

    def memory_search(self, query: str, mode: str,
                      filters: dict[str, Any]) -> list[dict[str, Any]]:
        # the search index (SQLite, numpy, the local embedding model) only for this command
        from ..search.offline import SemanticUnavailable, search_offline

        try:  # a bad query (SearchError) is a ValueError: _refusal words it
            return _refusal(search_offline, self.repo, self.paths.root, query, mode,
                            {k: v for k, v in filters.items() if v is not None})
        except SemanticUnavailable as exc:
            raise UserError(str(exc)) from None

    def memory_show(self, entry_id: str) -> dict[str, Any]:
        return _refusal(versions_of(self.memory).get, entry_id)

    def memory_show_at(self, entry_id: str, version: str) -> dict[str, Any]:
        return _refusal(versions_of(self.memory).show_at, entry_id, version)

    def memory_restore(self, entry_id: str, version: str) -> dict[str, Any]:
        return _refusal(versions_of(self.memory).restore, entry_id, version)

    def memory_undelete(self, entry_id: str) -> dict[str, Any]:
        return _refusal(versions_of(self.memory).undelete, entry_id)

    def memory_deleted(self, limit: int) -> list[dict[str, Any]]:
        return versions_of(self.memory).deleted(limit)

    def memory_edit(self, entry_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return _refusal(self.memory.update, entry_id, **changes)

    def memory_history(self, entry_id: str) -> list[dict[str, Any]]:
        return _refusal(self.memory.history, entry_id)

    def memory_delete(self, entry_id: str) -> dict[str, Any]:
        return _refusal(self.memory.delete, entry_id)

    def peers(self) -> list[dict[str, Any]]:
        return [{"address": a, "device_id": None, "connected": False}
                for a in peerlist.static_peers(self.paths.config)]

    def peer_add(self, address: str) -> None:
        _refusal(peerlist.add_static_peer, self.paths.config, address)

    def peer_remove(self, address: str) -> None:
        _refusal(peerlist.remove_static_peer, self.paths.config, address)

    def devices(self) -> list[dict[str, Any]]:
        return members.list_devices(self.repo)

    def device_add(self, request: str, name: str) -> dict[str, Any]:
        return _refusal(members.enrol, self.repo, request, name)

    def device_revoke(self, device: str, body: dict[str, Any]) -> dict[str, Any]:
        return _refusal(members.revoke, self.repo, device, keep=body.get("keep"),
                        keep_all=body.get("keep_all", False), reason=body.get("reason", ""))

    def device_storage(self) -> list[dict[str, Any]]:
        return storage.storage_by_device(self.repo, self.memory)

    def device_drop_unseen(self, device: str) -> dict[str, Any]:
        return _refusal(storage.drop_unseen, self.repo, self.memory, device)


def _refusal(rule: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a domain rule; its refusal becomes the user's sentence (the route tables map the
    same errors to the problems whose detail the online target shows)."""
    try:
        return rule(*args, **kwargs)
    except (ValueError, LookupError) as exc:  # InvalidEntry, EntryNotFound, ProfileError, ...
        raise UserError(str(exc)) from None


def target_for(paths: Paths) -> Target:
    """The running node if it answers, else the store (when no other process holds it)."""
    try:
        return OnlineTarget(NodeClient(paths))
    except NodeNotRunning:
        pass
    try:
        return OfflineTarget(paths)
    except (KeyFileError, NoMeshError, ConfigError) as exc:
        raise UserError(str(exc)) from None
    except DataDirBusy:
        raise UserError(
            "a node holds this data dir but does not answer on its API; is it starting up?"
        ) from None


@contextmanager
def opened_target(paths: Paths) -> Iterator[Target]:
    """``target_for`` as a context: the offline target's lock is released on the way out."""
    target = target_for(paths)
    try:
        yield target
    finally:
        target.close()
