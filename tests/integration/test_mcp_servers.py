"""MCP servers as tools: a real MCP server written with the `mcp` SDK (tests/fixtures/mcp_server.py:
`lookup` read-only by its annotation, `add_entry` a write), run over stdio and over streamable HTTP
on 127.0.0.1 with a token, driven through the real back-end (worker, OracleManager, OpenAI-compatible
provider against a scripted chat server on 127.0.0.1): its tools are called on the right words and
their results spoken, a write never runs on a partial, a server that dies, hangs or answers garbage
is one banner line and comes back, a hanging call is cut at its limit, a wrong token is one banner
line and nowhere in the log, and no server process outlives the session."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from fixtures.mcp_servers import MCP_START_S as START_S
from fixtures.mcp_servers import MCP_TOKEN as TOKEN
from fixtures.mcp_servers import stdio_mcp_server as stdio_server

from kame_desktop.backend.tools import mcp_servers
from kame_desktop.backend.tools.base import ToolCall
from kame_desktop.backend.tools.mcp_servers import McpServers, list_server_tools, wait_for_tools
from kame_desktop.config import McpServerSettings, MemorySettings, Settings, ToolSettings
from kame_desktop.events import (
    ErrorEvent,
    OracleDone,
    OracleText,
    RecoveredEvent,
    ToolCallEvent,
    ToolResultEvent,
)

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture(autouse=True)
def quick_failures(monkeypatch):
    """Failures found and retried in a fraction of the real times (the behaviour is the same)."""
    import mcp.client.stdio

    monkeypatch.setattr(mcp_servers, "PING_EVERY_S", 0.3)  # the ping's limit stays 5 s: a busy machine is no hang
    monkeypatch.setattr(mcp_servers, "BACKOFF_S", (0.3, 0.6))
    monkeypatch.setattr(mcp.client.stdio, "PROCESS_TERMINATION_TIMEOUT", 0.5)
    monkeypatch.setattr(mcp.client.stdio, "FORCE_KILL_TIMEOUT", 0.5)


def started_pids(state: Path) -> list[int]:
    return sorted((int(p.name[4:]) for p in state.glob("pid-*")), key=lambda pid: (state / f"pid-{pid}").stat().st_mtime)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def calls(state: Path) -> list[str]:
    path = state / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def wait_until(condition, timeout: float = START_S, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- a conversation through the real back-end ---------------------------------------------------------


class Conversation:
    """A back-end built from Settings (tools on, the servers given), its LLM a scripted
    OpenAI-compatible server that calls `lookup` for "what does X mean", `add_entry` for "add X
    to my diary" and says the result it gets back."""

    def __init__(self, servers: tuple[McpServerSettings, ...], disabled: tuple[str, ...] = (),
                 context_tokens: int = 8192) -> None:
        from kame_desktop.backend.factory import make_memory_and_tools
        from kame_desktop.backend.llm.openai_compat import OpenAiLlm
        from kame_desktop.backend.oracle_manager import PolicyConfig
        from kame_desktop.backend.worker import Backend
        from kame_desktop.bench.scripted_llm import ScriptedLlmServer

        self.chat = ScriptedLlmServer(delay_range=(0.0, 0.0), words_per_s=500, script=self.script)
        self.chat.start()
        settings = Settings(tools=ToolSettings(enabled=True, mcp=servers, disabled=disabled),
                            memory=MemorySettings(enabled=False))
        _, self.tools = make_memory_and_tools(settings)
        self.signals: list = []
        self.events: list = []
        llm = self.llm = OpenAiLlm(self.chat.url, "scripted", first_chunk_timeout=30, chunk_timeout=30,
                                   context_tokens=context_tokens)
        self.backend = Backend(llm, None, lambda s: self.signals.append(s) or True, self.events.append,
                               tools=self.tools, policy=PolicyConfig(name="reactive"))
        self.backend.start()

    def script(self, n: int, messages: list[dict]) -> list[dict]:
        offered = {t["function"]["name"] for t in self.chat.requests[n - 1].tools or []}
        last = messages[-1]
        if last["role"] == "tool":
            return [{"content": f"It says: {last['content']}."}]
        text = last["content"].lower() if last["role"] == "user" else ""
        for pattern, tool, argument in ((r"what does (\w+) mean", "lookup", "word"), (r"add (.+) to my diary", "add_entry", "text")):
            found = re.search(pattern, text)
            names = [name for name in offered if name.endswith(f"_{tool}")]  # `server.tool`, as OpenAI takes it
            if found and names:
                call = {"index": 0, "id": f"call_{n}", "type": "function",
                        "function": {"name": names[0], "arguments": json.dumps({argument: found.group(1)})}}
                return [{"tool_calls": [call]}]
            if found:
                return [{"content": "I cannot look that up right now."}]
        return [{"content": "Hello."}]

    def inject(self, *events) -> None:
        self.backend.inject_asr_events(list(events))

    def ask(self, words: str, timeout: float = START_S) -> str:
        """Say `words` as one finished turn; what the companion answers (the adopted answer's text)."""
        from kame_desktop.events import AsrFinalEvent, TurnEndEvent

        start = len(self.signals)
        self.inject(AsrFinalEvent(words), TurnEndEvent("vad"))
        return self.answer_after(start, timeout)

    def answer_after(self, start: int, timeout: float = START_S) -> str:
        """The first answer completed after signal `start`, once it is; the companion says it."""

        def answer() -> str | None:
            new = self.signals[start:]
            spoken = {s.request for s in new if isinstance(s, OracleText)}
            done = [s.request for s in new if isinstance(s, OracleDone) and s.request in spoken]
            return " ".join(s.text for s in new if isinstance(s, OracleText) and s.request == done[-1]) if done else None

        wait_until(lambda: answer() is not None, timeout, "an answer")
        said = answer() or ""
        self.backend.on_companion_text(said)  # as the front-end does when it speaks it
        return said

    def banners(self) -> list[str]:
        return [e.message for e in self.events if isinstance(e, ErrorEvent)]

    def recovered(self) -> list[RecoveredEvent]:
        return [e for e in self.events if isinstance(e, RecoveredEvent)]

    def close(self) -> None:
        self.backend.stop()
        self.chat.close()


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_servers_tools_are_called_on_the_right_words_and_a_write_waits_for_the_final_ones(transport, tmp_path, request):
    from kame_desktop.credentials import store_mcp_token
    from kame_desktop.events import AsrFinalEvent, AsrPartialEvent, TurnEndEvent

    if transport == "stdio":
        server, state = stdio_server(tmp_path / "state"), tmp_path / "state"
    else:
        server, state = request.getfixturevalue("mcp_http_server")
        store_mcp_token(server.name, TOKEN)
    name = server.name
    talk = Conversation((server,))
    try:
        wait_until(lambda: f"{name}.lookup" in talk.tools.available(), what="the server's tools")
        offered = set(talk.tools.available())
        assert {f"{name}.lookup", f"{name}.add_entry"} <= offered and "get_time" in offered  # beside the built-ins
        assert talk.tools.available()[f"{name}.lookup"].read_only  # its annotation says so
        assert not talk.tools.available()[f"{name}.add_entry"].read_only  # none: a write

        # Called on the right words, and its result spoken.
        assert talk.ask("What does kame mean?") == "It says: kame means turtle."
        assert talk.ask("Hello there, how are you?") == "Hello."
        assert calls(state) == ["lookup kame"]
        sent = [r for r in talk.chat.requests if r.tools]
        assert f"{name}_lookup" in {t["function"]["name"] for t in sent[0].tools}  # a name OpenAI's API takes
        call, result = sent[1].messages[-2:]  # the second round: the call and its result, under that name
        assert call["tool_calls"][0]["function"]["name"] == result["name"] == f"{name}_lookup"
        assert [e.name for e in talk.events if isinstance(e, ToolCallEvent)] == [f"{name}.lookup"]

        # A write asked on partial words waits; the user goes on; only the final words' runs, once.
        start = len(talk.signals)
        talk.inject(AsrPartialEvent("please add kame to my diary"))
        wait_until(lambda: any(isinstance(e, ToolCallEvent) and e.name == f"{name}.add_entry" for e in talk.events),
                   what="the write asked on the partial words")
        time.sleep(0.3)
        assert "add_entry" not in " ".join(calls(state))  # it waits for the turn's end
        talk.inject(AsrFinalEvent("please add kame and usagi to my diary"), TurnEndEvent("vad"))
        assert talk.answer_after(start) == "It says: added to the diary: kame and usagi."
        assert (state / "entries.txt").read_text() == "kame and usagi\n"
        assert [c for c in calls(state) if c.startswith("add_entry")] == ["add_entry kame and usagi"]
        stale = [e for e in talk.events if isinstance(e, ToolResultEvent) and not e.ok]
        assert [e.summary for e in stale] == ["not done: the user's words changed"]
        assert talk.banners() == []
    finally:
        talk.close()
    if transport == "stdio":  # the session ended: so did every server it started
        assert started_pids(state) and not [pid for pid in started_pids(state) if alive(pid)]


