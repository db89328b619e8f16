"""What a tool is, how a call reaches it, and the one rule that keeps speculation from acting twice.

The oracle LLM is asked while the user is still talking (spec §3.3), so a call may come from a
request built on partial words. `TurnTools` holds the rule: a read-only tool runs at once (its
result cached by name and arguments for the requests that follow in the same turn); a tool that
changes something runs only once the request is known to carry the turn's final words, and at
most once per turn for the same arguments."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kame_desktop.backend.tools.mcp_servers import McpServers

log = logging.getLogger(__name__)

SUMMARY_CHARS = 80  # of a result, in the timeline and the window


@dataclass(frozen=True)
class ToolCall:
    """A call the model wrote: the tool's name and its arguments as JSON text."""

    name: str
    arguments: str = "{}"
    id: str = ""
    written: bool = False  # written as text (<tool_call> tags, bare JSON), not a structured call

    def parsed_arguments(self) -> dict[str, Any]:
        value = json.loads(self.arguments or "{}")
        if not isinstance(value, dict):
            raise ValueError("the arguments are not a JSON object")
        return value

    def key(self) -> tuple[str, str]:
        """What makes two calls the same call (their arguments in a canonical form)."""
        try:
            return self.name, json.dumps(self.parsed_arguments(), sort_keys=True)
        except ValueError:
            return self.name, self.arguments.strip()

    def shown(self) -> str:
        """`calculate(37*48)`: the arguments' values, as a person reads them."""
        try:
            values = [str(v) for v in self.parsed_arguments().values()]
        except ValueError:
            values = [self.arguments]
        return f"{self.name}({', '.join(values)})"


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    text: str  # what the model is told

    @property
    def summary(self) -> str:
        return self.text if len(self.text) <= SUMMARY_CHARS else self.text[: SUMMARY_CHARS - 1] + "…"


class ToolFailed(Exception):
    """A tool's own, user-facing reason for failing (bad arguments, an impossible request)."""


