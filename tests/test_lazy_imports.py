"""A node loads its heavy optional libraries when first used, not when it starts (issue 17).

An idle node's resident memory is the floor under a catch-up's peak: the MCP SDK (pydantic,
starlette, anyio: about 30 MB), spake2 (``cryptography``: about 10 MB) and the local embedding
model's tokenizer (about 25 MB) took an empty node from 70 MB to 129 MB before any of them did
anything. Checked on a real ``maia up`` process by the native libraries it has mapped, then
each is used once to show the check sees it load (so the check cannot pass vacuously).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from tests.nodes import NodeProc, make_mesh, wait_for

MCP_SDK = "pydantic_core/_pydantic_core"  # pydantic, which the MCP SDK is built on
SPAKE2 = "cryptography/hazmat/bindings/_rust"  # spake2's key derivation (the MCP SDK's too)
TOKENIZER = "tokenizers/tokenizers"  # the local embedding model's tokenizer


def _mapped(node: NodeProc) -> str:
    assert node.proc is not None
    return Path(f"/proc/{node.proc.pid}/maps").read_text()


def _mcp_tools_list(node: NodeProc) -> dict:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    req = urllib.request.Request(node.base + "/v1/mcp", data=body, method="POST", headers={
        "Authorization": f"Bearer {node.token}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_an_idle_node_loads_the_mcp_sdk_spake2_and_the_tokenizer_only_when_used(
    tmp_path: Path,
) -> None:
    (a,) = make_mesh(tmp_path, ["a"])
    a.start()
    try:
        idle = _mapped(a)
        assert MCP_SDK not in idle and SPAKE2 not in idle and TOKENIZER not in idle
        # first use of each: MCP over HTTP, then an entry to embed for memory search
        assert len(_mcp_tools_list(a)["result"]["tools"]) == 14
        assert MCP_SDK in _mapped(a)
        a.add_memory("a walnut tree by the river")
        wait_for(lambda: TOKENIZER in _mapped(a), timeout=60, what="the tokenizer loaded")
    finally:
        a.stop()
