"""The cortices a node hosts and its routing settings, read from config.toml (SPEC-006 §2).

``[cortex.<name>]`` tables describe cortices; ``[routing]`` tunes the frontal lobe and the
router. Keys are referenced by environment variable name only: a table holding a key inline
stops the node, and no error message ever repeats a value that might be one.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError

# Kinds that answer chat completions; the frontal lobe chooses among these only (SPEC-006 §5).
CHAT_KINDS: tuple[str, ...] = (
    "reasoning",
    "chat",
    "creative",
    "vision",
    "audio",
    "memory-consolidation",
    "salience",
)
EMBEDDING = "embedding"  # answers embeddings and nothing else (SPEC-006 §13)
KINDS: tuple[str, ...] = (*CHAT_KINDS, EMBEDDING)
DEFAULT_EMBEDDING = "wordllama"  # the local default embedding cortex every node has (§13.1)
MAX_DIMENSIONS = 4096
MAX_EMBED_INPUTS = 256  # one embeddings request (SPEC-006 §13.5); OpenAI allows 2048
MAX_EMBED_CHARS = 16_384  # one input
CAPABILITIES: tuple[str, ...] = ("text", "image", "audio")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}\Z")
RESERVED_NAMES = frozenset({"auto", DEFAULT_EMBEDDING})
SECRET_FIELDS = frozenset({"api_key", "key", "token", "secret", "password"})
MAX_CORTICES = 64

# Built-in classifier vocabulary (SPEC-006 §5.3); ``[routing] keywords`` replaces a kind's list.
DEFAULT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "reasoning": (
        "prove", "proof", "derive", "calculate", "compute", "solve", "equation", "theorem",
        "algorithm", "debug", "analyze", "analyse", "reason", "logic", "step by step",
        "why does", "complexity", "optimize", "optimise", "refactor",
    ),
    "creative": (
        "poem", "story", "haiku", "lyrics", "song", "novel", "fiction", "imagine", "invent",
        "brainstorm", "slogan", "tagline", "write a joke", "creative",
    ),
    "memory-consolidation": (
        "summarize my", "summarise my", "consolidate", "what did i", "remember when",
        "my notes", "journal", "recap",
    ),
    "salience": ("important", "urgent", "prioritize", "prioritise", "priority", "triage"),
    "vision": ("image", "picture", "photo", "screenshot", "diagram"),
    "audio": ("transcribe", "audio", "recording", "podcast"),
    "chat": (),
}


@dataclass(frozen=True, slots=True)
class Cortex:
    """One cortex this node hosts. ``api_key_env`` is a variable name, never the key."""

    name: str
    kind: str
    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    capabilities: frozenset[str] = frozenset({"text"})
    max_concurrency: int = 4
    context_window: int = 8192
    remote: bool = False
    timeout: float = 120.0
    dimensions: int | None = None  # embedding cortices only: the length of every vector

    def api_key(self) -> str | None:
        """The key, read from the environment at call time (SPEC-006 §8.1)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def key_missing(self) -> bool:
        return bool(self.api_key_env) and not os.environ.get(self.api_key_env or "")

    def __repr__(self) -> str:
        # Only names and shapes; the key itself is never held by this object.
        return f"Cortex({self.name!r}, kind={self.kind!r}, model={self.model!r})"


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """``[routing]``: how the frontal lobe and the router behave on this node."""

    default_kind: str = "chat"
    cooldown_seconds: float = 30.0
    first_chunk_timeout: float = 60.0
    request_timeout: float = 300.0
    remote_fallback: bool = True
    # one answer's total bounds (SPEC-006 §6.6): a backend never streams forever
    max_answer_bytes: int = 16 * 1024 * 1024
    max_answer_chunks: int = 100_000
    max_answer_seconds: float = 900.0
    # seconds after this node first applied host approval during which peers' cortices are
    # approved as they are seen (SPEC-006 006.6.7); after it, a new one waits for the owner
    learning_seconds: float = 600.0
    keywords: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_KEYWORDS)
    )


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    cortices: tuple[Cortex, ...] = ()
    settings: RoutingSettings = field(default_factory=RoutingSettings)


_CORTEX_FIELDS = frozenset({
    "kind", "model", "api_base", "api_key_env", "capabilities", "max_concurrency",
    "context_window", "remote", "timeout", "dimensions",
})
_ROUTING_FIELDS = frozenset({
    "default_kind", "cooldown_seconds", "first_chunk_timeout", "request_timeout",
    "remote_fallback", "keywords", "max_answer_bytes", "max_answer_chunks", "max_answer_seconds",
    "learning_seconds",
})


def load_routing_config(extra: Mapping[str, Any]) -> RoutingConfig:
    """Parse ``[cortex.*]`` and ``[routing]`` from ``NodeConfig.extra``; ConfigError if wrong."""
    tables = extra.get("cortex", {})
    if not isinstance(tables, Mapping):
        raise ConfigError("config.toml: [cortex] must hold [cortex.<name>] tables")
    if len(tables) > MAX_CORTICES:
        raise ConfigError(f"config.toml: at most {MAX_CORTICES} cortices per node")
    cortices = tuple(_cortex(name, table) for name, table in tables.items())
    routing = extra.get("routing", {})
    if not isinstance(routing, Mapping):
        raise ConfigError("config.toml: [routing] must be a table")
    return RoutingConfig(cortices, _settings(routing))


