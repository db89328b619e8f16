"""The Memory dialog: what the companion remembers about the user (backend/memory.py), with when
and from which conversation each item came; the user edits an item in place, deletes, exports
(JSON) or clears them. Every failure is shown in the dialog."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kame_desktop.backend.memory import MemoryFileError, MemoryStore, ranked

COLUMNS = ("Remembered", "When", "Conversation", "How")
HOW = {"said": "you said it", "tool": "asked to remember", "typed": "edited here"}


def _when(iso: str) -> str:
    return iso.replace("T", " ")[:16]


class MemoryDialog(QDialog):
    def __init__(self, store: MemoryStore | None = None, parent: QWidget | None = None, *, enabled: bool = True) -> None:
        super().__init__(parent)
        self.setWindowTitle("Memory — kame-desktop")
        self.resize(720, 380)
        self.store = store or MemoryStore()
        # Asks before clearing everything; tests answer for the user.
        self.confirm: Callable[[str], bool] = lambda text: QMessageBox.question(
            self, "Memory", text) == QMessageBox.StandardButton.Yes
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.state = QLabel("" if enabled else "Memory is off (Settings → Tools): nothing is kept or used until it is on.")
        self.state.setWordWrap(True)
        self.state.setVisible(not enabled)
        self.message = QLabel("")
        self.message.setObjectName("memoryMessage")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #611a15;")
        self.message.hide()
        self.delete_button = QPushButton("Delete")
        self.export_button = QPushButton("Export…")
        self.clear_button = QPushButton("Clear all…")
        close = QPushButton("Close")
        buttons = QHBoxLayout()
        for b in (self.delete_button, self.export_button, self.clear_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close)
        hint = QLabel("What the companion remembers about you, newest first. Double-click an item to correct it.")
        hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(hint)
        layout.addWidget(self.state)
        layout.addWidget(self.table)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        self.delete_button.clicked.connect(self.delete_selected)
        self.export_button.clicked.connect(self._export)
        self.clear_button.clicked.connect(self.clear)
        close.clicked.connect(self.accept)
        self.table.itemChanged.connect(self._edited)
        self.refresh()

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def refresh(self) -> None:
        self.table.blockSignals(True)
        try:
            items = ranked(self.store.items())
        except MemoryFileError as e:
            items = []
            self.show_message(str(e))
        if self.store.notice:
            self.show_message(self.store.notice)
            self.store.notice = ""
        self.table.setRowCount(len(items))
        for row, item in enumerate(items):
            cells = (item.text, _when(item.updated), _when(item.conversation) or "—", HOW.get(item.how, item.how))
            for col, value in enumerate(cells):
                cell = QTableWidgetItem(value)
                cell.setData(Qt.ItemDataRole.UserRole, item.id)
                if col:
                    cell.setFlags(cell.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(row, col, cell)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.blockSignals(False)
        self.clear_button.setEnabled(bool(items))
        self.export_button.setEnabled(bool(items))

    def item_ids(self) -> list[str]:
        return [self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in range(self.table.rowCount())]

    def texts(self) -> list[str]:
        return [self.table.item(r, 0).text() for r in range(self.table.rowCount())]

    def _edited(self, cell: QTableWidgetItem) -> None:
        if cell.column() != 0:
            return
        try:
            self.store.edit(cell.data(Qt.ItemDataRole.UserRole), cell.text())
        except OSError as e:
            self.show_message(f"cannot save the change: {e.strerror or type(e).__name__}")
        self.refresh()

    def delete_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        if not rows:
            self.show_message("select the items to delete first")
            return
        try:
            self.store.delete({self.item_ids()[r] for r in rows})
        except OSError as e:
            self.show_message(f"cannot delete: {e.strerror or type(e).__name__}")
        self.refresh()

    def clear(self) -> None:
        if not self.confirm("Forget everything the companion remembers about you?"):
            return
        try:
            self.store.clear()
        except OSError as e:
            self.show_message(f"cannot clear the memory: {e.strerror or type(e).__name__}")
        self.refresh()

    def export_to(self, path: Path) -> None:
        try:
            count = self.store.export(path)
        except OSError as e:
            self.show_message(f"cannot write {path}: {e.strerror or type(e).__name__}")
            return
        self.show_message("")
        self.setWindowTitle(f"Memory — {count} item(s) exported to {path.name}")

    def _export(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Export memory", str(Path.home() / "kame-memory.json"), "JSON (*.json)")
        if name:
            self.export_to(Path(name))
