"""A non-modal error banner that says what to do next, with an "Open Settings" button."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget


class ErrorBanner(QFrame):
    open_settings = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("errorBanner")
        self.setStyleSheet("#errorBanner { background: #fdecea; border: 1px solid #e0a0a0; border-radius: 4px; }"
                           "QLabel { color: #611a15; }")
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

    def show_error(self, message: str, settings_fix: bool = True) -> None:
        self.label.setText(message)
        self.settings_button.setVisible(settings_fix)
        self.show()

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


def explain(source: str, message: str) -> str:
    """Turn an error into a sentence that names the fix."""
    if "Settings" in message:  # the core's messages often name the fix already
        return message[:1].upper() + message[1:]
    low = message.lower()
    if source == "llm" and any(w in low for w in ("connect", "unreachable", "refused", "resolve")):
        return f"LLM server unreachable: {message} — open Settings to check the URL, or choose the local model."
    if source == "llm":
        return f"LLM error: {message} — open Settings to check the LLM provider, model and API key."
    if source == "audio":
        return f"Audio device error: {message} — open Settings to choose another input or output device."
    if source == "load":
        return f"Could not start the session: {message} — open Settings to choose another front-end or model."
    if source == "asr":
        return f"Speech recognition: {message} — open Settings to pick another ASR provider."
    return f"{source}: {message}"