def test_the_round_after_three_rounds_of_calls_still_sends_the_calls_under_names_openais_api_takes(tmp_path):
    """The last round of an answer offers no tools, but its messages still carry the earlier
    rounds' calls: OpenAI's API checks those names too (messages[i].tool_calls[j].function.name,
    letters, digits, _ and -), so `test.lookup` must go out as it went out in the rounds before."""
    words = ["kame", "usagi", "tori"]

    class Lookups(Conversation):
        def script(self, n: int, messages: list[dict]) -> list[dict]:
            offered = [t["function"]["name"] for t in self.chat.requests[n - 1].tools or [] if t["function"]["name"].endswith("_lookup")]
            done = sum(m["role"] == "tool" for m in messages)
            if offered and done < len(words):  # one more call each round, as long as tools are offered
                call = {"index": 0, "id": f"call_{n}", "type": "function",
                        "function": {"name": offered[0], "arguments": json.dumps({"word": words[done]})}}
                return [{"tool_calls": [call]}]
            return [{"content": f"Looked up {done}."}]

    talk = Lookups((stdio_server(tmp_path / "state"),))
    try:
        wait_until(lambda: "test.lookup" in talk.tools.available(), what="the server's tools")
        assert talk.ask("What do kame, usagi and tori mean?") == "Looked up 3."
        last = talk.chat.requests[-1]
        assert not last.tools  # the last round: no tools, the three calls in its messages
        sent = [c["function"]["name"] for m in last.messages for c in m.get("tool_calls") or ()]
        sent += [m["name"] for m in last.messages if m["role"] == "tool"]
        assert sent == ["test_lookup"] * 6
    finally:
        talk.close()


