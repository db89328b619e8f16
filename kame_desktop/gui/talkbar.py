"""The talk controls: push-to-talk (held = the microphone is heard), the listening mode (push to
talk, open mic, wake word), mute, new conversation, and the input/output level meters."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from kame_desktop.choices import LISTENING_LABELS, LISTENING_MODES
from kame_desktop.gui.meter import LevelMeter


class TalkBar(QWidget):
    mode_shown = Signal(str)  # the listening mode now in force (chosen here, in the tray, or a fallback)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ptt = QPushButton("Hold to talk")
        self.ptt.setObjectName("pttButton")
        self.ptt.setCheckable(False)
        self.listening = QComboBox()
        self.listening.setToolTip("How the microphone is heard: while the talk key is held, always, or for one turn after the wake word")
        for mode in LISTENING_MODES:
            self.listening.addItem(LISTENING_LABELS[mode], mode)
        self.mute = QCheckBox("Mute")
        self.new_conversation = QPushButton("New conversation")
        self.input_meter = LevelMeter("input level")
        self.output_meter = LevelMeter("output level")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.addWidget(self.ptt)
        layout.addWidget(self.listening)
        layout.addWidget(self.mute)
        layout.addWidget(QLabel("in"))
        layout.addWidget(self.input_meter, 1)
        layout.addWidget(QLabel("out"))
        layout.addWidget(self.output_meter, 1)
        layout.addWidget(self.new_conversation)

    def mode(self) -> str:
        return self.listening.currentData()

    def show_mode(self, mode: str) -> None:
        """Show `mode` without emitting a change (the controller already uses it)."""
        self.listening.blockSignals(True)
        self.listening.setCurrentIndex(max(0, self.listening.findData(mode)))
        self.listening.blockSignals(False)
        self.ptt.setEnabled(mode != "open_mic")
        self.mode_shown.emit(mode)
