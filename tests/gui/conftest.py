"""GUI fixtures: private config/data folders and keyring, a tiny KAME front-end loaded once,
paced test audio, and a factory for the real main window driven through a real Session."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")


from fixtures.frontend import RecordingFrontEnd  # noqa: E402

from kame_desktop.audio.sources import NullSink, NullSource  # noqa: E402
from kame_desktop.config import Settings  # noqa: E402
from kame_desktop.events import FRAME_SIZE, SAMPLE_RATE  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated(isolated) -> Iterator[None]:
    """Every GUI test gets its own folders and keyring (tests/conftest.py), and its garbage is
    collected on the GUI thread when it ends: a Qt object left in a reference cycle is otherwise
    destroyed wherever the collector next runs, e.g. in a later test's worker thread while the
    GUI thread's event loop uses it (seen: a segfault in test_gui_model_manager while its
    download worker imported huggingface_hub)."""
    yield
    gc.collect()


@pytest.fixture
def frozen_test_heap() -> Iterator[None]:
    """For the GUI-stall probes: the objects pytest holds before the test (every test module
    collected, fixtures, earlier tests' leftovers) are frozen out of the collector, so a full
    collection during the test scans what the test made, not the harness. Under the CI's
    `-m slow` run that heap is ~250k objects and one full collection takes ~165 ms (it stalled
    the probe 159 ms in CI); the app's whole heap with the lite models loaded is ~66k objects,
    ~20 ms."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def tiny_frontend(tiny_checkpoint):
    """The tiny KAME front-end, loaded once (the controller resets it at each use)."""
    import torch

    torch.set_num_threads(1)
    from kame_desktop.frontend.kame.engine import KameFrontEnd

    frontend = KameFrontEnd.load(str(tiny_checkpoint), device="cpu", seed=0)
    yield SharedFrontEnd(frontend)
    frontend.close()


class SharedFrontEnd:
    """One front-end for many sessions: the controller closes a session's front-end when the
    session ends, and KameFrontEnd.close() frees the model, so the shared one is closed only at
    the end of the test session."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def close(self) -> None:
        pass


class ToneSource:
    """A paced 440 Hz tone (a stand-in microphone); close() ends it, like a device."""

    def __init__(self, seconds: float | None = None, realtime: bool = True) -> None:
        self._inner = NullSource(seconds, realtime=realtime)
        self._n = 0
        self._closed = threading.Event()

    def read(self) -> np.ndarray | None:
        frame = None if self._closed.is_set() else self._inner.read()
        if frame is None:
            return None
        t = (np.arange(FRAME_SIZE) + self._n * FRAME_SIZE) / SAMPLE_RATE
        self._n += 1
        return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    def close(self) -> None:
        self._closed.set()


def audio(source_factory: Callable[[], Any]) -> Callable[[Settings], tuple[Any, Any]]:
    return lambda _settings, _on_error, _on_recover: (source_factory(), NullSink())


def no_backend(_settings, _post_signal, _publish) -> None:
    return None


@pytest.fixture
def make_window(qtbot):
    """Factory: the real MainWindow with a controller built from the given parts; shown, and
    closed at the end of the test."""
    from kame_desktop.gui.mainwindow import MainWindow

    windows = []

    def make(settings: Settings | None = None, start: bool = True, **controller_kwargs: Any) -> MainWindow:
        controller_kwargs.setdefault("backend_factory", no_backend)
        window = MainWindow(settings or Settings(), **controller_kwargs)
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        if start:
            window.start()
        return window

    yield make
    for window in windows:
        window.controller.stop()


@pytest.fixture
def scripted_window(make_window, qtbot, tiny_frontend):
    """Factory: scripted_window(script, seconds, realtime=False) → the main window after a whole
    session on the tiny front-end: `seconds` of silence heard, the `script`'s oracle signals fed
    at their frames, and the status back at "Stopped"."""

    def run(script, seconds: float, realtime: bool = False):
        window = make_window(
            frontend_factory=lambda _s: tiny_frontend,
            audio_factory=audio(lambda: NullSource(seconds, realtime=realtime)),
            script=script,
        )
        qtbot.waitUntil(lambda: window.status.status.text() == "Stopped", timeout=15000)
        return window

    return run


@pytest.fixture
def parts():
    """The test stand-ins above, for test modules (conftest is not importable)."""
    from types import SimpleNamespace

    return SimpleNamespace(ToneSource=ToneSource, RecordingFrontEnd=RecordingFrontEnd, audio=audio, no_backend=no_backend)
