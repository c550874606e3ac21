"""Give memory back to the system when a node goes idle (Linux; elsewhere a no-op).

Two kinds of resident memory outlive a burst of work: heap the C allocator keeps after
documents are evicted (``malloc_trim`` returns it), and pages of the LMDB files still mapped
into the process after a catch-up touched them. The files are opened read-only mapped (LMDB
writes with ``pwrite``), so ``madvise(MADV_DONTNEED)`` on those mappings only drops this
process's view of page-cache pages; the next read maps them again from the cache.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

log = logging.getLogger(__name__)

MADV_DONTNEED = 4

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _malloc_trim = getattr(_libc, "malloc_trim", None)
    _madvise = _libc.madvise
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
except (OSError, AttributeError):  # not glibc / not Linux
    _libc = _malloc_trim = _madvise = None


def _mappings_of(files: set[str]) -> list[tuple[int, int]]:
    out = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip() in files and "w" not in parts[1]:
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    out.append((start, end - start))
    except OSError:
        pass
    return out


M_ARENA_MAX = -8  # glibc's mallopt parameter
#: Heap arenas for the whole process: the event loop's and one that every other thread shares.
ARENAS = 2


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's heap arenas; call before any thread starts (``maia up`` does, first).

    glibc gives each thread that allocates its own arena of up to 64 MB, and keeps what it
    allocated there. The search feature's embedding worker and the tokenizer's threads each
    left an arena of 64 MB resident after a 100k catch-up was embedded: 150 MB of a peak of
    477 MB (issue 17). Two arenas: the event loop keeps its own, the workers share one.
    """
    mallopt = getattr(_libc, "mallopt", None) if _libc is not None else None
    if mallopt is None:
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


def release(data_dir: Path) -> None:
    """Trim the heap and drop mapped LMDB pages of this node's store."""
    if _malloc_trim is not None:
        _malloc_trim(0)
    if _madvise is None:
        return
    files = {str((Path(data_dir) / layer / "data.mdb").resolve())
             for layer in ("identity", "memory", "runtime")}
    for start, length in _mappings_of(files):
        if _madvise(start, length, MADV_DONTNEED) != 0:
            log.debug("madvise failed with errno %d", ctypes.get_errno())
