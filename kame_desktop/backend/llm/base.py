"""The LLM provider protocol shared by the OpenAI-compatible and the in-process llama.cpp
providers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


class LlmProvider(Protocol):
    name: str  # what the status line shows, e.g. "local:SmolLM2-135M-Instruct"
    context_tokens: int  # the model's context window, for trimming the history
    dialogue: str  # how it is shown the dialogue: "chat" turns or the reference's "transcript" (prompts.py)

    def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        """Yield the answer's text chunks as they arrive. Cancelling the consuming task stops
        generation. Failures raise LlmError with a message the user can act on; a stream that
        ends without a finish reason raises LlmError too (cut off)."""
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

    def __init__(self, name: str, reason: str, kind: str = "bad_model") -> None:
        self.name = name
        self.reason = reason
        self.kind = kind

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        from kame_desktop.errors import LlmError

        raise LlmError(self.reason, retryable=False, kind=self.kind)  # type: ignore[arg-type]
        yield ""  # an async generator, like the real providers

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def aclose(self) -> None:
        pass
