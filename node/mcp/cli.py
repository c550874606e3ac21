"""``maia mcp``: the command agent CLIs start as their MCP server (SPEC-004 §15)."""

from __future__ import annotations

import argparse
from typing import Any

from ..cli.common import UserError
from ..scopes import DEFAULT_AGENT_SCOPES, SCOPES
from .launcher import run

AGENTS = ("claude", "codex", "gemini", "aider", "other")


def register(sub: Any) -> None:
    s = sub.add_parser(
        "mcp", help="serve maia memory to an agent CLI over MCP (stdio)",
        description="Run maia-node's MCP server over stdio for an agent CLI. It acts with a "
                    "session token of its own (never the node's local token).")
    s.add_argument("--agent", choices=AGENTS, default="other",
                   help="the agent CLI that starts this server (recorded on every write)")
    s.add_argument("--scopes", default=",".join(DEFAULT_AGENT_SCOPES),
                   help=f"comma-separated scopes to ask for (of: {', '.join(SCOPES)}; "
                        f"default: {','.join(DEFAULT_AGENT_SCOPES)})")
    s.set_defaults(func=cmd_mcp)


def cmd_mcp(args: argparse.Namespace, paths: Any) -> int:
    scopes = [x.strip() for x in args.scopes.split(",") if x.strip()]
    unknown = [x for x in scopes if x not in SCOPES]
    if unknown:
        raise UserError(f"unknown scope(s): {', '.join(unknown)}; choose from "
                        f"{', '.join(SCOPES)}")
    return run(paths.root, args.agent, scopes)
