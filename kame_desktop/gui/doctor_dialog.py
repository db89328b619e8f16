"""Help → Check this machine: the `doctor` report (run off the GUI thread: it probes Qt, the
audio devices and the LLM endpoint), and *Report a problem*: a zip of the report and the log,
with no secrets and no transcripts (problem_report.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kame_desktop.config import Settings
from kame_desktop.doctor import Check, exit_code, render_text, run_checks
from kame_desktop.gui.bridge import EventBridge


class DoctorDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None, *, report: bool = False) -> None:
        """`report`: ask where to save the problem report as soon as the checks are done."""
        super().__init__(parent)
        self._report_when_ready = report
        self.setWindowTitle("Check this machine — kame-desktop")
        self.resize(860, 420)
        self.settings = settings
        self.checks: list[Check] | None = None
        self.report_path: Path | None = None
        self.text = QPlainTextEdit("Checking…")
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.note = QLabel("")
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.report_button = QPushButton("Report a problem…")
        self.report_button.setToolTip("Save a zip of this report and the app's log (no API key, no conversations)")
        self.report_button.setEnabled(False)
        self.report_button.clicked.connect(self.ask_report)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        buttons.addWidget(self.report_button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.note)
        layout.addLayout(buttons)
        self._relay = EventBridge()  # no Qt parent: a late result never hits a deleted dialog
        self._relay.received.connect(self._show, Qt.ConnectionType.QueuedConnection)
        self._worker = threading.Thread(target=lambda: self._relay(run_checks(settings)), name="kame-doctor", daemon=True)
        self._worker.start()

    def _show(self, checks: object) -> None:
        self.checks = checks  # type: ignore[assignment]
        self.text.setPlainText(render_text(self.checks))
        self.note.setText(["Ready.", "Usable, with warnings.", "Cannot run: see the failures."][exit_code(self.checks)])
        self.report_button.setEnabled(True)
        if self._report_when_ready:
            self.ask_report()

    def ask_report(self) -> None:
        default = Path.home() / f"kame-desktop-report-{time.strftime('%Y%m%d-%H%M%S')}.zip"
        path, _ = QFileDialog.getSaveFileName(self, "Save the problem report", str(default), "Zip files (*.zip)")
        if path:
            self.save_report(Path(path))

    def save_report(self, path: Path) -> None:
        from kame_desktop.problem_report import write_problem_report

        try:
            self.report_path = write_problem_report(path, self.checks or [])
        except OSError as e:
            self.note.setText(f"Could not write {path}: {e.strerror or e}")
            return
        self.note.setText(f"Saved {path}: attach it to your bug report (it holds no API key and no conversation).")
