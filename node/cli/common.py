"""What every ``maia`` command shares: the one-sentence error, output helpers, and the way to
reach the node (its API when it runs, its store when it does not)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, Protocol

from ..config import Paths
from .client import ApiError, NodeClient, NodeNotRunning

EXIT_USAGE = 2
EXIT_FAIL = 1


class UserError(Exception):
    """A mistake or a state the user can fix; shown as one sentence."""


class Target(Protocol):
    """What a command acts on: the running node (``OnlineTarget``) or, with none running, the
    store (``OfflineTarget``); both in ``node.cli.targets``, chosen by ``maia`` itself."""

    running: bool

    def status(self) -> dict[str, Any]: ...
    def profile_get(self) -> dict[str, Any]: ...
    def profile_set(self, changes: dict[str, Any]) -> dict[str, Any]: ...
    def memory_add(self, text: str, kind: str, tags: list[str]) -> dict[str, Any]: ...
    def memory_list(self, filters: dict[str, Any]) -> list[dict[str, Any]]: ...
    def memory_import(self, items: list[dict[str, Any]]) -> int: ...
    def memory_search(self, query: str, mode: str,
                      filters: dict[str, Any]) -> list[dict[str, Any]]: ...
    def memory_show(self, entry_id: str) -> dict[str, Any]: ...
    def memory_show_at(self, entry_id: str, version: str) -> dict[str, Any]: ...
    def memory_restore(self, entry_id: str, version: str) -> dict[str, Any]: ...
    def memory_undelete(self, entry_id: str) -> dict[str, Any]: ...
    def memory_deleted(self, limit: int) -> list[dict[str, Any]]: ...
    def memory_edit(self, entry_id: str, changes: dict[str, Any]) -> dict[str, Any]: ...
    def memory_history(self, entry_id: str) -> list[dict[str, Any]]: ...
    def memory_delete(self, entry_id: str) -> dict[str, Any]: ...
    def peers(self) -> list[dict[str, Any]]: ...
    def peer_add(self, address: str) -> None: ...
    def peer_remove(self, address: str) -> None: ...
    def devices(self) -> list[dict[str, Any]]: ...
    def device_add(self, request: str, name: str) -> dict[str, Any]: ...
    def device_revoke(self, device: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def device_storage(self) -> list[dict[str, Any]]: ...
    def device_drop_unseen(self, device: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


def on_target(parser: Any, command: Callable[[Any, Target], int | None]) -> None:
    """Make ``command(args, target)`` the sub-command of ``parser``: ``maia`` opens the target
    (the node's API, else its store under the lock) and closes it afterwards."""
    parser.set_defaults(func=command, on_target=True)


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def running_node(paths: Paths, why: str = "", timeout: float = 30.0) -> NodeClient:
    """The running node's API client, or a UserError saying to start it (``why`` says why
    the command needs it)."""
    try:
        return NodeClient(paths, timeout=timeout)
    except NodeNotRunning:
        raise UserError("no node is running for this data dir; start it with 'maia up'"
                        + (f" ({why})" if why else "")) from None


def problem_sentence(exc: ApiError) -> str:
    """A domain error's own sentence when the node mapped one (RouteTable.errors), so the
    online and offline targets word it alike; else the problem's title, detail and errors."""
    detail = exc.problem.get("detail")
    if detail and not exc.problem.get("errors"):
        return str(detail)
    return str(exc)
