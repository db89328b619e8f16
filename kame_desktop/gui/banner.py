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


_WHAT = {"llm": "LLM", "asr": "Speech recognition", "audio": "Audio", "tts": "Speech synthesis",
         "load": "Could not start the session", "session": "The session stopped"}


def explain(source: str, message: str, kind: str = "failed") -> tuple[str, bool]:
    """The banner's text for an error and whether to offer Settings. The core's messages already
    say what to do; the error's kind (errors.ErrorKind) decides whether Settings is the fix."""
    match kind:
        case "unreachable" | "refused" | "bad_server" | "bad_model" | "device" | "bad_input":
            offer_settings = True
        case _:  # "busy" retries by itself; "failed" has no setting to blame
            offer_settings = False
    return f"{_WHAT.get(source, source)}: {message}", offer_settings
