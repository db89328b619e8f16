"""The conversation view keeps the GUI responsive through a long conversation: the events of a
synthetic 30-minute one (150 turns of 12 s: partial words, re-asked requests streaming their
text, adoption and cancellation, oracle tokens, the reply) are replayed
through the window's bridge from a thread, 60 times faster than they happened (with frame stats
at their real 12.5 Hz), while a 10 ms
QTimer probe measures the event loop's stalls (the bar of test_gui_responsive.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PySide6.QtCore import QTimer

from kame_desktop.controller import FrameStats
from kame_desktop.events import (
    AsrFinalEvent,
    AsrPartialEvent,
    AssistantTokenEvent,
    LlmAdoptedEvent,
    LlmCancelledEvent,
    LlmChunkEvent,
    LlmDoneEvent,
    LlmRequestEvent,
    OracleResetEvent,
    OracleTokenEvent,
    SpeechEndEvent,
    SpeechStartEvent,
    Stamped,
    TurnEndEvent,
)

pytestmark = [pytest.mark.gui, pytest.mark.slow]

TURNS = 150  # 30 minutes of 12 s turns
TURN_FRAMES = 150
SPEED = 60
QUESTION = ["could", "you", "tell", "me", "what", "the", "capital", "of", "france", "is", "and", "how", "old", "the", "city", "is"]
ANSWER = ["Paris", "is", "the", "capital", "of", "France.", "People", "have", "lived", "there", "for", "more", "than", "two", "thousand", "years,", "and", "it", "became", "the", "capital", "in", "the", "sixth", "century."]


def turn_events(n: int) -> list[list[object]]:
    """One turn, frame by frame: what the session and the controller send the window."""
    frames: list[list[object]] = [[] for _ in range(TURN_FRAMES)]
    base = n * TURN_FRAMES
    frames[0].append(SpeechStartEvent("user"))
    for i in range(1, len(QUESTION) + 1):  # the words not committed yet
        frames[2 * i].append(AsrPartialEvent(" ".join(QUESTION[7 if i > 7 else 0 : i])))
    frames[14].append(AsrFinalEvent(" ".join(QUESTION[:7])))
    frames[2 * len(QUESTION) + 1].append(AsrFinalEvent(" ".join(QUESTION[7:])))
    frames[2 * len(QUESTION) + 1].append(AsrPartialEvent(""))
    for k, at in enumerate((8, 20, 31)):  # three requests while the question is spoken
        request = 3 * n + k + 1
        frames[at].append(LlmRequestEvent(request, "reactive", 4 + 5 * k))
        for j, word in enumerate(ANSWER):
            frames[at + 3 + j // 4].append(LlmChunkEvent(request, " " + word))
        frames[at + 3].append(LlmAdoptedEvent(request, 240.0))
        frames[at + 3].append(OracleResetEvent(request))
        for j, word in enumerate(ANSWER[:20]):
            frames[at + 4 + j // 3].append(OracleTokenEvent(request, j, "\u2581" + word))
        if k < 2:
            frames[at + 12].append(LlmCancelledEvent(request, "superseded"))
        else:
            frames[at + 20].append(LlmDoneEvent(request, "stop"))
    frames[33].append(TurnEndEvent("vad"))
    frames[40].append(SpeechStartEvent("assistant"))
    for j, word in enumerate(ANSWER):
        frames[40 + 2 * j].append(AssistantTokenEvent(j, "\u2581" + word))
    frames[40 + 2 * len(ANSWER)].append(SpeechEndEvent("assistant"))
    return [[Stamped(base + f, e) for e in events] for f, events in enumerate(frames)]


def test_gui_responsive_through_a_30_minute_conversation(make_window, qtbot, frozen_test_heap):
    window = make_window(start=False)
    done = threading.Event()

    def replay() -> None:
        start = time.perf_counter()
        for n in range(TURNS):
            for f, objects in enumerate(turn_events(n)):
                due = start + (n * TURN_FRAMES + f) * 0.08 / SPEED
                if (wait := due - time.perf_counter()) > 0:
                    time.sleep(wait)
                for obj in objects:
                    window.bridge(obj)
                if f % SPEED == 0:  # the controller's frame stats, at their real 12.5 Hz
                    window.bridge(FrameStats(30.0, 0.0, 0.1, 0.1))
        done.set()

    ticks: list[float] = []
    probe = QTimer()
    probe.setInterval(10)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
    probe.start()
    thread = threading.Thread(target=replay, daemon=True)
    thread.start()
    qtbot.waitUntil(done.is_set, timeout=120_000)
    qtbot.waitUntil(lambda: len(window.transcript.turns) == TURNS and bool(window.transcript.turns[-1].reply_text), timeout=20_000)
    qtbot.wait(200)
    probe.stop()
    gaps = np.diff(ticks) * 1000
    p99, worst = float(np.percentile(gaps, 99)), float(gaps.max())
    print(f"GUI probe over {TURNS} turns: {len(gaps)} gaps, p50 {np.median(gaps):.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms")
    view = window.transcript
    view.redraw()
    assert "could you tell me" in view.turn_text(TURNS - 1) and view.turn_text(0).startswith("You · 0:00.2")
    last = view.turns[-1]
    assert last.question == " ".join(QUESTION) and last.reply_text == " ".join(ANSWER)
    assert [r.ended for r in last.requests] == ["cancelled (superseded)", "cancelled (superseded)", "done"]
    assert p99 <= 50 and worst <= 150
