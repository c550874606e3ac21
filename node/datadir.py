"""The data dir's owner: one advisory lock, and the store opened under it.

A data dir has exactly one writer at a time: the running node, or a command acting while no
node runs (the offline CLI target, backup restore, pairing as a new device). All of them take
the same lock here, so none needs to import the node process to stay out of its way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from crdt import Store


class DataDirBusy(Exception):
    """Another process (a running node) holds this data dir."""


class DataDirLock:
    """Exclusive advisory lock on ``<data>/node.lock``; released when the process dies."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / "node.lock"
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
def locked_store(root: Path, **store_options) -> Iterator[Store]:
    """The store, opened under the data-dir lock, for commands that run without a node."""
    lock = DataDirLock(root)
    lock.acquire()
    try:
        store = Store(root, **store_options)
    except BaseException:
        lock.release()
        raise
    try:
        yield store
    finally:
        store.close()
        lock.release()
