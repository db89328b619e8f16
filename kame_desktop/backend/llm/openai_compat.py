"""LLM provider for any OpenAI-compatible chat endpoint (OpenAI, llama.cpp server, vLLM, Ollama…).

The `openai` package is imported lazily: the CLI's --help and the GUI's first paint stay cheap."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from kame_desktop.backend.llm.base import Message, by_deadline, stalled
from kame_desktop.backend.tools.base import ToolCall, ToolCallText
from kame_desktop.credentials import redact
from kame_desktop.errors import LlmError

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)

TEST_PROMPT = "Say hello in three words."
T = TypeVar("T")


class OpenAiLlm:
    """Streams chat completions from `base_url`. Errors become `LlmError`s that say what to do;
    retrying is the OracleManager's job, so the client's own retries are off."""

    overlaps = True  # a server takes concurrent requests (llama_cpp.server ends the older one instead)

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        context_tokens: int = 8192,
        dialogue: str = "chat",
        name: str | None = None,
        max_tokens: int | None = None,  # None: the server's default (the reference sets none)
        first_chunk_timeout: float = 10.0,  # request sent -> first text: a voice app cannot wait longer
        chunk_timeout: float = 5.0,  # text -> next text: a stream that stalls mid-answer
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.timeout = timeout
        self.context_tokens = context_tokens
        self.dialogue = dialogue
        self.name = name or f"openai:{model}"
        self.max_tokens = max_tokens
        self.first_chunk_timeout = first_chunk_timeout
        self.chunk_timeout = chunk_timeout
        self._api_key = api_key or ""
        self._client: AsyncOpenAI | None = None

    def load(self) -> None:
        """Import the client library now, before the session runs: importing `openai` takes a
        second or more on a slow machine, which the first request would otherwise pay."""
        import openai  # noqa: F401

    async def prime(self, system_prompt: str, tools: list[dict] | None = None) -> None:
        pass  # a server keeps no per-client prompt cache worth filling

    def _get_client(self) -> AsyncOpenAI:
        # Created on first use so it binds to the back-end worker's event loop.
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                base_url=self.base_url,
                # Local servers need no key, but the client insists on one.
                api_key=self._api_key or "no-key",
                timeout=self.timeout,  # connect, and each read: a stalled stream times out too
                max_retries=0,
            )
        return self._client

    async def stream(self, messages: list[Message], tools: list[dict] | None = None) -> AsyncIterator[str | ToolCall]:
        extra: dict[str, Any] = {} if self.max_tokens is None else {"max_tokens": self.max_tokens}
        wire = wire_names([tool.get("function", {}).get("name", "") for tool in tools or []] + _called(messages))
        if tools:
            extra["tools"] = [_renamed(tool, wire) for tool in tools]
        if wire:
            messages = [_renamed(message, wire) for message in messages]
        named = {sent: name for name, sent in wire.items()}  # the calls come back under the sent names
        calls: dict[int, dict[str, str]] = {}  # streamed tool_calls, by their index: id, name, arguments
        written = ToolCallText()  # calls a server passes on as text (llama_cpp.server)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.first_chunk_timeout
        texts = 0  # text chunks received
        finished = False
        response = None

        async def within(step: Awaitable[T]) -> T:
            try:
                return await by_deadline(step, deadline)
            except asyncio.TimeoutError:
                raise self._stalled(texts) from None

        try:
            response = await within(
                self._get_client().chat.completions.create(
                    model=self.model,
                    messages=messages,
                    stream=True,
                    **extra,  # type: ignore[arg-type]
                )
            )
            self._check_content_type(response)
            chunks = response.__aiter__()
            while True:
                try:
                    chunk = await within(chunks.__anext__())
                except StopAsyncIteration:
                    break
                choices = getattr(chunk, "choices", None)
                if not isinstance(choices, list):
                    raise LlmError("the LLM server sent a malformed stream (a chunk without choices)")
                for choice in choices:
                    delta = getattr(choice, "delta", None)
                    text = getattr(delta, "content", None)
                    if isinstance(text, str) and text:
                        texts += 1
                        deadline = loop.time() + self.chunk_timeout
                        for item in written.push(text):
                            yield _as_named(item, named)
                    for part in getattr(delta, "tool_calls", None) or ():
                        deadline = loop.time() + self.chunk_timeout
                        _add_call_part(calls, part)
                    if getattr(choice, "finish_reason", None):
                        finished = True
        except LlmError:
            raise
        except Exception as exc:
            raise self._map_error(exc, texts > 0) from None  # the cause may echo the key
        finally:
            if response is not None:
                await response.close()  # cancelled or abandoned: drop the connection now
        if not finished:
            raise LlmError("the LLM stream was cut off (no finish reason)")
        for item in written.flush():
            yield _as_named(item, named)
        for index in sorted(calls):
            call = calls[index]
            yield ToolCall(named.get(call["name"], call["name"]), call["arguments"] or "{}", call["id"] or f"call_{index}")

    def _stalled(self, texts: int) -> LlmError:
        return stalled("the LLM", texts, self.first_chunk_timeout, self.chunk_timeout)

    def _check_content_type(self, response: Any) -> None:
        """A web page where the API should be (a proxy, a login portal, a URL without /v1)
        parses as an empty stream: say what it is instead of "cut off"."""
        http = getattr(response, "response", None)
        content_type = str(getattr(http, "headers", {}).get("content-type", "")).lower()
        if content_type.startswith("text/html"):
            raise LlmError(
                f"{self.base_url} answered with a web page, not an OpenAI-compatible API — check the URL "
                "in Settings (it usually ends in /v1)",
                False,
                kind="bad_server",
            )

    def _map_error(self, exc: Exception, got_text: bool) -> LlmError:
        import openai

        log.debug("LLM request to %s failed: %s", self.base_url, type(exc).__name__)
        if isinstance(exc, openai.APITimeoutError):
            return LlmError(f"LLM did not answer within {self.timeout:g} s", kind="busy")
        if isinstance(exc, openai.APIConnectionError):
            if got_text:
                return LlmError("the LLM stream was cut off (connection lost)")
            return LlmError(
                f"LLM server unreachable at {self.base_url} — start it or change the LLM in Settings",
                kind="unreachable",
            )
        if isinstance(exc, openai.AuthenticationError):
            return LlmError("the LLM server refused the API key (401) — check the key in Settings", False, kind="refused")
        if isinstance(exc, openai.PermissionDeniedError):
            return LlmError(
                "the LLM server denied access (403) — check the key and the model in Settings", False, kind="refused"
            )
        if isinstance(exc, openai.NotFoundError):
            return LlmError(
                f"the LLM server at {self.base_url} has no model {self.model!r} or no chat endpoint "
                "(404) — check the URL and the model in Settings",
                False,
            )
        if isinstance(exc, openai.RateLimitError):
            return LlmError("rate-limited by the LLM server (429) — retrying", kind="busy")
        if isinstance(exc, openai.APIStatusError):
            return LlmError(
                f"the LLM server failed ({exc.status_code}): {self._scrub(exc.message)} — retrying"
            )
        if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError)):
            return LlmError("the LLM server sent a malformed stream")
        if isinstance(exc, openai.APIError):  # an {"error": …} object inside the stream
            return LlmError(f"the LLM server reported an error: {self._scrub(exc.message)}")
        return LlmError(f"the LLM server sent a malformed stream ({type(exc).__name__})")

    def _scrub(self, text: str) -> str:
        # Servers sometimes echo the key back in error bodies; never show or log it. Redact
        # first: a key cut by the truncation would leak its first part.
        return redact(text, self._api_key)[:200]

    def count_tokens(self, text: str) -> int:
        """An estimate (about 4 characters per token for English): remote tokenizers are unknown."""
        return math.ceil(len(text) / 4)

    async def test_connection(self) -> str:
        """Stream a short reply and return it (the Settings dialog's Test connection button)."""
        parts = [chunk async for chunk in self.stream([{"role": "user", "content": TEST_PROMPT}])]
        return "".join(parts)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def wire_names(names: list[str]) -> dict[str, str]:
    """The tool names OpenAI's API refuses (it takes letters, digits, _ and -, at most 64: an MCP
    server's `calendar.list_events`), each with the name it is sent under instead. `names`: the
    tools offered, then those the messages' calls name (the API checks those too, also in the
    last round of an answer, which offers no tools)."""
    names = list(dict.fromkeys(names))
    taken, wire = set(names), {}
    for name in names:
        if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            continue
        base = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:60] or "tool"
        sent, n = base, 1
        while sent in taken:
            n += 1
            sent = f"{base}_{n}"
        taken.add(sent)
        wire[name] = sent
    return wire


