"""Memory search through a real `maia up` process: the HTTP route, its bad input, the CLI, and a
rebuild after the index is deleted (SPEC-001 §7.5, SPEC-003 §12)."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

from tests.nodes import NodeProc, cli_out, wait_for

DATA = Path(__file__).parent / "data" / "search_retrieval.json"


def search(node: NodeProc, q: str, **params: Any) -> dict[str, Any]:
    return node.request("GET", "/v1/memory/search?" + urllib.parse.urlencode({"q": q, **params}))


def problem(node: NodeProc, query: str, *, auth: bool = True) -> tuple[int, dict[str, Any]]:
    try:
        node.request("GET", "/v1/memory/search?" + query, auth=auth)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    raise AssertionError(f"{query!r} was answered 200")


def settled(node: NodeProc) -> bool:
    status = node.request("GET", "/v1/status")["search"]
    return status["pending"] == 0 and status["shards_to_index"] == 0 and status["entries"] > 0


def test_search_on_a_real_node(mesh_factory) -> None:
    """SPEC-003 §12: ranked search over HTTP; hybrid beats text on the labelled set; bad input
    is a 4xx problem; a deleted entry is gone at once; the CLI ranks too; deleting the index
    while the node is stopped loses nothing (SPEC-001 §7.5)."""
    (node,) = mesh_factory("solo")
    data = json.loads(DATA.read_text())
    node.request("POST", "/v1/memory/import", {"entries": [
        {"text": e["text"], "kind": e["kind"], "tags": e["tags"]} for e in data["entries"]]})
    by_text = {e["text"]: e["key"] for e in data["entries"]}
    wait_for(lambda: settled(node), timeout=60, what="the index embeds every entry")

    def recall(mode: str) -> float:
        total = 0.0
        for q in data["queries"]:
            got = {by_text[e["text"]] for e in search(node, q["q"], mode=mode, limit=5)["entries"]}
            total += len(got & set(q["relevant"])) / len(q["relevant"])
        return total / len(data["queries"])

    text, hybrid = recall("text"), recall("hybrid")
    print(f"\nthrough HTTP, recall@5: text {text:.3f}, hybrid {hybrid:.3f}")
    assert hybrid > text

    answer = search(node, "visit to the tooth doctor", mode="semantic", limit=3)
    assert answer["mode"] == "semantic" and answer["model"].startswith("wordllama-")
    assert any(e["text"].startswith("Dentist appointment") for e in answer["entries"])
    top = answer["entries"][0]
    assert set(top) >= {"id", "text", "kind", "tags", "author", "created_at", "updated_at",
                        "score", "ranks"}

    # Bad input: a 400 validation problem, never a 5xx (SPEC-003 §8.4, §12.1).
    for query in ("q=" + "x" * 501, "q=heron&colour=blue", "q=heron&mode=fuzzy",
                  "q=heron&limit=0", "q=heron&limit=101", "q=", "mode=text",
                  "q=heron&since=yesterday", "q=heron&kind=secret", "q=heron&q=again",
                  "q=***&mode=text"):
        status, body = problem(node, query)
        assert status == 400, (query, body)
        assert body["type"] == "urn:maia-node:problem:validation", (query, body)
    status, _ = problem(node, "q=heron", auth=False)
    assert status == 401
    # FTS5 syntax is text (SPEC-003 §12.2): every one of these is answered.
    for q in ('"unbalanced', "NEAR(a b", "a AND OR NOT b", "text:x", "^start", "(", "*", '""',
              "a NEAR/3 b", "x'; DROP TABLE docs; --"):
        for mode in ("text", "hybrid", "semantic"):
            try:
                search(node, q, mode=mode)
            except urllib.error.HTTPError as exc:
                assert exc.code == 400 and mode == "text", (q, mode, exc.code)

    # A deleted entry is gone from the very next search.
    victim = search(node, "sourdough starter", mode="text", limit=1)["entries"][0]
    node.request("DELETE", f"/v1/memory/{victim['id']}")
    for mode in ("text", "semantic", "hybrid"):
        ids = [e["id"] for e in search(node, "sourdough bread baking", mode=mode)["entries"]]
        assert victim["id"] not in ids, mode

    # The CLI asks the running node.
    out = json.loads(cli_out(node.data_dir, "memory", "search", "--mode", "semantic",
                             "--limit", "3", "--json", "plane", "to", "Portugal"))
    assert any(e["text"].startswith("Flight to Lisbon") for e in out)

    # Delete the index while stopped: the restarted node rebuilds it and answers the same.
    queries = [q["q"] for q in data["queries"][:20]]
    before = [[e["id"] for e in search(node, q)["entries"]] for q in queries]
    node.stop()
    shutil.rmtree(node.data_dir / "runtime" / "search")
    node.start()
    wait_for(lambda: settled(node), timeout=60, what="the rebuilt index embeds every entry")
    assert [[e["id"] for e in search(node, q)["entries"]] for q in queries] == before
    assert "Traceback" not in node.log()


def test_offline_cli_search(mesh_factory) -> None:
    """`maia memory search` with no node running indexes and embeds in the CLI process."""
    (node,) = mesh_factory("solo")
    node.add_memory("The boiler loses pressure every few weeks", tags=["home"])
    node.add_memory("Swap the winter tyres at the garage", tags=["car"])
    node.stop()
    out = json.loads(cli_out(node.data_dir, "memory", "search", "--json", "heating", "problem"))
    assert out[0]["text"].startswith("The boiler")
    out = json.loads(cli_out(node.data_dir, "memory", "search", "--mode", "text", "--json",
                             "tyre*"))
    assert [e["text"] for e in out] == ["Swap the winter tyres at the garage"]


def test_a_deletion_synced_from_a_peer_leaves_the_results(mesh_factory) -> None:
    """SPEC-001 §7.5: once B has stored A's deletion, B's search never returns the entry, in
    any mode, and entries A adds are found on B by meaning."""
    a, b = mesh_factory("a", "b")
    b.add_peer(a)
    wait_for(lambda: a.connected() and b.connected(), what="a and b connected")
    keep = a.add_memory("The swallows came back to the barn in April", tags=["birds"])
    gone = a.add_memory("The swallows nest under the eaves of the barn", tags=["birds"])
    wait_for(lambda: b.entry(gone["id"]) is not None, what="b has the entries")
    wait_for(lambda: settled(b), timeout=60, what="b embeds them")
    ids = {e["id"] for e in search(b, "migrating birds returning in spring", mode="semantic")[
        "entries"]}
    assert {keep["id"], gone["id"]} <= ids
    a.request("DELETE", f"/v1/memory/{gone['id']}")
    wait_for(lambda: b.entry(gone["id"]) is None, what="b has the deletion")
    for mode in ("text", "semantic", "hybrid"):
        ids = {e["id"] for e in search(b, "swallows barn", mode=mode)["entries"]}
        assert gone["id"] not in ids and keep["id"] in ids, mode
