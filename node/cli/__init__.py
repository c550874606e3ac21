"""The ``maia`` command: set up a device, run its node, and work with its identity and memory.

Sub-commands register themselves: the node's own (``core``, ``service``) here, every feature's
through its ``FEATURES`` entry (memory, devices, the mesh, pairing, cortex routing, backup,
sessions), without loading the features' HTTP and peer code, so ``maia`` starts fast. Commands
talk to the running node over its local API; when no node runs they act on the store directly,
holding the node's lock (``targets``). Mistakes get one clear sentence and a non-zero exit, never
a traceback.
"""

from __future__ import annotations

import argparse
import sys

from crdt import KeyFileError, StoreError

from ..config import ENV_DATA_DIR, ConfigError, Paths, resolve_data_dir
from ..features import register_commands
from ..logs import configure_logging
from . import core, service
from .common import EXIT_FAIL, EXIT_USAGE, UserError
from .targets import opened_target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maia",
        description="maia-node: sync your identity and memory across your own devices.",
        epilog=f"The data dir is --data-dir, else ${ENV_DATA_DIR}, else ~/.local/share/maia.",
    )
    p.add_argument("--data-dir", help="where this node keeps its key, store and config")
    p.add_argument("--log-level", default=None,
                   help="DEBUG, INFO, WARNING or ERROR (default: INFO for 'up', else WARNING)")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="json: one JSON object per line, for a service's journal")
    commands = p.add_subparsers(dest="command", metavar="COMMAND")
    core.register(commands)
    register_commands(commands)
    service.register(commands)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    level = (args.log_level or ("INFO" if args.command == "up" else "WARNING")).upper()
    configure_logging(level, args.log_format)
    paths = Paths(resolve_data_dir(args.data_dir))
    try:
        if getattr(args, "on_target", False):
            with opened_target(paths) as target:
                return args.func(args, target) or 0
        return args.func(args, paths)
    except UserError as exc:
        sys.stderr.write(f"maia: {exc}\n")
        return EXIT_FAIL
    except (KeyFileError, ConfigError, StoreError) as exc:  # StoreError: e.g. a full disk
        sys.stderr.write(f"maia: {exc}\n")
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


__all__ = ["UserError", "build_parser", "main"]
