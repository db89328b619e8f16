"""`kame-desktop gui`: the application object, icon, single instance, and the main window."""

from __future__ import annotations

import sys

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QWidget

from kame_desktop.desktop import APP_ID, assets_dir
from kame_desktop.errors import KameError
from kame_desktop.gui.single_instance import SingleInstance, claim


def app_icon() -> QIcon:
    try:
        assets = assets_dir()
    except KameError:  # a broken install still opens, without its icon
        return QIcon()
    for name in (f"{APP_ID}.svg", f"{APP_ID}.png"):
        if (assets / name).exists():
            return QIcon(str(assets / name))
    return QIcon()


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    app.setApplicationName("kame-desktop")
    app.setApplicationDisplayName("kame-desktop")
    app.setDesktopFileName("kame-desktop")
    app.setWindowIcon(app_icon())
    return app


def serve_window(window: QWidget, instance: SingleInstance | None = None) -> SingleInstance:
    """Listen for later launches (unless `instance` already does); each one raises `window`."""
    if instance is None:
        instance = SingleInstance()
        instance.listen()
    instance.setParent(window)

    def bring_up() -> None:
        window.showNormal()
        window.raise_()
        window.activateWindow()

    instance.raise_requested.connect(bring_up)
    return instance


def open_window(**window_kwargs: object) -> QWidget:
    """The main window on the saved settings; the banner says when they had to be reset."""
    from kame_desktop.config import load_settings_noting
    from kame_desktop.gui.mainwindow import MainWindow

    settings, notice = load_settings_noting()
    window = MainWindow(settings, **window_kwargs)
    if notice:
        window.banner.show_error(f"Settings: {notice}", settings_fix=False, source="settings")
    return window


def main(argv: list[str] | None = None) -> int:
    app = make_app(argv)
    instance = claim()
    if instance is None:
        return 0  # the running instance raises its window
    window = open_window()
    instance = serve_window(window, instance)
    from kame_desktop.gui.lifecycle import end_cleanly

    end_cleanly(app, window)  # SIGTERM, SIGINT, a logout: the conversation is saved, the session stopped
    if window.tray is not None:  # the window may close to the tray: quit only when it really closes
        app.setQuitOnLastWindowClosed(False)
        window.closed.connect(app.quit)
    window.show()
    app.processEvents()  # first paint before anything heavy starts (on the inference thread)
    window.start()
    code = app.exec()
    instance.close()
    # The window closed at once; the session may still be closing its models: let it finish
    # before the interpreter shuts down under it.
    window.controller.stop(join_timeout=15)
    return code
