"""Push-to-talk gates the audio the session hears; scripted oracle signals reach the pane."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from kame_desktop.events import OracleReset, OracleText
from kame_desktop.session import ScriptEntry

pytestmark = pytest.mark.gui


def test_push_to_talk_gates_audio(make_window, qtbot, parts):
    recorder = parts.RecordingFrontEnd()
    window = make_window(frontend_factory=lambda _s: recorder, audio_factory=parts.audio(parts.ToneSource))
    ptt = window.talk.ptt

    def wait_frames(n: int) -> int:
        start = len(recorder.peaks)
        qtbot.waitUntil(lambda: len(recorder.peaks) >= start + n, timeout=5000)
        return len(recorder.peaks)

    wait_frames(4)
    assert max(recorder.peaks) == 0.0, "released: the front-end hears silence"
    mark = len(recorder.peaks)
    qtbot.mousePress(ptt, Qt.MouseButton.LeftButton)
    wait_frames(5)
    assert max(recorder.peaks[mark + 1 :]) > 0.25, "pressed: the tone comes through"
    qtbot.mouseRelease(ptt, Qt.MouseButton.LeftButton)
    mark = wait_frames(2)  # a frame read before the release may still carry sound
    wait_frames(4)
    assert max(recorder.peaks[mark:]) == 0.0

    # the hold key (settings.audio.ptt_key, Space by default) does the same
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=2000)
    qtbot.keyPress(window.transcript, Qt.Key.Key_Space)
    mark = wait_frames(2)
    wait_frames(3)
    assert min(recorder.peaks[mark:]) > 0.25
    qtbot.keyRelease(window.transcript, Qt.Key.Key_Space)
    mark = wait_frames(2)
    wait_frames(3)
    assert max(recorder.peaks[mark:]) == 0.0

    # open mic: heard without holding anything; mute silences it
    window.talk.listening.setCurrentIndex(window.talk.listening.findData("open_mic"))
    mark = wait_frames(2)
    wait_frames(3)
    assert min(recorder.peaks[mark:]) > 0.25
    window.talk.mute.setChecked(True)
    mark = wait_frames(2)
    wait_frames(3)
    assert max(recorder.peaks[mark:]) == 0.0


def test_oracle_tokens_appear_in_order_with_resets(scripted_window):
    script = [
        ScriptEntry(3, (OracleReset(0), OracleText(0, "hello world"))),
        ScriptEntry(25, (OracleReset(1), OracleText(1, "good bye"))),
    ]
    window = scripted_window(script, 3.2, realtime=True)
    text = window.transcript.text("oracle")
    order = [text.find(s) for s in ("⟲ request 0", "hello world", "⟲ request 1", "good bye")]
    assert -1 not in order and order == sorted(order), text
    # exactly the oracle tokens the front-end fed, in order, under their reset's marker
    records = window.controller.records
    for request in (0, 1):
        pieces = [r.event.piece for r in records if r.event.kind == "oracle_token" and r.event.request == request]
        assert pieces[0] == "<start>" and pieces.count("<start>") == 1
        fed = "".join(pieces[1:]).replace("\u2581", " ").strip()
        assert f"⟲ request {request} · reset\n{fed}" in text, text
    assert window.transcript.text("reply"), "the companion's words show too"
