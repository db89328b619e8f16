"""The transcript pane, fed through the window's bridge as the session would (from a thread):
partials are replaced by finals, and auto-scroll pauses while the user has scrolled up."""

from __future__ import annotations

import threading

import pytest

from kame_desktop.events import AsrFinalEvent, AsrPartialEvent, AssistantTokenEvent, Stamped

pytestmark = pytest.mark.gui


def post(window, *events) -> None:
    thread = threading.Thread(target=lambda: [window.bridge(Stamped(0, e)) for e in events])
    thread.start()
    thread.join()


def test_partial_replaced_by_final_and_scroll_pauses(make_window, qtbot):
    window = make_window(start=False)
    user, companion = window.transcript.user, window.transcript.assistant
    post(window, AsrPartialEvent("what is"), AsrPartialEvent("what is the cap"))
    qtbot.waitUntil(lambda: user.plain_text() == "what is the cap ")
    post(window, AsrFinalEvent("what is the capital"), AsrPartialEvent("of fr"))
    qtbot.waitUntil(lambda: user.plain_text() == "what is the capital of fr ")
    post(window, AsrFinalEvent("of France?"))
    qtbot.waitUntil(lambda: user.plain_text() == "what is the capital of France? ")

    post(window, *[AssistantTokenEvent(None, f" line {i}\n") for i in range(200)])
    bar = companion.verticalScrollBar()
    qtbot.waitUntil(lambda: "line 199" in companion.plain_text())
    assert bar.maximum() > 0 and bar.value() == bar.maximum()  # follows the new text
    bar.setValue(0)  # the user scrolls up to read
    post(window, *[AssistantTokenEvent(None, f" more {i}\n") for i in range(20)])
    qtbot.waitUntil(lambda: "more 19" in companion.plain_text())
    assert bar.value() == 0  # paused
    bar.setValue(bar.maximum())  # back at the bottom: follows again
    post(window, AssistantTokenEvent(None, " last\n"))
    qtbot.waitUntil(lambda: "last" in companion.plain_text())
    assert bar.value() == bar.maximum()