def test_a_servers_long_error_is_one_banner_line_and_the_model_reads_all_of_it(tmp_path):
    """A Python server answers a call that lacks an argument (small models leave them out) with
    pydantic's error: four lines and a link. The model reads it all; the banner says it in one line."""

    class Forgetful(Conversation):
        def script(self, n: int, messages: list[dict]) -> list[dict]:
            if messages[-1]["role"] == "tool":
                return [{"content": "Sorry, that went wrong."}]
            call = {"index": 0, "id": f"call_{n}", "type": "function", "function": {"name": "test_lookup", "arguments": "{}"}}
            return [{"tool_calls": [call]}]

    talk = Forgetful((stdio_server(tmp_path / "state"),))
    try:
        wait_until(lambda: "test.lookup" in talk.tools.available(), what="the server's tools")
        assert talk.ask("What does it mean?") == "Sorry, that went wrong."
        told = talk.chat.requests[-1].messages[-1]["content"]
        assert "Field required" in told and "\n" in told  # the server's whole answer
        (banner,) = talk.banners()
        assert banner.startswith("test.lookup(): Error executing tool lookup: 1 validation error for lookupArguments word Field required")
        assert "\n" not in banner and len(banner) <= 240
    finally:
        talk.close()


def test_a_server_killed_mid_conversation_is_reported_and_restarted_and_a_hung_one_too(tmp_path, monkeypatch):
    monkeypatch.setattr(mcp_servers, "PING_LIMIT_S", 3.0)
    state = tmp_path / "state"
    talk = Conversation((stdio_server(state, timeout_s=1.0),))
    hub = talk.tools.servers
    try:
        wait_until(lambda: "test.lookup" in talk.tools.available(), what="the server's tools")
        assert talk.ask("What does tori mean?") == "It says: tori means bird."

        # A call that hangs is cut at the server's limit; the server itself is fine.
        async def final() -> bool:
            return True

        started = time.monotonic()
        result = asyncio.run(talk.tools.call(ToolCall("test.wait", '{"seconds": 30}'), final))
        assert not result.ok and result.text == "error: test.wait did not answer within 1 s"
        assert 1.0 <= time.monotonic() - started < 5.0

        # Killed: one banner line, its tools gone, the conversation goes on; then it is back.
        (first,) = started_pids(state)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: talk.banners(), what="the banner")
        assert talk.banners() == ["MCP server test stopped: it exited; its tools are off until it is back (retrying)"]
        wait_until(lambda: hub.starts["test"] == 2, what="the restart")
        wait_until(lambda: talk.recovered(), what="word that it is back")
        assert talk.recovered() == [RecoveredEvent("tool", "MCP server test is back: its tools are offered again",
                                                   talk.banners()[0])]  # that banner line goes
        assert talk.ask("What does usagi mean?") == "It says: usagi means rabbit."
        assert not alive(first)

        # Hung (stopped, answering nothing): the same, and the hung process is ended.
        second = started_pids(state)[-1]
        os.kill(second, signal.SIGSTOP)
        wait_until(lambda: len(talk.banners()) == 2, what="the second banner")
        assert talk.banners()[1] == ("MCP server test stopped: it stopped answering (no answer to a ping within 3 s); "
                                     "its tools are off until it is back (retrying)")
        wait_until(lambda: hub.starts["test"] == 3, what="the second restart")
        assert not alive(second)
        assert talk.ask("What does kame mean?") == "It says: kame means turtle."
        assert len(talk.banners()) == 2
        assert [e.error for e in talk.recovered()] == talk.banners()
    finally:
        talk.close()
    assert len(started_pids(state)) == 3 and not [pid for pid in started_pids(state) if alive(pid)]


