"""The status line: what runs (front-end, model, device, LLM), a busy indicator while loading,
and the latency readout (frame time vs the 80 ms budget, lag behind real time, oracle lag, LLM
time to first token)."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from kame_desktop.events import FRAME_SECONDS

BUDGET_MS = FRAME_SECONDS * 1000


class StatusLine(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.status = QLabel("Starting…")
        self.status.setObjectName("statusText")
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # indeterminate
        self.busy.setFixedWidth(80)
        self.busy.setFixedHeight(10)
        self.latency = QLabel("")
        self.latency.setObjectName("latencyText")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.addWidget(self.busy)
        layout.addWidget(self.status, 1)
        layout.addWidget(self.latency)
        self.frame_ms = 0.0
        self.lag_ms = 0.0
        self.oracle_lag_ms: float | None = None
        self.ttft_ms: float | None = None

    def set_status(self, text: str, busy: bool = False) -> None:
        self.status.setText(text)
        self.busy.setVisible(busy)

    def set_frame(self, frame_ms: float, lag_ms: float) -> None:
        self.frame_ms, self.lag_ms = frame_ms, lag_ms
        self._refresh()

    def set_oracle_lag(self, ms: float) -> None:
        self.oracle_lag_ms = ms
        self._refresh()

    def set_ttft(self, ms: float) -> None:
        self.ttft_ms = ms
        self._refresh()

    def _refresh(self) -> None:
        parts = [f"frame {self.frame_ms:.0f}/{BUDGET_MS:.0f} ms"]
        if self.lag_ms > BUDGET_MS:
            parts.append(f"<span style='color:#b00020'>lagging {self.lag_ms / 1000:.1f} s</span>")
        parts.append("oracle lag " + ("–" if self.oracle_lag_ms is None else f"{self.oracle_lag_ms:.0f} ms"))
        parts.append("LLM ttft " + ("–" if self.ttft_ms is None else f"{self.ttft_ms:.0f} ms"))
        self.latency.setText(" · ".join(parts))