@dataclass(frozen=True)
class Tool:
    """One function the model may call. `run` takes the arguments as keywords and returns what
    the model is told; it runs on a worker thread, cut at `timeout_s`."""

    name: str
    description: str
    parameters: dict[str, Any]  # the arguments' JSON Schema
    run: Callable[..., str]
    read_only: bool = True  # False: it changes something (runs only on the turn's final words, once)
    timeout_s: float = 3.0

    def schema(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def object_schema(required: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


async def run_tool(tool: Tool, call: ToolCall) -> ToolResult:
    """Run one call on a worker thread within the tool's time limit; a failure is a result the
    model reads (it can say so), never an exception."""
    declared = tool.parameters.get("properties", {})
    try:
        arguments = call.parsed_arguments()
    except ValueError as e:
        if declared:
            return ToolResult(False, f"error: the arguments are not valid JSON ({e})")
        arguments = {}  # it takes none: whatever a small model wrote there does not matter
    arguments = {k: v for k, v in arguments.items() if k in declared}  # small models add stray keys
    try:
        text = await asyncio.wait_for(_on_a_thread(tool, arguments), tool.timeout_s)
    except asyncio.TimeoutError:
        return ToolResult(False, f"error: {tool.name} did not answer within {tool.timeout_s:g} s")
    except ToolFailed as e:
        return ToolResult(False, f"error: {e}")
    except TypeError as e:  # arguments the function does not take
        return ToolResult(False, f"error: wrong arguments for {tool.name} ({e})")
    except Exception as e:  # a tool's bug must not take the answer down
        log.exception("tool %s failed", tool.name)
        return ToolResult(False, f"error: {tool.name} failed ({type(e).__name__})")
    return ToolResult(True, str(text))


def _on_a_thread(tool: Tool, arguments: dict[str, Any]) -> asyncio.Future:
    """`tool.run(**arguments)` on a thread of its own (a daemon: one that hangs past its limit is
    left behind, and never holds up the back-end's shutdown as the loop's executor would)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cut at its limit meanwhile
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def work() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (tool.run(**arguments), None)
        except BaseException as e:  # handed to the caller
            outcome = (None, e)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits for it
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name=f"tool-{tool.name}", daemon=True).start()
    return future


@dataclass
class TurnTools:
    """The tools for one conversation, and what was done in the current turn."""

    tools: dict[str, Tool]
    cache: dict[tuple[str, str], ToolResult] = field(default_factory=dict)  # read-only results, this turn
    written: dict[tuple[str, str], ToolResult] = field(default_factory=dict)  # writes done, this turn
    servers: McpServers | None = None  # the user's MCP servers: their tools come and go as they run

    def available(self) -> dict[str, Tool]:
        """The tools that can be called now: the built-ins and what the running servers offer."""
        return {**self.tools, **self.servers.tools()} if self.servers is not None else self.tools

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self.available().values()]

    def new_turn(self) -> None:
        self.cache.clear()
        self.written.clear()

    async def call(self, call: ToolCall, final_words: Callable[[], Awaitable[bool]]) -> ToolResult | None:
        """The result of `call`; None when it changes something and its request turned out not
        to carry the turn's final words (`final_words()` waits until that is known): the request
        is stale and acts on nothing."""
        tool = self.available().get(call.name)
        if tool is None:
            return ToolResult(False, f"error: there is no tool named {call.name!r}")
        key = call.key()
        if tool.read_only:
            if key not in self.cache:
                self.cache[key] = await run_tool(tool, call)
            return self.cache[key]
        if key in self.written:  # asked again in the same turn: done already, never twice
            return self.written[key]
        if not await final_words():
            return None
        if key in self.written:  # another request of the turn did it while this one waited
            return self.written[key]
        result = self.written[key] = await run_tool(tool, call)
        return result


# --- calls written as text -------------------------------------------------------------------------
# Qwen's chat template asks for <tool_call>{"name": …, "arguments": …}</tool_call>, and
# llama_cpp.server passes that on as plain content; small models also answer with the bare JSON
# object (in a ```json fence or not). Either way it is a call, never words to say.

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_FENCE = "```"


class ToolCallText:
    """Splits streamed text into what is said and the calls written in it: `<tool_call>` tags
    anywhere, or an answer that is one JSON object with a "name". Text that may be the start of
    a tag, and an answer that opens like JSON, are held until it is known what they are."""

    def __init__(self) -> None:
        self._buffer = ""
        self._count = 0
        self._opening = True  # nothing said yet: a bare JSON call is still possible
        self._after_call = False  # a bare call was read: the fence that closes it is no text

    def push(self, chunk: str) -> list[str | ToolCall]:
        self._buffer += chunk
        out: list[str | ToolCall] = []
        if self._opening:
            head = self._buffer.lstrip()
            if not head or _FENCE.startswith(head[:3]) and len(head) < 3:
                return out  # nothing to tell by yet
            if head.startswith(("{", _FENCE)):
                end = _json_object_end(head)
                if end is None:
                    return out  # the object goes on
                call = self._parse(head[head.index("{") : end])
                self._opening = False
                self._buffer = head[end:] if call.name else head
                if call.name:
                    out.append(call)
                    self._after_call = True
            self._opening = False
        if self._after_call:
            self._buffer = self._buffer.lstrip().lstrip("`")
            if not self._buffer:
                return out
            self._after_call = False
        while True:
            start = self._buffer.find(_OPEN)
            if start < 0:
                keep = _partial_tag_length(self._buffer)
                text, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep :]
                if text:
                    out.append(text)
                return out
            if start:
                out.append(self._buffer[:start])
            end = self._buffer.find(_CLOSE, start)
            if end < 0:
                self._buffer = self._buffer[start:]
                return out
            out.append(self._parse(self._buffer[start + len(_OPEN) : end]))
            self._buffer = self._buffer[end + len(_CLOSE) :]

    def flush(self) -> list[str | ToolCall]:
        """The end of the answer: an unclosed tag or object is still a call if its JSON is whole."""
        rest, self._buffer = self._buffer, ""
        body = rest.strip().removeprefix(_OPEN).removeprefix(_FENCE + "json").removeprefix(_FENCE).strip()
        if rest.lstrip().startswith((_OPEN, "{", _FENCE)):
            call = self._parse(body.removesuffix(_FENCE).strip())
            if call.name:
                return [call]
        return [rest] if rest else []

    def _parse(self, body: str) -> ToolCall:
        try:
            value = json.loads(body.strip())
        except ValueError:
            value = None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            found = re.search(r'"name"\s*:\s*"([^"]+)"', body) if body.lstrip().startswith("{") else None
            if found is None:
                return ToolCall("")
            value = {"name": found.group(1), "arguments": body}
        self._count += 1
        arguments = value.get("arguments", value.get("parameters", {}))
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        return ToolCall(value["name"], arguments, f"call_{self._count}", written=True)


def _json_object_end(text: str) -> int | None:
    """The index just past the JSON object that starts at the first `{` of `text`, or None
    while it is not closed yet."""
    depth, in_string, escaped = 0, False, False
    for i in range(text.index("{") if "{" in text else len(text), len(text)):
        c = text[i]
        if in_string:
            escaped, in_string = (not escaped and c == "\\"), in_string and (escaped or c != '"')
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _partial_tag_length(text: str) -> int:
    """How many characters at the end of `text` could be the start of `<tool_call>`."""
    for n in range(min(len(text), len(_OPEN) - 1), 0, -1):
        if _OPEN.startswith(text[-n:]):
            return n
    return 0
