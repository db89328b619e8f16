"""Nothing lost: the app, in its own interpreter, holds a two-turn conversation (the real Session,
controller, bridge and window; a scripted front-end says the words) and is then ended from
outside. After SIGTERM (a logout, a shutdown) both turns are in History on the next start; after
SIGKILL (a crash, a power cut: nothing runs) at least the first one is, written as it went."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.gui

APP = r"""
import sys
import numpy as np
from PySide6.QtCore import QTimer
from kame_desktop.audio.sources import NullSink, NullSource
from kame_desktop.config import Settings
from kame_desktop.events import (FRAME_SIZE, AsrFinalEvent, AsrPartialEvent, AssistantTokenEvent, LlmAdoptedEvent,
    LlmChunkEvent, LlmRequestEvent, SpeechEndEvent, SpeechStartEvent, TurnEndEvent)
from kame_desktop.frontend.base import FrameResult
from kame_desktop.gui.app import make_app
from kame_desktop.gui.lifecycle import end_cleanly
from kame_desktop.gui.mainwindow import MainWindow

TURNS = [("What is the capital of France?", "Paris is the capital of France."),
         ("How many legs does a spider have?", "A spider has eight legs.")]
script = {}
for n, (question, answer) in enumerate(TURNS):
    f = 5 + 15 * n
    script[f] = [SpeechStartEvent("user"), AsrPartialEvent(question.split()[0])]
    script[f + 3] = [AsrFinalEvent(question), LlmRequestEvent(n + 1, "reactive", 6),
                     LlmChunkEvent(n + 1, answer), LlmAdoptedEvent(n + 1, 150.0)]
    script[f + 4] = [TurnEndEvent("vad"), SpeechStartEvent("assistant")]
    for k, word in enumerate(answer.split()):
        script[f + 5 + k] = [AssistantTokenEvent(k, "\u2581" + word)]
    script[f + 6 + k] = [SpeechEndEvent("assistant")]

class Scripted:
    kind, model, device = "kame", "scripted", "cpu"
    n = 0
    def step(self, frame, signals):
        self.n += 1
        return FrameResult(np.zeros(FRAME_SIZE, np.float32), tuple(script.get(self.n, ())))
    def reset(self): pass
    def close(self): pass

app = make_app()
window = MainWindow(Settings(), frontend_factory=lambda _s: Scripted(),
                    audio_factory=lambda *_: (NullSource(None, realtime=True), NullSink()),
                    backend_factory=lambda *_: None)
end_cleanly(app, window)
window.show()
window.start()

def watch():
    kinds = [r.event for r in window.controller.records]
    if sum(isinstance(e, SpeechEndEvent) and e.source == "assistant" for e in kinds) >= 2:
        print("two turns", flush=True)
    else:
        QTimer.singleShot(50, watch)

QTimer.singleShot(50, watch)
code = app.exec()
window.controller.stop(join_timeout=15)
print("exited", code, flush=True)
"""


def run_until_two_turns(tmp_path) -> subprocess.Popen:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
    proc = subprocess.Popen([sys.executable, "-c", APP], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60  # the interpreter and Qt start, then 3 s of conversation
    line = ""
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line = proc.stdout.readline()
            if line.startswith("two turns"):
                return proc
    proc.kill()
    pytest.fail(f"the app did not get through two turns: {line!r} {proc.communicate()[1][-2000:]}")


def reopen_in_history(make_window, qtbot):
    """The next start: History lists the conversation, and it opens in the conversation view."""
    from PySide6.QtCore import Qt

    window = make_window(start=False)
    window.open_history()
    dialog = window.history_dialog
    assert dialog.list.count() == 1, "the conversation is listed"
    qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
    assert window.viewing is not None
    return window.transcript


def test_sigterm_after_two_turns_keeps_both(make_window, qtbot, tmp_path):
    proc = run_until_two_turns(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "exited 0" in out, err[-2000:]  # quit cleanly, not killed by the signal
    view = reopen_in_history(make_window, qtbot)
    assert [t.question for t in view.turns] == ["What is the capital of France?", "How many legs does a spider have?"]
    assert [t.reply_text for t in view.turns] == ["Paris is the capital of France.", "A spider has eight legs."]
    assert "Paris is the capital of France." in view.turn_text(0) and "eight legs" in view.turn_text(1)


def test_sigkill_after_two_turns_keeps_the_first(make_window, qtbot, tmp_path):
    proc = run_until_two_turns(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    view = reopen_in_history(make_window, qtbot)
    first = view.turns[0]
    assert first.question == "What is the capital of France?" and first.reply_text == "Paris is the capital of France."
    assert "Paris is the capital of France." in view.text("oracle"), "with the request under it"
