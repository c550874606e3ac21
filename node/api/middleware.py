"""The middleware chain every maia-node API request passes through.

The order is the SPEC-003 process standard and lives in exactly one place,
:data:`MIDDLEWARES` (aiohttp runs the first entry outermost):

1. errors      - turns every failure below it into problem+json, leaks nothing;
2. limits      - body size and handler time, before any work is spent;
3. auth        - bearer credential -> ``request[PRINCIPAL_KEY]`` (public routes skip);
4. rate limit  - per principal, or per remote address on public routes;
5. validation  - JSON bounds and schemas -> ``request[BODY_KEY]`` / ``request[QUERY_KEY]``.

Middlewares are plain functions and read their configuration from app keys,
so the chain is inspectable by name and identical for every route.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from jsonschema import Draft202012Validator

from crdt import DeviceRevoked, SchemaTooNew, StorageFull

from .auth import Authenticator
from .problem import (
    TYPE_FORBIDDEN_HOST,
    TYPE_FORBIDDEN_ORIGIN,
    TYPE_MALFORMED_JSON,
    TYPE_OVERLOADED,
    TYPE_RATE_LIMITED,
    TYPE_TIMEOUT,
    TYPE_VALIDATION,
    Problem,
    insufficient_scope,
    problem_from_http_exception,
)
from .ratelimit import RateLimiter
from .routes import Handler, mapped_error, route_spec

log = logging.getLogger(__name__)

# Per-request values the middlewares hand to handlers.  aiohttp 3.14 added
# typed request keys (plain strings warn there); older releases only take
# strings, so the same names are used either way.  Always use these constants.
_RequestKey: Any = getattr(web, "RequestKey", None)


def _request_key(name: str, kind: Any) -> Any:
    return _RequestKey(name, kind) if _RequestKey is not None else name


PRINCIPAL_KEY = _request_key("principal", object)  # Principal | None (public route)
BODY_KEY = _request_key("body", object)  # parsed, validated JSON body
QUERY_KEY = _request_key("query", dict)  # validated, coerced query parameters
_STARTED_KEY = _request_key("maia_response_started", bool)  # headers already sent

MiB = 1024 * 1024
KiB = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource bounds (OWASP API4), all on by default.

    ``max_json_string`` counts UTF-8 bytes of any string, object keys included.
    """

    max_body_bytes: int = 1 * MiB
    handler_timeout: float = 30.0
    rate_per_second: float = 100.0
    rate_burst: int = 200
    rate_max_clients: int = 10_000
    max_json_depth: int = 32
    max_json_string: int = 256 * KiB
    max_json_array: int = 10_000
    max_reported_errors: int = 20
    max_in_flight: int = 64
    max_streams: int = 64

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "handler_timeout",
            "rate_per_second",
            "rate_burst",
            "rate_max_clients",
            "max_json_depth",
            "max_json_string",
            "max_json_array",
            "max_reported_errors",
            "max_in_flight",
            "max_streams",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive")


