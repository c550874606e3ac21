"""Keep the cyclic garbage collector's full passes short.

CPython's full collection (generation 2) walks every container object the process holds. A
node hosting a cortex holds about 450,000 of them once litellm is imported (pydantic models,
typing objects), nearly all alive for the process's life, and a full pass over them took
220-285 ms of CPU on the benchmark machine, stopping the event loop: two such pauses were
the worst live-propagation samples of a consolidation run (issue 14). ``gc.freeze()`` moves
every object alive now into a permanent generation that collections skip, so later full
passes walk only what was allocated since.

Freezing is done at a few settle points (the node started; litellm imported; litellm's first
answer, which builds more of its models lazily), not periodically: an object frozen and later
dropped in a reference cycle is never reclaimed, and objects alive at start-up rarely die.
A full collection first keeps cyclic garbage out of the frozen set; after the first settle
point it walks only what came since (the first one, at start, 50-100 ms before any request).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)


def freeze_settled(why: str) -> int:
    """Exempt every object alive now from future collections; returns how many are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("heap settled (%s): %d objects frozen", why, frozen)
    return frozen


_pause_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection while a bulk write runs (issue 17).

    A bulk write allocates tens of thousands of short-lived containers (closures, rows,
    change records) that die by reference counting; each 700 of them start a young
    collection, and every hundredth of those a full one that walks every object the caller
    holds (an import's whole corpus, say). That was a tenth of ``Memory.add_many``'s CPU.
    The pause is bounded by the one call (with what runs inside it: change listeners, the
    hooks of documents it evicts, a write of held index rows: data freed by reference
    counting too); whatever cycles it made are collected after.
    Nested and concurrent pauses (threads) count: collection resumes when the last ends,
    and only if it was on before the first began."""
    global _pauses, _was_enabled
    counted = False
    try:
        with _pause_lock:
            if _pauses == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
            _pauses += 1
            counted = True
        yield
    finally:
        with _pause_lock:
            if counted:
                _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
