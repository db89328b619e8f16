"""A non-modal error banner that says what to do next, with an "Open Settings" button."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from kame_desktop.errors import error_text, fixed_in_settings


class ErrorBanner(QFrame):
    open_settings = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("errorBanner")
        self.setStyleSheet("#errorBanner { background: #fdecea; border: 1px solid #e0a0a0; border-radius: 4px; }"
                           "QLabel { color: #611a15; }")
        self.source = ""  # what the shown error is about, for clear()
        self.label = QLabel(self)
        self.label.setWordWrap(True)
        self.settings_button = QPushButton("Open Settings", self)
        self.settings_button.clicked.connect(self.open_settings)
        close = QPushButton("Dismiss", self)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.settings_button)
        layout.addWidget(close)
        self.hide()

    def show_error(self, message: str, settings_fix: bool = True, source: str = "") -> None:
        self.label.setText(message)
        self.settings_button.setVisible(settings_fix)
        self.source = source
        self.show()

    def clear(self, source: str) -> None:
        """Hide the banner if what it shows came from `source` (that trouble is over)."""
        if self.isVisible() and self.source == source:
            self.hide()

    def clear_text(self, text: str) -> None:
        """Hide the banner if it shows `text` (the trouble it tells of is over; a newer one stays)."""
        if self.isVisible() and self.label.text() == text:
            self.hide()

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


def explain(source: str, message: str, kind: str = "failed") -> tuple[str, bool]:
    """The banner's text for an error and whether to offer Settings (errors.py decides both,
    so the CLI says the same words)."""
    return error_text(source, message), fixed_in_settings(kind)
