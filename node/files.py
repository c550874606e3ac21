"""Small files the node writes whole: node.json, config.toml, agents' settings files, install
records, hook caches, the backup key cache, service units.

One way to write them (SPEC-001 §9.4): a temporary file beside the target, created with its
final permissions (private ones 0600 from their first byte, SPEC-001 §4.6), written, fsynced,
renamed over the target, and the directory fsynced so the rename itself survives a power loss.
A failure leaves the old file as it was and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory: so a rename in it is durable). Here, not
    imported from ``crdt``: the agent hook writes its cache through this module and imports
    only the standard library (SPEC-004 §12: it runs on every tool call)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (it may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(
    path: Path, data: bytes | str, *, mode: int = 0o600, keep_mode: bool = False,
    tmp: Path | None = None, durable: bool = True, sync_dir: bool | None = None,
    write: Callable[[int, bytes], None] = write_all,
) -> None:
    """Replace ``path`` with ``data`` all at once.

    ``mode``: permissions of a new file; with ``keep_mode`` an existing file keeps its own.
    ``durable=False`` for caches that are rebuilt anyway (no fsync at all); ``sync_dir``
    overrides whether the directory is fsynced after the rename. ``write`` is the seam
    the backup's fault tests use to fail a write part-way.
    """
    if isinstance(data, str):
        data = data.encode()
    if keep_mode and path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
    tmp = tmp or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover could carry looser permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            if keep_mode:
                os.fchmod(fd, mode)  # exactly the old mode, whatever the umask
            write(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable if sync_dir is None else sync_dir:
        fsync_path(path.parent)
