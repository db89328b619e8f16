"""The transcript pane: three lanes side by side — what the user said (ASR partials in grey,
replaced by final words), the oracle stream as it arrives (oracle tokens for KAME, the LLM's
chunks per request for lite, a marker at each reset) and what the companion says."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from kame_desktop.events import (
    AsrFinalEvent,
    AsrPartialEvent,
    AssistantTokenEvent,
    BargeInEvent,
    LlmAdoptedEvent,
    LlmChunkEvent,
    OracleLateEvent,
    OracleResetEvent,
    OracleTokenEvent,
    SessionStartEvent,
    Stamped,
    TurnEndEvent,
)
from kame_desktop.gui.lane import Lane


def _piece(text: str) -> str:
    return text.replace("\u2581", " ")  # sentencepiece's word boundary


def _column(title: str, lane: Lane) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    label = QLabel(f"<b>{title}</b>")
    layout.addWidget(label)
    layout.addWidget(lane)
    return box


class TranscriptView(QSplitter):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.user = Lane("userLane")
        self.oracle = Lane("oracleLane")
        self.assistant = Lane("assistantLane")
        self.addWidget(_column("You", self.user))
        self.addWidget(_column("Oracle (LLM)", self.oracle))
        self.addWidget(_column("Companion", self.assistant))
        self.frontend_kind = "kame"

    def clear(self) -> None:
        for lane in (self.user, self.oracle, self.assistant):
            lane.clear()
            lane._partial_start = None

    def show_records(self, records: Iterable[Stamped]) -> None:
        self.clear()
        for record in records:
            self.handle(record)

    def handle(self, stamped: Stamped) -> None:
        lite = self.frontend_kind == "lite"  # lite has no oracle tokens: its lane shows the LLM's text
        match stamped.event:
            case SessionStartEvent(frontend=frontend):
                self.frontend_kind = frontend
            case AsrPartialEvent(text=text):
                self.user.set_partial(text + " ")
            case AsrFinalEvent(text=text):
                self.user.append_piece(text + " ")
            case TurnEndEvent():
                self.user.new_paragraph()
            case OracleResetEvent(request=request):
                self.oracle.new_paragraph()
                self.oracle.append_piece(f"⟲ reset {'' if request is None else request} ", "marker")
            case OracleTokenEvent(piece=piece):
                self.oracle.append_piece("▶" if piece == "<start>" else _piece(piece), "oracle")
            case OracleLateEvent(count=count):
                self.oracle.append_piece(f" [{count} late] ", "marker")
            case LlmAdoptedEvent(request=request) if lite:  # the answer the companion speaks from
                self.oracle.new_paragraph()
                self.oracle.append_piece(f"⟲ request {request} ", "marker")
            case LlmChunkEvent(text=text) if lite:
                self.oracle.append_piece(text, "oracle")
            case AssistantTokenEvent(piece=piece):
                self.assistant.append_piece(_piece(piece), "assistant")
            case BargeInEvent():
                self.assistant.append_piece(" [interrupted]\n", "marker")
