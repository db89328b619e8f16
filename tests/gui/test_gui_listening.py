"""The listening mode in the window: an earlier version's `open_mic = true` opens in open-mic
mode; in wake-word mode the pill names the word and the front-end hears nothing until it is
said; a wake-word model that cannot load is one banner line and push-to-talk."""

from __future__ import annotations

import pytest

from kame_desktop import config
from kame_desktop.audio import wake_word
from kame_desktop.config import AudioSettings, Settings, load_settings

pytestmark = pytest.mark.gui


def test_an_old_settings_file_with_open_mic_opens_in_open_mic_mode(make_window, qtbot, parts):
    path = config.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[audio]\nopen_mic = true\n", encoding="utf-8")
    fe = parts.RecordingFrontEnd()
    window = make_window(load_settings(), frontend_factory=lambda _s: fe, audio_factory=parts.audio(parts.ToneSource))
    assert window.talk.mode() == "open_mic" and window.controller.listening == "open_mic"
    assert not window.talk.ptt.isEnabled()
    qtbot.waitUntil(lambda: len(fe.peaks) > 5, timeout=15000)
    assert fe.peaks[-1] > 0.25, "heard without holding the talk key"


def test_wake_word_mode_waits_for_the_word(make_window, qtbot, parts):
    fe = parts.RecordingFrontEnd()
    window = make_window(Settings(audio=AudioSettings(listening="wake_word")), frontend_factory=lambda _s: fe,
                         audio_factory=parts.audio(parts.ToneSource))
    qtbot.waitUntil(lambda: window.state_indicator.state == "waiting", timeout=15000)
    assert window.state_indicator.text() == "Say “Alexa”" and window.talk.mode() == "wake_word"
    qtbot.waitUntil(lambda: len(fe.peaks) > 10, timeout=15000)
    assert max(fe.peaks) == 0.0, "a tone is not the wake word: the front-end hears silence"
    assert window.banner.text == ""


def test_a_missing_wake_word_model_is_one_banner_line_and_push_to_talk(make_window, qtbot, parts, monkeypatch, tmp_path):
    monkeypatch.setattr(wake_word, "package_dir", lambda: tmp_path)
    window = make_window(Settings(audio=AudioSettings(listening="wake_word")),
                         frontend_factory=lambda _s: parts.RecordingFrontEnd(), audio_factory=parts.audio(parts.ToneSource))
    qtbot.waitUntil(lambda: window.talk.mode() == "push_to_talk", timeout=15000)
    text = window.banner.text
    assert "wake-word model is missing" in text and "push-to-talk" in text and "\n" not in text
    assert window.talk.ptt.isEnabled() and window.controller.listening == "push_to_talk"
    qtbot.waitUntil(lambda: window.state_indicator.state == "listening", timeout=5000)
