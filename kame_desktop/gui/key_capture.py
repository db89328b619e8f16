"""The talk-key field: click it and press the key (one key, no Ctrl/Alt/Shift); it shows the
key's name as settings store it (QKeySequence's portable text, e.g. "Space", "F9", "A")."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import QLineEdit, QWidget

from kame_desktop.hotkey import key_problem

MODIFIER_KEYS = {Qt.Key.Key_Shift, Qt.Key.Key_Control, Qt.Key.Key_Alt, Qt.Key.Key_Meta, Qt.Key.Key_AltGr,
                 Qt.Key.Key_Super_L, Qt.Key.Key_Super_R, Qt.Key.Key_Hyper_L, Qt.Key.Key_Hyper_R}
PASS_KEYS = {Qt.Key.Key_Tab, Qt.Key.Key_Backtab, Qt.Key.Key_Escape}  # focus and the dialog keep these


class KeyCaptureEdit(QLineEdit):
    problem = Signal(str)  # "" when the key is fine

    def __init__(self, key_name: str, parent: QWidget | None = None) -> None:
        super().__init__(key_name, parent)
        self.setReadOnly(True)
        self.setPlaceholderText("click, then press the talk key")
        self.setToolTip("Click here and press the key to hold while you talk")

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        key = Qt.Key(event.key())
        if key in PASS_KEYS:
            super().keyPressEvent(event)
            return
        event.accept()
        if key in MODIFIER_KEYS or key == Qt.Key.Key_unknown:
            return  # wait for the key itself
        if event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            self.problem.emit("the talk key is one key without Ctrl, Alt or Shift — press it alone")
            return
        name = QKeySequence(key).toString(QKeySequence.SequenceFormat.PortableText)
        self.setText(name)
        self.problem.emit(key_problem(name) or "")

    def key_name(self) -> str:
        return self.text().strip() or "Space"