def _cortex(name: Any, table: Any) -> Cortex:
    where = f"config.toml [cortex.{name}]"
    if not isinstance(name, str) or not NAME_RE.match(name) or name in RESERVED_NAMES:
        raise ConfigError(
            f"{where}: a cortex name is lowercase letters, digits, '.', '_' or '-' "
            f"(at most 63 characters), and not 'auto' or '{DEFAULT_EMBEDDING}'"
        )
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    for key in table:
        if str(key).lower() in SECRET_FIELDS:
            raise ConfigError(
                f"{where}.{key}: keys are not stored in config.toml; put the key in an "
                "environment variable and name that variable in api_key_env"
            )
        if key not in _CORTEX_FIELDS:
            raise ConfigError(f"{where}.{key} is not a cortex setting")
    kind = table.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(KINDS)}")
    model = table.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise ConfigError(f"{where}.model must be a litellm model string, e.g. 'ollama/llama3'")
    api_base = table.get("api_base")
    if api_base is not None and (
        not isinstance(api_base, str) or not re.match(r"^https?://[^\s]{1,500}$", api_base)
    ):
        raise ConfigError(f"{where}.api_base must be an http:// or https:// URL")
    env = table.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not ENV_NAME_RE.match(env)):
        raise ConfigError(
            f"{where}.api_key_env must be the NAME of an environment variable "
            "(capital letters, digits and '_')"
        )
    caps = table.get("capabilities", ["text"])
    if (
        not isinstance(caps, list)
        or not caps
        or any(c not in CAPABILITIES for c in caps)
    ):
        raise ConfigError(f"{where}.capabilities must be a list of {', '.join(CAPABILITIES)}")
    dimensions = None
    if kind == EMBEDDING:
        if set(caps) != {"text"}:
            raise ConfigError(f"{where}.capabilities of an embedding cortex must be [\"text\"]")
        if "dimensions" not in table:
            raise ConfigError(f"{where}.dimensions is required for kind = \"embedding\" "
                              "(the length of the model's vectors)")
        dimensions = _int(table, "dimensions", 0, 1, MAX_DIMENSIONS, where)
    elif "dimensions" in table:
        raise ConfigError(f"{where}.dimensions is only for kind = \"embedding\"")
    return Cortex(
        name=name,
        kind=kind,
        model=model.strip(),
        api_base=api_base,
        api_key_env=env,
        capabilities=frozenset(caps),
        max_concurrency=_int(table, "max_concurrency", 4, 1, 256, where),
        context_window=_int(table, "context_window", 8192, 256, 10_000_000, where),
        remote=_bool(table, "remote", False, where),
        timeout=_number(table, "timeout", 120.0, 1, 600, where),
        dimensions=dimensions,
    )


def _settings(table: Mapping[str, Any]) -> RoutingSettings:
    where = "config.toml [routing]"
    for key in table:
        if key not in _ROUTING_FIELDS:
            raise ConfigError(f"{where}.{key} is not a routing setting")
    default_kind = table.get("default_kind", "chat")
    if default_kind not in CHAT_KINDS:
        raise ConfigError(f"{where}.default_kind must be one of {', '.join(CHAT_KINDS)}")
    keywords = dict(DEFAULT_KEYWORDS)
    custom = table.get("keywords", {})
    if not isinstance(custom, Mapping):
        raise ConfigError(f"{where}.keywords must be a table of kind = [words]")
    for kind, words in custom.items():
        if kind not in CHAT_KINDS:
            raise ConfigError(f"{where}.keywords.{kind}: not a kind ({', '.join(CHAT_KINDS)})")
        if (
            not isinstance(words, list)
            or len(words) > 500
            or any(not isinstance(w, str) or not w.strip() or len(w) > 100 for w in words)
        ):
            raise ConfigError(f"{where}.keywords.{kind} must be a list of at most 500 words")
        keywords[kind] = tuple(w.strip().lower() for w in words)
    return RoutingSettings(
        default_kind=default_kind,
        cooldown_seconds=_number(table, "cooldown_seconds", 30.0, 1, 3600, where),
        first_chunk_timeout=_number(table, "first_chunk_timeout", 60.0, 1, 600, where),
        request_timeout=_number(table, "request_timeout", 300.0, 1, 600, where),
        remote_fallback=_bool(table, "remote_fallback", True, where),
        max_answer_bytes=_int(table, "max_answer_bytes", 16 * 1024 * 1024, 1024, 1 << 30, where),
        max_answer_chunks=_int(table, "max_answer_chunks", 100_000, 1, 10_000_000, where),
        max_answer_seconds=_number(table, "max_answer_seconds", 900.0, 1, 86_400, where),
        learning_seconds=_number(table, "learning_seconds", 600.0, 0, 86_400, where),
        keywords=keywords,
    )


def _int(table: Mapping[str, Any], key: str, default: int, lo: int, hi: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{where}.{key} must be an integer from {lo} to {hi}")
    return value


def _number(
    table: Mapping[str, Any], key: str, default: float, lo: float, hi: float, where: str
) -> float:
    value = table.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not lo <= value <= hi
    ):
        raise ConfigError(f"{where}.{key} must be a number from {lo:g} to {hi:g}")
    return float(value)


def _bool(table: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false")
    return value
