"""Three spoken questions through the real app: the main window, the controller and a real lite
session (streaming Whisper as the app runs it, Smart Turn, the OracleManager asking an
OpenAI-compatible server on 127.0.0.1, Piper speaking the answers). The microphone plays the
questions in the shipped Piper voice, each once the companion has finished answering the one
before, then talks over the third answer.

The conversation view shows three question/answer pairs in order, each reply under its question
and that reply's requests under it, the barge-in marked in the third, and History reopens the
conversation in the same view. Nothing waits a fixed time: each question waits for the answer
before it, so a slower machine only takes longer."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

from kame_desktop.audio.sources import NullSink
from kame_desktop.config import AudioSettings, FrontEndSettings, LlmSettings, Settings
from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE

pytestmark = pytest.mark.gui

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Who painted the Mona Lisa?"]
HEARD = ["capital", "spider", "mona"]  # a word of each that Whisper hears whatever else it gets wrong
INTERRUPTION = "Wait, please stop talking for a moment."


class Microphone:
    """Paced 80 ms frames (the session's clock, as a sound card's): silence, and each utterance
    once `ready(k)` says its turn has come; the stream ends `tail_s` after the last one."""

    def __init__(self, utterances: list[np.ndarray], ready, tail_s: float = 3.0) -> None:
        self.utterances, self.ready, self.tail = utterances, ready, round(tail_s / FRAME_SECONDS)
        self.k, self.pos, self.idle, self.n = 0, None, 0, 0
        self.t0: float | None = None
        self.closed = threading.Event()

    def read(self) -> np.ndarray | None:
        if self.closed.is_set():
            return None
        self.t0 = self.t0 or time.monotonic()
        self.n += 1
        if (wait := self.t0 + self.n * FRAME_SECONDS - time.monotonic()) > 0:
            time.sleep(wait)
        if self.pos is None and self.k < len(self.utterances) and self.ready(self.k):
            self.pos = 0
        if self.pos is None:
            self.idle += 1
            if self.k == len(self.utterances) and self.idle > self.tail:
                return None  # the conversation is over: the session stops
            return np.zeros(FRAME_SIZE, np.float32)
        frame = np.zeros(FRAME_SIZE, np.float32)
        piece = self.utterances[self.k][self.pos : self.pos + FRAME_SIZE]
        frame[: len(piece)] = piece
        self.pos += FRAME_SIZE
        if self.pos >= len(self.utterances[self.k]):
            self.k, self.pos, self.idle = self.k + 1, None, 0
        return frame

    def close(self) -> None:
        self.closed.set()


def test_three_spoken_questions_read_as_three_turns(make_window, qtbot, scripted_llm, piper_voice, model_cache,
                                                    monkeypatch):
    monkeypatch.setenv("KAME_CACHE_DIR", str(model_cache))
    llm = scripted_llm(delay_range=(0.2, 0.4), answer_words=12, words_per_s=30.0)
    speech = [piper_voice.synthesize(text) for text in [*QUESTIONS, INTERRUPTION]]
    settings = Settings(
        llm=LlmSettings(provider="openai", preset="custom", base_url=llm.url, model="scripted"),
        audio=AudioSettings(listening="open_mic", echo_cancellation=False),
        frontend=FrontEndSettings(kind="lite"),
        history=True,
    )
    window = None

    def count(kind: str, source: str) -> int:
        return sum(r.event.kind == kind and getattr(r.event, "source", None) == source
                   for r in list(window.controller.records))

    def ready(k: int) -> bool:
        if window is None:  # the session starts before make_window returns
            return False
        if k == 0:
            return any(r.event.kind == "session_start" for r in list(window.controller.records))
        started, ended = count("speech_start", "assistant"), count("speech_end", "assistant")
        if k < len(QUESTIONS):  # the next question once the answer to the last one has been spoken
            return ended >= k and started == ended
        # talk over the third answer once it has said a few words (the request it answers)
        records = list(window.controller.records)
        starts = [i for i, r in enumerate(records) if r.event.kind == "speech_start" and r.event.source == "assistant"]
        return len(starts) >= len(QUESTIONS) and sum(r.event.kind == "assistant_token"
                                                     for r in records[starts[len(QUESTIONS) - 1]:]) >= 4

    mic = Microphone(speech, ready)
    window = make_window(settings, audio_factory=lambda *_: (mic, NullSink()), backend_factory=None)
    qtbot.waitUntil(lambda: window.status.status.text() == "Stopped", timeout=300_000)
    view = window.transcript
    turns = [t for t in view.turns if t.question]
    summary = "\n".join(f"{t.question!r} -> {t.reply_text!r} {[(r.id, r.adopted_ms) for r in t.requests]}"
                        for t in view.turns) + "\n" + "\n".join(  # what the user's side heard, when
        f"{r.t:6.2f} {r.event.kind} {getattr(r.event, 'source', '')} {getattr(r.event, 'text', '')}"
        f"{getattr(r.event, 'probability', '') or ''}{getattr(r.event, 'message', '')}"
        for r in window.controller.records if r.event.kind in ("speech_start", "speech_end", "turn_end", "asr_final",
                                                                "barge_in", "error", "asr_unclear"))
    assert [t for t in view.turns if t.reply and not t.question] == [], summary
    assert len(turns) >= 4, summary  # three questions, then the interruption
    heard_ids = []
    for turn, word in zip(turns, HEARD, strict=False):
        assert word in turn.question.lower() and not turn.unclear, summary
        # the companion said the answer of a request asked during this question ("Answer n: …")
        said = re.match(r"Answer (\d+):", turn.reply_text)
        assert said, summary
        n = int(said.group(1))
        assert n in [r.id for r in turn.requests if r.heard], summary
        heard_ids.append(n)
        shown = view.turn_text(turn.index)  # the question, the reply under it, its requests under that
        assert shown.index(turn.question) < shown.index(f"Answer {n}:") < shown.index(f"request {n}"), shown
    assert heard_ids == sorted(heard_ids) and len(set(heard_ids)) == 3, f"in order, each its own\n{summary}"
    assert turns[2].interrupted and not turns[0].interrupted and not turns[1].interrupted, summary
    assert "⟂ interrupted" in view.turn_text(turns[2].index)

    live = [view.turn_text(t.index) for t in view.turns]
    window.new_conversation()  # saves it; History reopens it in the same view
    window.open_history()
    window.history_dialog.open_button.click()
    assert window.viewing is not None
    assert [view.turn_text(t.index) for t in view.turns] == live
