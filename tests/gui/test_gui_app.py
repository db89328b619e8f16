"""Desktop integration: single instance hand-over, clean and quick shutdown, load errors shown
as a banner that opens Settings."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kame_desktop.audio.sources import NullSource
from kame_desktop.errors import CheckpointError

pytestmark = pytest.mark.gui


def child_pids() -> set[int]:
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.add(int(entry.name))
    return found


def test_second_instance_hands_over(make_window, qtbot, parts):
    from kame_desktop.gui.app import serve_window

    window = make_window(start=False)
    instance = serve_window(window)
    assert instance.server.isListening()
    raised = []
    instance.raise_requested.connect(lambda: raised.append(True))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "kame_desktop", "gui"], env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    try:
        qtbot.waitUntil(lambda: bool(raised), timeout=20000)
        assert proc.wait(20) == 0, "the second launch exits after handing over"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - started < 20
    instance.close()


def test_close_is_quick_and_leaves_nothing_running(make_window, qtbot, parts, tiny_frontend):
    from kame_desktop.backend.llm.base import UnavailableLlm
    from kame_desktop.backend.worker import Backend

    threads, children = set(threading.enumerate()), child_pids()

    def backend(_settings, post_signal, publish):
        return Backend(UnavailableLlm("none", "test"), None, post_signal, publish)

    window = make_window(
        frontend_factory=lambda _s: tiny_frontend,
        audio_factory=parts.audio(lambda: NullSource(None, realtime=True)),
        backend_factory=backend,
    )
    qtbot.waitUntil(lambda: "kame" in window.status.status.text(), timeout=10000)
    qtbot.wait(300)
    assert {t.name for t in threading.enumerate()} >= {"kame-inference", "kame-backend"}
    started = time.monotonic()
    window.close()
    assert time.monotonic() - started < 1.0
    assert set(threading.enumerate()) - threads == set()
    assert child_pids() - children == set()


def test_load_failure_shows_banner_that_opens_settings(make_window, qtbot, parts):
    def broken(_settings):
        raise CheckpointError("the checkpoint folder /nowhere does not exist; pick another in Settings")

    window = make_window(frontend_factory=broken, audio_factory=parts.audio(parts.ToneSource))
    qtbot.waitUntil(window.banner.isVisible, timeout=5000)
    assert "/nowhere" in window.banner.text
    assert window.banner.settings_button.isVisibleTo(window.banner), "a bad model's fix is in Settings"
    window.banner.settings_button.click()
    assert window.settings_dialog.isVisible()
    window.settings_dialog.reject()


def test_first_paint_does_not_import_torch():
    code = (
        "import sys\n"
        "from kame_desktop.gui.app import make_app\n"
        "from kame_desktop.gui.mainwindow import MainWindow\n"
        "from kame_desktop.config import load_settings\n"
        "app = make_app(); w = MainWindow(load_settings()); w.show(); app.processEvents()\n"
        "assert w.isVisible()\n"
        "sys.exit(3 if 'torch' in sys.modules else 0)\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0
