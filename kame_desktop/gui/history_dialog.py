"""The history list: saved conversations, to reopen (shown read-only in the main window's
pane), export (Markdown or JSON) or delete. Files that cannot be opened are listed, marked, so
they can be deleted; every failure is shown in the dialog, never only logged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kame_desktop.errors import HistoryError
from kame_desktop.events import Stamped
from kame_desktop.history import export_json, export_markdown


def entry_fields(entry: Any) -> tuple[str, str]:
    """(id, label) of one HistoryStore.list() entry, whether an object or a dict; an entry that
    cannot be opened says so in its label."""
    get = entry.get if isinstance(entry, dict) else lambda k: getattr(entry, k, None)
    ident = str(get("id"))
    title = get("title") or ident
    when = get("created") or get("started") or get("saved") or ""
    problem = get("problem") or ""
    return ident, f"{when}  {title}".strip() + (f"  [{problem}]" if problem else "")


class HistoryDialog(QDialog):
    reopen = Signal(object)  # list[Stamped]

    def __init__(self, store: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("History — kame-desktop")
        self.store = store
        self.list = QListWidget()
        self.message = QLabel("")  # what went wrong, or what was left out of an opened file
        self.message.setObjectName("historyMessage")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #611a15;")
        self.message.hide()
        self.open_button = QPushButton("Open")
        self.export_md = QPushButton("Export Markdown…")
        self.export_json = QPushButton("Export JSON…")
        self.delete_button = QPushButton("Delete")
        close = QPushButton("Close")
        buttons = QHBoxLayout()
        for b in (self.open_button, self.export_md, self.export_json, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        self.open_button.clicked.connect(self._open)
        self.list.itemDoubleClicked.connect(lambda _item: self._open())
        self.export_md.clicked.connect(lambda: self._export("md"))
        self.export_json.clicked.connect(lambda: self._export("json"))
        self.delete_button.clicked.connect(self._delete)
        close.clicked.connect(self.accept)
        self.refresh()

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def refresh(self) -> None:
        self.list.clear()
        for entry in self.store.list(include_unreadable=True):
            ident, label = entry_fields(entry)
            item = QListWidgetItem(label)
            item.setData(Qt.ItemDataRole.UserRole, ident)
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def selected_id(self) -> str | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def _records(self) -> list[Stamped] | None:
        """The selected conversation, or None (the reason shown); a note when lines were left out."""
        ident = self.selected_id()
        if ident is None:
            return None
        try:
            records, skipped = self.store.load_lines(ident)
        except HistoryError as e:
            self.show_message(str(e))
            return None
        self.show_message(
            f"{skipped} line(s) of this conversation could not be read (cut short, or written by a newer "
            "version) and are left out; the rest is shown." if skipped else ""
        )
        return list(records)

    def _open(self) -> None:
        records = self._records()
        if records is not None:
            self.reopen.emit(records)
            self.accept()

    def _export(self, fmt: str) -> None:
        records = self._records()
        if records is None:
            return
        export_with_dialog(self, records, fmt)

    def _delete(self) -> None:
        ident = self.selected_id()
        if ident is None:
            return
        try:
            self.store.delete(ident)
        except HistoryError as e:
            self.show_message(str(e))
            return
        self.show_message("")
        self.refresh()


def export_with_dialog(parent: QWidget, records: list, fmt: str) -> None:
    """Ask where, then export a conversation as Markdown (`fmt` "md") or event-schema JSON."""
    if fmt == "md":
        path, _ = QFileDialog.getSaveFileName(parent, "Export Markdown", "conversation.md", "Markdown (*.md)")
        export = export_markdown
    else:
        path, _ = QFileDialog.getSaveFileName(parent, "Export JSON", "conversation.json", "JSON (*.json)")
        export = export_json
    if path:
        try:
            export(records, Path(path))
        except HistoryError as e:  # an unwritable folder: say so, the conversation is still here
            QMessageBox.warning(parent, "Export failed", str(e))