def test_a_server_that_dies_soon_after_each_start_is_started_again_with_a_growing_back_off(tmp_path, monkeypatch):
    """Its tools are listed each time, then it exits: it is not back, so the wait before the
    next start grows as for one that does not start at all."""
    waits: list[int] = []

    class Waits(tuple):  # which back-off each restart waited
        def __getitem__(self, index):
            waits.append(index)
            return super().__getitem__(index)

    monkeypatch.setattr(mcp_servers, "BACKOFF_S", Waits((0.1, 0.2, 0.4, 0.8)))
    server = stdio_server(tmp_path / "state")
    hub = McpServers([dataclasses.replace(server, args=(*server.args, "--exit-after", "1.5"))])
    events: list = []
    try:
        hub.start(events.append)
        wait_until(lambda: hub.starts.get("test", 0) >= 3, what="three starts")
    finally:
        hub.close()
    assert waits[:2] == [0, 1]
    assert events[0].message.startswith("MCP server test stopped: it exited")


def test_an_http_server_that_goes_away_is_reported_and_used_again_once_it_is_back(tmp_path):
    from fixtures.mcp_servers import end, free_port, serve_mcp_http

    from kame_desktop.credentials import store_mcp_token

    port = free_port()
    proc = serve_mcp_http(tmp_path / "state", port)
    store_mcp_token("web", TOKEN)
    talk = Conversation((McpServerSettings(name="web", enabled=True, transport="http", url=f"http://127.0.0.1:{port}/mcp"),))
    try:
        wait_until(lambda: "web.lookup" in talk.tools.available(), what="the server's tools")
        assert talk.ask("What does kame mean?") == "It says: kame means turtle."
        end(proc)
        wait_until(lambda: talk.banners(), what="the banner")
        assert talk.banners() == ["MCP server web stopped: cannot reach it (ConnectError) — start the server or check "
                                  "the URL; its tools are off until it is back (retrying)"]
        assert "web.lookup" not in talk.tools.available()
        assert talk.ask("What does tori mean?") == "I cannot look that up right now."  # the conversation goes on
        proc = serve_mcp_http(tmp_path / "state", port)
        wait_until(lambda: talk.tools.servers.starts["web"] == 2, what="the server used again")
        assert talk.ask("What does usagi mean?") == "It says: usagi means rabbit."
        assert len(talk.banners()) == 1 and [e.error for e in talk.recovered()] == talk.banners()
    finally:
        talk.close()
        end(proc)


