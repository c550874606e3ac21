"""The baseline for the search benchmark: the plainest hybrid search one would write by hand.

SQLite FTS5 (BM25) in one file, every vector of the same local model in one float32 numpy
matrix searched exactly, reciprocal rank fusion of the two, served over aiohttp with no
authentication, validation or middleware. It does the same job on the same data as the node
(same embedding model, same fusion), so the ratios show what the node's index and API add or
save. Run by ``search_bench.py`` as its own process:

    python scripts/bench/search_baseline.py ENTRIES.jsonl DB_PATH PORT
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from node.search.embedder import WordLlamaEmbedder  # noqa: E402

WORD = re.compile(r"\w+", re.UNICODE)
RRF_K = 60


def build(entries_path: Path, db_path: Path) -> tuple[sqlite3.Connection, np.ndarray, list[str],
                                                      dict[str, float]]:
    entries = [json.loads(line) for line in entries_path.read_text().splitlines() if line]
    texts = [e["text"] for e in entries]
    t0 = time.perf_counter()
    db = sqlite3.connect(db_path, check_same_thread=False)
    db.execute("CREATE VIRTUAL TABLE fts USING fts5(text, tags, tokenize='porter unicode61')")
    db.executemany("INSERT INTO fts(rowid, text, tags) VALUES(?, ?, ?)",
                   [(i, e["text"], " ".join(e.get("tags", []))) for i, e in enumerate(entries)])
    db.commit()
    fts_s = time.perf_counter() - t0
    model = WordLlamaEmbedder()
    t0 = time.perf_counter()
    parts = [model.embed(texts[i : i + 256]) for i in range(0, len(texts), 256)]
    matrix = np.concatenate(parts)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    embed_s = time.perf_counter() - t0
    return db, matrix, texts, {"fts_s": fts_s, "embed_s": embed_s, "model": model}


def main() -> None:
    entries_path, db_path, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    db, matrix, texts, info = build(entries_path, db_path)
    model = info.pop("model")

    async def search(request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        limit = int(request.query.get("limit", "20"))
        depth = max(3 * limit, 50)
        words = WORD.findall(q)
        text_ids: list[int] = []
        if words:
            match = " OR ".join('"' + w + '"' for w in words)
            text_ids = [r for (r,) in db.execute(
                "SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY bm25(fts) LIMIT ?",
                (match, depth))]
        qv = model.embed([q])[0]
        qv /= max(float(np.linalg.norm(qv)), 1e-12)
        sims = matrix @ qv
        top = np.argpartition(-sims, min(depth, len(sims) - 1))[:depth]
        vec_ids = [int(i) for i in top[np.argsort(-sims[top])]]
        scores: dict[int, float] = {}
        for ranking in (text_ids, vec_ids):
            for rank, i in enumerate(ranking):
                scores[i] = scores.get(i, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(scores, key=lambda i: -scores[i])[:limit]
        return web.json_response({"entries": [{"text": texts[i], "score": scores[i]}
                                              for i in best]})

    app = web.Application()
    app.router.add_get("/search", search)
    sys.stdout.write(json.dumps({"ready": True, **info}) + "\n")
    sys.stdout.flush()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
