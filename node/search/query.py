"""The text query language: phrases, prefixes and words, compiled to FTS5 that cannot fail.

A query reaches SQLite's FTS5 parser, whose syntax (``AND``/``OR``/``NOT``/``NEAR``, column
filters, ``^``, parentheses, quotes) would turn ordinary text into errors or into a different
question. So nothing the caller wrote is passed through: the query is cut into phrases
(``"..."``), prefix words (``word*``) and words, and each becomes a quoted FTS5 string with
quotes doubled (SPEC-003 §12.2). An unbalanced quote is text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words that say nothing on their own: left out of the any-word fallback, where they would let
# every entry that contains "the" or "my" in.
STOPWORDS = frozenset((
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "but", "by", "can", "could", "did", "do", "does", "each", "for", "from",
    "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me",
    "more", "most", "my", "no", "not", "of", "on", "or", "our", "out", "so", "some", "than",
    "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "up", "us",
    "was", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with",
    "would", "you", "your",
))
MAX_TERMS = 32  # a longer query says nothing more to BM25 and costs a join per term
# A prefix term makes FTS5 merge the posting lists of every indexed word it starts: "a*" is a
# large share of the vocabulary. Thirty such terms (``a* b* ... 4* zzqqxx``) cost ~2.9 s of CPU
# on 100k entries, twice (all words, then any word). So a star counts only on a word of at least
# MIN_PREFIX characters, and on at most MAX_PREFIX_TERMS words of a query; on any other word
# the star is dropped and the word is searched as a plain word (SPEC-003 §12.2).
MIN_PREFIX = 3
MAX_PREFIX_TERMS = 4
_PHRASE = re.compile(r'"([^"]*)"')
_WORD = re.compile(r"\w+\*?", re.UNICODE)


@dataclass(frozen=True)
class TextQuery:
    """Terms of a query, each already a valid FTS5 string expression."""

    terms: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.terms

    def all_terms(self) -> str:
        return " AND ".join(self.terms)

    def any_term(self) -> str:
        """Any of the terms that carry meaning (all of them if none does)."""
        telling = [t for t in self.terms if t.strip('"*').casefold() not in STOPWORDS]
        return " OR ".join(telling or self.terms)


def _quote(words: list[str]) -> str:
    return '"' + " ".join(w.replace('"', '""') for w in words) + '"'


def parse(query: str) -> TextQuery:
    """Phrases in balanced double quotes, then words; ``word*`` keeps its prefix star when
    the word has at least MIN_PREFIX characters and fewer than MAX_PREFIX_TERMS prefix terms
    came before it (otherwise it is a plain word)."""
    terms: list[str] = []
    rest: list[str] = []
    pos = 0
    for m in _PHRASE.finditer(query):
        rest.append(query[pos : m.start()])
        words = [w.rstrip("*") for w in _WORD.findall(m.group(1))]
        words = [w for w in words if w]
        if words:
            terms.append(_quote(words))
        pos = m.end()
    rest.append(query[pos:])
    prefixes: set[str] = set()
    for chunk in rest:
        for word in _WORD.findall(chunk.replace('"', " ")):
            prefix = word.endswith("*")
            word = word.rstrip("*")
            if not word:
                continue
            term = _quote([word])
            if prefix and len(word) >= MIN_PREFIX and (
                    term in prefixes or len(prefixes) < MAX_PREFIX_TERMS):
                prefixes.add(term)
                term += "*"
            terms.append(term)
    seen: dict[str, None] = {}
    for t in terms:
        seen.setdefault(t, None)
    return TextQuery(tuple(seen)[:MAX_TERMS])
