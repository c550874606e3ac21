"""An HTTP client for model calls that stops reading an answer past a size bound.

``litellm.acompletion`` and ``litellm.aembedding`` read a model server's whole answer (or a
whole SSE line of a stream) into memory before anything here sees it, so a hostile or broken
model server (a member's cortex config can point anywhere) could answer gigabytes and the node
would hold them all before the router's ``max_answer_bytes`` (SPEC-006 §6.6) is checked. For
OpenAI-compatible servers litellm accepts the client to use: this one counts the bytes as they
arrive and stops at the bound (for a stream, all of its bytes; SPEC-006 §8.4, §13.4), and
refuses compressed answers (it asks for none), whose decoded size the count would miss.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai


class AnswerTooLarge(Exception):
    """The model server's answer passed the byte bound; the connection was dropped."""


class _BoundedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise AnswerTooLarge(f"the answer passed {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class BoundedTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, with every response body cut at ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        length = response.headers.get("content-length", "")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if (length.isdigit() and int(length) > self._limit) or encoding not in ("", "identity"):
            await response.aclose()
            raise AnswerTooLarge(
                f"the answer announces {length} bytes, over {self._limit}" if encoding in
                ("", "identity") else f"the answer is compressed ({encoding[:40]}); none "
                "was asked for")
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(status_code=response.status_code, headers=response.headers,
                              stream=_BoundedStream(response.stream, self._limit),
                              extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


def bounded_client(limit: int, timeout: float) -> httpx.AsyncClient:
    """An httpx client whose answers stop at ``limit`` bytes; close it after use."""
    return httpx.AsyncClient(transport=BoundedTransport(limit), timeout=timeout,
                             headers={"Accept-Encoding": "identity"})


def bounded_openai_client(limit: int, timeout: float, api_key: str,
                          api_base: str | None) -> tuple[openai.AsyncOpenAI, httpx.AsyncClient]:
    """An OpenAI client for litellm's ``client`` argument, reading through
    :func:`bounded_client`; close the returned httpx client after the call."""
    http = bounded_client(limit, timeout)
    return openai.AsyncOpenAI(api_key=api_key, max_retries=0, http_client=http, timeout=timeout,
                              base_url=api_base or "https://api.openai.com/v1"), http


def too_large(exc: BaseException) -> AnswerTooLarge | None:
    """The AnswerTooLarge behind ``exc`` (the OpenAI client and litellm wrap it), if any."""
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AnswerTooLarge):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
