"""The GUI stays responsive during a 30 s scripted conversation (tiny KAME paced in real time,
oracle signals every few seconds): a 10 ms QTimer probe measures the event loop's stalls."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtCore import QTimer

from kame_desktop.config import AudioSettings, Settings
from kame_desktop.events import OracleReset, OracleText
from kame_desktop.session import ScriptEntry, script_frame

pytestmark = [pytest.mark.gui, pytest.mark.slow]

SECONDS = 30.0
ANSWERS = ["Paris is the capital of France.", "It is about two thousand years old.",
           "The Seine runs through it.", "Yes, the Eiffel tower is there."]


def test_gui_responsive_during_30s_conversation(make_window, qtbot, parts, tiny_frontend, frozen_test_heap):
    script = [
        ScriptEntry(script_frame(t), (OracleReset(n), OracleText(n, ANSWERS[n % len(ANSWERS)])))
        for n, t in enumerate(np.arange(1.0, SECONDS - 1, 3.0))
    ]
    window = make_window(
        Settings(audio=AudioSettings(listening="open_mic")),
        frontend_factory=lambda _s: tiny_frontend,
        audio_factory=parts.audio(lambda: parts.ToneSource(SECONDS)),
        script=script,
    )
    ticks: list[float] = []
    probe = QTimer()
    probe.setInterval(10)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
    probe.start()
    qtbot.waitUntil(lambda: window.status.status.text() == "Stopped", timeout=int(SECONDS * 1000) + 20000)
    probe.stop()
    gaps = np.diff(ticks) * 1000
    p99, worst = float(np.percentile(gaps, 99)), float(gaps.max())
    print(f"GUI probe: {len(gaps)} gaps, p50 {np.median(gaps):.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms")
    assert window.controller.records, "the session ran"
    assert sum(r.event.kind == "oracle_reset" for r in window.controller.records) == len(script)
    assert p99 <= 50 and worst <= 150
