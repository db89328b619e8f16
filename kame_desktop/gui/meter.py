"""A small level meter (0..1) for the input and output audio."""

from __future__ import annotations

from PySide6.QtWidgets import QProgressBar, QWidget


class LevelMeter(QProgressBar):
    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self.setRange(0, 100)
        self.setTextVisible(False)
        self.setFixedHeight(8)
        self.setToolTip(name)

    def set_level(self, level: float) -> None:
        self.setValue(int(max(0.0, min(1.0, level)) * 100))