def test_the_servers_tools_take_at_most_a_quarter_of_the_models_context_and_the_user_is_told_once(tmp_path):
    """Two servers of 4 tools each (69, 65, 61 and 44 tokens as the provider counts them: ~4
    characters a token) and a model of 1,440 tokens: 360 for the servers' tools. The first server's
    239 fit; of the second's, `lookup` (308) and `babble` (352) still do, `add_entry` and `wait` do
    not. One banner line says so, once: not again when the second server comes back."""
    first, second = stdio_server(tmp_path / "first", name="first"), stdio_server(tmp_path / "second", name="second")
    talk = Conversation((first, second), context_tokens=1440)
    try:
        wait_until(lambda: {"first.babble", "second.babble"} <= set(talk.tools.available()), what="both servers' tools")
        offered = sorted(name for name in talk.tools.available() if "." in name)
        assert offered == ["first.add_entry", "first.babble", "first.lookup", "first.wait", "second.babble", "second.lookup"]
        assert talk.banners() == [
            "MCP servers' tools may take 1/4 of the model's context (360 of 1,440 tokens): 2 of second's 4 tools are "
            "not offered — switch off the ones you do not need in Settings → Tools"]
        assert talk.ask("Hello there, how are you?") == "Hello."
        sent = [t for t in talk.chat.requests[-1].tools if t["function"]["name"].startswith(("first_", "second_"))]
        assert len(sent) == 6 and sum(talk.llm.count_tokens(json.dumps(t)) for t in sent) <= 360  # as the model is sent them

        os.kill(started_pids(tmp_path / "second")[0], signal.SIGKILL)  # it goes and comes back: told once
        wait_until(lambda: talk.tools.servers.starts["second"] == 2 and "second.babble" in talk.tools.available(),
                   what="the second server back")
        assert sorted(name for name in talk.tools.available() if "." in name) == offered
        assert len(talk.banners()) == 2 and talk.banners()[1].startswith("MCP server second stopped: it exited")
    finally:
        talk.close()


def test_the_servers_tools_are_counted_as_the_llm_counts_them(tmp_path):
    """The budget is the LLM's own count (the embedded model's tokenizer; here a provider that
    counts words: 29, 26, 22 and 16 for the four tools), not the 4-characters estimate (69, 65,
    61, 44): a model of 360 tokens (90 for the tools) gets three, not one."""
    from fixtures.llm import ScriptedLlm

    from kame_desktop.backend.tools import enabled_tools
    from kame_desktop.backend.worker import Backend

    tools = enabled_tools()
    tools.servers = McpServers([stdio_server(tmp_path / "state")])
    events: list = []
    backend = Backend(ScriptedLlm(context_tokens=360), None, lambda s: True, events.append, tools=tools)
    backend.start()
    try:
        assert wait_for_tools(tools.servers, ["test.lookup", "test.add_entry", "test.wait"], START_S)
        wait_until(lambda: [e for e in events if isinstance(e, ErrorEvent)], what="the banner")
        assert sorted(tools.servers.tools()) == ["test.add_entry", "test.lookup", "test.wait"]
        assert [e.message for e in events if isinstance(e, ErrorEvent)] == [
            "MCP servers' tools may take 1/4 of the model's context (90 of 360 tokens): 1 of test's 4 tools is not "
            "offered — switch off the ones you do not need in Settings → Tools"]
    finally:
        backend.stop()


def test_a_refused_call_does_not_make_a_later_failure_of_the_connection_a_refusal(tmp_path):
    """A token may lack the right to one tool (HTTP 403 for its call): that call says so, the
    server goes on serving, and when it later goes away the banner says that, not the old refusal."""
    from fixtures.mcp_servers import end, free_port, serve_mcp_http

    from kame_desktop.backend.tools.base import ToolFailed
    from kame_desktop.credentials import store_mcp_token

    port = free_port()
    proc = serve_mcp_http(tmp_path / "state", port, "--refuse", "add_entry")
    store_mcp_token("web", TOKEN)
    hub = McpServers([McpServerSettings(name="web", enabled=True, transport="http", url=f"http://127.0.0.1:{port}/mcp")])
    events: list = []
    try:
        hub.start(events.append)
        assert wait_for_tools(hub, ["web.add_entry"], START_S)
        with pytest.raises(ToolFailed, match=r"refused the token \(HTTP 403\)"):
            hub.tools()["web.add_entry"].run(text="kame")
        assert hub.tools()["web.lookup"].run(word="kame") == "kame means turtle"  # the same connection
        end(proc)
        wait_until(lambda: events, what="the banner")
        assert [e.message for e in events] == ["MCP server web stopped: cannot reach it (ConnectError) — start the "
                                               "server or check the URL; its tools are off until it is back (retrying)"]
        assert events[0].error_kind == "unreachable"
    finally:
        hub.close()
        end(proc)


