"""The LLM provider protocol shared by the OpenAI-compatible and the in-process llama.cpp
providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from kame_desktop.errors import LlmError

if TYPE_CHECKING:
    from kame_desktop.backend.tools.base import ToolCall

Message = dict[str, Any]  # {"role": "system" | "user" | "assistant" | "tool", "content": …, maybe "tool_calls"}
T = TypeVar("T")
_timeout_at = getattr(asyncio, "timeout_at", None)  # Python 3.11+


async def by_deadline(step: Awaitable[T], deadline: float) -> T:
    """`await step`, or asyncio.TimeoutError at the loop time `deadline`, in this task (httpx's
    streams must stay in one). Not asyncio.wait_for where asyncio.timeout_at exists: before
    Python 3.12 wait_for swallows the task's cancellation when `step` completes in the same loop
    iteration, and a superseded answer then streams on to its end, the next one waiting behind it."""
    if _timeout_at is None:  # Python 3.10
        return await asyncio.wait_for(step, max(0.0, deadline - asyncio.get_running_loop().time()))
    async with _timeout_at(deadline):
        return await step


def stalled(who: str, texts: int, first_chunk_timeout: float, chunk_timeout: float) -> LlmError:
    """The error for an answer that did not start, or stopped, within its deadline."""
    if texts:
        return LlmError(f"{who} stopped after {texts} chunks (nothing for {chunk_timeout:g} s) — retrying", kind="busy")
    return LlmError(f"{who} gave no answer within {first_chunk_timeout:g} s — retrying", kind="busy")


class LlmProvider(Protocol):
    name: str  # what the status line shows, e.g. "local:SmolLM2-135M-Instruct"
    context_tokens: int  # the model's context window, for trimming the history
    dialogue: str  # how it is shown the dialogue: "chat" turns or the reference's "transcript" (prompts.py)
    overlaps: bool  # serves concurrent requests: a new one need not end the running one (spec §3.3b)

    def load(self) -> object:
        """Get ready before the session runs (load the model, import the client); may raise
        KameError saying why it cannot."""
        ...

    async def prime(self, system_prompt: str, tools: list[dict] | None = None) -> None:
        """Read the system prompt (with the tools offered) ahead of the first request, where that
        saves time later."""
        ...

    def stream(self, messages: list[Message], tools: list[dict] | None = None) -> AsyncIterator[str | ToolCall]:
        """Yield the answer's text chunks as they arrive, and the tool calls it makes (offered
        `tools`, OpenAI's schema), never as text. Cancelling the consuming task stops generation.
        Failures raise LlmError with a message the user can act on; a stream that ends without a
        finish reason raises LlmError too (cut off)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in this model (an estimate is fine for remote models)."""
        ...

    async def aclose(self) -> None: ...


class UnavailableLlm:
    """Stands in for an LLM that could not be set up (a bad GGUF, a missing package): every
    request fails with the reason, so the conversation goes on with the front-end on PAD oracle
    and the user keeps being told why."""

    context_tokens = 4096
    dialogue = "chat"
    overlaps = False

    def __init__(self, name: str, reason: str, kind: str = "bad_model") -> None:
        self.name = name
        self.reason = reason
        self.kind = kind

    def load(self) -> None:
        pass

    async def prime(self, system_prompt: str, tools: list[dict] | None = None) -> None:
        pass

    async def stream(self, messages: list[Message], tools: list[dict] | None = None) -> AsyncIterator[str]:
        raise LlmError(self.reason, retryable=False, kind=self.kind)  # type: ignore[arg-type]
        yield ""  # an async generator, like the real providers

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def aclose(self) -> None:
        pass
