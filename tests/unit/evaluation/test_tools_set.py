"""The `tools` set: clock answers checked against the time of the reply, timers checked by what
the turn did, and the flat category_accuracy view."""

from __future__ import annotations

import json
from datetime import datetime

from kame_desktop.evaluation.questions import load_set
from kame_desktop.evaluation.scoring import clock_answers, fact_hit, tool_set


def test_the_tools_set_has_arithmetic_time_and_timers():
    questions = load_set("tools")
    categories = {q.category for q in questions}
    assert categories == {"arithmetic", "time", "timer"}
    assert all(q.is_fact for q in questions)


def test_a_time_counts_within_one_minute_of_the_clock_in_either_form():
    at = datetime(2026, 12, 6, 14, 5, 30).timestamp()
    answers = clock_answers(["{time}"], at)
    assert fact_hit("It is 14:05 now.", answers) and fact_hit("It's 2:06 PM.", answers)
    assert fact_hit("The time is 2:04 p.m.", answers)
    assert not fact_hit("It is 2:08 PM.", answers) and not fact_hit("It is 14:15.", answers)
    assert fact_hit("Today is Sunday.", clock_answers(["{weekday}"], at))
    assert fact_hit("It's December 6th, 2026.", clock_answers(["{date}"], at))
    assert not fact_hit("It's December 7th.", clock_answers(["{date}"], at))


def records(minutes: float, ok: bool = True) -> list[dict]:
    return [{"kind": "tool_call", "request": 3, "name": "set_timer", "arguments": json.dumps({"minutes": minutes})},
            {"kind": "tool_result", "request": 3, "name": "set_timer", "ok": ok, "summary": "timer set"}]


def test_a_timer_counts_when_the_turn_set_one_that_long():
    assert tool_set(records(10), "{timer:10}") is True
    assert tool_set(records(1), "{timer:10}") is False
    assert tool_set(records(10, ok=False), "{timer:10}") is False
    assert tool_set([], "{timer:10}") is False
    assert tool_set(records(10), "paris") is None  # not a timer answer