LIMITS_KEY: web.AppKey[Limits] = web.AppKey("maia_limits", Limits)
IN_FLIGHT_KEY: web.AppKey[list[int]] = web.AppKey("maia_in_flight", list)
STREAMS_KEY: web.AppKey[list[int]] = web.AppKey("maia_streams", list)
AUTHENTICATORS_KEY: web.AppKey[tuple[Authenticator, ...]] = web.AppKey(
    "maia_authenticators", tuple
)
RATE_LIMITER_KEY: web.AppKey[RateLimiter] = web.AppKey("maia_rate_limiter", RateLimiter)


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which `Host` and `Origin` a listener answers (SPEC-003 §2.4, §2.5; DNS rebinding).

    ``check_host`` is off on the peer listener (peers dial it by address). ``any_ip`` admits
    every IP literal, for a local API bound to a non-loopback address. ``names`` are the
    configured names and the bound address, lower case. ``serves_page`` is False where no page
    of the node's is served, so that no browser `Origin` is its own there.
    """

    check_host: bool = True
    any_ip: bool = False
    names: frozenset[str] = frozenset()
    serves_page: bool = True

    def host_allowed(self, host: str | None) -> bool:
        if not self.check_host or host is None:
            return True
        name = _host_name(host)
        if name is None:
            return False
        if name == "localhost" or name.endswith(".localhost") or name in self.names:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return self.any_ip or address.is_loopback

    def origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return True
        if not self.serves_page or request.host is None:
            return False
        return origin.lower() == f"{request.scheme}://{request.host}".lower()


HOST_POLICY_KEY: web.AppKey[HostPolicy] = web.AppKey("maia_host_policy", HostPolicy)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::\d{1,5})?")


def _host_name(host: str) -> str | None:
    """The name or address of a `Host` value without its port, lower case; None if malformed."""
    match = _HOST.fullmatch(host.strip())
    if match is None:
        return None
    return (match["v6"] or match["name"]).lower().rstrip(".")


def check_host_and_origin(request: web.Request) -> None:
    """SPEC-003 §2.4, §2.5: refuse foreign names and foreign browser pages before any credential
    (a cookie, or a bearer token a browser was made to send) is looked at."""
    policy = request.app.get(HOST_POLICY_KEY) or HostPolicy()
    if not policy.host_allowed(request.headers.get(hdrs.HOST)):
        log.debug("refused %s %s from %s: foreign Host", request.method, request.path,
                  request.remote)
        raise Problem(403, "Forbidden host",
                      "this listener answers only its own names (see [api] allowed_hosts)",
                      type=TYPE_FORBIDDEN_HOST)
    upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
    if (upgrade or request.method not in _SAFE_METHODS) and not policy.origin_allowed(request):
        log.debug("refused %s %s from %s: foreign Origin", request.method, request.path,
                  request.remote)
        raise Problem(403, "Forbidden origin",
                      "requests from another web page's origin may not change state here",
                      type=TYPE_FORBIDDEN_ORIGIN)


def expectation_problem(request: web.BaseRequest) -> Problem | None:
    """SPEC-003 §4.3: a 417 problem for an HTTP/1.1 `Expect` other than 100-continue.

    The value is never echoed: it may hold any bytes (aiohttp's own 417 echoed it, and failed
    with a 500 on bytes that are not UTF-8).
    """
    expect = request.headers.get(hdrs.EXPECT)
    if expect is None or request.version < HttpVersion11 or expect.lower() == "100-continue":
        return None
    return Problem(417, detail="the only expectation this node meets is 100-continue")


async def _continue_if_expected(request: web.Request) -> None:
    expect = request.headers.get(hdrs.EXPECT)
    if (expect is not None and expect.lower() == "100-continue"
            and request.version >= HttpVersion11 and request.writer.output_size == 0):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not the response


# --- 1. errors --------------------------------------------------------------


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error as problem+json; log unexpected ones, tell the client nothing.

    Once a streamed response or WebSocket has sent its headers, a second
    response would corrupt the connection, so errors are then re-raised for
    aiohttp to log and close it.
    """
    try:
        return await handler(request)
    except Problem as problem:
        if request.get(_STARTED_KEY):
            raise
        if problem.status >= 500:
            log.warning("%s %s -> %s", request.method, request.path, problem)
        return problem.to_response(request)
    except web.HTTPException as exc:
        if exc.status < 400 or request.get(_STARTED_KEY):
            raise  # redirects are not errors; see above for started responses
        return problem_from_http_exception(exc).to_response(request)
    except DeviceRevoked as revoked:  # issue 15.6: this device may no longer write
        if request.get(_STARTED_KEY):
            raise
        return Problem(403, "This device was revoked", str(revoked),
                       type="urn:maia-node:problem:device-revoked",
                       revoked=revoked.info).to_response(request)
    except SchemaTooNew as newer:  # SPEC-001 §6.5: a newer version's document, read-only here
        if request.get(_STARTED_KEY):
            raise
        return Problem(409, "Written by a newer maia-node", str(newer),
                       type="urn:maia-node:problem:schema-too-new", doc=newer.doc_id,
                       schema=newer.schema).to_response(request)
    except StorageFull as full:  # issue 18.4: nothing was stored; say where and how much
        log.warning("%s %s: %s", request.method, request.path, full)
        if request.get(_STARTED_KEY):
            raise
        return Problem(507, "Insufficient storage", str(full), data_dir=str(full.data_dir),
                       free_bytes=full.free_bytes).to_response(request)
    except Exception as exc:
        if request.get(_STARTED_KEY):
            log.exception("unhandled error answering %s %s", request.method, request.path)
            raise
        declared = mapped_error(route_spec(request), exc)
        if declared is not None:  # a domain error the route table maps (RouteTable.errors)
            return Problem(declared[0], declared[1], str(exc)).to_response(request)
        log.exception("unhandled error answering %s %s", request.method, request.path)
        return Problem(500, detail="internal error; see the node log").to_response(request)


