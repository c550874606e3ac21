"""The OpenAI chat-completion shapes maia-node accepts, emits and checks (SPEC-006 §4.6, §10.3).

Chunks and answers from a backend or a peer are untrusted (SPEC-003 §6.6): they are rebuilt
here from explicit fields, so nothing else ever leaves the node, and anything that does not
fit raises :class:`Garbage`. Also here: what a request needs (image or audio input) and a
cheap estimate of its prompt size, both pure functions that cost microseconds.
"""

from __future__ import annotations

import time
from typing import Any

MAX_CHOICES = 16
MAX_TOOL_CALLS = 128
MAX_TEXT = 4 * 1024 * 1024
TOKENS_PER_MESSAGE = 4
BYTES_PER_TOKEN = 4

_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_AUDIO_PARTS = frozenset({"input_audio", "audio"})


class Garbage(ValueError):
    """A backend or peer answered something that is not the shape it must have."""


# -- requests -------------------------------------------------------------------------------------
def needed_capabilities(body: dict[str, Any]) -> frozenset[str]:
    """``text`` plus ``image`` / ``audio`` when the request carries such input."""
    needs = {"text"}
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        needs.add("audio")
    for message in body.get("messages", ()):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in _IMAGE_PARTS:
                    needs.add("image")
                elif kind in _AUDIO_PARTS:
                    needs.add("audio")
    return frozenset(needs)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A cheap upper-ish estimate: UTF-8 bytes of the text / 4, plus 4 per message.

    Exact counts need the model's tokenizer (``litellm.token_counter``), which the host runs
    only when this estimate is close to the limit.
    """
    total = 0
    messages = body.get("messages", ())
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.encode("utf-8", "surrogatepass"))
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"].encode("utf-8", "surrogatepass"))
        for key in ("name", "tool_call_id"):
            if isinstance(message.get(key), str):
                total += len(message[key])
    return total // BYTES_PER_TOKEN + TOKENS_PER_MESSAGE * len(messages)


def last_user_text(body: dict[str, Any], limit: int = 4096) -> str:
    """The first ``limit`` characters of the last user message's text."""
    for message in reversed(body.get("messages", ())):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content[:limit]
        if isinstance(content, list):
            texts = [
                p["text"] for p in content
                if isinstance(p, dict) and p.get("type") == "text"
                and isinstance(p.get("text"), str)
            ]
            return " ".join(texts)[:limit]
        return ""
    return ""


# -- answers --------------------------------------------------------------------------------------
def clean_chunk(raw: Any, model: str) -> dict[str, Any]:
    """A ``chat.completion.chunk`` rebuilt from ``raw``'s known fields; Garbage if it is not one."""
    if not isinstance(raw, dict):
        raise Garbage("a chunk is not an object")
    choices = raw.get("choices")
    if not isinstance(choices, list) or len(choices) > MAX_CHOICES:
        raise Garbage("a chunk has no valid choices list")
    out_choices = []
    for choice in choices:
        if not isinstance(choice, dict):
            raise Garbage("a chunk choice is not an object")
        delta = choice.get("delta", {})
        if delta is None:
            delta = {}
        out_choices.append({
            "index": _index(choice.get("index", 0)),
            "delta": _message(delta, "delta"),
            "finish_reason": _opt_str(choice.get("finish_reason"), "finish_reason", 64),
        })
    chunk: dict[str, Any] = {
        "id": _str(raw.get("id", ""), "id", 200),
        "object": "chat.completion.chunk",
        "created": _created(raw.get("created")),
        "model": model,
        "choices": out_choices,
    }
    usage = raw.get("usage")
    if usage is not None:
        chunk["usage"] = _usage(usage)
    return chunk


def clean_response(raw: Any, model: str) -> dict[str, Any]:
    """A ``chat.completion`` rebuilt from ``raw``'s known fields; Garbage if it is not one."""
    if not isinstance(raw, dict):
        raise Garbage("an answer is not an object")
    choices = raw.get("choices")
    if not isinstance(choices, list) or not choices or len(choices) > MAX_CHOICES:
        raise Garbage("an answer has no valid choices list")
    out_choices = []
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            raise Garbage("an answer choice has no message")
        message = _message(choice["message"], "message")
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        out_choices.append({
            "index": _index(choice.get("index", 0)),
            "message": message,
            "finish_reason": _opt_str(choice.get("finish_reason"), "finish_reason", 64),
        })
    answer: dict[str, Any] = {
        "id": _str(raw.get("id", ""), "id", 200),
        "object": "chat.completion",
        "created": _created(raw.get("created")),
        "model": model,
        "choices": out_choices,
    }
    if raw.get("usage") is not None:
        answer["usage"] = _usage(raw["usage"])
    return answer


def _message(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Garbage(f"a {what} is not an object")
    out: dict[str, Any] = {}
    if raw.get("role") is not None:
        out["role"] = _str(raw["role"], "role", 32)
    for key in ("content", "refusal", "reasoning_content"):
        if key in raw and (raw[key] is not None or key == "content"):
            out[key] = _opt_str(raw[key], key, MAX_TEXT)
    if raw.get("tool_calls") is not None:
        calls = raw["tool_calls"]
        if not isinstance(calls, list) or len(calls) > MAX_TOOL_CALLS:
            raise Garbage("tool_calls is not a list")
        out["tool_calls"] = [_tool_call(c) for c in calls]
    if raw.get("function_call") is not None:
        out["function_call"] = _function(raw["function_call"])
    return out


def _tool_call(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Garbage("a tool call is not an object")
    out: dict[str, Any] = {}
    if "index" in raw:
        out["index"] = _index(raw["index"])
    for key in ("id", "type"):
        if raw.get(key) is not None:
            out[key] = _str(raw[key], key, 200)
    if raw.get("function") is not None:
        out["function"] = _function(raw["function"])
    return out


def _function(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Garbage("a function call is not an object")
    out: dict[str, Any] = {}
    for key in ("name", "arguments"):
        if raw.get(key) is not None:
            out[key] = _str(raw[key], key, MAX_TEXT)
    return out


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise Garbage("usage is not an object")
    out = {}
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = raw.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
                raise Garbage(f"usage.{key} is not a count")
            out[key] = value
    return out


def _index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1024:
        raise Garbage("an index is not a small integer")
    return value


def _created(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**40:
        return int(time.time())
    return int(value)


def _str(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise Garbage(f"{what} is not a string of at most {limit} characters")
    return value


def _opt_str(value: Any, what: str, limit: int) -> str | None:
    return None if value is None else _str(value, what, limit)
