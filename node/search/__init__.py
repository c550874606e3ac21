"""Ranked and semantic search over Memory (SPEC-001 §7.5, SPEC-003 §12).

The index is Runtime: a SQLite database (FTS5 for BM25 text ranking, float16 vectors) and an
int8 vector matrix searched exactly in memory, both derived from the memory documents and
rebuilt when deleted. ``index.SearchIndex`` keeps it up to date and answers queries,
``embedder`` turns text into vectors (a local model by default, behind an interface a routed
embedding cortex can implement), ``feature`` runs it inside a node and ``routes`` serves
``GET /v1/memory/search``.
"""
