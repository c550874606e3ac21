"""OpenAI-compatible routes: chat completions (plain and SSE) and the mesh's models (SPEC-006 §4).

Any OpenAI client works against a node with ``base_url=http://<node>:<port>/v1`` and the node's
API token as its key. The router decides where a request runs; these handlers only translate:
routing errors become problem+json, answers are sent as the router hands them over, and a
stream's headers go out only once its first chunk is in hand, so a failure before it is still
a fallback or a proper status. ``X-Maia-Cortex-Host`` says which device's backend answered.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from aiohttp import web

from ..api.headers import header_text
from ..api.middleware import BODY_KEY
from ..api.problem import Problem
from ..api.routes import RouteTable
from ..api.scopes import MODELS_ASK, require_scope
from .config import MAX_EMBED_CHARS, MAX_EMBED_INPUTS
from .embeddings import Embeddings, openai_answer
from .errors import AttemptFailed, NoRoute, RoutingError
from .router import Candidate, Opened, Plan, Router
from .schemas import CHAT_SCHEMA
from .trust import HostApprovals

log = logging.getLogger(__name__)

ROUTER_KEY: web.AppKey[Router] = web.AppKey("maia_router", Router)
EMBEDDINGS_KEY: web.AppKey[Embeddings] = web.AppKey("maia_embeddings", Embeddings)
APPROVALS_KEY: web.AppKey[HostApprovals] = web.AppKey("maia_host_approvals", HostApprovals)
ALLOW_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["device_id"],
    "properties": {
        "device_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$", "maxLength": 63},
    },
}
openai_routes = RouteTable("openai", requires=[ROUTER_KEY, EMBEDDINGS_KEY])

_INPUT = {"type": "string", "minLength": 1, "maxLength": MAX_EMBED_CHARS}
# OpenAI's embeddings request (SPEC-006 §13.5); vectors are only sent as floats, and a model's
# dimensions are its own (asking another length is refused, not silently ignored).
EMBEDDINGS_SCHEMA = {
    "type": "object",
    "required": ["model", "input"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 200},
        "input": {"anyOf": [
            _INPUT,
            {"type": "array", "minItems": 1, "maxItems": MAX_EMBED_INPUTS, "items": _INPUT},
        ]},
        "encoding_format": {"enum": ["float"]},
        "user": {"type": "string", "maxLength": 256},
    },
}

_TITLES = {
    "unknown-cortex": "Unknown cortex",
    "unsupported-input": "The cortex does not take this input",
    "context-window": "The prompt exceeds the context window",
    "backend-rejected": "The model backend rejected the request",
    "no-route": "No host can answer",
    "timeout": "The model did not answer in time",
    "answer-limit": "The answer went over this node's bounds",
    "wrong-kind": "The model is of the other kind (chat or embedding)",
    "bad-upstream": "The model answered something that is not a valid answer",
}


def _problem(exc: RoutingError) -> Problem:
    headers = None
    if isinstance(exc, NoRoute):  # SPEC-006 §10.4: retry only when it can help
        headers = ({"Retry-After": str(exc.retry_after)} if exc.retry_after
                   else {"x-should-retry": "false"})
    return Problem(
        exc.status, _TITLES.get(exc.slug), exc.detail,
        type=f"urn:maia-node:problem:{exc.slug}", headers=headers, **exc.extra,
    )


def _headers(plan: Plan, candidate: Candidate) -> dict[str, str]:
    """Who answered and why; a peer names its cortex and a model's answer can shape the
    decision's note, so each value is made safe for a header (node.api.headers)."""
    headers = {"X-Maia-Cortex-Host": header_text(candidate.where),
               "X-Maia-Cortex": header_text(candidate.cortex.name)}
    if plan.decision_header:
        headers["X-Maia-Decision"] = header_text(plan.decision_header)
    return headers


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@openai_routes.post("/v1/chat/completions", body_schema=CHAT_SCHEMA, streaming=True,
                     principal_kinds=("local", "session"), scope=MODELS_ASK)
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """An OpenAI chat completion, answered by the cortex the request names (or auto)."""
    router = request.app[ROUTER_KEY]
    try:
        plan = router.plan(request[BODY_KEY])
        if not plan.stream:
            candidate, answer = await router.complete(plan)
            return web.json_response(answer, headers=_headers(plan, candidate))
        opened = await router.open_stream(plan)
    except RoutingError as exc:
        raise _problem(exc) from None
    return await _stream(request, plan, opened)