def _called(messages: list[Message]) -> list[str]:
    """The tool names the messages carry: the model's calls and their results."""
    names = [c.get("function", {}).get("name", "") for m in messages for c in m.get("tool_calls") or ()]
    return names + [m["name"] for m in messages if m.get("role") == "tool" and m.get("name")]


def _renamed(item: dict, wire: dict[str, str]) -> dict:
    """A tool's schema, or a message (its calls, a tool result), with the names sent to the server."""
    if "function" in item and item["function"].get("name") in wire:  # a tool's schema
        return {**item, "function": {**item["function"], "name": wire[item["function"]["name"]]}}
    if item.get("tool_calls"):
        calls = [{**c, "function": {**c["function"], "name": wire.get(c["function"]["name"], c["function"]["name"])}}
                 for c in item["tool_calls"]]
        return {**item, "tool_calls": calls}
    if item.get("role") == "tool" and item.get("name") in wire:
        return {**item, "name": wire[item["name"]]}
    return item


def _as_named(item: str | ToolCall, named: dict[str, str]) -> str | ToolCall:
    if isinstance(item, ToolCall) and item.name in named:
        return ToolCall(named[item.name], item.arguments, item.id, item.written)
    return item


def _add_call_part(calls: dict[int, dict[str, str]], part: Any) -> None:
    """One streamed piece of a structured tool call: the id and name come once, the arguments'
    JSON text in pieces, all under the call's index (several calls can interleave)."""
    index = getattr(part, "index", None)
    call = calls.setdefault(index if isinstance(index, int) else len(calls), {"id": "", "name": "", "arguments": ""})
    if isinstance(getattr(part, "id", None), str):
        call["id"] = part.id
    function = getattr(part, "function", None)
    for key in ("name", "arguments"):
        value = getattr(function, key, None)
        if isinstance(value, str):
            call[key] += value
