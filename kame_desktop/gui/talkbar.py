"""The talk controls: push-to-talk (held = the microphone is heard), open mic, mute, new
conversation, and the input/output level meters."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QWidget

from kame_desktop.gui.meter import LevelMeter


class TalkBar(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ptt = QPushButton("Hold to talk")
        self.ptt.setObjectName("pttButton")
        self.ptt.setCheckable(False)
        self.open_mic = QCheckBox("Open mic")
        self.mute = QCheckBox("Mute")
        self.new_conversation = QPushButton("New conversation")
        self.input_meter = LevelMeter("input level")
        self.output_meter = LevelMeter("output level")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.addWidget(self.ptt)
        layout.addWidget(self.open_mic)
        layout.addWidget(self.mute)
        layout.addWidget(QLabel("in"))
        layout.addWidget(self.input_meter, 1)
        layout.addWidget(QLabel("out"))
        layout.addWidget(self.output_meter, 1)
        layout.addWidget(self.new_conversation)
