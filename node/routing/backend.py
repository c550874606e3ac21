"""Model calls on the node that hosts a cortex: ``litellm``, bounded and kept healthy (SPEC-006 §8).

``litellm`` takes seconds to import, so it is loaded lazily in a worker thread: never when the
node or the CLI starts, and in the background right after start on a node that hosts a cortex.
Before the import the node pins ``litellm`` to its bundled model-cost map and turns telemetry
off, so it opens no connection the owner did not configure.

:class:`LocalCortices` runs this node's cortices for local requests and for peers alike: each
cortex has its own concurrency limit and a bounded wait queue, its health follows recent
failures, and every error text is redacted of the provider key before it goes anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from ..heap import freeze_settled
from .config import EMBEDDING, Cortex, RoutingSettings
from .embedding_shapes import pack, vectors_from_openai
from .shapes import (
    Garbage,
    clean_chunk,
    clean_response,
    estimate_prompt_tokens,
    needed_capabilities,
)

log = logging.getLogger(__name__)

Event = tuple[str, Any]  # ("chunk", chunk dict) | ("end", answer dict or None)

# Request fields passed on to the backend; everything else (model, metadata, stream) is ours.
PASS_THROUGH = (
    "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens",
    "presence_penalty", "frequency_penalty", "logit_bias", "user", "seed", "tools",
    "tool_choice", "parallel_tool_calls", "response_format", "stream_options", "logprobs",
    "top_logprobs", "reasoning_effort", "modalities", "audio",
)
DETAIL_LIMIT = 300
FAILURES_TO_UNHEALTHY = 3
FAILURE_WINDOW = 60.0
CHUNK_IDLE_LIMIT = 60.0
QUEUE_FACTOR = 4
DEFAULT_MAX_ANSWER_BYTES = 16 * 1024 * 1024  # RoutingSettings.max_answer_bytes by default
_QUIET_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "httpcore", "openai")

_litellm: Any = None
_import_lock = threading.Lock()


class BackendError(Exception):
    """A call that did not produce an answer; ``code`` is a SPEC-006 §7.2 error code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail[:DETAIL_LIMIT]


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``***``, clipped for logs and frames (§9.1)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 3] + "..."


def load_litellm() -> Any:
    """Import and configure ``litellm`` once (blocking: call it from a worker thread)."""
    global _litellm
    with _import_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            os.environ.setdefault("LITELLM_TELEMETRY", "False")
            started = time.monotonic()
            # litellm takes seconds to import: only a node hosting a cortex pays (SPEC-006 §8.2)
            import litellm

            litellm.telemetry = False
            litellm.suppress_debug_info = True
            litellm.drop_params = True
            for name in _QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
            _litellm = litellm
            log.info("litellm loaded in %.1f s", time.monotonic() - started)
            freeze_settled("litellm imported")
    return _litellm


