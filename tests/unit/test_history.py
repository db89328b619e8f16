"""History: save, list, reopen, delete, export (JSON and Markdown), and keys never written."""

from __future__ import annotations

import json
import logging

import pytest

from kame_desktop.credentials import API_KEY_ENV
from kame_desktop.errors import HistoryError
from kame_desktop.events import (
    AsrFinalEvent,
    AsrPartialEvent,
    AssistantTokenEvent,
    ErrorEvent,
    LlmChunkEvent,
    LlmDoneEvent,
    LlmFirstChunkEvent,
    LlmRequestEvent,
    OracleResetEvent,
    OracleTokenEvent,
    SessionStartEvent,
    SpeechEndEvent,
    Stamped,
    TurnEndEvent,
    Word,
)
from kame_desktop.history import (
    HistoryStore,
    conversation_title,
    export_json,
    export_markdown,
    read_conversation,
    render_markdown,
)

pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py: own folders and keyring
KEY = "sk-secret-abcdef0123456789"  # what a leak would show


def conversation(user: str = "what is the capital of France please") -> list[Stamped]:
    words = tuple(Word(w, 1.0 + i * 0.3, 1.2 + i * 0.3) for i, w in enumerate(user.split()))
    return [
        Stamped(0, SessionStartEvent("kame", "tiny", "cpu", llm="local", asr="whisper")),
        Stamped(12, AsrPartialEvent("what is", words[:2])),
        Stamped(30, AsrFinalEvent(user, words)),
        Stamped(31, TurnEndEvent("vad")),
        Stamped(31, LlmRequestEvent(1, "reactive", len(words))),
        Stamped(33, LlmFirstChunkEvent(1, 120.5)),
        Stamped(33, LlmChunkEvent(1, "Paris is the capital")),
        Stamped(34, LlmChunkEvent(1, " of France.")),
        Stamped(35, LlmDoneEvent(1)),
        Stamped(35, OracleResetEvent(1)),
        Stamped(36, OracleTokenEvent(1, 32000, "<start>")),
        Stamped(37, AssistantTokenEvent(17, " It's")),
        Stamped(38, AssistantTokenEvent(18, " Paris")),
        Stamped(39, AssistantTokenEvent(None, ", of course.")),
        Stamped(45, SpeechEndEvent("assistant")),
    ]


def test_save_list_load_delete(isolated):
    store = HistoryStore()
    assert store.root == isolated / "data" / "history"
    assert store.list() == []
    records = conversation()
    first = store.save(records)
    assert first.title == "what is the capital of France please"
    assert first.n_events == len(records)
    second = store.save(conversation("tell me a joke"), title="Jokes")

    listed = store.list()
    assert {c.id for c in listed} == {first.id, second.id}
    assert [c.started for c in listed] == sorted((c.started for c in listed), reverse=True)
    assert store.load(first.id) == records
    assert next(c for c in listed if c.id == second.id).title == "Jokes"

    header = json.loads(first.path.read_text(encoding="utf-8").splitlines()[0])
    assert header["kind"] == "header" and header["version"] == 1
    assert (header["frontend"], header["llm"]) == ("kame", "local")

    store.delete(first.id)
    assert [c.id for c in store.list()] == [second.id]
    with pytest.raises(HistoryError):
        store.load(first.id)
    store.delete(first.id)  # already gone: fine


def test_list_is_newest_first_and_skips_unreadable_files(isolated, caplog):
    store = HistoryStore(isolated / "h")
    store.root.mkdir()
    for name, started in (("a", "2024-01-01T10:00:00+00:00"), ("b", "2025-06-01T10:00:00+00:00")):
        header = {"kind": "header", "version": 1, "title": name, "started": started}
        (store.root / f"{name}.jsonl").write_text(json.dumps(header) + "\n", encoding="utf-8")
    (store.root / "broken.jsonl").write_text("{not json\n", encoding="utf-8")
    (store.root / "empty.jsonl").write_text("", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="kame_desktop.history"):
        assert [c.id for c in store.list()] == ["b", "a"]
    assert "broken.jsonl" in caplog.text and "empty.jsonl" in caplog.text


