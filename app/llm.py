"""Language models: a deterministic built-in fake, and an OpenAI-compatible HTTP client.

The fake answers every prompt with the same tokens at a configurable pace
(``FASTAGENTIC_LLM_FAKE_TOKENS`` x ``FASTAGENTIC_LLM_FAKE_TOKEN_LATENCY``), so
load tests measure the service rather than a vendor. A prompt starting with
``fail:`` makes it raise; ``flaky:`` raises on the first call in a process only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx
import msgspec

from app.breaker import CircuitBreaker
from app.errors import CircuitOpen, LLMError
from app.settings import Settings

logger = logging.getLogger("app.llm")

_WORDS = (
    "agent",
    "plan",
    "tool",
    "observe",
    "reason",
    "answer",
    "context",
    "memory",
    "step",
    "result",
    "query",
    "search",
    "summary",
    "draft",
    "check",
    "refine",
    "cite",
    "source",
    "verify",
    "done",
)


class LLM(Protocol):
    name: str

    def stream(self, prompt: str, max_tokens: int) -> AsyncIterator[str]:
        """The answer token by token."""
        ...

    async def complete(self, prompt: str, max_tokens: int) -> str:
        """The whole answer."""
        ...

    async def aclose(self) -> None: ...


class FakeLLM:
    """Deterministic: the same prompt always gives the same tokens, at a fixed pace."""

    name = "fake"

    def __init__(self, tokens: int, token_latency: float) -> None:
        self.tokens = tokens
        self.token_latency = token_latency
        self._flaky_seen: set[str] = set()

    def tokens_for(self, prompt: str, max_tokens: int) -> list[str]:
        seed = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=4).digest(), "big")
        count = min(self.tokens, max_tokens)
        return [
            ("" if i == 0 else " ") + _WORDS[(seed + i * 7) % len(_WORDS)] for i in range(count)
        ]

    def _check_failure(self, prompt: str) -> None:
        if prompt.startswith("fail:"):
            raise LLMError("fake model: the prompt asked for a failure")
        if prompt.startswith("flaky:") and prompt not in self._flaky_seen:
            self._flaky_seen.add(prompt)
            raise LLMError("fake model: flaky failure (succeeds next time)")

    async def stream(self, prompt: str, max_tokens: int) -> AsyncIterator[str]:
        self._check_failure(prompt)
        for token in self.tokens_for(prompt, max_tokens):
            if self.token_latency:
                await asyncio.sleep(self.token_latency)
            yield token

    async def complete(self, prompt: str, max_tokens: int) -> str:
        return "".join([token async for token in self.stream(prompt, max_tokens)])

    async def aclose(self) -> None:
        return None


class _Delta(msgspec.Struct):
    content: str | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    message: _Message | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]


class OpenAIClient:
    """``/chat/completions`` of any OpenAI-compatible endpoint, through one pooled
    ``httpx.AsyncClient`` per worker, behind a circuit breaker."""

    name = "openai"

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        assert settings.llm_base_url is not None
        headers = {"accept": "application/json"}
        if settings.llm_api_key:
            headers["authorization"] = f"Bearer {settings.llm_api_key}"
        self.model = settings.llm_model
        self.breaker = CircuitBreaker(settings.llm_breaker_threshold, settings.llm_breaker_reset)
        self.client = httpx.AsyncClient(
            base_url=settings.llm_base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.llm_timeout, connect=min(settings.llm_timeout, 5.0)),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            transport=transport,
        )
        self._decoder = msgspec.json.Decoder(_Completion)

    def _payload(self, prompt: str, max_tokens: int, stream: bool) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "stream": stream,
        }

    def _admit(self) -> None:
        if not self.breaker.allow():
            raise CircuitOpen(
                "The LLM endpoint is failing; calls are paused for another"
                f" {self.breaker.retry_after():.0f}s (circuit open)."
            )

    def _outcome(self, response: httpx.Response) -> None:
        """Record a response in the breaker; 5xx and 429 count as the endpoint failing."""
        if response.status_code >= 500 or response.status_code == 429:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()
        if response.status_code >= 400:
            raise LLMError(f"The LLM endpoint answered HTTP {response.status_code}.")

    async def complete(self, prompt: str, max_tokens: int) -> str:
        self._admit()
        try:
            response = await self.client.post(
                "chat/completions", json=self._payload(prompt, max_tokens, stream=False)
            )
        except httpx.HTTPError as exc:
            self.breaker.record_failure()
            raise LLMError(f"The LLM request failed: {exc!r}") from exc
        self._outcome(response)
        try:
            completion = self._decoder.decode(response.content)
            message = completion.choices[0].message
        except (msgspec.DecodeError, IndexError) as exc:
            raise LLMError(f"The LLM endpoint sent an unexpected body: {exc}") from exc
        return (message.content if message else None) or ""

    async def stream(self, prompt: str, max_tokens: int) -> AsyncIterator[str]:
        self._admit()
        payload = self._payload(prompt, max_tokens, stream=True)
        try:
            async with self.client.stream("POST", "chat/completions", json=payload) as response:
                if response.status_code >= 400:
                    await response.aread()
                self._outcome(response)
                async for line in response.aiter_lines():
                    token = self._token(line)
                    if token is None:
                        break
                    if token:
                        yield token
        except httpx.HTTPError as exc:
            self.breaker.record_failure()
            raise LLMError(f"The LLM stream failed: {exc!r}") from exc

    def _token(self, line: str) -> str | None:
        """The text in one SSE line ("" for none); None at ``data: [DONE]``."""
        if not line.startswith("data:"):
            return ""
        data = line[5:].strip()
        if data == "[DONE]":
            return None
        try:
            chunk = self._decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise LLMError(f"The LLM stream sent an unexpected chunk: {exc}") from exc
        delta = chunk.choices[0].delta if chunk.choices else None
        return (delta.content if delta else None) or ""

    async def aclose(self) -> None:
        await self.client.aclose()


def build_llm(settings: Settings) -> LLM:
    if settings.llm_base_url:
        logger.info(
            "LLM: OpenAI-compatible endpoint %s, model %s",
            settings.llm_base_url,
            settings.llm_model,
        )
        return OpenAIClient(settings)
    logger.info(
        "LLM: built-in fake model (%d tokens, %.3fs per token)",
        settings.llm_fake_tokens,
        settings.llm_fake_token_latency,
    )
    return FakeLLM(settings.llm_fake_tokens, settings.llm_fake_token_latency)
