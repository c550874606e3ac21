"""Drive ``maia mcp`` with the official ``mcp`` client library, as an agent CLI would."""

from __future__ import annotations

import json
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.nodes import NodeProc


def stdio_params(node: NodeProc, *args: str, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "node.cli", "--data-dir", str(node.data_dir), "mcp", *args],
        env=env or {}, cwd=str(cwd) if cwd else None,
    )


@asynccontextmanager
async def mcp_client(node: NodeProc, *args: str, env: dict[str, str] | None = None,
                     cwd: Path | None = None):
    async with Client(stdio_params(node, *args, env=env, cwd=cwd),
                      read_timeout_seconds=60) as client:
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> tuple[bool, Any]:
    """(is_error, structured result or error text) of one tool call."""
    res = await client.call_tool(tool, arguments)
    text = "".join(getattr(c, "text", "") for c in res.content)
    if res.is_error:
        return True, text
    if res.structured_content is not None:
        sc = res.structured_content
        return False, sc.get("result", sc) if isinstance(sc, dict) and set(sc) == {
            "result"} else sc
    return False, json.loads(text)
