"""Issue 31 under Xvfb: the talk key heard while another X window has focus (pynput, driven by
xdotool), the key setting recorded from a real key press, no other key in the logs, and the
tray (mute, listening mode, close to the tray, a second launch, quit saves)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kame_desktop.config import Settings

pytestmark = pytest.mark.gui

SCENARIOS = Path(__file__).with_name("xcb_scenarios.py")
OTHER_KEYS = ("q", "z", "j", "F7", "Escape", "Tab")  # typed while listening: none may reach a log


def focus_other_window(display: str) -> int:
    """Another X client's window, mapped and given the keyboard focus; returns its id."""
    from Xlib import X
    from Xlib import display as xdisplay

    d = xdisplay.Display(display)
    win = d.screen().root.create_window(0, 0, 200, 100, 0, X.CopyFromParent, event_mask=X.KeyPressMask)
    win.set_wm_name("another application")
    win.map()
    d.sync()
    win.set_input_focus(X.RevertToParent, X.CurrentTime)
    d.sync()
    focus_other_window.keep = d  # the window lives as long as its connection
    return win.id


def xdotool(display: str, *args: str) -> str:
    return subprocess.run(["xdotool", *args], env=dict(os.environ, DISPLAY=display), check=True,
                          capture_output=True, text=True).stdout.strip()


def run_scenario(name: str, display: str, isolated: Path) -> dict:
    env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb", KAME_CONFIG_DIR=str(isolated / "config"),
               KAME_DATA_DIR=str(isolated / "data"), KAME_LOG_DIR=str(isolated / "logs"))
    env.pop("WAYLAND_DISPLAY", None)
    proc = subprocess.run([sys.executable, str(SCENARIOS), name], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_talk_key_works_while_another_window_has_focus(xvfb, make_window, qtbot, parts, monkeypatch):
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    other = focus_other_window(xvfb)
    assert xdotool(xvfb, "getwindowfocus") == str(other)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        recorder = parts.RecordingFrontEnd()
        settings = Settings(audio=dataclasses.replace(Settings().audio, ptt_key="F9"))
        window = make_window(settings, frontend_factory=lambda _s: recorder, audio_factory=parts.audio(parts.ToneSource))
        window.configure_global_key()  # start() does it on a real screen; this test's Qt is offscreen
        assert window.global_key.active, window.global_key.problem

        def wait_frames(n: int) -> int:
            start = len(recorder.peaks)
            qtbot.waitUntil(lambda: len(recorder.peaks) >= start + n, timeout=5000)
            return len(recorder.peaks)

        wait_frames(3)
        xdotool(xvfb, "key", *OTHER_KEYS)  # other keys: nothing happens, nothing is logged
        mark = wait_frames(2)
        wait_frames(3)
        assert max(recorder.peaks[mark:]) == 0.0 and not window.talk.ptt.isDown()

        xdotool(xvfb, "keydown", "F9")  # the turn starts: the microphone is heard
        qtbot.waitUntil(window.talk.ptt.isDown, timeout=5000)
        mark = wait_frames(2)
        xdotool(xvfb, "key", *OTHER_KEYS)  # typed while talking: still not logged
        wait_frames(3)
        assert min(recorder.peaks[mark:]) > 0.25, "held in another window: the front-end hears the tone"
        assert xdotool(xvfb, "getwindowfocus") == str(other), "the other window kept the focus"
        xdotool(xvfb, "keyup", "F9")  # the turn ends
        qtbot.waitUntil(lambda: not window.talk.ptt.isDown(), timeout=5000)
        mark = wait_frames(2)
        wait_frames(3)
        assert max(recorder.peaks[mark:]) == 0.0, "released: silence again"
        window.global_key.stop()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records)
    assert "global talk key F9" in text, "the talk key itself may be logged (and was: the handler works)"
    from pynput.keyboard import Key, KeyCode

    other_names = [repr(KeyCode.from_char(c)) for c in "qzj"] + [str(Key.f7), str(Key.esc), str(Key.tab), "KeyCode", "keysym"]
    leaked = [name for name in other_names if name in text]
    assert not leaked, f"other keys reached the logs: {leaked}\n{text}"


def test_key_setting_records_a_pressed_key(xvfb, isolated):
    seen = run_scenario("capture", xvfb, isolated)
    assert seen["focused"]
    assert seen["shown"] == "F8" and seen["saved_key"] == "F8", seen
    assert seen["after_ctrl"] == "F8" and "without Ctrl" in seen["problem"], "a combination is refused, and why"
    assert seen["support_line"].startswith("X11"), seen


def test_tray_menu_close_to_tray_second_launch_and_quit(xvfb, isolated):
    seen = run_scenario("tray", xvfb, isolated)
    assert seen["tray"] and seen["icon_visible"], seen
    assert seen["menu"] == ["Mute", "Listening mode", "Open the window", "Quit"]
    assert seen["modes"][:2] == ["push_to_talk", "open_mic"]
    # the menu's mode and mute act on what the session hears
    assert seen["ptt_silent"] == 0.0 and seen["open_mic_heard"] > 0.25 and seen["open_mic_box"]
    assert seen["muted_heard"] == 0.0 and seen["muted_box"] and seen["muted_state"] == "muted"
    assert seen["muted_tooltip"].endswith("Muted") and seen["ptt_again_heard"] == 0.0
    # closing with "keep in tray" (the default) leaves the session running; the notice is remembered
    assert seen["hidden"] and seen["running_after_close"] and seen["frames_go_on"] >= 3
    assert not seen["closed_signal_after_close"] and seen["notice_remembered"]
    # a second launch shows the window and exits
    assert seen["shown_by_second_launch"] and seen["second_launch_rc"] == 0
    # Quit in the tray: the session stops, the conversation is in history, the app quits
    assert seen["closed_signal_after_quit"] and not seen["running_after_quit"] and seen["saved"] == 1


def test_without_a_tray_closing_quits(make_window, qtbot, parts):
    window = make_window(frontend_factory=lambda _s: parts.RecordingFrontEnd(), audio_factory=parts.audio(parts.ToneSource))
    assert window.tray is None  # offscreen: no tray
    qtbot.waitUntil(lambda: window.controller.running, timeout=5000)
    closed = []
    window.closed.connect(lambda: closed.append(True))
    window.close()
    assert closed and not window.controller.running
