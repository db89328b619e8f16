"""The user's own tools: MCP servers (Model Context Protocol, the `mcp` SDK), their tools offered to
the LLM beside the built-ins as `server.tool`, through the same rule (TurnTools): read-only when
the tool's own annotation says so (`readOnlyHint`), else a write, run only on the turn's final
words, once.

`McpServers` runs the session's servers on one asyncio loop in a thread of its own, so a server
that misbehaves never stalls the back-end. Each enabled server has a keeper that starts it
(stdio: a child process in its own process group; http: a streamable-HTTP endpoint, its token
from the keyring), lists its tools, pings it every few seconds, and when it fails to start, dies,
hangs or answers something that is not MCP: one banner line, its tools disappear, and it is
started again with back-off until it is back. `close()` ends every server it started.

What a server is sent: the arguments the LLM wrote for its tool, nothing else (no conversation,
no sampling, no roots). What it answers is cut to MAX_RESULT_CHARS; its token is kept out of
every text that leaves here (banner, log, result)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kame_desktop.backend.tools.base import Tool, ToolFailed
from kame_desktop.config import McpServerSettings
from kame_desktop.credentials import KeyRedactor, mcp_token
from kame_desktop.errors import ErrorKind, KameError
from kame_desktop.events import ErrorEvent, Event, RecoveredEvent

log = logging.getLogger(__name__)

START_LIMIT_S = 20.0  # the handshake and the tool list (a first `npx -y …` downloads its package)
PING_EVERY_S = 2.0  # how soon a server that died or hangs is noticed
PING_LIMIT_S = 5.0
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # between starts of a server that keeps failing
STABLE_S = 30.0  # up this long, a server that then fails is started again after the first back-off
CLOSE_LIMIT_S = 10.0  # the SDK's own shutdown: stdin closed, 2 s, SIGTERM to its group, 2 s, SIGKILL
MAX_RESULT_CHARS = 2000  # what the model is told of one result
MAX_DESCRIPTION_CHARS = 400  # a tool's description in the prompt (the local model reads them all)
MAX_STDERR_BYTES = 1 << 20  # what is kept of a stdio server's stderr (its last line says why it failed)
# The servers' tools together take at most this share of the model's context: the model reads
# them with every request (mcp-server-git's 12 tools alone are 2,086 tokens, half the embedded
# model's 4,096), and the conversation needs the rest.
TOOL_SHARE = 4
NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
# The SDK logs each failure (a bad line with its traceback) and httpx2 every request (a ping
# every few seconds); the keeper says each failure once, without them.
QUIET_LOGGERS = {"mcp": logging.CRITICAL, "httpx2": logging.WARNING}


class McpError(KameError):
    """A server that cannot be used: one line, saying what to do."""


@dataclass(frozen=True)
class ServerTool:
    """A tool as the server lists it (the Settings dialog's Test, `doctor`)."""

    name: str  # the server's own name for it
    description: str
    read_only: bool
    parameters: dict[str, Any]


def server_problem(server: McpServerSettings) -> str | None:
    """Why `server` cannot be started as configured (one line, what to type), or None."""
    if not NAME.fullmatch(server.name):
        return "an MCP server's name is 1 to 32 letters, digits, - or _ (its tools are offered as name.tool)"
    if server.transport == "stdio":
        if not server.command.strip():
            return f"MCP server {server.name}: the command is empty — type the program that starts it"
        if bad := [e for e in server.env if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", e, re.DOTALL)]:
            return f"MCP server {server.name}: environment lines are NAME=value ({len(bad)} is not)"
        return None
    try:
        parts = urlsplit(server.url.strip())
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return f"MCP server {server.name}: the URL must start with http:// or https:// and name a host"
    return None


def where(server: McpServerSettings) -> str:
    """What the server is, for a person: its program, or its URL's host (a URL may carry a token)."""
    if server.transport == "stdio":
        return f"stdio: {server.command.strip().rsplit('/', 1)[-1]}"
    try:
        return f"http: {urlsplit(server.url).netloc.rsplit('@', 1)[-1]}"
    except ValueError:
        return "http"


# --- one connection ---------------------------------------------------------------------------------


@dataclass
class Link:
    """One running connection to a server: its session, its tools, and what went wrong."""

    server: McpServerSettings
    redact: KeyRedactor
    with_token: bool = False  # a token was sent
    limit: float = START_LIMIT_S  # for its start
    session: Any = None
    tools: list[ServerTool] = field(default_factory=list)
    trouble: asyncio.Event = field(default_factory=asyncio.Event)  # look at it now (a call failed)
    relist: bool = False  # the server said its tools changed
    garbage: bool = False  # it wrote something that is not MCP
    refused: int | None = None  # an HTTP 401/403 it answered, not yet reported (failure() takes it)
    missing: int | None = None  # an HTTP 404/405/501 it answered: the URL is no MCP endpoint
    stderr: Any = None  # a stdio server's stderr (a temporary file)
    starting: Any = None  # the start's cancel scope: garbage ends it at once

    async def on_message(self, message: Any) -> None:
        import mcp.types as types

        if isinstance(message, Exception):
            self.garbage = True
            self.trouble.set()
            if self.starting is not None:
                self.starting.cancel()
        elif isinstance(message, types.ToolListChangedNotification):
            self.relist = True
            self.trouble.set()

    async def on_response(self, response: Any) -> None:
        if response.status_code in (401, 403):
            self.refused = response.status_code
        elif response.status_code < 400:  # the token is taken again: a refusal is over
            self.refused = None
        elif response.status_code in (404, 405, 501):
            self.missing = response.status_code

    def stderr_tail(self) -> str:
        """The last line the server wrote on stderr. (The file's offset is the server's too: it
        is left at the end, where the server writes next.)"""
        if self.stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            size = self.stderr.seek(0, os.SEEK_END)
            self.stderr.seek(max(0, size - 4000))
            lines = [line.strip() for line in self.stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
            return lines[-1][:200] if lines else ""
        return ""

    def trim_stderr(self) -> None:
        """A server that writes a lot on stderr never fills the disk: past MAX_STDERR_BYTES the
        file starts again (the shared offset goes back to its start for the server too)."""
        with contextlib.suppress(OSError, ValueError):
            if self.stderr is not None and self.stderr.seek(0, os.SEEK_END) > MAX_STDERR_BYTES:
                self.stderr.seek(0)
                self.stderr.truncate()

    def failure(self, error: BaseException, starting: bool) -> McpError:
        """What went wrong, in one line with its kind (the token never in it)."""
        import httpx2
        import mcp.types as types
        from mcp.shared.exceptions import MCPError

        leaf = _leaf(error)
        kind: ErrorKind = "bad_server"
        refused, self.refused = self.refused, None  # said once: a later failure is what it is
        if refused:
            how = "refused the token" if self.with_token else "needs a token (none is stored)"
            text, kind = f"the server {how} (HTTP {refused}) — set it in Settings → Tools", "refused"
        elif self.missing and starting:  # later, a 404 is a session the server forgot (it restarted)
            text = f"it answered HTTP {self.missing} — check the URL (the server's MCP endpoint, often ending in /mcp)"
        elif isinstance(leaf, FileNotFoundError | PermissionError):
            text, kind = (f"cannot run {self.server.command!r} ({leaf.strerror}) — check the command in Settings → Tools",
                          "bad_input")
        elif isinstance(leaf, httpx2.TransportError):
            text, kind = f"cannot reach it ({type(leaf).__name__}) — start the server or check the URL", "unreachable"
        elif self.garbage or isinstance(leaf, ValueError):  # pydantic's ValidationError too
            text = "it answered something that is not MCP"
        elif isinstance(leaf, TimeoutError):
            text, kind = (f"it did not answer the MCP handshake within {self.limit:g} s" if starting
                          else f"it stopped answering (no answer to a ping within {PING_LIMIT_S:g} s)"), "busy"
        elif isinstance(leaf, MCPError) and leaf.code == types.CONNECTION_CLOSED:
            text = "it exited" if self.server.transport == "stdio" else "the connection closed"
            if tail := self.stderr_tail():
                text += f" ({tail})"
        elif isinstance(leaf, MCPError):
            text = f"it answered with an error: {leaf.message[:200]}"
        else:
            text, kind = f"{type(leaf).__name__}: {str(leaf)[:200]}", "failed"
        return McpError(self.redact(text), kind=kind)


def _leaf(error: BaseException) -> BaseException:
    """The first real error inside task groups' exception groups."""
    while getattr(error, "exceptions", None):  # an ExceptionGroup (exceptiongroup's on Python 3.10)
        error = error.exceptions[0]  # type: ignore[attr-defined]
    return error


def _env(server: McpServerSettings) -> dict[str, str]:
    return dict(line.split("=", 1) for line in server.env)


def _headers(server: McpServerSettings, token: str | None) -> dict[str, str]:
    if not token:
        return {}
    header = server.token_header.strip() or "Authorization"
    value = f"Bearer {token}" if header.lower() == "authorization" and " " not in token else token
    return {header: value}


@contextlib.asynccontextmanager
async def connect(server: McpServerSettings, token: str | None = None,
                  limit: float | None = None) -> AsyncIterator[Link]:
    """A started server with its tools listed; it ends with the block. Raises McpError."""
    import anyio
    import httpx2
    from mcp import ClientSession, StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    if problem := server_problem(server):
        raise McpError(problem, kind="bad_input")
    link = Link(server, KeyRedactor(token), with_token=bool(token), limit=limit or START_LIMIT_S)
    failure: McpError | None = None
    started = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                if server.transport == "stdio":
                    link.stderr = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 - the stack closes it
                    params = StdioServerParameters(command=server.command.strip(), args=list(server.args), env=_env(server))
                    streams = await stack.enter_async_context(stdio_client(params, errlog=link.stderr))
                else:
                    client = httpx2.AsyncClient(headers=_headers(server, token), event_hooks={"response": [link.on_response]},
                                                timeout=httpx2.Timeout(START_LIMIT_S, read=300.0))
                    await stack.enter_async_context(client)
                    streams = await stack.enter_async_context(streamable_http_client(server.url.strip(), http_client=client))
                link.session = await stack.enter_async_context(ClientSession(*streams, message_handler=link.on_message))
                with anyio.fail_after(link.limit) as link.starting:
                    await link.session.initialize()
                    link.tools = await _list_tools(link.session)
                link.starting = None
                if link.garbage:
                    raise ValueError("not MCP")
            except Exception as e:
                failure = link.failure(e, starting=True)  # raised once the stack has ended it
            if failure is None:
                started = True
                yield link
    except Exception as e:  # an ExceptionGroup: the transport's task group ended with an error
        if started:
            raise  # it broke while in use: the caller says how
        failure = failure or link.failure(e, starting=True)
    if failure is not None:
        raise failure


async def _list_tools(session: Any) -> list[ServerTool]:
    tools, cursor = [], None
    for _ in range(20):  # pages; a server that pages forever is not followed further
        import mcp.types as types

        listed = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        for tool in listed.tools:
            annotations = tool.annotations
            read_only = bool(annotations and annotations.read_only_hint)
            parameters = dict(tool.input_schema or {})
            parameters.setdefault("type", "object")
            parameters.setdefault("properties", {})
            description = (tool.description or (annotations.title if annotations else None) or tool.name).strip()
            tools.append(ServerTool(tool.name, _cut(description, MAX_DESCRIPTION_CHARS), read_only, parameters))
        cursor = listed.next_cursor
        if not cursor:
            break
    return tools


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_text(result: Any) -> str:
    """What the model is told of a tool's result: its text, other content named."""
    parts = []
    for block in result.content or ():
        if getattr(block, "type", "") == "text":
            parts.append(block.text)
        elif getattr(block, "type", "") == "resource" and isinstance(getattr(block.resource, "text", None), str):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{getattr(block, 'type', 'content')}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    return _cut("\n".join(parts).strip() or "(no result)", MAX_RESULT_CHARS)


def list_server_tools(server: McpServerSettings, token: str | None = None,
                      limit: float = START_LIMIT_S) -> list[ServerTool]:
    """Start `server`, list its tools and end it (the Settings dialog's Test, `doctor`): on a
    thread with no event loop of its own. `token`: None takes the stored one. Raises McpError."""

    async def listing() -> list[ServerTool]:
        async with connect(server, mcp_token(server.name) if token is None else token, limit) as link:
            return link.tools

    quiet_sdk_logs()
    return asyncio.run(listing())


def quiet_sdk_logs() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


# --- the session's servers ----------------------------------------------------------------------------


class McpServers:
    """The enabled servers of one session: `tools()` is what they offer right now (any thread);
    `start(publish)` starts them, `close()` ends every one. `on_change` is called (on this
    object's thread) whenever the tools offered change.

    Given the model's context (`start`), the tools offered take at most 1/TOOL_SHARE of it, as
    the model counts them: servers in settings order, each one's tools as it lists them, every
    tool that still fits; the rest are not offered, and the first time a server's are left out
    one banner line says which and what to do."""

    def __init__(self, servers: Iterable[McpServerSettings], disabled: Iterable[str] = (),
                 token: Callable[[str], str | None] = mcp_token) -> None:
        named: dict[str, McpServerSettings] = {}
        for server in (s for s in servers if s.enabled):
            if server.name in named:  # a hand-edited file: two servers' tools cannot share one name
                log.warning("MCP servers: a second server named %s is left out", server.name)
            named.setdefault(server.name, server)
        self.servers = tuple(named.values())
        self.disabled = frozenset(disabled)
        self.token = token
        self.on_change: Callable[[], None] | None = None
        self.publish: Callable[[Event], None] = lambda event: None
        self.starts: dict[str, int] = {}  # per server: connections made (tests, doctor)
        self.count_tokens: Callable[[str], int] = lambda text: -(-len(text) // 4)  # the model's, once started
        self.context_tokens: int | None = None  # the model's context (None: no budget)
        self._offered: dict[str, dict[str, Tool]] = {}  # per running server: its tools (on the loop)
        self._tools: dict[str, Tool] = {}  # those within the budget, replaced whole at each change
        self._costs: dict[str, int] = {}  # a tool's schema (JSON) -> its tokens
        self._told: set[str] = set()  # servers whose tools left out the user was told of
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def __bool__(self) -> bool:
        return bool(self.servers)

    def tools(self) -> dict[str, Tool]:
        return self._tools

    def start(self, publish: Callable[[Event], None], count_tokens: Callable[[str], int] | None = None,
              context_tokens: int | None = None) -> None:
        """Start the servers; their tools are counted with `count_tokens` (the LLM's) against
        1/TOOL_SHARE of `context_tokens` (None: no limit)."""
        if self._thread is not None or not self.servers:
            return
        self.publish = publish
        self.count_tokens = count_tokens or self.count_tokens
        self.context_tokens = context_tokens
        quiet_sdk_logs()
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(ready),), name="kame-mcp", daemon=True)
        self._thread.start()
        ready.wait()

    def begin_close(self) -> None:
        """Tell every server to end, and return at once (`close()` waits for them); the tools
        they take with them are no longer a change anyone is told of."""
        self.on_change = None
        self._closing = True  # nothing more is counted: the LLM may be closing too
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stopping.set)

    def close(self, timeout: float = CLOSE_LIMIT_S) -> None:
        """End every server (each one's process tree, for stdio); at most `timeout` seconds."""
        self.begin_close()
        thread = self._thread
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("MCP servers: not all ended within %.0f s", timeout)

    async def _main(self, ready: threading.Event) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        keepers = [asyncio.create_task(self._keep(server), name=f"mcp-{server.name}") for server in self.servers]
        ready.set()
        await self._stopping.wait()
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)  # each one's shutdown runs to its end

    async def _keep(self, server: McpServerSettings) -> None:
        """Keep `server` running: start it, watch it, and after a failure say so once and start
        it again after a back-off, until it is back."""
        failures = 0  # starts in a row that failed, or did not last STABLE_S: the back-off grows
        told = ""  # the banner line of the outage under way ("": none)
        while True:
            link: Link | None = None
            problem: McpError | None = None
            up: float | None = None  # when it started, this time
            try:
                async with connect(server, self.token(server.name)) as link:
                    up = time.monotonic()
                    self.starts[server.name] = self.starts.get(server.name, 0) + 1
                    self._offer(server, link)
                    if told:  # the outage's banner line goes (it said "until it is back")
                        log.info("MCP server %s is back", server.name)
                        self.publish(RecoveredEvent("tool", f"MCP server {server.name} is back: its tools are offered again", told))
                        told = ""
                    problem = await self._watch(link)
            except McpError as e:  # it did not start
                problem = e
            except Exception as e:  # the connection broke under it (its task group ended)
                problem = problem or (link.failure(e, starting=False) if link else McpError(str(e)))
            finally:
                self._offer(server, None)
            assert problem is not None
            if up is not None or not failures:  # one line per outage, not one per retry
                what = "did not start" if link is None else "stopped"
                message = f"MCP server {server.name} {what}: {problem}; its tools are off until it is back (retrying)"
                log.warning("%s", message)
                self.publish(ErrorEvent("tool", message, problem.kind))
                told = message
            # One that dies soon after each start is not back: it is not started again every second.
            failures = 1 if up is not None and time.monotonic() - up >= STABLE_S else failures + 1
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])

    async def _watch(self, link: Link) -> McpError:
        """Return once the server failed: why. Pings it every PING_EVERY_S, and at once after a
        call that failed or hung."""
        import anyio

        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(link.trouble.wait(), PING_EVERY_S)
            link.trouble.clear()
            link.trim_stderr()
            if link.garbage:
                return link.failure(ValueError("not MCP"), starting=False)
            try:
                with anyio.fail_after(PING_LIMIT_S):
                    await link.session.send_ping()
                    if link.relist:
                        link.relist = False
                        link.tools = await _list_tools(link.session)
                        self._offer(link.server, link)
            except Exception as e:
                return link.failure(e, starting=False)

    def _offer(self, server: McpServerSettings, link: Link | None) -> None:
        """Offer `link`'s tools under the server's name (None: none of them)."""
        tools = {} if link is None else {
            f"{server.name}.{t.name}": Tool(f"{server.name}.{t.name}", t.description, t.parameters,
                                            self._runner(link, t.name), read_only=t.read_only,
                                            timeout_s=server.timeout_s + 1.0)  # the call's own limit comes first
            for t in link.tools}
        tools = {name: tool for name, tool in tools.items() if name not in self.disabled}
        if tools == self._offered.get(server.name, {}):
            return
        self._offered[server.name] = tools
        if self._closing:
            self._tools = {}
            return
        chosen = self._within_budget()
        if chosen == self._tools:
            return
        self._tools = chosen
        if (on_change := self.on_change) is not None:  # read once: begin_close() may clear it meanwhile
            on_change()

    def _within_budget(self) -> dict[str, Tool]:
        """The running servers' tools that fit the budget (servers in settings order, tools as
        listed, each one that still fits); the first time a server's are left out, one banner line."""
        budget = None if self.context_tokens is None else self.context_tokens // TOOL_SHARE
        chosen: dict[str, Tool] = {}
        left_out: dict[str, tuple[int, int]] = {}  # server -> (tools left out, its tools)
        used = 0
        for server in self.servers:
            tools = self._offered.get(server.name, {})
            for name, tool in tools.items():
                cost = self._cost(tool) if budget is not None else 0
                if budget is None or used + cost <= budget:
                    chosen[name], used = tool, used + cost
                else:
                    out, _ = left_out.get(server.name, (0, len(tools)))
                    left_out[server.name] = (out + 1, len(tools))
        if new := {name: counts for name, counts in left_out.items() if name not in self._told}:
            self._told |= set(new)
            which = " and ".join(f"{out} of {name}'s {total} tools" for name, (out, total) in new.items())
            verb = "is" if sum(out for out, _ in new.values()) == 1 else "are"
            message = (f"MCP servers' tools may take 1/{TOOL_SHARE} of the model's context ({budget:,} of "
                       f"{self.context_tokens:,} tokens): {which} {verb} not offered — switch off the ones "
                       "you do not need in Settings → Tools")
            log.warning("%s", message)
            self.publish(ErrorEvent("tool", message, "bad_input"))
        return chosen

    def _cost(self, tool: Tool) -> int:
        """The tokens `tool` takes in the prompt (its schema, as the LLM is sent it), counted once."""
        schema = json.dumps(tool.schema())
        if schema not in self._costs:
            self._costs[schema] = self.count_tokens(schema)
        return self._costs[schema]

    def _runner(self, link: Link, name: str) -> Callable[..., str]:
        """`Tool.run` for one of the server's tools: runs on a worker thread, waits for the call
        on this object's loop."""

        def run(**arguments: Any) -> str:
            loop = self._loop
            try:
                future = asyncio.run_coroutine_threadsafe(self._call(link, name, arguments), loop)
            except (RuntimeError, TypeError):  # the loop has ended: the session is closing
                raise ToolFailed(f"the MCP server {link.server.name} has closed") from None
            try:
                return future.result()
            except Exception as e:  # cancelled as the session closes
                if isinstance(e, ToolFailed):
                    raise
                raise ToolFailed(f"the MCP server {link.server.name} has closed") from None

        return run

    async def _call(self, link: Link, name: str, arguments: dict[str, Any]) -> str:
        import anyio

        limit = link.server.timeout_s
        try:
            with anyio.fail_after(limit):
                result = await link.session.call_tool(name, arguments)
        except TimeoutError:
            link.trouble.set()  # a hung call: is the server still there?
            raise ToolFailed(f"{link.server.name}.{name} did not answer within {limit:g} s") from None
        except Exception as e:
            link.trouble.set()
            raise ToolFailed(str(link.failure(e, starting=False))) from None
        text = link.redact(result_text(result))
        if result.is_error:
            raise ToolFailed(text)
        return text


def wait_for_tools(servers: McpServers, names: Iterable[str], timeout: float) -> bool:
    """Whether every one of `names` is offered within `timeout` seconds (tests, doctor)."""
    deadline = time.monotonic() + timeout
    wanted = set(names)
    while not wanted <= set(servers.tools()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
