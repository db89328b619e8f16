"""The conversation view, fed through the window's bridge as the session would (from a thread):
partials are replaced by finals, requests sit under the reply of the turn they were asked in,
a barge-in marks the cut, an old history file (no llm_adopted) still reads, and auto-scroll
pauses while the user has scrolled up."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QUrl

from kame_desktop.events import (
    AsrFinalEvent,
    AsrPartialEvent,
    AssistantTokenEvent,
    BargeInEvent,
    LlmAdoptedEvent,
    LlmCancelledEvent,
    LlmChunkEvent,
    LlmDoneEvent,
    LlmRequestEvent,
    OracleResetEvent,
    OracleTokenEvent,
    Stamped,
    TurnEndEvent,
)

pytestmark = pytest.mark.gui


def post(window, *events) -> None:
    thread = threading.Thread(target=lambda: [window.bridge(Stamped(0, e)) for e in events])
    thread.start()
    thread.join()


def shown(window, index: int, part: str) -> str:
    return window.transcript.text(part, index)


def drawn(window) -> int:
    window.transcript.redraw()
    return len(window.transcript.turns)


def test_partial_grey_then_final(make_window, qtbot):
    window = make_window(start=False)
    post(window, AsrPartialEvent("what is"), AsrPartialEvent("what is the cap"))
    qtbot.waitUntil(lambda: drawn(window) == 1 and shown(window, 0, "question").endswith("what is the cap"))
    assert "#9a9a9a" in window.transcript.toHtml(), "a partial is grey"
    post(window, AsrFinalEvent("what is the capital"), AsrPartialEvent("of fr"))
    qtbot.waitUntil(lambda: shown(window, 0, "question").endswith("what is the capital of fr"))
    post(window, AsrFinalEvent("of France?"), AsrPartialEvent(""))
    qtbot.waitUntil(lambda: shown(window, 0, "question").endswith("what is the capital of France?"))
    assert "#9a9a9a" not in window.transcript.toHtml(), "final words only"


def _turn(n: int, question: str, answer: str, cancelled: str = "stale words") -> list:
    """Two requests while the question is spoken (the first cancelled), the second heard."""
    a, b = 2 * n + 1, 2 * n + 2
    return [
        AsrPartialEvent(question.split()[0]), LlmRequestEvent(a, "reactive", 1), LlmChunkEvent(a, cancelled),
        AsrFinalEvent(question), LlmRequestEvent(b, "reactive", len(question.split())), LlmChunkEvent(b, answer[:5]),
        LlmAdoptedEvent(b, 310.0), LlmCancelledEvent(a, "superseded"), OracleResetEvent(b),
        OracleTokenEvent(b, 1, "<start>"), *[OracleTokenEvent(b, 2, "\u2581" + w) for w in answer.split()],
        TurnEndEvent("vad"), LlmChunkEvent(b, answer[5:]), LlmDoneEvent(b, "stop"),
        *[AssistantTokenEvent(3, "\u2581" + w) for w in answer.split()],
    ]


def test_each_reply_under_its_question_with_its_requests(make_window, qtbot):
    window = make_window(start=False)
    post(window, *_turn(0, "What is the capital of France?", "Paris is the capital."))
    post(window, *_turn(1, "How many legs does a spider have?", "A spider has eight legs."))
    post(window, BargeInEvent(4), *_turn(2, "Who wrote Romeo and Juliet?", "Shakespeare wrote it."))
    qtbot.waitUntil(lambda: drawn(window) == 3 and "Shakespeare wrote it." in shown(window, 2, "reply"))
    for i, (q, a) in enumerate([("capital of France?", "Paris is the capital."),
                                ("a spider have?", "A spider has eight legs."),
                                ("Romeo and Juliet?", "Shakespeare wrote it.")]):
        assert shown(window, i, "question").endswith(q)
        assert shown(window, i, "reply").removesuffix(" ⟂ interrupted").endswith(a)
        oracle = shown(window, i, "oracle")
        first, second = 2 * i + 1, 2 * i + 2
        assert f"· request {first} · reactive, 1 words · cancelled (superseded)\nstale words" in oracle, oracle
        assert f"⟲ request {second} · reactive" in oracle and "heard after 310 ms · done" in oracle
        assert oracle.index(f"request {first}") < oracle.index(f"request {second}")
        turn = window.transcript.turn_text(i)  # the document: question, reply, then its requests
        assert turn.index(q) < turn.index(a) < turn.index(f"request {first}") < turn.index(f"request {second}")
        assert shown(window, i, "toggle") == "▾ Oracle · 2 requests", "open by default"
    assert shown(window, 1, "reply").endswith("legs. ⟂ interrupted"), "the reply cut by the barge-in"
    assert "interrupted" not in shown(window, 0, "reply") + shown(window, 2, "reply")
    window.transcript.anchorClicked.emit(QUrl("fold:0"))  # a click on the turn's "Oracle" heading
    assert shown(window, 0, "toggle") == "▸ Oracle · 2 requests" and shown(window, 0, "oracle") == ""
    assert "stale words" not in window.transcript.turn_text(0) and "stale words" in window.transcript.turn_text(1)
    window.transcript.anchorClicked.emit(QUrl("fold:0"))
    assert "stale words" in window.transcript.turn_text(0)


def test_old_history_without_adoption_reads(make_window, qtbot):
    """A lite conversation saved before llm_adopted: its requests and their text, in turns."""
    window = make_window(start=False)
    old = [e for e in _turn(0, "What is the capital of France?", "Paris.") + _turn(1, "And of Spain?", "Madrid.")
           if not isinstance(e, LlmAdoptedEvent | OracleResetEvent | OracleTokenEvent)]
    window.show_history([Stamped(i, e) for i, e in enumerate(old)])
    assert drawn(window) == 2
    assert shown(window, 1, "question").endswith("And of Spain?") and shown(window, 1, "reply") .endswith("Madrid.")
    oracle = shown(window, 1, "oracle")
    assert "request 4 · reactive, 3 words · done\nMadrid." in oracle and "request 3" in oracle, oracle
    assert "request 1" not in oracle


def test_scroll_follows_unless_the_user_scrolled_up(make_window, qtbot):
    window = make_window(start=False)
    for n in range(12):
        post(window, *_turn(n, f"question number {n} please", f"answer number {n}."))
    bar = window.transcript.verticalScrollBar()
    qtbot.waitUntil(lambda: drawn(window) == 12 and bar.maximum() > 0)
    qtbot.waitUntil(lambda: bar.value() == bar.maximum())  # follows the new turns
    bar.setValue(0)  # the user scrolls up to read
    post(window, *_turn(12, "one more question", "one more answer."))
    qtbot.waitUntil(lambda: drawn(window) == 13)
    qtbot.wait(100)
    assert bar.value() == 0  # paused
    bar.setValue(bar.maximum())  # back at the bottom: follows again
    post(window, *_turn(13, "last question", "last answer."))
    qtbot.waitUntil(lambda: drawn(window) == 14)
    qtbot.waitUntil(lambda: bar.value() == bar.maximum())


def test_a_tool_call_and_its_result_show_in_a_line_under_the_reply(make_window, qtbot):
    from kame_desktop.events import AnnouncementEvent, ToolCallEvent, ToolResultEvent

    window = make_window(start=False)
    post(window, AsrFinalEvent("What is 37 times 48?"), LlmRequestEvent(1, "reactive", 5),
         ToolCallEvent(1, "calculate", '{"expression": "37*48"}'), ToolResultEvent(1, "calculate", True, "37*48 = 1776"),
         ToolCallEvent(1, "get_time", "{}"), ToolResultEvent(1, "get_time", False, "error: get_time did not answer"),
         LlmChunkEvent(1, "It is 1776."), LlmAdoptedEvent(1, 900.0), TurnEndEvent("vad"), LlmDoneEvent(1, "stop"),
         AssistantTokenEvent(None, " It is 1776."), AnnouncementEvent(2, "Your 10 minutes tea timer is done."))
    qtbot.waitUntil(lambda: drawn(window) >= 1 and "timer" in shown(window, 0, "oracle"))
    oracle = shown(window, 0, "oracle")
    assert "⚙ calculate(37*48) → 37*48 = 1776" in oracle
    assert "⚙ get_time() ✗ get_time did not answer" in oracle
    assert oracle.index("⚙ calculate") < oracle.index("It is 1776.")
    assert "said unasked (a timer)" in oracle and "Your 10 minutes tea timer is done." in oracle


def test_a_question_not_caught_is_marked_with_why(make_window, qtbot):
    """The request to repeat sits under the turn the companion did not catch, with the reason."""
    from kame_desktop.backend.oracle_manager import REPEAT_REPLY
    from kame_desktop.events import AsrUnclearEvent

    window = make_window(start=False)
    post(window, AsrFinalEvent("What is the biggest", (), -0.38, 0.04, 0.74), LlmRequestEvent(1, "reactive", 4),
         TurnEndEvent("vad"), LlmCancelledEvent(1, "not understood"),
         AsrUnclearEvent(2, "What is the biggest", REPEAT_REPLY, -0.38, 0.04, 0.74),
         *[AssistantTokenEvent(None, " " + w) for w in REPEAT_REPLY.split()])
    qtbot.waitUntil(lambda: drawn(window) == 1 and "again?" in shown(window, 0, "reply"))
    turn = window.transcript.turns[0]
    assert turn.unclear and [r.id for r in turn.requests] == [1, 2]
    assert "didn't catch that" in shown(window, 0, "question")
    oracle = shown(window, 0, "oracle")
    assert "request 2 · asked to repeat: 0.74 s of speech after the last word heard" in oracle, oracle
    assert "cancelled (not understood)" in oracle


def test_a_turns_last_words_after_its_end_stay_in_that_turn(make_window, qtbot):
    """The turn detector may end a turn before the recognizer commits its words (a busy machine):
    words spoken before the turn's end are still its own; the next question opens the next turn."""
    from kame_desktop.events import AsrUnclearEvent, Word

    def at(frame: int, *events) -> None:
        thread = threading.Thread(target=lambda: [window.bridge(Stamped(frame, e)) for e in events])
        thread.start()
        thread.join()

    def words(text: str, start: float) -> tuple:
        return tuple(Word(w, round(start + 0.3 * k, 2), round(start + 0.3 * k + 0.25, 2)) for k, w in enumerate(text.split()))

    window = make_window(start=False)
    at(10, AsrPartialEvent("What is the capital", words("What is the capital", 0.2)))
    at(24, TurnEndEvent("vad"))  # t = 1.92 s
    at(50, AsrFinalEvent("What is the capital of France?", words("What is the capital of France?", 0.2)))
    at(52, AssistantTokenEvent(None, " Paris."))
    at(110, AsrPartialEvent("Wait", words("Wait", 8.6)))
    at(115, TurnEndEvent("vad"))  # t = 9.2 s
    at(117, AsrPartialEvent("Please stop", words("Please stop", 9.3)))  # the next one, before the last's words
    at(130, AsrFinalEvent("Wait", words("Wait", 8.6)), AsrUnclearEvent(3, "Wait", "Say again?", -1.2))
    # a recognizer so far behind that the turn ended before any of its words came
    at(150, TurnEndEvent("vad"))
    at(200, TurnEndEvent("vad"))  # t = 16 s
    at(230, AsrFinalEvent("Who painted the Mona Lisa?", words("Who painted the Mona Lisa?", 14.0)))
    at(240, AsrPartialEvent("And who", words("And who", 18.5)))
    qtbot.waitUntil(lambda: drawn(window) == 5)
    first, wait, please, mona, who = window.transcript.turns
    assert mona.question == "Who painted the Mona Lisa?" and mona.ended and who.question == "And who"
    assert first.question == "What is the capital of France?" and first.reply_text == "Paris."
    assert shown(window, 0, "question").endswith("What is the capital of France?")
    assert wait.question == "Wait" and wait.unclear and [r.id for r in wait.requests] == [3]
    assert please.question == "Please stop" and not please.unclear
