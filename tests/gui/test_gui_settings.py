"""The Settings dialog: values round-trip through TOML and the keyring; Test connection."""

from __future__ import annotations

import dataclasses

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from kame_desktop.config import (
    AsrSettings,
    AudioSettings,
    FrontEndSettings,
    LlmSettings,
    Settings,
    ToolSettings,
    load_settings,
)
from kame_desktop.credentials import llm_api_key

pytestmark = pytest.mark.gui

KEY = "sk-test-0123456789abcdef"


def test_settings_round_trip(make_window, qtbot, parts):
    window = make_window(frontend_factory=lambda _s: parts.RecordingFrontEnd(),
                         audio_factory=parts.audio(lambda: parts.ToneSource()))
    window.open_settings()
    d = window.settings_dialog
    d.llm_provider.setCurrentIndex(1)
    d.preset.setCurrentText("lmstudio")
    d.model.setText("qwen2.5-7b")
    d.api_key.setText(KEY)
    d.policy.setCurrentText("polling")
    d.max_streams.setValue(5)
    d.asr_provider.setCurrentText("openai")
    d.whisper_model.setText("small")
    d.turn_detection.setCurrentText("silence")
    d.listening.setCurrentIndex(d.listening.findData("open_mic"))
    d.wake_word.setCurrentIndex(d.wake_word.findData("alexa"))
    d.wake_sensitivity.setValue(0.7)
    d.echo_cancellation.setChecked(False)
    d.ptt_key.setText("F5")
    d.frontend_kind.setCurrentText("lite")
    d.checkpoint.setText("/models/kame")
    d.compute_device.setCurrentText("cpu")
    d.dtype.setCurrentText("fp32")
    d.int8.setChecked(True)
    d.system_prompt.setPlainText("You are a turtle.")
    d.history.setChecked(False)
    d.tool_boxes["add_note"].setChecked(False)
    qtbot.mouseClick(d.buttons.button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)

    expected = Settings(
        llm=LlmSettings(provider="openai", preset="lmstudio", base_url="http://localhost:1234/v1",
                        model="qwen2.5-7b", policy="polling", max_streams=5),
        asr=AsrSettings(provider="openai", whisper_model="small", turn_detection="silence"),
        audio=AudioSettings(echo_cancellation=False, listening="open_mic", ptt_key="F5", wake_word="alexa", wake_sensitivity=0.7),
        frontend=FrontEndSettings(kind="lite", checkpoint="/models/kame", device="cpu", dtype="fp32", int8=True),
        system_prompt="You are a turtle.",
        history=False,
        tools=ToolSettings(disabled=("add_note",)),
    )
    assert load_settings() == expected
    assert window.settings == expected
    assert llm_api_key() == KEY
    assert window.talk.mode() == "open_mic"
    qtbot.waitUntil(lambda: window.controller.running, timeout=3000)  # restarted with the new settings

    window.open_settings()  # the key is never shown back
    d2 = window.settings_dialog
    assert d2.api_key.text() == "" and KEY not in d2.api_key.placeholderText()
    assert d2.values() == expected
    d2.reject()


def _test(qtbot, url: str):
    from kame_desktop.gui.settings_dialog import SettingsDialog

    llm = dataclasses.replace(LlmSettings(), provider="openai", preset="custom", base_url=url, model="smollm2")
    dialog = SettingsDialog(Settings(llm=llm))
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.test_button.isEnabled(), timeout=60000)
    return dialog


def test_connection_to_a_real_server(qtbot, llama_server):
    dialog = _test(qtbot, llama_server)
    assert dialog.test_result.text().startswith("Connected. Reply: ")
    assert len(dialog.test_result.text()) > len("Connected. Reply: ")
    assert not dialog.banner.isVisible()


def test_connection_to_a_closed_port_shows_banner(qtbot, free_tcp_port):
    dialog = _test(qtbot, f"http://127.0.0.1:{free_tcp_port}/v1")
    assert dialog.banner.isVisible()
    assert "Connection failed" in dialog.banner.text
