"""The model manager dialog against the fake hub (tests/conftest.py): download with progress,
resume after an interrupted transfer, a corrupted file, and no network with the lite fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from kame_desktop.config import FrontEndSettings, Settings
from kame_desktop.gui.model_manager import ModelManagerDialog
from kame_desktop.models import catalog, downloads
from kame_desktop.models.catalog import CatalogEntry

pytestmark = pytest.mark.gui


@pytest.fixture
def hub(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)  # read at each plan (downloads.resolve_endpoint)
    monkeypatch.setenv("KAME_MODELS_DIR", str(tmp_path / "models"))
    return fake_hub


def _entry(hub, kind: str = "kame", files: tuple[str, ...] = ()) -> CatalogEntry:
    return CatalogEntry(id="test", kind=kind, repo=hub.repo, name="Test model", license="mit",
                        approx_bytes=2_000_000, files=files)


def _dialog(qtbot, entry: CatalogEntry) -> ModelManagerDialog:
    dialog = ModelManagerDialog(entry)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def _wait_idle(qtbot, dialog: ModelManagerDialog) -> None:
    qtbot.waitUntil(lambda: not dialog.busy and dialog.download_button.isEnabled(), timeout=10_000)


def test_downloads_with_progress_and_emits_the_folder(qtbot, hub, tmp_path):
    dialog = _dialog(qtbot, _entry(hub))
    assert "about 2.0 MB" in dialog.size_label.text()
    seen: list[int] = []
    dialog.progress.valueChanged.connect(seen.append)
    with qtbot.waitSignal(dialog.downloaded, timeout=10_000) as got:
        dialog.download_button.click()
    assert 100 in seen and seen == sorted(seen)
    folder = Path(got.args[0])
    assert folder == tmp_path / "models" / "acme" / "kame-test"
    assert (folder / "model.safetensors").read_bytes() == hub.weights
    assert dialog.progress.value() == 100
    assert dialog.license_label.text() == "mit" and "MB" in dialog.size_label.text()


def test_interrupted_transfer_shows_the_error_then_resumes(qtbot, hub, monkeypatch):
    monkeypatch.setattr(downloads, "CHUNK", 1 << 16)
    hub.drop_after["model.safetensors"] = 700_000
    dialog = _dialog(qtbot, _entry(hub))
    dialog.download_button.click()
    _wait_idle(qtbot, dialog)
    assert "interrupted" in dialog.message.text() or "stopped" in dialog.message.text()
    with qtbot.waitSignal(dialog.downloaded, timeout=10_000) as got:
        dialog.download_button.click()
    assert any(r and r.startswith("bytes=") for r in hub.ranges["model.safetensors"])
    assert (Path(got.args[0]) / "model.safetensors").read_bytes() == hub.weights


def test_corrupted_file_shows_the_error_and_lands_nothing(qtbot, hub, tmp_path):
    hub.corrupt.add("model.safetensors")
    dialog = _dialog(qtbot, _entry(hub, "gguf", ("model.safetensors",)))
    dialog.download_button.click()
    _wait_idle(qtbot, dialog)
    assert "corrupted" in dialog.message.text()
    folder = tmp_path / "models" / "acme" / "kame-test"
    assert not (folder / "model.safetensors").exists() and not list(folder.glob("*.part"))
    assert not dialog.lite_button.isVisible()  # a gguf is not the KAME front-end


def test_server_down_says_no_network_and_offers_lite(qtbot, hub):
    hub.stop()
    dialog = _dialog(qtbot, _entry(hub))
    dialog.download_button.click()
    _wait_idle(qtbot, dialog)
    assert "no network" in dialog.message.text() and "lite" in dialog.message.text()
    assert dialog.lite_button.isVisible()
    with qtbot.waitSignal(dialog.use_lite, timeout=1000):
        dialog.lite_button.click()


def test_settings_download_fills_the_gguf_field(qtbot, hub):
    from kame_desktop.gui.settings_dialog import SettingsDialog

    settings = SettingsDialog(Settings())
    qtbot.addWidget(settings)
    settings.download_gguf(_entry(hub, "gguf", ("spare.bin",)))
    with qtbot.waitSignal(settings.model_dialog.downloaded, timeout=10_000) as got:
        settings.model_dialog.download_button.click()
    assert settings.gguf_path.text() == got.args[0] and got.args[0].endswith("spare.bin")


def test_main_window_offers_kame_then_uses_the_folder_or_lite(make_window, qtbot, parts, hub, monkeypatch):
    monkeypatch.setattr(catalog, "load_catalog", lambda: [_entry(hub)])
    window = make_window(Settings(frontend=FrontEndSettings(kind="kame")),
                         frontend_factory=lambda _s: parts.RecordingFrontEnd(),
                         audio_factory=parts.audio(lambda: parts.ToneSource()))
    assert window.needs_kame_weights()
    dialog = window.model_dialog  # opened by start(): KAME asked for, weights absent
    with qtbot.waitSignal(dialog.downloaded, timeout=10_000) as got:
        dialog.download_button.click()
    assert window.settings.frontend.checkpoint == got.args[0]
    assert window.controller.settings.frontend.checkpoint == got.args[0]  # restarted on it
    assert not window.needs_kame_weights()

    hub.stop()
    window.open_model_manager()
    window.model_dialog.download_button.click()
    qtbot.waitUntil(window.model_dialog.lite_button.isVisible, timeout=10_000)
    window.model_dialog.lite_button.click()
    assert window.settings.frontend.kind == "lite" and window.controller.settings.frontend.kind == "lite"


def test_cancel_keeps_the_dialog_usable_and_download_again_completes(qtbot, hub):
    dialog = _dialog(qtbot, _entry(hub))
    dialog.download_button.click()
    dialog.cancel_button.click()  # set while the worker still plans: download() stops at once
    _wait_idle(qtbot, dialog)
    assert "Cancelled" in dialog.message.text()
    with qtbot.waitSignal(dialog.downloaded, timeout=10_000):
        dialog.download_button.click()