async def _stream(request: web.Request, plan: Plan, opened: Opened) -> web.StreamResponse:
    """SSE: each chunk as it comes, then [DONE]; a late failure is one error event."""
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "X-Accel-Buffering": "no",
        **_headers(plan, opened.candidate),
    })
    try:
        await response.prepare(request)
        event = opened.first
        while event[0] == "chunk":
            await response.write(b"data: " + _dumps(event[1]) + b"\n\n")
            try:
                event = await anext(opened)
            except StopAsyncIteration:
                break
        await response.write(b"data: [DONE]\n\n")
    except AttemptFailed as exc:
        log.warning("stream from %s on %s broke after its first chunk: %s",
                    opened.candidate.cortex.name, opened.candidate.where, exc.code)
        error = {"error": {"message": f"the answer broke off: {exc.detail}",
                           "type": "maia_node_error", "code": exc.code}}
        with contextlib.suppress(ConnectionError):
            await response.write(b"event: error\ndata: " + _dumps(error) + b"\n\n")
    except ConnectionError:
        log.debug("client left a stream from %s", opened.candidate.cortex.name)
    finally:
        await opened.aclose()
    return response


@openai_routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    """Every cortex reachable in the mesh now, plus the auto and cortex/<kind> aliases."""
    data = request.app[ROUTER_KEY].models()
    local_default = request.app[EMBEDDINGS_KEY].model_entry()
    if local_default is not None:  # every node's own embedding cortex (SPEC-006 §13.1)
        at = next(i for i, m in enumerate(data) if m["id"] == "auto")
        data.insert(at, local_default)
        if not any(m["id"] == "cortex/embedding" for m in data):
            data.append({"id": "cortex/embedding", "object": "model", "created": 0,
                         "owned_by": "maia-node", "maia": {"alias": "any embedding cortex"}})
    return web.json_response({"object": "list", "data": data})


@openai_routes.post("/v1/cortices/allow", body_schema=ALLOW_SCHEMA)
async def allow_cortex_host(request: web.Request) -> web.Response:
    """Approve a peer's cortex (or every cortex it offers now) on this node (SPEC-006 006.6.7)."""
    body = request[BODY_KEY]
    registry = request.app[ROUTER_KEY].registry
    wanted = body["device_id"]
    hosts = [h for h in registry.hosts() if not h.local and h.device_id.startswith(wanted)]
    if len({h.key for h in hosts}) != 1:
        raise Problem(404 if not hosts else 409, "No such cortex host" if not hosts else
                      "Ambiguous device", f"{'no' if not hosts else 'more than one'} connected "
                      f"device offering cortices has an id starting {wanted!r}")
    host = hosts[0]
    names = [body["name"]] if "name" in body else sorted(host.cortices)
    unknown = [n for n in names if n not in host.cortices]
    if unknown:
        raise Problem(404, "No such cortex", f"{host.device_id} does not offer {unknown[0]!r} now")
    approvals = request.app[APPROVALS_KEY]
    for name in names:
        approvals.approve(host.key, name)
    log.warning("cortex host approved by the owner: %s for %s", host.device_id, ", ".join(names))
    return web.json_response({"device_id": host.device_id, "approved": names})


@openai_routes.post("/v1/embeddings", body_schema=EMBEDDINGS_SCHEMA,
                     principal_kinds=("local", "session"))
async def embeddings(request: web.Request) -> web.Response:
    """OpenAI embeddings from the embedding cortex the request names (SPEC-006 §13.5)."""
    require_scope(request, MODELS_ASK)  # like chat: asking a model is models:ask (SPEC-003 §6.7)
    body = request[BODY_KEY]
    inputs = [body["input"]] if isinstance(body["input"], str) else list(body["input"])
    try:
        got = await request.app[EMBEDDINGS_KEY].embed(body["model"], inputs)
    except RoutingError as exc:
        raise _problem(exc) from None
    return web.json_response(openai_answer(got), headers={  # a peer's words (003.10.4)
        "X-Maia-Cortex-Host": header_text(got.host), "X-Maia-Cortex": header_text(got.name)})
