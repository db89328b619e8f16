"""The Memory dialog (issue 26) on real widgets: it lists what is remembered with when and from
which conversation, edits an item in place, deletes, exports and clears; the settings' off switch
is saved; a damaged memory file is said in the dialog."""

from __future__ import annotations

import json
import os
import stat

import pytest
from PySide6.QtCore import Qt

from kame_desktop.backend.memory import MemoryStore, memory_path
from kame_desktop.gui.memory_dialog import MemoryDialog

pytestmark = pytest.mark.gui


def filled() -> MemoryStore:
    store = MemoryStore()
    store.remember("home", "The user lives in Lyon.", conversation="2026-05-01T10:20:00")
    store.remember("name", "The user's name is Ada.", conversation="2026-05-02T09:00:00", how="tool")
    return store


def test_the_dialog_lists_edits_deletes_exports_and_clears(qtbot, tmp_path):
    store = filled()
    dialog = MemoryDialog(store)
    qtbot.addWidget(dialog)
    assert sorted(dialog.texts()) == ["The user lives in Lyon.", "The user's name is Ada."]
    row = dialog.texts().index("The user lives in Lyon.")
    assert dialog.table.item(row, 2).text() == "2026-05-01 10:20"  # which conversation
    assert dialog.table.item(row, 1).text()[:4].isdigit()  # when

    dialog.table.item(row, 0).setText("The user lives in Nice.")  # as a double-click edit ends
    assert sorted(i.text for i in store.items()) == ["The user lives in Nice.", "The user's name is Ada."]
    assert next(i for i in store.items() if "Nice" in i.text).how == "typed"

    out = tmp_path / "export.json"
    dialog.export_to(out)
    assert sorted(i["text"] for i in json.loads(out.read_text())["items"]) == sorted(i.text for i in store.items())
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600

    dialog.table.selectRow(dialog.texts().index("The user's name is Ada."))
    dialog.delete_selected()
    assert [i.text for i in store.items()] == ["The user lives in Nice."] == dialog.texts()

    dialog.confirm = lambda _text: False
    qtbot.mouseClick(dialog.clear_button, Qt.MouseButton.LeftButton)
    assert len(store.items()) == 1  # not confirmed: kept
    dialog.confirm = lambda _text: True
    qtbot.mouseClick(dialog.clear_button, Qt.MouseButton.LeftButton)
    assert store.items() == [] and dialog.texts() == []


def test_a_damaged_memory_file_is_said_in_the_dialog():
    memory_path().parent.mkdir(parents=True, exist_ok=True)
    memory_path().write_text("not json")
    dialog = MemoryDialog(MemoryStore())
    assert dialog.texts() == [] and "damaged" in dialog.message.text() and not dialog.message.isHidden()
    dialog.close()


def test_the_settings_off_switch_is_saved(qtbot):
    from kame_desktop.config import Settings, load_settings, save_settings
    from kame_desktop.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    assert dialog.memory_enabled.isChecked()  # on by default
    dialog.memory_enabled.setChecked(False)
    save_settings(dialog.values())
    assert load_settings().memory.enabled is False
    assert not MemoryDialog(MemoryStore(), enabled=False).state.isHidden()  # the dialog says it is off
