"""The shape of a chat completion request (SPEC-006 §4.2, §7.8): the local route and the host
of a peer's request hold a body to the same schema, so it lives apart from both (the route
module imports the API, the peer protocol must not depend on it for this)."""

from __future__ import annotations

#: What a request body carries for the node that received it only; the rest goes to the host
#: (§7.2), and a peer's body may not carry these.
RESERVED_BODY_KEYS = ("model", "stream", "metadata")

_TEXT = {"type": "string", "maxLength": 262_144}
_OBJECT = {"type": "object"}
_CONTENT_PART = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "maxLength": 64},
        "text": _TEXT,
        "image_url": _OBJECT,
        "input_audio": _OBJECT,
        "file": _OBJECT,
        "refusal": _TEXT,
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "additionalProperties": False,
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        "content": {
            "anyOf": [
                _TEXT,
                {"type": "null"},
                {"type": "array", "maxItems": 256, "items": _CONTENT_PART},
            ]
        },
        "name": {"type": "string", "maxLength": 256},
        "tool_calls": {"type": "array", "maxItems": 128, "items": _OBJECT},
        "tool_call_id": {"type": "string", "maxLength": 256},
        "function_call": {"type": ["object", "null"]},
        "refusal": {"type": ["string", "null"], "maxLength": 262_144},
        "audio": {"type": ["object", "null"]},
        "reasoning_content": {"type": ["string", "null"], "maxLength": 262_144},
    },
}
# OpenAI's chat completion request fields; fields maia-node does not pass on are accepted and
# ignored (store, service_tier, ...), anything else is refused (SPEC-006 §4.2).
CHAT_SCHEMA = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 200},
        "messages": {"type": "array", "minItems": 1, "maxItems": 2048, "items": _MESSAGE},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {"include_usage": {"type": "boolean"}},
        },
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 8},
        "stop": {"anyOf": [
            {"type": ["string", "null"], "maxLength": 256},
            {"type": "array", "maxItems": 4, "items": {"type": "string", "maxLength": 256}},
        ]},
        "max_tokens": {"type": ["integer", "null"], "minimum": 1},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
        "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "logit_bias": {"type": ["object", "null"], "maxProperties": 300},
        "user": {"type": "string", "maxLength": 256},
        "seed": {"type": ["integer", "null"]},
        "tools": {"type": "array", "maxItems": 128, "items": _OBJECT},
        "tool_choice": {"type": ["string", "object"]},
        "parallel_tool_calls": {"type": "boolean"},
        "response_format": _OBJECT,
        "logprobs": {"type": ["boolean", "null"]},
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
        "reasoning_effort": {"type": ["string", "null"], "maxLength": 32},
        "modalities": {"type": ["array", "null"], "maxItems": 4,
                       "items": {"type": "string", "maxLength": 32}},
        "audio": {"type": ["object", "null"]},
        "metadata": {"type": ["object", "null"], "maxProperties": 16,
                     "additionalProperties": {"type": "string", "maxLength": 512}},
        "store": {"type": ["boolean", "null"]},
        "service_tier": {"type": ["string", "null"], "maxLength": 32},
        "prediction": {"type": ["object", "null"]},
        "web_search_options": {"type": ["object", "null"]},
    },
}