def test_save_again_replaces_and_keeps_start(isolated):
    store = HistoryStore()
    info = store.save(conversation()[:3])
    again = store.save(conversation(), conversation_id=info.id)
    assert (again.id, again.started) == (info.id, info.started)
    assert store.load(info.id) == conversation()
    assert len(store.list()) == 1


def test_ids_cannot_leave_the_folder(isolated):
    with pytest.raises(HistoryError):
        HistoryStore().load("../config/settings")


def test_export_json_reloads_to_the_same_records(isolated):
    records = conversation()
    path = isolated / "out" / "talk.jsonl"
    export_json(records, path, title="Capitals")
    header, loaded = read_conversation(path)
    assert loaded == records
    assert header["title"] == "Capitals"


def test_markdown_has_both_sides_and_the_oracle(isolated):
    records = conversation()
    text = render_markdown(records)
    assert text.startswith("# what is the capital of France please")
    assert "**You** (0:02.4): what is the capital of France please" in text
    assert "Paris is the capital of France." in text and text.count("> ") >= 1
    assert "**Companion** (0:03.0): It's Paris, of course." in text
    assert text.index("**You**") < text.index("Oracle") < text.index("**Companion**")
    path = isolated / "talk.md"
    export_markdown(records, path)
    assert path.read_text(encoding="utf-8") == text


def test_title():
    assert conversation_title([]) == "Conversation"
    long = conversation("one two three four five six seven eight nine ten")
    assert conversation_title(long) == "one two three four five six seven eight …"


def test_keys_never_reach_history_or_exports(isolated, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, KEY)
    records = [
        *conversation(f"my key is {KEY} ok"),
        Stamped(50, ErrorEvent("llm", f"401 for key {KEY}")),
    ]
    info = HistoryStore().save(records)
    saved = info.path.read_text(encoding="utf-8")
    assert KEY not in saved and "***" in saved
    assert KEY not in info.title
    json_path, md_path = isolated / "e.jsonl", isolated / "e.md"
    export_json(records, json_path)
    export_markdown(records, md_path)
    for text in (json_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8"), render_markdown(records)):
        assert KEY not in text and "***" in text


@pytest.mark.parametrize("blocked", ["denied", "not a folder"])
def test_a_history_folder_that_cannot_be_written_is_one_clear_error(isolated, monkeypatch, blocked):
    # Before: a raw PermissionError naming the temp file (.2024….jsonl.x1y2.tmp), or NotADirectoryError.
    import kame_desktop.fileio as fileio

    if blocked == "denied":  # what a read-only folder does (tests may run as root, who may write anyway)
        root = isolated / "history"

        def denied(prefix="", suffix="", dir=None):
            raise PermissionError(13, "Permission denied", f"{dir}/{prefix}abc123{suffix}")

        monkeypatch.setattr(fileio.tempfile, "mkstemp", denied)
    else:
        (isolated / "a-file").write_text("x", encoding="utf-8")
        root = isolated / "a-file" / "history"
    with pytest.raises(HistoryError) as caught:
        HistoryStore(root).save(conversation())
    message = str(caught.value)
    assert str(root) in message and ".tmp" not in message
    assert "writable" in message and "history off in Settings" in message
    assert caught.value.kind == "bad_input"
    for export in (export_json, export_markdown):
        with pytest.raises(HistoryError, match="choose another folder"):
            export(conversation(), root / "export.out")


def test_a_key_split_across_chunks_never_reaches_history(isolated, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, KEY)
    pieces = [KEY[i : i + 4] for i in range(0, len(KEY), 4)]  # echoed token by token
    records = [Stamped(40 + n, LlmChunkEvent(1, p)) for n, p in enumerate(pieces)]
    saved = HistoryStore().save(records).path.read_text(encoding="utf-8")
    text = "".join(json.loads(line).get("text", "") for line in saved.splitlines()[1:])
    assert not any(KEY[i : i + 8] in text for i in range(len(KEY) - 7)), text
    assert len(records) == len(saved.splitlines()) - 1  # one record each, as they were
