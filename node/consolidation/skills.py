"""Skills: entries that say how to do something (SPEC-006 §12.6).

A skill's ``name``, ``when_to_use`` and ``steps`` are signed fields of a ``skill`` entry; its
``text`` is rendered from them, so the word search and session context find a skill like any
other entry. A skill with the name of a current one supersedes it, so a name means one skill.
"""

from __future__ import annotations

import re
from typing import Any

from ..memory import Memory, new_entry_id, now_iso, shard_of
from .fields import index_rows, mark_superseded, set_fields

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\Z")
MAX_WHEN = 500
MAX_STEPS = 50
MAX_STEP = 1000
ALL = 10**9

SKILL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "when_to_use", "steps"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_RE.pattern},
        "when_to_use": {"type": "string", "minLength": 1, "maxLength": MAX_WHEN},
        "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS,
                  "items": {"type": "string", "minLength": 1, "maxLength": MAX_STEP}},
        "tags": {"type": "array", "maxItems": 16,
                 "items": {"type": "string", "minLength": 1, "maxLength": 64,
                           "pattern": r"^[^\s]+$"}},
    },
}


def validate_skill(name: Any, when_to_use: Any, steps: Any) -> None:
    """ValueError unless the fields are a well-formed skill (also for callers besides HTTP)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError("name must be 1 to 64 lower-case letters, digits and dashes")
    if not isinstance(when_to_use, str) or not 1 <= len(when_to_use.strip()) <= MAX_WHEN:
        raise ValueError(f"when_to_use must be 1 to {MAX_WHEN} characters")
    if (not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS
            or not all(isinstance(s, str) and 1 <= len(s.strip()) <= MAX_STEP for s in steps)):
        raise ValueError(f"steps must be 1 to {MAX_STEPS} texts of 1 to {MAX_STEP} characters")


def render(name: str, when_to_use: str, steps: list[str]) -> str:
    numbered = " ".join(f"{i}) {' '.join(s.split())}" for i, s in enumerate(steps, 1))
    return f"skill {name}: when {' '.join(when_to_use.split())}. Steps: {numbered}"


def list_skills(memory: Memory) -> list[dict[str, Any]]:
    """Current skills (one per name, the newest), by name."""
    seen: dict[str, dict[str, Any]] = {}
    for row in memory.list(kind="skill", limit=ALL):  # newest first
        name = row.get("name")
        if not isinstance(name, str) or name in seen:
            continue
        try:  # a member's device may have written any shape: only well-formed skills list
            validate_skill(name, row.get("when_to_use"), row.get("steps"))
        except ValueError:
            continue
        seen[name] = row
    return [seen[n] for n in sorted(seen)]


def get_skill(memory: Memory, name: str) -> dict[str, Any] | None:
    for row in list_skills(memory):
        if row["name"] == name:
            return row
    return None


def add_skill(memory: Memory, name: str, when_to_use: str, steps: list[str],
              tags: list[str] | None = None, by: dict[str, str] | None = None,
              ) -> dict[str, Any]:
    validate_skill(name, when_to_use, steps)
    steps = [" ".join(s.split()) for s in steps]
    when_to_use = " ".join(when_to_use.split())
    new_id = new_entry_id("skill")
    fields = {"name": name, "when_to_use": when_to_use, "steps": steps}
    item: dict[str, Any] = {"id": new_id, "text": render(name, when_to_use, steps),
                            "kind": "skill", "tags": list(dict.fromkeys(tags or []))}
    extra = {shard_of(new_id): [set_fields(new_id, fields)]}
    old = get_skill(memory, name)
    if old is not None:
        item["supersedes"] = old["id"]
        extra.setdefault(shard_of(old["id"]), []).append(
            mark_superseded(old["id"], new_id, now_iso()))
    row = memory.add_many([item], by=by, extra=extra)[0] | fields
    index_rows(memory, [row])
    return row
