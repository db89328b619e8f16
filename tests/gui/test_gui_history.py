"""History through the UI: a conversation is saved on New conversation, reopened read-only,
exported (Markdown, JSON) and deleted."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from kame_desktop.events import OracleReset, OracleText
from kame_desktop.history import HistoryStore
from kame_desktop.session import ScriptEntry

pytestmark = pytest.mark.gui


def click(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


HELLO = [ScriptEntry(2, (OracleReset(0), OracleText(0, "hello world")))]


def test_history_save_reopen_export_delete(scripted_window, qtbot, tmp_path, monkeypatch):
    window = scripted_window(HELLO, 1.6)
    live = window.transcript.text("oracle")
    assert "hello world" in live

    click(qtbot, window.talk.new_conversation)  # saves the conversation, clears the pane
    assert window.transcript.text("oracle") == "" and not window.transcript.turns
    store = HistoryStore()
    assert len(store.list()) == 1

    window.open_history()
    dialog = window.history_dialog
    assert dialog.list.count() == 1
    click(qtbot, dialog.open_button)
    assert window.viewing is not None and window.history_bar.isVisible()
    assert window.transcript.text("oracle") == live  # the same view as live

    window.open_history()
    dialog = window.history_dialog
    md, js = tmp_path / "out.md", tmp_path / "out.json"
    answers = iter([(str(md), ""), (str(js), "")])
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: next(answers))
    click(qtbot, dialog.export_md)
    click(qtbot, dialog.export_json)
    assert md.read_text(encoding="utf-8").strip()
    lines = [json.loads(line) for line in js.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert any(r.get("kind") == "oracle_token" for r in lines)

    click(qtbot, dialog.delete_button)
    assert dialog.list.count() == 0 and store.list() == []
    dialog.accept()
    click(qtbot, window.back_to_live)
    assert window.viewing is None and not window.history_bar.isVisible()


def test_copy_markdown(scripted_window):
    from PySide6.QtGui import QGuiApplication

    window = scripted_window(HELLO, 1.0)
    window.copy_markdown()
    assert QGuiApplication.clipboard().text().strip()
