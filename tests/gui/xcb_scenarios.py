"""Run by tests/gui/test_gui_desktop.py in a child process: the app on Qt's xcb platform under
the test's Xvfb (the test process's own QApplication is offscreen, where there is no tray and
no X keyboard). Prints one JSON object of what it saw; the test asserts on it.

    python tests/gui/xcb_scenarios.py capture|tray
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from kame_desktop.audio.sources import NullSink, NullSource
from kame_desktop.config import Settings, load_settings
from kame_desktop.events import FRAME_SIZE, SAMPLE_RATE, AssistantTokenEvent
from kame_desktop.frontend.base import FrameResult


def wait_until(app, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class Tone:
    """A paced 440 Hz tone standing in for the microphone."""

    def __init__(self) -> None:
        self._inner = NullSource(None, realtime=True)
        self._n = 0
        self.closed = False

    def read(self):
        if self.closed or self._inner.read() is None:
            return None
        t = (np.arange(FRAME_SIZE) + self._n * FRAME_SIZE) / SAMPLE_RATE
        self._n += 1
        return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    def close(self) -> None:
        self.closed = True


class Speaker:
    """Records what it hears (peak per frame) and says one word at frame 3 (the conversation has words)."""

    kind, model, device = "kame", "recorder", "cpu"

    def __init__(self) -> None:
        self.peaks: list[float] = []

    def step(self, frame, signals):
        self.peaks.append(float(np.abs(frame).max()))
        events = (AssistantTokenEvent(None, "hello"),) if len(self.peaks) == 3 else ()
        return FrameResult(np.zeros(FRAME_SIZE, dtype=np.float32), events)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def own_tray_selection():
    """A stand-in system tray: an X client that owns _NET_SYSTEM_TRAY_S0 (all Qt looks for)."""
    from Xlib import X, display

    d = display.Display()
    owner = d.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent)
    owner.set_selection_owner(d.intern_atom("_NET_SYSTEM_TRAY_S0"), X.CurrentTime)
    d.sync()
    return d, owner


def capture(app) -> dict:
    from kame_desktop.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings())
    dialog.tabs.setCurrentIndex(next(i for i in range(dialog.tabs.count()) if dialog.tabs.tabText(i) == "Audio"))
    dialog.show()
    dialog.activateWindow()
    dialog.ptt_key.setFocus()
    focused = wait_until(app, lambda: dialog.isActiveWindow() and dialog.ptt_key.hasFocus())
    subprocess.run(["xdotool", "key", "F8"], check=True)
    wait_until(app, lambda: dialog.ptt_key.text() == "F8", 5)
    shown = dialog.ptt_key.text()
    subprocess.run(["xdotool", "key", "ctrl+b"], check=True)  # a combination: refused, said why
    wait_until(app, lambda: dialog.ptt_key_problem.isVisible(), 5)
    dialog.accept()
    return {"focused": focused, "shown": shown, "after_ctrl": dialog.ptt_key.text(),
            "problem": dialog.ptt_key_problem.text(), "saved_key": load_settings().audio.ptt_key,
            "support_line": dialog.global_key_support.text()}


def tray(app) -> dict:
    from kame_desktop.gui.app import serve_window
    from kame_desktop.gui.mainwindow import MainWindow
    from kame_desktop.history import HistoryStore

    x = own_tray_selection()  # noqa: F841 (kept open: the tray is there while it lives)
    speaker = Speaker()
    source = Tone()
    window = MainWindow(Settings(), frontend_factory=lambda _s: speaker,
                        audio_factory=lambda _s, _e, _r: (source, NullSink()), backend_factory=lambda *_: None)
    out: dict = {"tray": window.tray is not None}
    if window.tray is None:
        return out
    instance = serve_window(window)
    closed: list[bool] = []
    window.closed.connect(lambda: closed.append(True))
    window.show()
    window.start()
    t = window.tray
    out["icon_visible"] = t.icon.isVisible()
    out["menu"] = [a.text() for a in t.menu.actions() if a.text()]
    out["modes"] = list(t.mode_actions)
    wait_until(app, lambda: len(speaker.peaks) >= 4)

    def heard(frames: int = 4) -> float:
        mark = len(speaker.peaks) + 1  # a frame read before the change may still be in flight
        wait_until(app, lambda: len(speaker.peaks) >= mark + frames)
        return max(speaker.peaks[mark:])

    out["ptt_silent"] = heard()
    t.mode_actions["open_mic"].trigger()
    out["open_mic_heard"] = heard()
    out["open_mic_box"] = window.talk.mode() == "open_mic"
    t.mute_action.trigger()
    out["muted_heard"] = heard()
    out["muted_box"] = window.talk.mute.isChecked()
    out["muted_state"] = t.state
    out["muted_tooltip"] = t.icon.toolTip()
    t.mute_action.trigger()
    t.mode_actions["push_to_talk"].trigger()
    out["ptt_again_heard"] = heard()

    window.close()  # keep in tray (the default): hidden, still running
    wait_until(app, lambda: not window.isVisible(), 5)
    out["hidden"] = not window.isVisible()
    out["running_after_close"] = window.controller.running
    out["closed_signal_after_close"] = bool(closed)
    out["notice_remembered"] = load_settings().desktop.tray_notice_shown
    frames = len(speaker.peaks)
    wait_until(app, lambda: len(speaker.peaks) >= frames + 3)
    out["frames_go_on"] = len(speaker.peaks) - frames

    second = subprocess.Popen([sys.executable, "-m", "kame_desktop", "gui"], env=os.environ)
    out["shown_by_second_launch"] = wait_until(app, window.isVisible, 30)
    out["second_launch_rc"] = second.wait(30)

    before = len(HistoryStore().list())
    t.quit_action.trigger()
    wait_until(app, lambda: bool(closed), 10)
    out["closed_signal_after_quit"] = bool(closed)
    out["running_after_quit"] = window.controller.running
    out["saved"] = len(HistoryStore().list()) - before
    instance.close()
    return out


def main() -> int:
    from PySide6.QtWidgets import QApplication

    from kame_desktop.gui.app import make_app

    app = make_app()
    assert QApplication.platformName() == "xcb", QApplication.platformName()
    result = {"capture": capture, "tray": tray}[sys.argv[1]](app)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