# --- 2. limits --------------------------------------------------------------


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse oversized bodies up front and bound how long a request may take.

    The declared Content-Length is checked here; bodies without one (chunked)
    are bounded while being read by the app's ``client_max_size``.  The time
    limit covers everything inside it, including reading the body, so a slow
    sender cannot hold a handler open.
    """
    limits = request.app[LIMITS_KEY]
    expectation = expectation_problem(request)
    if expectation is not None:
        raise expectation
    length = request.content_length
    if length is not None and length > limits.max_body_bytes:
        raise Problem(413, detail=f"request body exceeds {limits.max_body_bytes} bytes")
    spec = route_spec(request)
    if spec is not None and spec.streaming:
        # no handler time limit (they own their idle timeouts), but a cap of their own: an
        # agent's thousands of stalled chat streams held memory and descriptors unbounded
        streams = request.app[STREAMS_KEY]
        if streams[0] >= limits.max_streams:
            raise Problem(503, "Overloaded", f"more than {limits.max_streams} streams at once",
                          type=TYPE_OVERLOADED, headers={"Retry-After": "1"})
        streams[0] += 1
        try:
            return await handler(request)
        finally:
            streams[0] -= 1
    in_flight = request.app[IN_FLIGHT_KEY]
    if in_flight[0] >= limits.max_in_flight:  # SPEC-003 §7.5: shed load, do not queue it
        raise Problem(503, "Overloaded", f"more than {limits.max_in_flight} requests at once",
                      type=TYPE_OVERLOADED, headers={"Retry-After": "1"})
    in_flight[0] += 1
    deadline = asyncio.timeout(limits.handler_timeout)
    try:
        async with deadline:
            return await handler(request)
    except TimeoutError:
        if not deadline.expired():
            raise  # a timeout inside the handler is its own failure, not ours
        log.warning(
            "%s %s exceeded the %gs handler time limit",
            request.method,
            request.path,
            limits.handler_timeout,
        )
        raise Problem(
            503,
            "Timed out",
            f"the request did not complete within {limits.handler_timeout:g} s",
            type=TYPE_TIMEOUT,
        ) from None
    finally:
        in_flight[0] -= 1


# --- 3. authentication ------------------------------------------------------


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require a recognised credential unless the matched route is public.

    Requests that matched no registered route (router 404/405) are private
    too, so an unauthenticated client learns nothing about which paths exist.
    """
    check_host_and_origin(request)
    spec = route_spec(request)
    if spec is not None and spec.public:
        request[PRINCIPAL_KEY] = None
        return await handler(request)
    principal = None
    for authenticator in request.app[AUTHENTICATORS_KEY]:
        principal = await authenticator.authenticate(request)
        if principal is not None:
            break
    if principal is None:
        presented = "Authorization" in request.headers
        log.debug(
            "rejected %s %s from %s: %s credential",
            request.method,
            request.path,
            request.remote,
            "invalid" if presented else "no",
        )
        challenge = 'Bearer realm="maia-node"' + (', error="invalid_token"' if presented else "")
        raise Problem(
            401,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": challenge},
        )
    request[PRINCIPAL_KEY] = principal
    if spec is not None and principal.kind not in spec.principal_kinds:
        raise Problem(403, detail=f"a {principal.kind} credential may not call this route")
    return await handler(request)


