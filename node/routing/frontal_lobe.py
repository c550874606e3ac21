"""The frontal lobe: which kind of cortex should answer an ``auto`` request (SPEC-006 §5).

A switchboard, not a calculator: cheap rules first (an explicit hint, image input → vision,
audio input → audio), then a small keyword classifier over the last user message, then the
configured default. It reads only the request (no I/O, no model call), so a decision costs
tens of microseconds; ``scripts/bench/routing_bench.py`` measures it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import CHAT_KINDS as KINDS
from .config import RoutingSettings
from .shapes import last_user_text, needed_capabilities

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_HASH_HINT = re.compile(r"^\s*#([a-z][a-z-]{1,30})\b")
TEXT_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Decision:
    """The chosen kind and the rule that chose it (shown in ``X-Maia-Decision``)."""

    kind: str
    rule: str  # hint | image | audio | keywords | default


class FrontalLobe:
    """Classifies requests into kinds; built once from ``[routing]``, then read-only."""

    def __init__(self, settings: RoutingSettings) -> None:
        self.default_kind = settings.default_kind
        self._words: list[tuple[str, frozenset[str]]] = []
        self._phrases: list[tuple[str, tuple[str, ...]]] = []
        for kind in KINDS:
            terms = settings.keywords.get(kind, ())
            words = frozenset(t for t in terms if _WORD.fullmatch(t))
            phrases = tuple(t for t in terms if t not in words)
            self._words.append((kind, words))
            self._phrases.append((kind, phrases))

    def decide(self, body: Mapping[str, Any]) -> Decision:
        """The kind for ``body`` (an already validated chat completion request)."""
        metadata = body.get("metadata")
        if isinstance(metadata, Mapping) and metadata.get("cortex_kind") in KINDS:
            return Decision(metadata["cortex_kind"], "hint")
        text = last_user_text(body, TEXT_LIMIT)  # type: ignore[arg-type]
        hint = _HASH_HINT.match(text)
        if hint and hint.group(1) in KINDS:
            return Decision(hint.group(1), "hint")
        needs = needed_capabilities(body)  # type: ignore[arg-type]
        if "image" in needs:
            return Decision("vision", "image")
        if "audio" in needs:
            return Decision("audio", "audio")
        kind = self.classify(text)
        if kind is not None:
            return Decision(kind, "keywords")
        return Decision(self.default_kind, "default")

    def classify(self, text: str) -> str | None:
        """The kind whose keywords the text matches most; None when none match."""
        lowered = text[:TEXT_LIMIT].lower()
        words = set(_WORD.findall(lowered))
        best, best_score = None, 0
        for (kind, kind_words), (_, phrases) in zip(self._words, self._phrases, strict=True):
            score = len(words & kind_words) if kind_words else 0
            for phrase in phrases:
                if phrase in lowered:
                    score += 1
            if score > best_score:  # strict: ties keep the kind listed first
                best, best_score = kind, score
        return best
