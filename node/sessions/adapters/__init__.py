"""Per-CLI hook adapters: each CLI's documented hook JSON in, one normalised event out, and the
CLI's documented answer back (SPEC-004 §11, §12).

The exact field names are pinned in one module per CLI (``claude``, ``codex``, ``gemini``),
checked against each CLI's documentation (see the module docstrings). Stdlib only: the hook
command imports this on every tool call.
"""

from __future__ import annotations

import importlib
from types import ModuleType

CLIS = ("claude", "codex", "gemini")


def adapter(cli: str) -> ModuleType:
    """The adapter module for ``cli``; KeyError for a CLI maia-node does not know."""
    if cli not in CLIS:
        raise KeyError(cli)
    return importlib.import_module(f"{__name__}.{cli}")
