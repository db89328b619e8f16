"""The tray icon: the companion's state in the pill's colours, and a menu with mute, the
listening mode, open the window and quit. Closing the window with "keep in tray" on leaves
the companion running here (the first time, a notice says where it went)."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QActionGroup, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from kame_desktop.gui.state_indicator import LOOK

if TYPE_CHECKING:
    from kame_desktop.gui.mainwindow import MainWindow

log = logging.getLogger(__name__)

MODE_LABELS = {"push_to_talk": "Push to talk", "open_mic": "Open mic", "wake_word": "Wake word"}
NOTICE_MS = 8000


def listening_modes() -> tuple[str, ...]:
    """The listening modes the settings offer: choices.LISTENING_MODES where it exists (a third
    mode, the wake word, adds itself there), else today's two."""
    from kame_desktop import choices

    return tuple(getattr(choices, "LISTENING_MODES", ("push_to_talk", "open_mic")))


def tray_available() -> bool:
    return QSystemTrayIcon.isSystemTrayAvailable()


def state_icon(colour: str, size: int = 64) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(colour))
    painter.setPen(QColor("white"))
    painter.drawEllipse(4, 4, size - 8, size - 8)
    painter.end()
    return QIcon(pixmap)


class CompanionTray(QObject):
    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.icon = QSystemTrayIcon(self)
        self.menu = QMenu()  # no parent: a tray menu is its own top-level popup
        self.mute_action = QAction("Mute", self, checkable=True)
        self.mute_action.setChecked(window.talk.mute.isChecked())
        self.mute_action.toggled.connect(window.talk.mute.setChecked)
        window.talk.mute.toggled.connect(self.mute_action.setChecked)
        self.menu.addAction(self.mute_action)
        self.mode_menu = self.menu.addMenu("Listening mode")
        self.mode_group = QActionGroup(self)
        self.mode_actions: dict[str, QAction] = {}
        for mode in listening_modes():
            action = QAction(MODE_LABELS.get(mode, mode.replace("_", " ").capitalize()), self, checkable=True)
            action.triggered.connect(lambda _checked=False, m=mode: self.set_mode(m))
            self.mode_group.addAction(action)
            self.mode_menu.addAction(action)
            self.mode_actions[mode] = action
        window.talk.mode_shown.connect(self._show_mode)
        self._show_mode()
        self.menu.addSeparator()
        self.open_action = self.menu.addAction("Open the window", window.show_window)
        self.quit_action = self.menu.addAction("Quit", window.quit_app)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._on_activated)
        self._icons = {state: state_icon(colour) for state, (_text, colour) in LOOK.items()}
        window.bridge.received.connect(self.show_state, Qt.ConnectionType.QueuedConnection)  # after the pill's own
        window.talk.mute.toggled.connect(self.show_state)
        self.show_state()
        self.icon.show()

    # --- listening mode: today the talk bar's Open mic box holds it --------------------------------

    def mode(self) -> str:
        return self.window.talk.mode()

    def set_mode(self, mode: str) -> None:
        self.window.talk.listening.setCurrentIndex(self.window.talk.listening.findData(mode))
        self._show_mode()

    def _show_mode(self, *_: object) -> None:
        if (action := self.mode_actions.get(self.mode())) is not None:
            action.setChecked(True)

    # --- state -------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.window.state_indicator.state

    def show_state(self, *_: object) -> None:
        state = self.state
        self.icon.setIcon(self._icons[state])
        self.icon.setToolTip(f"kame-desktop — {self.window.state_indicator.text()}")

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:  # a click: open, or hide an open window
            if self.window.isVisible():
                self.window.hide()
            else:
                self.window.show_window()

    # --- closing to the tray -----------------------------------------------------------------------

    def keeps_running(self) -> bool:
        return self.window.settings.desktop.keep_in_tray and self.icon.isVisible() and tray_available()

    def went_to_tray(self) -> None:
        """The first time, say where the companion went (and remember that it was said)."""
        from kame_desktop.config import save_settings

        settings = self.window.settings
        if settings.desktop.tray_notice_shown:
            return
        self.icon.showMessage("kame-desktop is still running",
                              "It is here in the tray: click the icon to open the window, or choose Quit in its menu.",
                              QSystemTrayIcon.MessageIcon.Information, NOTICE_MS)
        self.window.settings = dataclasses.replace(settings, desktop=dataclasses.replace(settings.desktop, tray_notice_shown=True))
        try:
            save_settings(self.window.settings)
        except Exception as e:  # the notice comes again next time: nothing else is lost
            log.warning("could not remember that the tray notice was shown: %s", e)

    def close(self) -> None:
        self.icon.hide()
