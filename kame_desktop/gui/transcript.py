"""The transcript pane: three lanes side by side — what the user said (ASR partials in grey,
replaced by final words), the oracle stream as it arrives (oracle tokens for KAME, the LLM's
chunks per request for lite, a marker at each reset) and what the companion says."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from kame_desktop.events import Stamped
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
        e = stamped.event
        kind = e.kind
        if kind == "session_start":
            self.frontend_kind = e.frontend
        elif kind == "asr_partial":
            self.user.set_partial(e.text + " ")
        elif kind == "asr_final":
            self.user.append_piece(e.text + " ")
        elif kind == "turn_end":
            self.user.new_paragraph()
        elif kind == "oracle_reset":
            self.oracle.new_paragraph()
            self.oracle.append_piece(f"⟲ reset {'' if e.request is None else e.request} ", "marker")
        elif kind == "oracle_token":
            self.oracle.append_piece("▶" if e.piece == "<start>" else _piece(e.piece), "oracle")
        elif kind == "oracle_late":
            self.oracle.append_piece(f" [{e.count} late] ", "marker")
        elif kind == "llm_request" and self.frontend_kind == "lite":
            self.oracle.new_paragraph()
            self.oracle.append_piece(f"⟲ request {e.request} ", "marker")
        elif kind == "llm_chunk" and self.frontend_kind == "lite":
            self.oracle.append_piece(e.text, "oracle")
        elif kind == "assistant_token":
            self.assistant.append_piece(_piece(e.piece), "assistant")
        elif kind == "barge_in":
            self.assistant.append_piece(" [interrupted]\n", "marker")
