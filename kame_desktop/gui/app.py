"""`kame-desktop gui`: the application object, icon, single instance, and the main window."""

from __future__ import annotations

import sys

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QWidget

from kame_desktop.desktop import APP_ID, assets_dir
from kame_desktop.errors import KameError
from kame_desktop.gui.single_instance import SingleInstance, hand_over


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


def serve_window(window: QWidget) -> SingleInstance:
    """Listen for later launches; each one raises `window`."""
    instance = SingleInstance(parent=window)
    instance.listen()

    def bring_up() -> None:
        window.showNormal()
        window.raise_()
        window.activateWindow()

    instance.raise_requested.connect(bring_up)
    return instance


def main(argv: list[str] | None = None) -> int:
    app = make_app(argv)
    if hand_over():
        return 0  # the running instance raises its window
    from kame_desktop.config import load_settings
    from kame_desktop.gui.mainwindow import MainWindow

    window = MainWindow(load_settings())
    instance = serve_window(window)
    window.show()
    app.processEvents()  # first paint before anything heavy starts (on the inference thread)
    window.start()
    code = app.exec()
    instance.close()
    # The window closed at once; the session may still be closing its models: let it finish
    # before the interpreter shuts down under it.
    window.controller.stop(join_timeout=15)
    return code
