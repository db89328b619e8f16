"""Issue 29's fault probe, the dialogs' side: a bad base URL is refused where it is typed, Settings
OK that cannot save says so in the dialog (key and settings together or not at all), quitting
with an unwritable history asks first, the History dialog shows its errors and opens what can be
read, a too-long system prompt is flagged as it is typed, a settings reset is told in the banner,
and two launches at the same moment leave one instance."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QFileDialog, QMessageBox

from kame_desktop.config import LlmSettings, Settings, config_dir, load_settings, settings_path
from kame_desktop.credentials import llm_api_key
from kame_desktop.events import AsrFinalEvent, SessionStartEvent, Stamped, Word
from kame_desktop.history import HistoryStore, read_conversation

pytestmark = pytest.mark.gui
KEY = "sk-proj-faultPROBEkey0123456789abcdef"


def click(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def dialog_for(qtbot, settings: Settings):
    from kame_desktop.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def ok(qtbot, dialog) -> None:
    click(qtbot, dialog.buttons.button(QDialogButtonBox.StandardButton.Ok))


def words(text: str) -> list[Stamped]:
    return [Stamped(0, SessionStartEvent("lite", "piper", "cpu")),
            *(Stamped(10 + i, AsrFinalEvent(w, (Word(w, i, i + 0.2),))) for i, w in enumerate(text.split()))]


# --- 1 ---------------------------------------------------------------------------------------------


def test_an_empty_or_malformed_base_url_is_refused_where_it_is_typed(qtbot):
    # Before: OK saved base_url = "" (the session then sent the key to api.openai.com), and Test
    # connection said "unreachable at  —".
    llm = dataclasses.replace(LlmSettings(), provider="openai", preset="custom", base_url="", model="m")
    dialog = dialog_for(qtbot, Settings(llm=llm))
    assert dialog.url_problem.isVisible() and "empty" in dialog.url_problem.text()
    ok(qtbot, dialog)
    assert dialog.isVisible() and dialog.saved is None and not settings_path().exists()
    assert "Cannot save: the base URL is empty" in dialog.banner.text
    click(qtbot, dialog.test_button)  # the same words, at once: nothing is sent
    assert dialog.test_button.isEnabled() and "Connection failed: the base URL is empty" in dialog.banner.text
    for typed in ("localhost:1234/v1", "http://my host/v1"):
        dialog.base_url.setText(typed)
        assert dialog.url_problem.isVisible(), typed
    dialog.base_url.setText("http://localhost:1234/v1")
    assert not dialog.url_problem.isVisible()
    ok(qtbot, dialog)
    assert dialog.saved is not None and load_settings().llm.base_url == "http://localhost:1234/v1"


# --- 4 ---------------------------------------------------------------------------------------------


def test_settings_that_cannot_be_saved_say_so_and_store_no_key(qtbot):
    # Before: IsADirectoryError on stderr only, the dialog open, and the key stored without the settings.
    settings_path().mkdir(parents=True)  # a folder where settings.toml should be
    dialog = dialog_for(qtbot, Settings())
    dialog.system_prompt.setPlainText("You are a turtle.")
    dialog.api_key.setText(KEY)
    ok(qtbot, dialog)
    assert dialog.isVisible() and dialog.saved is None
    text = dialog.banner.text
    assert text.startswith("Cannot save:") and str(settings_path()) in text and "Is a directory" in text
    assert KEY not in text and llm_api_key() is None, "the key is not kept without the settings"
    assert dialog.api_key.text() == KEY, "what was typed is still there"


def test_a_key_that_cannot_be_stored_puts_the_settings_back(qtbot):
    import keyring
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())  # no OS keyring: the key goes to secrets.json …
    (config_dir() / "secrets.json").mkdir(parents=True)  # … which cannot be written
    before = "[llm]\nmodel = 'before'\n"
    settings_path().write_text(before, encoding="utf-8")
    dialog = dialog_for(qtbot, load_settings())
    dialog.model.setText("after")
    dialog.api_key.setText(KEY)
    ok(qtbot, dialog)
    assert dialog.isVisible() and dialog.saved is None
    assert "Cannot save:" in dialog.banner.text and "secrets.json" in dialog.banner.text and KEY not in dialog.banner.text
    assert settings_path().read_text(encoding="utf-8") == before


# --- 11 --------------------------------------------------------------------------------------------


def test_a_system_prompt_too_long_for_the_model_is_flagged_as_it_is_typed(qtbot):
    dialog = dialog_for(qtbot, Settings())  # the local model: 4096 tokens
    dialog.tabs.setCurrentIndex(dialog.tabs.count() - 1)  # Persona, where it is typed
    dialog.system_prompt.setPlainText("You are a turtle. " * 100)
    assert not dialog.prompt_problem.isVisible()
    dialog.system_prompt.setPlainText("You are a turtle. " * 1000)  # 18 000 characters, about 4 500 tokens
    text = dialog.prompt_problem.text()
    assert dialog.prompt_problem.isVisible() and "too long for the model" in text and "4500 tokens" in text
    assert "more than the 3892 it can take" in text
    dialog.llm_provider.setCurrentIndex(1)  # a remote model is assumed to take 8192
    assert not dialog.prompt_problem.isVisible()


# --- 3 ---------------------------------------------------------------------------------------------


def test_quitting_with_an_unwritable_history_asks_first(make_window, qtbot, tmp_path, monkeypatch):
    # Before: the window closed (exit 0) and the conversation was lost; the banner was raised on
    # the closing window.
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    store = HistoryStore(tmp_path / "a-file" / "history")  # a history folder that cannot be made
    window = make_window(start=False, history_store=store)
    window.controller.records.extend(words("keep these words"))
    asked: list[str] = []
    answers = iter(["Cancel", "Save elsewhere…"])

    def answer(box: QMessageBox) -> int:
        asked.append(box.text())
        wanted = next(answers)
        next(b for b in box.buttons() if b.text().replace("&", "") == wanted).click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", answer)
    elsewhere = tmp_path / "elsewhere.jsonl"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(elsewhere), ""))
    assert not window.close(), "Cancel keeps the window"
    assert window.isVisible() and len(asked) == 1 and str(store.root.parent) in asked[0]
    assert window.close()
    assert len(asked) == 2 and not window.isVisible()
    _, records = read_conversation(elsewhere)
    assert [r.event.text for r in records if isinstance(r.event, AsrFinalEvent)] == ["keep", "these", "words"]


def test_quit_anyway_closes_without_saving(make_window, qtbot, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    window = make_window(start=False, history_store=HistoryStore(tmp_path / "a-file" / "history"))
    window.controller.records.extend(words("hello"))
    monkeypatch.setattr(QMessageBox, "exec",
                        lambda box: next(b for b in box.buttons() if b.text() == "Quit anyway").click() or 0)
    assert window.close() and not window.isVisible()


# --- 5 ---------------------------------------------------------------------------------------------


def test_the_history_dialog_shows_its_errors_and_opens_what_it_can(make_window, qtbot, monkeypatch):
    # Before: Open and Export did nothing (HistoryError on stderr), unreadable files were not
    # listed, and Delete raised PermissionError leaving the entry listed.
    store = HistoryStore()
    cut = store.save(words("one two three")).path
    cut.write_text(cut.read_text(encoding="utf-8")[:-15], encoding="utf-8")  # its last line cut short
    newer = store.save(words("four five")).path
    with newer.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": "from_a_newer_version", "frame": 30, "t": 2.4}) + "\n")
    (store.root / "broken.jsonl").write_text("{no header", encoding="utf-8")
    window = make_window(start=False)

    def select(dialog, ident: str) -> None:
        items = [dialog.list.item(i) for i in range(dialog.list.count())]
        dialog.list.setCurrentItem(next(i for i in items if i.data(Qt.ItemDataRole.UserRole) == ident))

    window.open_history()
    dialog = window.history_dialog
    labels = [dialog.list.item(i).text() for i in range(dialog.list.count())]
    assert len(labels) == 3 and "[unreadable" in labels[-1] and "broken.jsonl" in labels[-1]
    select(dialog, "broken")
    click(qtbot, dialog.open_button)
    assert dialog.isVisible() and dialog.message.isVisible() and "not a readable conversation" in dialog.message.text()

    opened: list[list[Stamped]] = []
    dialog.reopen.connect(opened.append)
    select(dialog, cut.stem)
    click(qtbot, dialog.open_button)
    assert [r.event.text for r in opened[-1] if isinstance(r.event, AsrFinalEvent)] == ["one", "two"]
    window.open_history()
    dialog = window.history_dialog
    dialog.reopen.connect(opened.append)
    select(dialog, newer.stem)
    click(qtbot, dialog.open_button)
    assert [r.event.text for r in opened[-1] if isinstance(r.event, AsrFinalEvent)] == ["four", "five"]

    window.open_history()
    dialog = window.history_dialog
    select(dialog, newer.stem)

    def denied(self, missing_ok=False):  # a folder the user may not write (tests may run as root)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", denied)
    click(qtbot, dialog.delete_button)
    assert "cannot delete" in dialog.message.text() and "Permission denied" in dialog.message.text()
    assert dialog.list.count() == 3 and newer.exists()
    monkeypatch.undo()
    click(qtbot, dialog.delete_button)
    assert dialog.list.count() == 2 and not newer.exists() and not dialog.message.isVisible()
    dialog.accept()


# --- 12 --------------------------------------------------------------------------------------------


def test_a_settings_reset_is_told_in_the_banner(qtbot, parts):
    from kame_desktop.gui.app import open_window

    settings_path().parent.mkdir(parents=True)
    settings_path().write_text("this is = not = toml\n", encoding="utf-8")
    window = open_window(backend_factory=parts.no_backend)
    qtbot.addWidget(window)
    window.show()
    bad = settings_path().with_name("settings.toml.bad")
    assert "settings were reset" in window.banner.text and str(bad) in window.banner.text
    assert bad.read_text(encoding="utf-8") == "this is = not = toml\n"


# --- 6 ---------------------------------------------------------------------------------------------

LAUNCH = textwrap.dedent("""
    import sys, time
    from PySide6.QtCore import QCoreApplication
    from kame_desktop.gui import single_instance as si
    app = QCoreApplication([])
    found = si.hand_over
    def slow_hand_over(*args, **kwargs):  # widen the gap between the hand-over and listen()
        answered = found(*args, **kwargs)
        time.sleep(0.6)
        return answered
    si.hand_over = slow_hand_over
    print("ready", flush=True)
    sys.stdin.readline()  # both launches go at the same moment
    instance = si.claim(sys.argv[1])
    print("first" if instance else "handed over", flush=True)
    end = time.monotonic() + 4
    while instance and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
""")


def test_two_launches_at_the_same_moment_leave_one_instance(tmp_path):
    # Before: both found no one listening and both went on (two windows, two history files).
    name = f"kame-test-{os.getpid()}-{tmp_path.name}"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    procs = [subprocess.Popen([sys.executable, "-c", LAUNCH, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        said = sorted(p.stdout.readline().strip() for p in procs)
        assert said == ["first", "handed over"]
        assert [p.wait(30) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
