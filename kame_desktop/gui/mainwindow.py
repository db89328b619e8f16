"""The main window: error banner, the three-lane transcript, talk controls and the status line.
It owns the controller (which runs the session off the GUI thread) and receives everything
through one `EventBridge` with a queued connection."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kame_desktop.config import Settings
from kame_desktop.controller import (
    AudioRecovered,
    Controller,
    ErrorNotice,
    FrameStats,
    SessionEnded,
    StatusNotice,
    has_words,
)
from kame_desktop.events import (
    ErrorEvent,
    LlmFirstChunkEvent,
    OracleLagEvent,
    RecoveredEvent,
    SessionStartEvent,
    Stamped,
)
from kame_desktop.gui.banner import ErrorBanner, explain
from kame_desktop.gui.bridge import EventBridge
from kame_desktop.gui.global_key import GlobalTalkKey, on_a_desktop
from kame_desktop.gui.state_indicator import StateIndicator
from kame_desktop.gui.statusline import StatusLine
from kame_desktop.gui.talkbar import TalkBar
from kame_desktop.gui.transcript import TranscriptView
from kame_desktop.gui.tray import CompanionTray, tray_available
from kame_desktop.history import ConversationLog, conversation_title, render_markdown
from kame_desktop.listening import ListeningNotice

log = logging.getLogger(__name__)

# Settings a running session picks up without a restart.
LIVE_FIELDS = {("audio", "listening"), ("audio", "ptt_key"), ("history",), ("desktop",)}


def needs_restart(old: Settings, new: Settings) -> bool:
    for f in dataclasses.fields(Settings):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(a):
            for g in dataclasses.fields(a):
                if getattr(a, g.name) != getattr(b, g.name) and (f.name, g.name) not in LIVE_FIELDS:
                    return True
        elif a != b and (f.name,) not in LIVE_FIELDS:
            return True
    return False


class MainWindow(QMainWindow):
    closed = Signal()  # the window really closed (not to the tray): the app quits

    def __init__(self, settings: Settings, *, history_store: Any = None, **controller_kwargs: Any) -> None:
        super().__init__()
        self.setWindowTitle("kame-desktop")
        self.resize(1000, 620)
        self.settings = settings
        self._history_store = history_store
        # No Qt parent: the controller's threads hold it, so it outlives the window safely.
        self.bridge = EventBridge()
        self.bridge.received.connect(self.on_notice, Qt.ConnectionType.QueuedConnection)
        self.controller = Controller(settings, self.bridge, **controller_kwargs)
        self.viewing: list[Stamped] | None = None  # a saved conversation shown read-only
        self._log: ConversationLog | None = None  # the live conversation's history file, appended as it goes
        self._log_problem = ""  # the history write error the banner shows
        self._shut_down = False
        self._ptt_key = QKeySequence(settings.audio.ptt_key)

        self.state_indicator = StateIndicator()
        self.banner = ErrorBanner()
        self.banner.open_settings.connect(self.open_settings)
        self.transcript = TranscriptView()
        self.history_label = QLabel("")
        self.back_to_live = QPushButton("Back to live")
        self.back_to_live.clicked.connect(self.leave_history)
        history_bar = QHBoxLayout()
        history_bar.addWidget(self.history_label, 1)
        history_bar.addWidget(self.back_to_live)
        self.history_bar = QWidget()
        self.history_bar.setLayout(history_bar)
        self.history_bar.hide()
        self.talk = TalkBar()
        self.status = StatusLine()
        central = QWidget()
        layout = QVBoxLayout(central)
        top = QHBoxLayout()
        top.addWidget(self.state_indicator)
        top.addStretch(1)
        layout.addLayout(top)
        layout.addWidget(self.banner)
        layout.addWidget(self.history_bar)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.talk)
        layout.addWidget(self.status)
        self.setCentralWidget(central)

        self.talk.ptt.pressed.connect(lambda: self.controller.set_ptt(True))
        self.talk.ptt.released.connect(lambda: self.controller.set_ptt(False))
        self.talk.show_mode(settings.audio.listening)
        self.talk.listening.currentIndexChanged.connect(lambda _i: self._set_listening(self.talk.mode()))
        self.talk.mute.toggled.connect(self.controller.set_muted)
        self.talk.mute.toggled.connect(self.state_indicator.set_muted)
        self.talk.new_conversation.clicked.connect(self.new_conversation)
        self._set_listening(settings.audio.listening)
        self._build_menu()
        QApplication.instance().installEventFilter(self)
        self._quitting = False  # Quit (menu, tray): close for good even with "keep in tray" on
        self.global_key = GlobalTalkKey(self)
        self.global_key.changed.connect(self._on_global_key)
        self.tray: CompanionTray | None = CompanionTray(self) if tray_available() else None  # none: closing quits

    def _build_menu(self) -> None:
        menu = self.menuBar().addMenu("&Conversation")
        for text, slot, key in (
            ("&New conversation", self.new_conversation, "Ctrl+N"),
            ("&Copy as Markdown", self.copy_markdown, "Ctrl+Shift+C"),
            ("Export &Markdown…", lambda: self.export("md"), None),
            ("Export &JSON…", lambda: self.export("json"), None),
            ("&History…", self.open_history, "Ctrl+H"),
            ("&Memory…", self.open_memory, None),
            ("&Settings…", self.open_settings, "Ctrl+,"),
            ("Download &KAME model…", self.open_model_manager, None),
            ("&Quit", self.quit_app, "Ctrl+Q"),
        ):
            action = QAction(text, self)
            action.triggered.connect(slot)
            if key:
                action.setShortcut(QKeySequence(key))
            menu.addAction(action)
        help_menu = self.menuBar().addMenu("&Help")
        for text, slot in (("&Check this machine…", lambda: self.open_doctor()), ("&Report a problem…", self.report_problem)):
            action = QAction(text, self)
            action.triggered.connect(slot)
            help_menu.addAction(action)

    # --- session --------------------------------------------------------------------------------

    def start(self) -> None:
        self.controller.start()
        if on_a_desktop():  # offscreen (tests, headless) has no other application to type in
            self.configure_global_key()
        if self.needs_kame_weights():  # asked for KAME, weights absent: offer them rather than fail
            self.open_model_manager()

    def needs_kame_weights(self) -> bool:
        """Without the `kame` extra the weights are no use: the banner says what to install."""
        from kame_desktop.frontend.select import DEFAULT_KAME_REPO, kame_weights_cached
        from kame_desktop.models.accelerator import kame_extra_missing

        fe = self.settings.frontend
        return (fe.kind == "kame" and fe.checkpoint == DEFAULT_KAME_REPO and not kame_extra_missing()
                and not kame_weights_cached(DEFAULT_KAME_REPO))

    def on_notice(self, obj: object) -> None:
        self.state_indicator.on_notice(obj)  # the live companion's state, even while viewing history
        if isinstance(obj, Stamped):
            self._on_event(obj)
        elif isinstance(obj, FrameStats):
            self.talk.input_meter.set_level(obj.input_level)
            self.talk.output_meter.set_level(obj.output_level)
            self.status.set_frame(obj.frame_ms, obj.lag_ms)
        elif isinstance(obj, StatusNotice):
            self.status.set_status(obj.text, obj.busy)
        elif isinstance(obj, ErrorNotice):
            self.banner.show_error(*explain(obj.source, obj.message, obj.kind), source=obj.source)
        elif isinstance(obj, AudioRecovered):
            self.banner.clear("audio")
        elif isinstance(obj, ListeningNotice):
            self.talk.show_mode(obj.mode)  # push-to-talk when the wake word could not load
        elif isinstance(obj, SessionEnded) and obj.run == self.controller.run_id:  # not a restarted one
            self.status.set_status("Stopped")

    def _on_event(self, stamped: Stamped) -> None:
        if self.viewing is None:
            self.transcript.handle(stamped)
        if stamped.event.kind == "turn_end" or (stamped.event.kind == "speech_end" and stamped.event.source == "assistant"):
            self._history_sync()  # at each turn's end and each reply's: a kill loses at most the turn under way
        match stamped.event:
            case SessionStartEvent(frontend=frontend, model=model, device=device, llm=llm):
                self.status.set_status(f"{frontend} · {model} · {device}" + (f" · LLM {llm}" if llm else ""))
            case LlmFirstChunkEvent(ttft_ms=ttft_ms):
                self.status.set_ttft(ttft_ms)
            case OracleLagEvent(lag_ms=lag_ms):
                self.status.set_oracle_lag(lag_ms)
            case ErrorEvent(source=source, message=message, error_kind=kind):
                self.banner.show_error(*explain(source, message, kind))
            case RecoveredEvent(source=source, error=error):
                self.banner.clear_text(explain(source, error)[0])

    def _set_listening(self, mode: str) -> None:
        self.controller.set_listening(mode)
        self.talk.show_mode(mode)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        """The push-to-talk key, held anywhere in this window (auto-repeat ignored)."""
        is_key = event.type() in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease)
        if is_key and self.isActiveWindow() and self._is_ptt_key(event):
            if not event.isAutoRepeat():
                self.controller.set_ptt(event.type() == QEvent.Type.KeyPress)
                self.talk.ptt.setDown(event.type() == QEvent.Type.KeyPress)
            return True
        return super().eventFilter(obj, event)

    def _is_ptt_key(self, event: QEvent) -> bool:
        if self._ptt_key.isEmpty() or event.modifiers() != Qt.KeyboardModifier.NoModifier:
            return False
        return event.key() == self._ptt_key[0].key()

    def configure_global_key(self) -> None:
        """Hear the talk key in every application, as the settings say; the banner tells why not."""
        desktop = self.settings.desktop
        problem = self.global_key.configure(desktop.global_key, self.settings.audio.ptt_key)
        if problem:
            self.banner.show_error(f"Talk key: {problem}", settings_fix=True, source="global_key")
        else:
            self.banner.clear("global_key")

    def _on_global_key(self, down: bool) -> None:
        self.controller.set_ptt(down)
        self.talk.ptt.setDown(down)

    # --- conversation and history -------------------------------------------------------------

    @property
    def history_store(self) -> Any:
        if self._history_store is None:
            from kame_desktop.history import HistoryStore

            self._history_store = HistoryStore()
        return self._history_store

    def _history_sync(self, records: list[Stamped] | None = None, wait: bool = False) -> None:
        """Append the conversation's new records to its history file (on a writer thread; `wait`:
        until written, raising HistoryError if that failed). Nothing when history is off."""
        if not self.settings.history:
            return
        records = self.controller.records if records is None else records
        if self._log is None:
            self._log = ConversationLog(self.history_store)
        self._log.append(records[self._log.handed :])
        if wait:
            self._log.wait()
        elif self._log.error is not None and str(self._log.error) != self._log_problem:
            self._log_problem = str(self._log.error)
            self.banner.show_error(f"Could not save the conversation to history: {self._log.error}", settings_fix=False)

    def _save_history(self, records: list[Stamped]) -> None:
        """The conversation ends (`records`: all of it): write what its file lacks."""
        try:
            self._finish_log(records)
        except Exception as e:
            self.banner.show_error(f"Could not save the conversation to history: {e}", settings_fix=False)

    def save_now(self) -> None:
        """Write what the history file lacks now (the desktop session is about to end)."""
        try:
            self._history_sync(wait=True)
        except Exception as e:
            log.warning("the conversation could not be saved: %s", e)

    def shutdown(self) -> None:
        """The app quits without the window closing (SIGTERM, SIGINT, the desktop session
        ending): stop the session and write the rest of the conversation, asking nothing."""
        if self._shut_down:
            return
        self._shut_down = True
        QApplication.instance().removeEventFilter(self)
        self.controller.stop()
        try:
            self._finish_log(self.controller.take_records())
        except Exception as e:
            log.warning("the conversation's last events were not saved: %s", e)

    def _finish_log(self, records: list[Stamped]) -> None:
        """Write what the conversation's file lacks (`records`: all of it) and start a new one."""
        conversation, self._log, self._log_problem = self._log, None, ""
        if self.settings.history and has_words(records):
            conversation = conversation or ConversationLog(self.history_store)
            conversation.append(records[conversation.handed :])
            try:
                conversation.wait()
            finally:
                conversation.close()
        elif conversation is not None:
            conversation.close()

    def new_conversation(self) -> None:
        self.leave_history()
        self._save_history(self.controller.new_conversation())
        self.transcript.clear()

    def current_records(self) -> list[Stamped]:
        return list(self.viewing) if self.viewing is not None else list(self.controller.records)

    def show_history(self, records: list[Stamped]) -> None:
        self.viewing = records
        self.transcript.show_records(records)
        self.history_label.setText(f"Saved conversation (read-only): {conversation_title(records)}")
        self.history_bar.show()

    def leave_history(self) -> None:
        if self.viewing is None:
            return
        self.viewing = None
        self.history_bar.hide()
        self.transcript.show_records(list(self.controller.records))

    def open_history(self) -> None:
        from kame_desktop.gui.history_dialog import HistoryDialog

        dialog = HistoryDialog(self.history_store, self)
        dialog.reopen.connect(self.show_history)
        self.history_dialog = dialog
        dialog.open()

    def open_memory(self) -> None:
        """What the companion remembers about the user, to edit, delete, export or clear."""
        from kame_desktop.gui.memory_dialog import MemoryDialog

        self.memory_dialog = MemoryDialog(parent=self, enabled=self.settings.memory.enabled)
        self.memory_dialog.open()

    def copy_markdown(self) -> None:
        QGuiApplication.clipboard().setText(render_markdown(self.current_records()))

    def export(self, fmt: str) -> None:
        from kame_desktop.gui.history_dialog import export_with_dialog

        export_with_dialog(self, self.current_records(), fmt)

    # --- settings -------------------------------------------------------------------------------

    def open_settings(self) -> None:
        from kame_desktop.gui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        dialog.accepted.connect(lambda: self.apply_settings(dialog.saved))
        self.settings_dialog = dialog
        dialog.open()

    def apply_settings(self, new: Settings | None) -> None:
        if new is None:
            return
        old, self.settings = self.settings, new
        self._ptt_key = QKeySequence(new.audio.ptt_key)
        key_changed = (old.desktop.global_key, old.audio.ptt_key) != (new.desktop.global_key, new.audio.ptt_key)
        if key_changed and (self.global_key.active or on_a_desktop()):
            self.configure_global_key()
        self.talk.show_mode(new.audio.listening)
        if not needs_restart(old, new):  # a restart takes the mode (and loads the wake word) itself
            self.controller.set_listening(new.audio.listening)
        if needs_restart(old, new):
            self._save_history(self.controller.take_records())
            self.transcript.clear()
            self.banner.hide()
            self.controller.restart(new)
        else:
            self.controller.settings = new

    # --- help -----------------------------------------------------------------------------------

    def open_doctor(self, report: bool = False) -> None:
        """The doctor report; with `report`, then where to save the problem report's zip."""
        from kame_desktop.gui.doctor_dialog import DoctorDialog

        self.doctor_dialog = DoctorDialog(self.settings, self, report=report)
        self.doctor_dialog.open()

    def report_problem(self) -> None:
        self.open_doctor(report=True)

    # --- models ---------------------------------------------------------------------------------

    def open_model_manager(self) -> None:
        from kame_desktop.errors import DownloadError
        from kame_desktop.gui.model_manager import ModelManagerDialog
        from kame_desktop.models.catalog import load_catalog

        try:
            entry = next(e for e in load_catalog() if e.kind == "kame")
        except (DownloadError, StopIteration) as e:
            QMessageBox.warning(self, "Models", f"no KAME model in the catalog: {e}")
            return
        dialog = ModelManagerDialog(entry, self)
        dialog.downloaded.connect(lambda folder: self._set_frontend(kind="kame", checkpoint=folder))
        dialog.use_lite.connect(lambda: self._set_frontend(kind="lite"))
        self.model_dialog = dialog
        dialog.open()

    def _set_frontend(self, **changes: str) -> None:
        """Save the front-end choice and restart the session on it (apply_settings restarts)."""
        from kame_desktop.config import save_settings

        new = dataclasses.replace(self.settings, frontend=dataclasses.replace(self.settings.frontend, **changes))
        save_settings(new)
        self.apply_settings(new)

    # --- shutdown -------------------------------------------------------------------------------

    def show_window(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def quit_app(self) -> None:
        """Quit for good (the menu's and the tray's Quit): the conversation is saved as on close."""
        self._quitting = True
        if not self.close():  # the user chose to stay (history could not be saved)
            self._quitting = False

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt API)
        if not self._quitting and self.tray is not None and self.tray.keeps_running():
            event.ignore()  # the companion goes on in the tray
            self.hide()
            self.tray.went_to_tray()
            return
        # The conversation is saved while the window can still say that it cannot be: a banner
        # raised on a closing window is never seen, and the conversation would be lost silently.
        records = list(self.controller.records)
        saved = True
        if self.settings.history and has_words(records):
            try:
                self._history_sync(records, wait=True)
            except Exception as e:  # HistoryError: an unwritable or missing folder, a full disk
                if not self._keep_unsaved(str(e), records):
                    event.ignore()  # the user stays, with the conversation and the session
                    return
                saved = False
        QApplication.instance().removeEventFilter(self)
        self.global_key.stop()
        if self.tray is not None:
            self.tray.close()
        self.controller.stop()
        final = self.controller.take_records()
        if saved:  # what was said after that save
            try:
                self._finish_log(final)
            except Exception as e:  # it was writable a moment ago: nothing left to show it on
                log.warning("the conversation's last events were not saved: %s", e)
        elif self._log is not None:
            self._log.close()
        self._shut_down = True  # quitting after this has nothing left to save
        event.accept()
        self.closed.emit()

    def _keep_unsaved(self, problem: str, records: list[Stamped]) -> bool:
        """Ask what to do with a conversation the history cannot take: save it elsewhere (a JSON
        export the History dialog's format), quit anyway, or stay. True: go on closing."""
        from PySide6.QtWidgets import QFileDialog

        from kame_desktop.errors import HistoryError
        from kame_desktop.history import export_json

        while True:
            box = QMessageBox(self)
            box.setIcon(QMessageBox.Icon.Warning)
            box.setWindowTitle("Conversation not saved — kame-desktop")
            box.setText(f"This conversation could not be saved to history: {problem}")
            elsewhere = box.addButton("Save elsewhere…", QMessageBox.ButtonRole.AcceptRole)
            quit_anyway = box.addButton("Quit anyway", QMessageBox.ButtonRole.DestructiveRole)
            stay = box.addButton(QMessageBox.StandardButton.Cancel)
            box.setDefaultButton(elsewhere)
            box.exec()
            clicked = box.clickedButton()
            if clicked is quit_anyway:
                return True
            if clicked is stay or clicked is None:
                return False
            path, _ = QFileDialog.getSaveFileName(self, "Save the conversation", "conversation.jsonl",
                                                  "Conversation (*.jsonl *.json)")
            if not path:
                continue
            try:
                export_json(records, Path(path))
                return True
            except HistoryError as e:
                problem = str(e)