class LiteLLMBackend:
    """Calls a cortex's model through ``litellm.acompletion`` (§8.1)."""

    def __init__(self) -> None:
        self._loading: asyncio.Future | None = None
        self._answered = False  # litellm builds more of its models on its first answer
        # cortex name -> (what the client was built for, OpenAI client, httpx client)
        self._clients: dict[str, tuple[tuple[Any, ...], Any, Any]] = {}
        self._retired: list[Any] = []  # replaced httpx clients, maybe still in use: closed last
        self._speaks_openai: dict[tuple[str, str | None], bool] = {}

    def _bounded_client(self, litellm: Any, cortex: Cortex, api_key: str | None,
                        max_bytes: int) -> Any:
        """An OpenAI client that stops reading an answer past ``max_bytes`` (SPEC-006 §8.4),
        for a cortex litellm calls through the OpenAI client; None for other providers.

        litellm would otherwise read a hostile server's whole answer (or one endless SSE line,
        or a gzip bomb's inflated bytes) into memory before the router's bound is checked.
        Built once per cortex and reused: making one costs ~20 ms of the event loop (an SSL
        context), too much for every call; a changed key or bound builds a new one."""
        probe = (cortex.model, cortex.api_base)
        if probe not in self._speaks_openai:
            try:
                provider = litellm.get_llm_provider(cortex.model, api_base=cortex.api_base)[1]
            except Exception:  # litellm cannot place the model; the call will say why
                provider = None
            self._speaks_openai[probe] = provider == "openai"
        if not self._speaks_openai[probe]:
            return None
        want = (api_key, cortex.api_base, cortex.timeout, max_bytes)
        held = self._clients.get(cortex.name)
        if held is not None and held[0] == want:
            return held[1]
        client, http = _bounded_http().bounded_openai_client(
            max_bytes, cortex.timeout, api_key or "no-key", cortex.api_base)
        if held is not None:
            self._retired.append(held[2])
        self._clients[cortex.name] = (want, client, http)
        return client

    async def aclose(self) -> None:
        """Close the bounded HTTP clients (when the node stops)."""
        https = [h for _, _, h in self._clients.values()] + self._retired
        self._clients.clear()
        self._retired = []
        for http in https:
            with contextlib.suppress(Exception):
                await http.aclose()

    async def ready(self) -> Any:
        """``litellm``, imported in a thread the first time (concurrent callers share it)."""
        if _litellm is not None:
            return _litellm
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.to_thread(load_litellm))
        return await asyncio.shield(self._loading)

    def _kwargs(self, litellm: Any, cortex: Cortex, body: dict[str, Any], stream: bool,
                max_bytes: int) -> dict[str, Any]:
        kwargs = {k: body[k] for k in PASS_THROUGH if k in body}
        kwargs.update(
            model=cortex.model,
            messages=body["messages"],
            stream=stream,
            timeout=cortex.timeout,
            num_retries=0,  # the router falls back instead (§6.2)
        )
        if cortex.api_base:
            kwargs["api_base"] = cortex.api_base
        # Local model servers need no key, but OpenAI-style clients insist on one.
        kwargs["api_key"] = cortex.api_key() or ("no-key" if not cortex.api_key_env else None)
        client = self._bounded_client(litellm, cortex, kwargs["api_key"], max_bytes)
        if client is not None:
            kwargs["client"] = client
        return kwargs

    async def complete(self, cortex: Cortex, body: dict[str, Any],
                       max_bytes: int = DEFAULT_MAX_ANSWER_BYTES) -> dict[str, Any]:
        """The whole answer; an OpenAI-compatible server's is read only up to ``max_bytes``
        (the router's ``max_answer_bytes``): past it the call fails as ``answer_limit``."""
        litellm = await self.ready()
        try:
            response = await litellm.acompletion(
                **self._kwargs(litellm, cortex, body, False, max_bytes))
            answer = clean_response(_as_dict(response), cortex.name)
            if not self._answered:
                self._answered = True
                freeze_settled("litellm's first answer")
            return answer
        except Garbage as exc:
            raise BackendError("backend", f"the model answered garbage: {exc}") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _backend_error(exc, cortex) from None

    async def stream(self, cortex: Cortex, body: dict[str, Any],
                     max_bytes: int = DEFAULT_MAX_ANSWER_BYTES) -> AsyncIterator[dict[str, Any]]:
        """Chunks as they come; an OpenAI-compatible server's stream is read only up to
        ``max_bytes`` bytes in all (SSE framing included), so one endless line costs no more."""
        litellm = await self.ready()
        try:
            response = await litellm.acompletion(
                **self._kwargs(litellm, cortex, body, True, max_bytes))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _backend_error(exc, cortex) from None
        try:
            iterator = response.__aiter__()
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(iterator), CHUNK_IDLE_LIMIT)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise BackendError("timeout", "the model went quiet mid-answer") from None
                yield clean_chunk(_as_dict(chunk), cortex.name)
        except Garbage as exc:
            raise BackendError("backend", f"the model answered garbage: {exc}") from None
        except (asyncio.CancelledError, BackendError, GeneratorExit):
            raise
        except Exception as exc:
            raise _backend_error(exc, cortex) from None
        finally:
            closer = getattr(response, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    async def embed(self, cortex: Cortex, inputs: list[str],
                    max_bytes: int = DEFAULT_MAX_ANSWER_BYTES) -> dict[str, Any]:
        """Vectors from an embedding cortex, checked (SPEC-006 §13.4) and packed for the wire.

        An OpenAI-compatible server is read through a client that stops at ``max_bytes``
        (the router's ``max_answer_bytes``, SPEC-006 §6.6): litellm would otherwise read a
        hostile server's whole answer into memory before any check (bounded_http)."""
        litellm = await self.ready()
        kwargs: dict[str, Any] = {"model": cortex.model, "input": inputs,
                                  "timeout": cortex.timeout, "max_retries": 0}
        if cortex.api_base:
            kwargs["api_base"] = cortex.api_base
        kwargs["api_key"] = cortex.api_key() or ("no-key" if not cortex.api_key_env else None)
        too_large = _bounded_http().too_large
        http = None
        if _openai_compatible(cortex.model):
            kwargs["client"], http = _bounded_http().bounded_openai_client(
                max_bytes, cortex.timeout, kwargs["api_key"] or "no-key", cortex.api_base)
        try:
            response = await litellm.aembedding(**kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            big = too_large(exc)
            if big is not None:
                log.warning("cortex %s: embeddings answer cut: %s", cortex.name, big)
                raise BackendError("bad_answer", f"{big} (max_answer_bytes)") from None
            raise _backend_error(exc, cortex) from None
        finally:
            if http is not None:
                with contextlib.suppress(Exception):
                    await http.aclose()
        try:
            dump = getattr(response, "model_dump", None)
            # warnings=False: a hostile answer must not turn into one log line per number
            answer = dump(exclude_none=True, warnings=False) if dump is not None else response
            vectors, tokens = vectors_from_openai(answer, len(inputs), cortex.dimensions or 0)
        except Garbage as exc:
            log.warning("cortex %s: embeddings answer refused: %s", cortex.name, exc)
            raise BackendError("bad_answer", f"the model answered garbage: {exc}") from None
        return pack(vectors, tokens)

    async def count_tokens(self, cortex: Cortex, body: dict[str, Any]) -> int:
        litellm = await self.ready()
        return await asyncio.to_thread(
            litellm.token_counter, model=cortex.model, messages=body["messages"]
        )


def _openai_compatible(model: str) -> bool:
    """litellm calls these through the OpenAI client, which takes the HTTP client to use."""
    return model.startswith("openai/") or "/" not in model


def _too_large(exc: BaseException) -> Exception | None:
    """The bounded client's AnswerTooLarge behind ``exc``; None if litellm was never loaded
    (then no bounded client was either, and httpx need not be imported for the answer)."""
    if _litellm is None:
        return None
    return _bounded_http().too_large(exc)


def _bounded_http() -> Any:
    """The bounded HTTP client's module: httpx and openai come with litellm, so it is imported
    with the first call that needs it and importing the node loads neither (§8.2)."""
    # lazily: httpx and openai load with it (SPEC-006 §8.2)
    from . import bounded_http

    return bounded_http


def _as_dict(obj: Any) -> Any:
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    return dump(exclude_none=True) if dump is not None else obj


def _backend_error(exc: Exception, cortex: Cortex) -> BackendError:
    # the bounded client's cut, wrapped by the OpenAI client and litellm (SPEC-006 §8.4)
    big = _too_large(exc)
    if big is not None:
        log.warning("cortex %s: answer cut: %s", cortex.name, big)
        return BackendError("answer_limit", f"{big} (max_answer_bytes)")
    name = type(exc).__name__
    text = redact(f"{name}: {exc}", [cortex.api_key()])
    code = "backend"
    if "ContextWindowExceeded" in name:
        code = "context_window"
    elif "Timeout" in name:
        code = "timeout"
    elif name in ("BadRequestError", "UnsupportedParamsError"):
        code = "bad_request"
    log.warning("cortex %s: backend call failed: %s", cortex.name, text)
    return BackendError(code, text)


class _Slot:
    """Concurrency and health of one hosted cortex."""

    def __init__(self, cortex: Cortex) -> None:
        self.cortex = cortex
        self.semaphore = asyncio.Semaphore(cortex.max_concurrency)
        self.in_flight = 0
        self.waiting = 0
        self.failures: deque[float] = deque(maxlen=FAILURES_TO_UNHEALTHY)
        self.unhealthy_until = 0.0
        self.last_error = ""


class LocalCortices:
    """This node's cortices: admission, backend calls, health (SPEC-006 §7.5, §8.3)."""

    def __init__(
        self,
        cortices: Iterable[Cortex],
        settings: RoutingSettings,
        backend: LiteLLMBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.backend = backend or LiteLLMBackend()
        self._slots = {c.name: _Slot(c) for c in cortices}
        self._clock = clock
        self.on_health_change: list[Callable[[], None]] = []

    def __bool__(self) -> bool:
        return bool(self._slots)

    def names(self) -> list[str]:
        return list(self._slots)

    def get(self, name: str) -> Cortex | None:
        slot = self._slots.get(name)
        return slot.cortex if slot else None

    def in_flight(self, name: str) -> int:
        slot = self._slots.get(name)
        return slot.in_flight + slot.waiting if slot else 0

    def health(self, name: str) -> str | None:
        """None when healthy, else why not (never a secret)."""
        slot = self._slots[name]
        if slot.cortex.key_missing():
            return f"environment variable {slot.cortex.api_key_env} is not set"
        if self._clock() < slot.unhealthy_until:
            return f"{FAILURES_TO_UNHEALTHY} recent backend failures ({slot.last_error[:80]})"
        return None

    def advertised(self) -> list[dict[str, Any]]:
        """The ``cortices`` list of a ``cx.ad`` frame (§3.2): no api_base, no key, no env name."""
        return [
            {
                "name": s.cortex.name,
                "kind": s.cortex.kind,
                "model": s.cortex.model,
                "capabilities": sorted(s.cortex.capabilities),
                "context_window": s.cortex.context_window,
                "max_concurrency": s.cortex.max_concurrency,
                "remote": s.cortex.remote,
                "healthy": self.health(s.cortex.name) is None,
                "in_flight": s.in_flight + s.waiting,
            } | ({"dimensions": s.cortex.dimensions} if s.cortex.kind == EMBEDDING else {})
            for s in self._slots.values()
        ]

    async def run(
        self, name: str, body: dict[str, Any], stream: bool, op: str = "chat"
    ) -> AsyncIterator[Event]:
        """Answer ``body`` with cortex ``name``: chunks then ("end", None), or ("end", answer).
        ``op="embed"``: ("end", packed vectors) from an embedding cortex (SPEC-006 §13)."""
        slot = self._slots.get(name)
        if slot is None:
            raise BackendError("unknown_cortex", f"this node does not host {name!r}")
        if (slot.cortex.kind == EMBEDDING) != (op == "embed"):
            raise BackendError("bad_request", f"{name} is a {slot.cortex.kind} cortex; it does "
                               f"not answer {'embeddings' if op == 'embed' else 'chat'}")
        if op == "chat" and not (needs := needed_capabilities(body)) <= slot.cortex.capabilities:
            # the requester's router checks this too, but a peer's request is checked here
            # against this node's own config, never the peer's view of it (SPEC-006 §7.8)
            missing = " or ".join(sorted(needs - slot.cortex.capabilities))
            raise BackendError("bad_request", f"cortex {name} does not take {missing} input")
        why = self.health(name)
        if why is not None:
            raise BackendError("backend", f"cortex {name} is unhealthy: {why}")
        if slot.in_flight >= slot.cortex.max_concurrency and slot.waiting >= (
            QUEUE_FACTOR * slot.cortex.max_concurrency
        ):
            raise BackendError("busy", f"cortex {name} has {slot.waiting} calls waiting")
        slot.waiting += 1
        try:
            await slot.semaphore.acquire()
        finally:
            slot.waiting -= 1
        slot.in_flight += 1
        try:
            if op == "embed":
                answer = await self.backend.embed(slot.cortex, body["input"],
                                                  self.settings.max_answer_bytes)
                self._succeeded(slot)
                yield ("end", answer)
                return
            await self._check_window(slot.cortex, body)
            limit = self.settings.max_answer_bytes
            if stream:
                async with contextlib.aclosing(
                        self.backend.stream(slot.cortex, body, limit)) as chunks:
                    async for chunk in chunks:
                        yield ("chunk", chunk)
                yield ("end", None)
            else:
                yield ("end", await self.backend.complete(slot.cortex, body, limit))
            self._succeeded(slot)
        except BackendError as exc:
            # an answer cut at a bound (answer_limit) costs that request only (SPEC-006 §6.6)
            if exc.code in ("backend", "timeout", "bad_answer"):
                self._failed(slot, exc.detail)
            raise
        finally:
            slot.in_flight -= 1
            slot.semaphore.release()

    async def _check_window(self, cortex: Cortex, body: dict[str, Any]) -> None:
        estimate = estimate_prompt_tokens(body)
        if estimate > cortex.context_window:
            raise BackendError(
                "context_window",
                f"about {estimate} prompt tokens; {cortex.name} takes {cortex.context_window}",
            )
        if estimate * 4 >= cortex.context_window * 3:  # near the limit: count exactly
            try:
                exact = await self.backend.count_tokens(cortex, body)
            except Exception as exc:  # a tokenizer problem must not block the call
                log.debug("token count for %s failed: %s", cortex.name, type(exc).__name__)
                return
            if exact > cortex.context_window:
                raise BackendError(
                    "context_window",
                    f"{exact} prompt tokens; {cortex.name} takes {cortex.context_window}",
                )

    def _succeeded(self, slot: _Slot) -> None:
        slot.failures.clear()

    def _failed(self, slot: _Slot, why: str) -> None:
        now = self._clock()
        slot.failures.append(now)
        slot.last_error = why
        if (
            len(slot.failures) == FAILURES_TO_UNHEALTHY
            and now - slot.failures[0] <= FAILURE_WINDOW
        ):
            slot.unhealthy_until = now + self.settings.cooldown_seconds
            slot.failures.clear()
            log.warning("cortex %s is unhealthy for %gs", slot.cortex.name,
                        self.settings.cooldown_seconds)
            for callback in self.on_health_change:
                callback()