# --- 4. rate limit ----------------------------------------------------------


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Token bucket per principal, or per remote address where nobody authenticated."""
    principal = request.get(PRINCIPAL_KEY)
    if principal is not None:
        key = f"{principal.kind}:{principal.id}"
    else:
        key = f"addr:{request.remote or 'unknown'}"
    limiter = request.app[RATE_LIMITER_KEY]
    wait = limiter.acquire(key)
    if wait > 0:
        log.debug("rate limited %s %s for %s", request.method, request.path, key)
        raise Problem(
            429,
            detail="rate limit exceeded; retry later",
            type=TYPE_RATE_LIMITED,
            headers={"Retry-After": limiter.retry_after(wait)},
        )
    return await handler(request)


# --- 5. validation ----------------------------------------------------------


@web.middleware
async def validation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Parse and check what the route declared, so handlers only see valid input."""
    spec = route_spec(request)
    if spec is not None and spec.scope is not None and not request[PRINCIPAL_KEY].holds(
            spec.scope):
        raise insufficient_scope(spec.scope)  # before a byte of the body is read (§6.7)
    await _continue_if_expected(request)  # SPEC-003 §4.3: only once limits and auth passed
    if spec is not None:
        if any(key not in request.app for key in spec.requires):
            raise Problem(503, f"{spec.table.capitalize()} unavailable",
                          f"this node runs without what the {spec.table} routes need")
        limits = request.app[LIMITS_KEY]
        if spec.query_validator is not None:
            request[QUERY_KEY] = _validated_query(request, spec.query_validator, limits)
        if spec.body_validator is not None:
            request[BODY_KEY] = await _validated_body(request, spec.body_validator, limits)
    return await handler(request)


