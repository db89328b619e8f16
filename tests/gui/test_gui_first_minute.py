"""The first minute of the app, as a new user meets it: the real window, the real sound-card code
(PortAudio through sounddevice) and a front-end that takes its time to load. Each case runs in
its own interpreter so that which audio devices PortAudio sees is under the test's control."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kame_desktop.audio.sources import NullSink

# The app with the real audio factory; the "models" load only once the test says so, so the
# order (what the user saw while loading) is observable without timing anything.
APP = r"""
import json, sys, threading
from kame_desktop.audio.sources import NullSink
from kame_desktop.config import Settings
from kame_desktop.frontend.base import FrameResult
from kame_desktop.events import FRAME_SIZE
from kame_desktop.gui.app import make_app
from kame_desktop.gui.mainwindow import MainWindow
from PySide6.QtCore import QTimer
import numpy as np

loaded = threading.Event()
release = threading.Event()
seen = {}

class SlowFrontEnd:
    kind, model, device = "kame", "slow", "cpu"
    def step(self, frame, signals):
        return FrameResult(np.zeros(FRAME_SIZE, np.float32))
    def reset(self): pass
    def close(self): pass

def load(_settings):
    release.wait(60)  # loading the models: until the window has been looked at
    loaded.set()
    return SlowFrontEnd()

app = make_app()
window = MainWindow(Settings(), frontend_factory=load, backend_factory=lambda *_: None)
window.show()
window.start()

def look_while_loading():
    if window.banner.isVisible() or waited[0] > 200:
        seen["while_loading"] = {"loaded": loaded.is_set(), "banner": window.banner.text,
                                 "state": window.state_indicator.text()}
        release.set()
        QTimer.singleShot(100, look_after_loading)
    else:
        waited[0] += 1
        QTimer.singleShot(50, look_while_loading)

def look_after_loading():
    if loaded.is_set() and window.controller.session is not None or waited[0] > 600:
        app.processEvents()
        seen["after_loading"] = {"banner": window.banner.text, "state": window.state_indicator.text()}
        if len(sys.argv) > 1:
            window.grab().save(sys.argv[1])
        window.close()
        app.quit()
    else:
        waited[0] += 1
        QTimer.singleShot(50, look_after_loading)

waited = [0]
QTimer.singleShot(50, look_while_loading)
app.exec()
print(json.dumps(seen))
"""


def run_app(env_changes: dict[str, str], tmp_path, screenshot=None) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", KAME_CONFIG_DIR=str(tmp_path / "config"),
               KAME_DATA_DIR=str(tmp_path / "data"), **env_changes)  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", APP, *([str(screenshot)] if screenshot else [])],
                          env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_no_audio_device_is_on_the_banner_before_the_models_load(tmp_path):
    # No JACK server that this process could see, and no ALSA card on this machine.
    seen = run_app({"JACK_NO_START_SERVER": "1", "JACK_DEFAULT_SERVER": "kame-none"}, tmp_path)
    during = seen["while_loading"]
    assert not during["loaded"], "the banner came before the models finished loading"
    assert "No microphone found" in during["banner"]
    assert during["state"].startswith("Not listening")
    assert seen["after_loading"]["state"].startswith("Not listening"), "still not listening once loaded"


def test_with_a_sound_card_it_listens_once_loaded(tmp_path, jack_server):
    seen = run_app({"JACK_NO_START_SERVER": "1", "JACK_DEFAULT_SERVER": os.environ["JACK_DEFAULT_SERVER"]}, tmp_path)
    assert seen["while_loading"]["banner"] == "" and seen["while_loading"]["state"].startswith("Loading")
    assert seen["after_loading"] == {"banner": "", "state": "Listening"}


@pytest.mark.parametrize("events, expected", [
    ([("speech_start", {"source": "user"})], "Hearing you"),
    ([("speech_start", {"source": "user"}), ("turn_end", {"source": "vad"})], "Thinking…"),
    ([("turn_end", {"source": "vad"}), ("speech_start", {"source": "assistant"})], "Speaking"),
    ([("speech_start", {"source": "assistant"}), ("speech_end", {"source": "assistant"})], "Listening"),
])  # fmt: skip
def test_the_indicator_follows_the_conversation(qtbot, events, expected):
    from kame_desktop.controller import StatusNotice
    from kame_desktop.events import Stamped
    from kame_desktop.gui.state_indicator import StateIndicator

    indicator = StateIndicator()
    qtbot.addWidget(indicator)
    assert indicator.text() == "Loading…"
    indicator.on_notice(StatusNotice("Ready"))
    for frame, (kind, fields) in enumerate(events):
        indicator.on_notice(Stamped.from_record({"kind": kind, "frame": frame, "t": 0.0, **fields}))
    assert indicator.text() == expected
    indicator.set_muted(True)
    assert indicator.text() == "Muted"


def test_a_microphone_that_comes_back_clears_the_banner_and_the_indicator(make_window, parts, qtbot):
    # The device reports what DuplexAudio reports: a failure while it is opened, then (its own
    # retry worked) that it is back. The window must stop saying it cannot listen.
    reports = {}

    def flaky_audio(_settings, on_error, on_recover):
        reports["recover"] = on_recover
        on_error("No microphone found — plug one in or pick another in Settings")
        return parts.ToneSource(), NullSink()

    window = make_window(frontend_factory=lambda _s: parts.RecordingFrontEnd(), audio_factory=flaky_audio)
    qtbot.waitUntil(lambda: window.controller.session is not None, timeout=30000)
    qtbot.waitUntil(lambda: window.state_indicator.text().startswith("Not listening"), timeout=5000)
    assert "No microphone found" in window.banner.text
    reports["recover"]()  # from the audio thread, as the device calls it
    qtbot.waitUntil(lambda: window.state_indicator.text() == "Listening", timeout=5000)
    assert window.banner.text == ""