def test_a_server_that_cannot_start_is_one_banner_line_and_the_conversation_goes_on(tmp_path):
    garbage = McpServerSettings(name="garbage", enabled=True, command=sys.executable,
                                args=("-c", "import sys\nfor line in sys.stdin: print('hello there', flush=True)"))
    missing = McpServerSettings(name="missing", enabled=True, command=str(tmp_path / "no-such-server"))
    off = stdio_server(tmp_path / "off-state", name="off", enabled=False)
    talk = Conversation((garbage, missing, off))
    try:
        wait_until(lambda: len(talk.banners()) == 2, what="two banners")
        time.sleep(1.5)  # several retries each meanwhile (back-off 0.3 s, then 0.6 s)
        assert sorted(talk.banners()) == [
            "MCP server garbage did not start: it answered something that is not MCP; its tools are off until it is back (retrying)",
            f"MCP server missing did not start: cannot run '{tmp_path / 'no-such-server'}' (No such file or directory) "
            "— check the command in Settings → Tools; its tools are off until it is back (retrying)"]
        assert not [name for name in talk.tools.available() if "." in name]
        assert not (tmp_path / "off-state").exists()  # a server that is off is never started
        assert talk.ask("What does kame mean?") == "I cannot look that up right now."
    finally:
        talk.close()


def test_a_wrong_token_is_one_banner_line_and_nowhere_in_the_log(mcp_http_server, isolated):
    from kame_desktop.credentials import store_mcp_token
    from kame_desktop.logs import add_file_log, log_path

    server, _ = mcp_http_server
    wrong = "mcp-wrong-51c0e9d2a4f7b3e8"
    store_mcp_token(server.name, wrong)
    root_level = logging.getLogger().level
    handler = add_file_log(logging.DEBUG)  # the most the log file ever holds
    events: list = []
    hub = McpServers([server])
    try:
        hub.start(events.append)
        wait_until(lambda: events, what="the banner")
        time.sleep(1.5)  # retried meanwhile
    finally:
        hub.close()
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)
        handler.close()
    assert [e.message for e in events] == [
        "MCP server web did not start: the server refused the token (HTTP 401) — set it in Settings → Tools; "
        "its tools are off until it is back (retrying)"]
    assert events[0].error_kind == "refused" and hub.tools() == {}
    text = log_path().read_text()
    assert "refused the token" in text  # the failure is logged, once, as the banner says it
    assert wrong not in text and wrong[8:16] not in text
    # The right one, and the dialog's Test lists the tools (the stored token: never shown).
    store_mcp_token(server.name, TOKEN)
    assert [t.name for t in list_server_tools(server)] == ["lookup", "add_entry", "wait", "babble"]


def test_a_url_that_is_not_the_servers_mcp_endpoint_says_its_http_status_and_what_to_check(mcp_http_server):
    server, _ = mcp_http_server
    wrong = dataclasses.replace(server, url=server.url.removesuffix("/mcp") + "/sse")
    with pytest.raises(mcp_servers.McpError) as failed:
        list_server_tools(wrong, TOKEN)
    assert str(failed.value) == "it answered HTTP 404 — check the URL (the server's MCP endpoint, often ending in /mcp)"


