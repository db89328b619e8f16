"""The model manager: plan, download (resumable, verified) and report one catalog entry.

Planning and downloading block on the network, so they run on a worker QThread; the worker only
emits Qt signals (queued to the GUI thread), never touches a widget. A QThread rather than a
threading.Thread: PySide6 crashed now and then delivering signals emitted by a plain Python thread
that had already ended."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QThread, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kame_desktop.errors import DownloadCancelled, DownloadError
from kame_desktop.models.catalog import CatalogEntry
from kame_desktop.models.downloads import (
    RepoPlan,
    download,
    free_space,
    model_dir,
    plan_entry,
)


def _fmt(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 10**9 else f"{n / 1e6:.1f} MB"


class _Worker(QThread):
    """Runs `job` off the GUI thread; its signals are queued to the dialog (the QThread object
    itself lives in the GUI thread)."""

    planned = Signal(object)  # RepoPlan
    progress = Signal(int, int)  # kB done, kB total (ints: Qt's int is 32-bit, sizes exceed it)
    succeeded = Signal(str)  # the downloaded path (not `finished`: QThread has one)
    failed = Signal(str)  # a message for the user
    cancelled = Signal()

    def __init__(self, job: Callable[[_Worker], None], parent: QDialog) -> None:
        super().__init__(parent)
        self._job = job

    def run(self) -> None:
        self._job(self)


class ModelManagerDialog(QDialog):
    downloaded = Signal(str)  # the file (gguf) or folder (KAME checkpoint)
    use_lite = Signal()  # the user gave up on KAME: switch to the lite front-end

    def __init__(self, entry: CatalogEntry, parent: QWidget | None = None, *,
                 models_dir: str | Path | None = None) -> None:
        super().__init__(parent)
        self.entry, self.models_dir = entry, models_dir
        self.plan: RepoPlan | None = None
        self.path: str | None = None
        self._cancel = threading.Event()
        self._worker = _Worker(self._run, self)
        self._worker.planned.connect(self._on_planned)
        self._worker.progress.connect(self._on_progress)
        self._worker.succeeded.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)
        self.setWindowTitle(f"Download {entry.name}")

        form = QFormLayout()
        self.size_label = QLabel(f"about {_fmt(entry.approx_bytes)}")  # until the hub answers
        self.free_label = QLabel(_fmt(free_space(model_dir(entry.repo, models_dir))))
        self.license_label = QLabel(entry.license)
        form.addRow("Model", QLabel(entry.name))
        form.addRow("Size", self.size_label)
        form.addRow("Free disk", self.free_label)
        form.addRow("Licence", self.license_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.download_button = QPushButton("Download")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.lite_button = QPushButton("Use lite")
        self.lite_button.setVisible(False)
        self.close_button = QPushButton("Close")
        self.download_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self._cancel.set)  # the worker stops at its next chunk
        self.lite_button.clicked.connect(self._choose_lite)
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        for b in (self.download_button, self.cancel_button, self.lite_button, self.close_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.message)
        layout.addLayout(buttons)

    @property
    def busy(self) -> bool:
        return self._worker.isRunning()

    def start(self) -> None:
        """Plan (again: the hub is the truth) and download; a `.part` left behind is resumed."""
        if self.busy:
            return
        self._cancel.clear()
        self.message.setText("Asking the hub…")
        self.lite_button.setVisible(False)
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._worker.start()

    def _run(self, w: _Worker) -> None:  # worker thread: signals only
        try:
            plan = plan_entry(self.entry, models_dir=self.models_dir)
            w.planned.emit(plan)
            path = download(plan, progress=lambda done, total: w.progress.emit(done >> 10, max(total >> 10, 1)),
                            cancel=self._cancel)
        except DownloadCancelled:
            w.cancelled.emit()
        except DownloadError as e:
            w.failed.emit(str(e))
        except Exception as e:  # noqa: BLE001 (a bug must not leave the dialog stuck busy)
            w.failed.emit(f"the download failed unexpectedly: {e}")
        else:
            w.succeeded.emit(str(path))

    def _on_planned(self, plan: RepoPlan) -> None:
        self.plan = plan
        self.size_label.setText(f"{_fmt(plan.total_bytes)} ({_fmt(plan.needed_bytes())} to fetch)")
        self.free_label.setText(_fmt(plan.free_bytes))
        if plan.license:
            self.license_label.setText(plan.license)
        self.message.setText("Downloading…")

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setValue(int(100 * done / total))

    def _idle(self, text: str) -> None:
        self.message.setText(text)
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_finished(self, path: str) -> None:
        self.path = path
        self.progress.setValue(100)
        self._idle(f"Downloaded and verified: {path}")
        self.download_button.setEnabled(False)
        self.downloaded.emit(path)

    def _on_failed(self, message: str) -> None:
        self._idle(message)
        self.download_button.setText("Download again")
        # Without KAME weights the app still works: offer the offline lite front-end.
        self.lite_button.setVisible(self.entry.kind == "kame")

    def _on_cancelled(self) -> None:
        self._idle("Cancelled; Download resumes where it stopped.")

    def _choose_lite(self) -> None:
        self.use_lite.emit()
        self.accept()

    def done(self, result: int) -> None:  # noqa: D102 (closing also stops a running download)
        self._cancel.set()
        self._worker.wait(10_000)  # a planning request may sit in its connect timeout
        super().done(result)
