"""One lane of the transcript: read-only rich text that grows piece by piece, with a grey
"partial" tail that later text replaces, and auto-scroll that pauses while the user has
scrolled up (it resumes when they scroll back to the bottom)."""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextEdit, QWidget

STYLES = {
    "normal": ("#202020", False, False),
    "partial": ("#9a9a9a", False, True),
    "oracle": ("#1f5fa8", False, False),
    "marker": ("#b35900", True, False),
    "assistant": ("#1b6e3a", False, False),
}


def _format(style: str) -> QTextCharFormat:
    color, bold, italic = STYLES[style]
    fmt = QTextCharFormat()
    fmt.setForeground(QColor(color))
    fmt.setFontWeight(QFont.Weight.Bold if bold else QFont.Weight.Normal)
    fmt.setFontItalic(italic)
    return fmt


class Lane(QTextEdit):
    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self.setReadOnly(True)
        self._partial_start: int | None = None

    def _at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 4

    def _insert(self, text: str, style: str, replace_partial: bool = True) -> None:
        follow = self._at_bottom()
        bar = self.verticalScrollBar()
        keep = bar.value()
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if replace_partial and self._partial_start is not None:
            cursor.setPosition(self._partial_start, QTextCursor.MoveMode.KeepAnchor)
            cursor.removeSelectedText()
            self._partial_start = None
        if cursor.atBlockStart():
            text = text.lstrip(" ")  # a piece's word-boundary space means nothing at a line start
        if style == "partial":
            self._partial_start = cursor.position()
        cursor.insertText(text, _format(style))
        bar.setValue(bar.maximum() if follow else keep)

    def append_piece(self, text: str, style: str = "normal") -> None:
        """Append text after what is committed (drops a pending partial)."""
        self._insert(text, style)

    def set_partial(self, text: str) -> None:
        self._insert(text, "partial")

    def new_paragraph(self) -> None:
        if self.document().characterCount() > 1:
            self._insert("\n", "normal")

    def plain_text(self) -> str:
        return self.toPlainText()
