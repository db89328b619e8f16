"""Help menu: the doctor report in a dialog, and Report a problem saving the zip there."""

from __future__ import annotations

import dataclasses
import zipfile

import pytest

from kame_desktop import __version__
from kame_desktop.config import Settings
from kame_desktop.logs import LOG_FILE, log_dir

pytestmark = pytest.mark.gui


def test_help_shows_the_report_and_saves_a_problem_report(make_window, qtbot, monkeypatch, isolated):
    from PySide6.QtWidgets import QFileDialog

    logs = log_dir()
    logs.mkdir(parents=True)
    (logs / LOG_FILE).write_text("2026-12-02 00:10:00,001 INFO kame_desktop.assembly: front-end: lite\n")
    target = isolated / "report.zip"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "Zip files (*.zip)"))
    lite = Settings(frontend=dataclasses.replace(Settings().frontend, kind="lite"))
    window = make_window(lite, start=False)
    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    labels = [a.text() for a in menu.actions()]
    assert labels == ["&Check this machine…", "&Report a problem…"]

    menu.actions()[1].trigger()  # Report a problem: the checks, then the save dialog
    dialog = window.doctor_dialog
    qtbot.waitUntil(lambda: target.exists(), timeout=60_000)
    text = dialog.text.toPlainText()
    assert "qt-platform" in text and "weights" in text and f"kame-desktop {__version__}:" in text
    assert str(target) in dialog.note.text()
    with zipfile.ZipFile(target) as zf:
        assert {"doctor.txt", "doctor.json", LOG_FILE} <= set(zf.namelist())
        assert zf.read("doctor.txt").decode() == text
    dialog.accept()
