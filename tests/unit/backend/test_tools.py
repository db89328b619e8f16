"""The tools the oracle LLM may call: the built-ins, the `<tool_call>` text parser, the rule that
keeps speculation from acting twice, and both providers handing calls over (a scripted
OpenAI-compatible server, a real llama_cpp.server, the real embedded model)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

import pytest

from kame_desktop.backend.prompts import SYSTEM_PROMPT
from kame_desktop.backend.tools import builtin_tools, enabled_tools
from kame_desktop.backend.tools.base import Tool, ToolCall, ToolCallText, ToolFailed, TurnTools, object_schema
from kame_desktop.backend.tools.calculator import calculate, evaluate
from kame_desktop.backend.tools.timers import TimerStore, announcement, set_timer

# --- built-ins -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "value"), [("37*48", 1776), ("347 × 29", 10063), ("0.15*260", 39),
                                                    ("2^10", 1024), ("(1+2)*3 - 4/2", 7), ("sqrt(144)", 12),
                                                    ("1,234 + 1", 1235), ("-7 % 3", 2)])
def test_the_calculator_works_out_arithmetic(expression, value):
    assert evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize("expression", ["__import__('os').system('true')", "open('/etc/passwd')", "x + 1",
                                        "9**9**9", "1/0", "[1, 2]", "True + 1", "'a' * 3"])
def test_the_calculator_never_runs_anything_but_arithmetic(expression):
    with pytest.raises(ToolFailed):
        evaluate(expression)


def test_results_read_as_numbers():
    assert calculate("37*48") == "37*48 = 1776"
    assert calculate("10/4") == "10/4 = 2.5"


def test_every_builtin_has_a_schema_the_model_can_read():
    names = [t.name for t in builtin_tools()]
    assert {"get_time", "calculate", "set_timer", "set_reminder", "list_timers", "add_note", "read_notes"} <= set(names)
    assert len(names) == len(set(names))
    for tool in builtin_tools():
        schema = tool.schema()
        assert schema["type"] == "function" and schema["function"]["parameters"]["type"] == "object"
        json.dumps(schema)
    assert {t.name for t in builtin_tools() if not t.read_only} == {"set_timer", "set_reminder", "add_note"}
    assert "calculate" not in enabled_tools(["calculate"]).tools


def test_a_timer_is_kept_on_disk_and_said_once_when_due(isolated):
    set_timer(10, "tea")
    (timer,) = TimerStore().pending()
    assert timer.text == "Your 10 minutes tea timer is done." and 599 < timer.due - time.time() <= 600
    assert TimerStore().due() == []  # not yet
    assert TimerStore().due(now=timer.due + 1) == [timer]
    assert TimerStore().due(now=timer.due + 2) == []  # said once
    assert announcement(timer, now=timer.due + 600).startswith("While I was closed, at ")
    assert announcement(timer, now=timer.due + 5) == timer.text


def test_a_damaged_timers_file_is_set_aside(isolated):
    store = TimerStore()
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text("{not json")
    assert store.pending() == []
    assert store.path.with_name("timers.json.bad").read_text() == "{not json"
    store.add(60, "x")
    assert len(store.pending()) == 1


# --- calls written as text ---------------------------------------------------------------------------


def test_tool_call_text_is_taken_out_of_the_words_even_when_split_across_chunks():
    text = 'Let me work it out. <tool_call>\n{"name": "calculate", "arguments": {"expression": "37*48"}}\n</tool_call>'
    for size in (1, 3, 7, len(text)):
        parser, items = ToolCallText(), []
        for i in range(0, len(text), size):
            items += parser.push(text[i : i + size])
        items += parser.flush()
        said = "".join(i for i in items if isinstance(i, str))
        calls = [i for i in items if isinstance(i, ToolCall)]
        assert said == "Let me work it out. ", size
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [("calculate", {"expression": "37*48"})]


def test_text_that_only_looks_like_a_tag_is_said():
    parser = ToolCallText()
    items = parser.push("a < b and <tool") + parser.push("s> are fine") + parser.flush()
    assert "".join(items) == "a < b and <tools> are fine"


# --- the rule: speculation never acts twice ----------------------------------------------------------


def counting_tools() -> tuple[TurnTools, dict[str, int]]:
    runs = {"look": 0, "write": 0}

    def look(q: str) -> str:
        runs["look"] += 1
        return f"found {q}"

    def write(q: str) -> str:
        runs["write"] += 1
        return f"wrote {q}"

    schema = object_schema(("q",), q={"type": "string"})
    return TurnTools({"look": Tool("look", "", schema, look), "write": Tool("write", "", schema, write, read_only=False)}), runs


def test_a_read_only_result_is_reused_within_the_turn_and_a_write_waits_for_the_final_words():
    tools, runs = counting_tools()

    async def main():
        final = asyncio.get_running_loop().create_future()
        look = ToolCall("look", '{"q": "a"}')
        assert (await tools.call(look, lambda: final)).text == "found a"
        assert (await tools.call(ToolCall("look", '{ "q":"a" }'), lambda: final)).text == "found a"
        write = asyncio.ensure_future(tools.call(ToolCall("write", '{"q": "b"}'), lambda: final))
        await asyncio.sleep(0.05)
        assert not write.done() and runs["write"] == 0  # asked on partial words: not yet
        final.set_result(True)
        assert (await write).text == "wrote b"
        again = await tools.call(ToolCall("write", '{"q": "b"}'), lambda: final)  # a later request, same turn
        assert again.text == "wrote b"
        tools.new_turn()
        await tools.call(look, lambda: final)

    asyncio.run(main())
    assert runs == {"look": 2, "write": 1}


def test_a_write_asked_on_words_that_were_not_final_never_runs():
    tools, runs = counting_tools()

    async def not_final() -> bool:
        return False

    assert asyncio.run(tools.call(ToolCall("write", '{"q": "b"}'), not_final)) is None
    assert runs["write"] == 0


def test_a_tool_that_hangs_is_cut_at_its_limit_and_a_failing_one_gives_an_error_result():
    def hang() -> str:
        time.sleep(5)
        return "late"

    def broken() -> str:
        raise ToolFailed("no such city")

    tools = TurnTools({"hang": Tool("hang", "", object_schema(), hang, timeout_s=0.3),
                       "broken": Tool("broken", "", object_schema(), broken)})

    async def yes() -> bool:
        return True

    start = time.monotonic()
    slow = asyncio.run(tools.call(ToolCall("hang"), yes))
    assert time.monotonic() - start < 2 and not slow.ok and "did not answer within 0.3 s" in slow.text
    failed = asyncio.run(tools.call(ToolCall("broken"), yes))
    assert not failed.ok and failed.text == "error: no such city"
    unknown = asyncio.run(tools.call(ToolCall("nope"), yes))
    assert not unknown.ok and "no tool named" in unknown.text


def test_the_clock_says_the_local_time():
    (tool,) = [t for t in builtin_tools() if t.name == "get_time"]
    said = tool.run()
    assert datetime.now().strftime("%H:%M") in said or datetime.now().strftime("%A") in said


# --- providers hand the calls over --------------------------------------------------------------------


def collect(llm, messages, tools) -> list:
    async def main():
        items = [item async for item in llm.stream(messages, tools)]
        await llm.aclose()
        return items

    return asyncio.run(main())


def test_openai_streamed_tool_calls_split_over_chunks_two_in_one_answer_after_some_text(scripted_llm):
    from kame_desktop.backend.llm.openai_compat import OpenAiLlm

    def part(index, **fields):
        call = {"index": index}
        if "id" in fields:
            call |= {"id": fields["id"], "type": "function"}
        call["function"] = {k: v for k, v in fields.items() if k in ("name", "arguments")}
        return {"tool_calls": [call]}

    deltas = [{"content": "Let me"}, {"content": " check."},
              part(0, id="c1", name="calculate", arguments=""), part(0, arguments='{"expres'),
              part(1, id="c2", name="get_time", arguments=""), part(0, arguments='sion": "37*48"}'),
              part(1, arguments="{}")]
    server = scripted_llm(delays=[0.0], script=lambda n, messages: deltas, words_per_s=200)
    tools = [t.schema() for t in builtin_tools()]
    items = collect(OpenAiLlm(server.url, "scripted"), [{"role": "user", "content": "hi"}], tools)
    assert "".join(i for i in items if isinstance(i, str)) == "Let me check."
    calls = [i for i in items if isinstance(i, ToolCall)]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("c1", "calculate", {"expression": "37*48"}), ("c2", "get_time", {})]
    sent = server.requests[0]
    assert sent.messages == [{"role": "user", "content": "hi"}] and sent.tools == tools


CALCULATE = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "What is 347 times 29?"}]


def assert_asks_for_347_times_29(items: list) -> None:
    calls = [i for i in items if isinstance(i, ToolCall)]
    said = "".join(i for i in items if isinstance(i, str))
    assert "<tool_call>" not in said and "</tool_call>" not in said, items
    assert calls and calls[0].name == "calculate", items
    assert evaluate(json.loads(calls[0].arguments)["expression"]) == 10063


def test_tool_call_text_from_a_real_llama_cpp_server_is_a_call_not_words(spawn_llama):
    # llama_cpp.server renders Qwen's template with the tools and passes the model's <tool_call>
    # text on as plain content: the provider reads it as a call.
    from kame_desktop.backend.llm.local import QWEN_CODER
    from kame_desktop.backend.llm.openai_compat import OpenAiLlm

    _, url = spawn_llama(QWEN_CODER)
    llm = OpenAiLlm(url, "qwen", max_tokens=96)
    tools = [t.schema() for t in builtin_tools() if t.name == "calculate"]
    assert_asks_for_347_times_29(collect(llm, CALCULATE, tools))


def test_the_embedded_qwen_calls_the_calculator_through_its_own_template():
    from kame_desktop.backend.llm.local import QWEN_CODER, LocalLlm

    llm = LocalLlm(QWEN_CODER, n_threads=1, max_tokens=96)
    tools = [t.schema() for t in builtin_tools() if t.name == "calculate"]
    assert_asks_for_347_times_29(collect(llm, CALCULATE, tools))


@pytest.mark.parametrize("answer", ['{"name": "calculate", "arguments": {"expression": "347*29"}}',
                                    '```json\n{\n  "name": "calculate",\n  "arguments": {"expression": "347*29"}\n}\n```',
                                    '  {"name": "calculate", "parameters": {"expression": "347*29"}}'])
def test_an_answer_that_is_one_json_call_is_a_call(answer):
    # What Qwen2.5-Coder-0.5B writes instead of <tool_call> tags, fenced or not.
    for size in (1, 4, len(answer)):
        parser, items = ToolCallText(), []
        for i in range(0, len(answer), size):
            items += parser.push(answer[i : i + size])
        items += parser.flush()
        assert [(i.name, json.loads(i.arguments)) for i in items] == [("calculate", {"expression": "347*29"})], items


def test_json_that_is_not_a_call_is_said():
    parser = ToolCallText()
    items = parser.push('{"answer": 42} is what') + parser.push(" it said.") + parser.flush()
    assert "".join(items) == '{"answer": 42} is what it said.'


def test_stray_arguments_a_small_model_adds_are_dropped():
    tools = enabled_tools()

    async def yes() -> bool:
        return True

    result = asyncio.run(tools.call(ToolCall("calculate", '{"expression": "2+2", "required": ["expression"]}'), yes))
    assert result.ok and result.text == "2+2 = 4"


def _announcements(seconds: float) -> tuple[list, list]:
    """Start a back-end with the built-in tools (no ASR, no LLM) for `seconds`: the signals and
    events it produced."""
    from kame_desktop.backend.llm.base import UnavailableLlm
    from kame_desktop.backend.worker import Backend

    signals, events = [], []
    backend = Backend(UnavailableLlm("none", "no LLM in this test"), None, lambda s: signals.append(s) or True,
                      events.append, tools=enabled_tools())
    backend.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not any(getattr(s, "source", None) == "timer" for s in signals):
            time.sleep(0.05)
    finally:
        backend.stop()
    return signals, events


def test_a_timer_set_in_one_run_is_said_after_a_restart(isolated):
    from kame_desktop.events import AnnouncementEvent, OracleText, TurnEnded

    async def final() -> bool:
        return True

    # Run 1: the model sets a three-second timer; the app is closed before it is due.
    result = asyncio.run(enabled_tools().call(ToolCall("set_timer", '{"minutes": 0.05, "label": "tea"}'), final))
    assert result.ok and "3 seconds" in result.text
    # Run 2 starts after it fell due: it is said at once, as an answer of its own.
    time.sleep(3.2)
    signals, events = _announcements(5.0)
    said = [s.text for s in signals if isinstance(s, OracleText)]
    assert said == ["Your 3 seconds tea timer is done."]
    (turn,) = [s for s in signals if isinstance(s, TurnEnded)]
    assert turn.source == "timer" and [e.text for e in events if isinstance(e, AnnouncementEvent)] == said
    assert TimerStore().pending() == []  # said once
    signals, _ = _announcements(0.6)
    assert not [s for s in signals if isinstance(s, OracleText)]


def test_one_missed_long_ago_says_when_it_fell_due(isolated):
    from kame_desktop.events import OracleText

    TimerStore().add(-300, "Reminder: call mum")  # fell due five minutes ago, while closed
    signals, _ = _announcements(5.0)
    (said,) = [s.text for s in signals if isinstance(s, OracleText)]
    assert said.startswith("While I was closed, at ") and said.endswith(": Reminder: call mum")