def test_tools_switched_off_are_never_offered_and_a_local_model_reads_the_new_list_at_once(tmp_path):
    from fixtures.llm import ScriptedLlm

    from kame_desktop.backend.tools import enabled_tools
    from kame_desktop.backend.worker import Backend

    class LocalLlm(ScriptedLlm):  # one answer at a time, as the embedded model: it reads the prompt ahead
        primed: list[list[str]] = []

        async def prime(self, system_prompt, tools=None):
            self.primed.append(sorted(t["function"]["name"] for t in tools or []))

    tools = enabled_tools()
    tools.servers = McpServers([stdio_server(tmp_path / "state")], disabled=["test.add_entry", "test.babble"])
    backend = Backend(LocalLlm(), None, lambda s: True, lambda e: None, tools=tools)
    backend.start()
    try:
        assert wait_for_tools(tools.servers, ["test.lookup", "test.wait"], START_S)
        assert sorted(tools.servers.tools()) == ["test.lookup", "test.wait"]
        wait_until(lambda: len(LocalLlm.primed) == 2, what="the prompt read again")
        first, second = LocalLlm.primed
        assert "test.lookup" not in first and set(second) - set(first) == {"test.lookup", "test.wait"}
    finally:
        backend.stop()


def test_the_servers_end_while_the_llm_closes_not_after_it(tmp_path):
    """An in-process model can take many seconds to close (it first reads the prompt the servers'
    tools changed), and the app waits for a session's end only so long before it exits: the
    servers are told to end as the back-end stops, not once the LLM is closed, and their going
    then sets no new reading of the prompt going."""
    from fixtures.llm import ScriptedLlm

    from kame_desktop.backend.tools import enabled_tools
    from kame_desktop.backend.worker import Backend

    state = tmp_path / "state"

    class SlowToClose(ScriptedLlm):
        primed: list[list[str]] = []
        server_gone_at_close: bool | None = None

        async def prime(self, system_prompt, tools=None):
            self.primed.append(sorted(t["function"]["name"] for t in tools or []))

        async def aclose(self):  # gives the servers START_S to end while the LLM closes
            deadline = time.monotonic() + START_S
            while alive(started_pids(state)[0]) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            SlowToClose.server_gone_at_close = not alive(started_pids(state)[0])

    tools = enabled_tools()
    tools.servers = McpServers([stdio_server(state)])
    backend = Backend(SlowToClose(), None, lambda s: True, lambda e: None, tools=tools)
    backend.start()
    try:
        assert wait_for_tools(tools.servers, ["test.lookup"], START_S)
        wait_until(lambda: len(SlowToClose.primed) == 2, what="the prompt read with the server's tools")
    finally:
        backend.stop()
    assert SlowToClose.server_gone_at_close is True
    assert len(SlowToClose.primed) == 2  # the tools that went with the session's end are not read again


def test_doctor_lists_each_server_and_whether_it_starts(tmp_path):
    from kame_desktop.doctor import check_mcp_server

    ok = check_mcp_server(stdio_server(tmp_path / "state"))
    assert (ok.name, ok.status) == ("mcp:test", "ok")
    assert ok.detail == f"stdio: {Path(sys.executable).name} starts: 4 tools, 1 of which changes something"
    broken = check_mcp_server(McpServerSettings(name="cal", enabled=True, command=sys.executable, args=("-c", "raise SystemExit('no calendar configured')")))
    assert broken.status == "warn" and broken.detail.endswith("does not start: it exited (no calendar configured)")
    off = check_mcp_server(stdio_server(tmp_path / "off", name="off", enabled=False))
    assert off.status == "ok" and off.detail.startswith("off (") and not (tmp_path / "off").exists()
    unused = check_mcp_server(stdio_server(tmp_path / "unused"), tools_on=False)  # the app would not start it either
    assert unused.detail.endswith("not started — tools are off in Settings → Tools") and not (tmp_path / "unused").exists()


def test_a_servers_stderr_says_why_it_failed_and_never_fills_the_disk(monkeypatch):
    import tempfile

    from kame_desktop.backend.tools.mcp_servers import Link
    from kame_desktop.credentials import KeyRedactor

    monkeypatch.setattr(mcp_servers, "MAX_STDERR_BYTES", 1000)
    with tempfile.TemporaryFile() as f:
        link = Link(McpServerSettings(name="s"), KeyRedactor(None), stderr=f)
        server_end = os.dup(f.fileno())  # as the server holds it: the same file, the same offset
        try:
            os.write(server_end, b"starting\n" * 200)
            link.trim_stderr()
            os.write(server_end, b"calendar: no such account\n")
            assert os.fstat(f.fileno()).st_size == 26
            assert link.stderr_tail() == "calendar: no such account"
            os.write(server_end, b"again\n")
            assert link.stderr_tail() == "again"
        finally:
            os.close(server_end)