async def _validated_body(
    request: web.Request, validator: Draft202012Validator, limits: Limits
) -> Any:
    if not _is_json_media_type(request.content_type):
        raise Problem(415, detail="the request body must be application/json")
    try:
        # bounded by client_max_size (413) and in time: a streaming route has no handler
        # time limit, and a sender that declared a body and stalled held it open for ever
        async with asyncio.timeout(limits.handler_timeout):
            raw = await request.read()
    except TimeoutError:
        raise Problem(408, "Request timeout", f"the request body did not arrive within "
                      f"{limits.handler_timeout:g} s", type=TYPE_TIMEOUT) from None
    try:
        # RFC 8259 §8.1: JSON exchanged between systems is UTF-8.
        data = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except json.JSONDecodeError as exc:
        raise _malformed(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (UnicodeDecodeError, ValueError):
        raise _malformed("the body is not valid UTF-8 JSON") from None
    except RecursionError:
        raise _malformed("the body nests too deeply to parse") from None
    errors = list(itertools.islice(json_bound_errors(data, limits), limits.max_reported_errors))
    if errors:
        raise Problem(
            400,
            "Request body exceeds JSON bounds",
            type=TYPE_VALIDATION,
            errors=errors,
        )
    errors = _schema_errors(validator, data, limits)
    if errors:
        raise Problem(
            400, "Request body failed validation", type=TYPE_VALIDATION, errors=errors
        )
    return data


def _malformed(detail: str) -> Problem:
    return Problem(400, "Malformed JSON", detail, type=TYPE_MALFORMED_JSON)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python accepts them unless told not to.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number out of range")
    return number


def _is_json_media_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _schema_errors(
    validator: Draft202012Validator, instance: Any, limits: Limits
) -> list[dict[str, str]]:
    found = itertools.islice(validator.iter_errors(instance), limits.max_reported_errors)
    return [
        {"path": json_pointer(err.absolute_path), "message": _clip(err.message)} for err in found
    ]


def _clip(message: str, limit: int = 200) -> str:
    # Schema messages quote the offending value; keep echoes of input short.
    return message if len(message) <= limit else message[: limit - 3] + "..."


def json_pointer(parts: Iterable[Any]) -> str:
    """RFC 6901 pointer for a path of keys and indexes ("" is the whole document)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def json_bound_errors(value: Any, limits: Limits) -> Iterator[dict[str, str]]:
    """Yield a {path, message} for each place ``value`` exceeds the JSON bounds.

    Iterative, so a hostile document cannot exhaust the interpreter stack, and
    it does not descend into a container that is already out of bounds.
    """
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            problem = _string_problem(node, limits.max_json_string)
            if problem is not None:
                yield {"path": json_pointer(path), "message": f"string {problem}"}
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > limits.max_json_depth:
            yield {
                "path": json_pointer(path),
                "message": f"nesting deeper than {limits.max_json_depth} levels",
            }
            continue
        if isinstance(node, list):
            if len(node) > limits.max_json_array:
                yield {
                    "path": json_pointer(path),
                    "message": f"array longer than {limits.max_json_array} items",
                }
                continue
            stack.extend((item, depth + 1, (*path, i)) for i, item in enumerate(node))
        else:
            for key, item in node.items():
                problem = _string_problem(key, limits.max_json_string)
                if problem is not None:
                    # the key itself is not echoed: it may not even be encodable
                    yield {"path": json_pointer(path), "message": f"object key {problem}"}
                    continue
                stack.append((item, depth + 1, (*path, key)))


def _string_problem(text: str, limit: int) -> str | None:
    """Why ``text`` is out of bounds, or None (SPEC-003 §7.4).

    A JSON ``\\ud800`` escape decodes to a lone surrogate, which no UTF-8
    encoder accepts: such a string reached the stores and the live frame's
    msgpack, and every write or frame that met it failed (500s, and a node
    that stopped announcing its leases). So it is refused here, once, for
    every body route.
    """
    if len(text) > limit:
        return f"longer than {limit} bytes"
    if text.isascii():
        return None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode (it holds an unpaired surrogate such as \\ud800)"
    return f"longer than {limit} bytes" if size > limit else None


_INTEGER = re.compile(r"[+-]?\d{1,18}")


def _validated_query(
    request: web.Request, validator: Draft202012Validator, limits: Limits
) -> dict[str, Any]:
    """Query parameters as a dict, strings coerced to the declared scalar types.

    Only ``integer``, ``number`` and ``boolean`` properties are coerced; a
    value that does not coerce stays a string and fails the schema. Repeated
    parameters are refused rather than guessing which one was meant.
    """
    properties = validator.schema.get("properties", {})
    params: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    for name in dict.fromkeys(request.query.keys()):
        values = request.query.getall(name)
        if len(values) > 1:
            errors.append({"path": json_pointer([name]), "message": "parameter is repeated"})
            continue
        declared = properties.get(name)
        kind = declared.get("type") if isinstance(declared, dict) else None
        params[name] = _coerce(values[0], kind)
    errors.extend(_schema_errors(validator, params, limits))
    if errors:
        raise Problem(
            400,
            "Query parameters failed validation",
            type=TYPE_VALIDATION,
            errors=errors[: limits.max_reported_errors],
        )
    return params


def _coerce(value: str, declared: Any) -> Any:
    types = declared if isinstance(declared, list) else [declared]
    for kind in types:
        if kind == "integer" and _INTEGER.fullmatch(value):
            return int(value)
        if kind == "number":
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                return number
        if kind == "boolean" and value in ("true", "false"):
            return value == "true"
    return value


# --- the chain --------------------------------------------------------------

# SPEC-003: outermost first. Do not reorder; tests/test_api_errors.py pins it.
MIDDLEWARES = (
    errors_middleware,
    limits_middleware,
    auth_middleware,
    rate_limit_middleware,
    validation_middleware,
)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: headers every API response carries, errors included.

    A signal rather than a middleware so streamed responses and WebSocket
    upgrades get them too, right before their headers are sent.  It also
    marks the request as answered so the errors middleware knows not to
    start a second response.
    """
    request[_STARTED_KEY] = True
    response.headers["Server"] = "maia-node"  # SPEC-003 §10.2: no framework or version
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Cache-Control", "no-store")
