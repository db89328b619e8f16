"""Issue 29's fault probe, the parts without a window: a bad base URL never becomes another host,
a system prompt too long for the model says so, damaged history files open what can be read,
a settings reset is told, secrets.json's mode is checked and fixed, and doctor without a display
says so. (tests/gui/test_gui_fault_probe.py has the dialogs' side.)"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat

import pytest

from kame_desktop import config
from kame_desktop.backend.factory import make_asr, make_backend, make_llm
from kame_desktop.backend.llm.base import UnavailableLlm
from kame_desktop.config import AsrSettings, LlmSettings, Settings, settings_path
from kame_desktop.credentials import llm_api_key, secrets_path
from kame_desktop.errors import AsrError, HistoryError, KameError, LlmError
from kame_desktop.events import AsrFinalEvent, ErrorEvent, SessionStartEvent, Stamped, Word
from kame_desktop.history import HistoryStore

pytestmark = pytest.mark.usefixtures("isolated")
KEY = "sk-proj-faultPROBEkey0123456789abcdef"


class NoAsr:
    """The recognizer is not what these tests are about (make_backend only stores it)."""


def custom(url: str) -> Settings:
    return Settings(llm=dataclasses.replace(LlmSettings(), provider="openai", preset="custom", base_url=url, model="m"))


# --- 1: a base URL that is empty or malformed ----------------------------------------------------


@pytest.mark.parametrize("url", ["", " ", "localhost:1234/v1", "http://", "ftp://host/v1", "http://local host/v1",
                                 "http://host:port/v1"])
def test_a_bad_base_url_is_refused_and_no_other_host_stands_in(url, monkeypatch):
    # Before: "" (and " " once stripped) became https://api.openai.com/v1, with the key.
    monkeypatch.setenv("KAME_LLM_API_KEY", KEY)
    with pytest.raises(LlmError) as caught:
        make_llm(custom(url))
    assert caught.value.kind == "bad_input" and not caught.value.retryable
    problem = config.llm_url_problem(url.strip() if url == " " else url)
    assert problem and "base URL" in problem and KEY not in problem
    backend = make_backend(custom(url), lambda _s: None, lambda _e: None, asr=NoAsr())
    assert isinstance(backend.llm, UnavailableLlm), "no request goes anywhere"
    assert [n.message for n in backend.notices if isinstance(n, ErrorEvent)] == [str(caught.value)]
    with pytest.raises(AsrError):  # the OpenAI recognizer follows the LLM's server, never OpenAI's instead
        make_asr(dataclasses.replace(custom(url), asr=AsrSettings(provider="openai")))


def test_a_key_pasted_as_the_base_url_is_not_repeated(monkeypatch, caplog):
    backend = make_backend(custom(KEY), lambda _s: None, lambda _e: None, asr=NoAsr())
    assert isinstance(backend.llm, UnavailableLlm)
    assert "http://" in backend.llm.reason and KEY not in backend.llm.reason and KEY not in caplog.text


@pytest.mark.parametrize("url", ["http://localhost:11434/v1", "https://openrouter.ai/api/v1", "http://127.0.0.1:9/v1"])
def test_a_good_base_url_is_used_as_typed(url):
    assert make_llm(custom(url)).base_url == url
    assert config.llm_url_problem(url) is None


# --- 11: a system prompt too long for the model --------------------------------------------------


def test_a_system_prompt_too_long_for_the_local_model_says_by_how_much():
    # Before: the request failed with llama.cpp's "Requested tokens (…) exceed context window of 4096".
    settings = Settings(llm=LlmSettings(gguf_path="smollm2-135m"), system_prompt="You are a turtle. " * 2000)
    backend = make_backend(settings, lambda _s: None, lambda _e: None, asr=NoAsr())
    assert isinstance(backend.llm, UnavailableLlm)
    [notice] = [n for n in backend.notices if isinstance(n, ErrorEvent)]
    assert notice.source == "llm" and notice.error_kind == "bad_input"
    assert "system prompt is too long for the model" in notice.message and "Persona" in notice.message
    found = re.search(r": (\d+) tokens, (\d+) more than the (\d+) it can take", notice.message)
    assert found, notice.message
    tokens, over, room = map(int, found.groups())
    assert tokens > 4096 > room and over == tokens - room


def test_a_system_prompt_that_fits_is_kept():
    settings = Settings(llm=LlmSettings(provider="openai", base_url="http://127.0.0.1:9/v1"), system_prompt="You are a turtle.")
    backend = make_backend(settings, lambda _s: None, lambda _e: None, asr=NoAsr())
    assert not isinstance(backend.llm, UnavailableLlm) and backend.notices == ()
    assert backend.system_prompt == "You are a turtle."


def test_a_long_system_prompt_for_a_server_is_left_to_the_server():
    # A server's context is not known here (128k is common): only the local model's is checked.
    settings = Settings(llm=LlmSettings(provider="openai", base_url="http://127.0.0.1:9/v1"),
                        system_prompt="You are a turtle. " * 2000)
    backend = make_backend(settings, lambda _s: None, lambda _e: None, asr=NoAsr())
    assert not isinstance(backend.llm, UnavailableLlm) and backend.notices == ()


def test_an_empty_llm_url_on_the_command_line_is_refused_not_replaced(monkeypatch):
    # Before: `--llm openai --llm-url ""` (an unset shell variable) asked OpenAI's host, with the key.
    from kame_desktop.assembly import run_settings
    from kame_desktop.training.cli import make_llm as training_llm

    monkeypatch.setenv("KAME_LLM_API_KEY", KEY)
    with pytest.raises(LlmError, match="base URL"):
        make_llm(run_settings(llm="openai", llm_url=""))
    with pytest.raises(KameError, match="base URL"):
        training_llm("openai", "", None)
    assert make_llm(run_settings(llm="openai")).base_url == "https://api.openai.com/v1"  # no --llm-url: OpenAI


# --- 5: damaged history files ---------------------------------------------------------------------


def saved(store: HistoryStore, words: str) -> str:
    records = [Stamped(0, SessionStartEvent("lite", "piper", "cpu")),
               *(Stamped(10 + i, AsrFinalEvent(w, (Word(w, i, i + 0.2),))) for i, w in enumerate(words.split()))]
    return store.save(records).id


def test_a_cut_last_line_or_an_unknown_event_loses_that_line_only(caplog):
    # Before: HistoryError for the whole conversation (JSONDecodeError, KeyError: 'newer_kind').
    store = HistoryStore()
    cut, newer = saved(store, "one two three"), saved(store, "four five")
    path = store.path(cut)
    path.write_text(path.read_text(encoding="utf-8")[:-15], encoding="utf-8")  # a crash mid-line
    with store.path(newer).open("a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": "newer_kind", "frame": 20, "t": 1.6, "x": 1}) + "\n")
    for ident, kept in ((cut, ["one", "two"]), (newer, ["four", "five"])):
        assert [r.event.text for r in store.load(ident) if isinstance(r.event, AsrFinalEvent)] == kept
        assert store.load_lines(ident)[1] == 1  # the dialog says that a line was left out
    assert "skipped 1 unreadable line" in caplog.text


def test_unreadable_files_are_listed_marked_and_delete_failures_are_errors(monkeypatch):
    store = HistoryStore()
    good = saved(store, "hello there")
    (store.root / "no-header.jsonl").write_text("{cut", encoding="utf-8")
    (store.root / "my talk.jsonl").write_text(store.path(good).read_text(encoding="utf-8"), encoding="utf-8")
    assert {c.id for c in store.list()} == {good, "my talk"}  # a file named by hand is a conversation too
    listed = {c.id: c for c in store.list(include_unreadable=True)}
    assert set(listed) == {good, "no-header", "my talk"}
    assert listed[good].problem == "" and listed["my talk"].problem == ""
    assert listed["no-header"].problem.startswith("unreadable")
    with pytest.raises(HistoryError, match="not a readable conversation"):
        store.load("no-header")
    assert [r.event.text for r in store.load("my talk") if isinstance(r.event, AsrFinalEvent)] == ["hello", "there"]
    store.delete("my talk")
    assert not (store.root / "my talk.jsonl").exists()
    for outside in ("../x", "a/b", ".."):  # never a path out of the folder
        with pytest.raises(HistoryError, match="not a conversation id"):
            store.path(outside)

    def denied(self, missing_ok=False):  # what a folder the user may not write does (tests may run as root)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(store.root), "unlink", denied)
    with pytest.raises(HistoryError, match="cannot delete .*Permission denied"):
        store.delete(good)


# --- 12: settings that are not TOML ---------------------------------------------------------------


def test_settings_that_are_not_toml_are_reset_with_a_notice_that_says_where_the_old_file_is():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("[llm\nmodel = 'x'\n", encoding="utf-8")
    settings, notice = config.load_settings_noting()
    assert settings == Settings()
    assert "reset" in notice and str(path.with_name("settings.toml.bad")) in notice
    assert path.with_name("settings.toml.bad").read_text(encoding="utf-8") == "[llm\nmodel = 'x'\n"
    path.write_text("[llm]\nmodel = 'x'\n", encoding="utf-8")
    assert config.load_settings_noting() == (Settings(llm=LlmSettings(model="x")), "")


# --- 13: secrets.json's mode ----------------------------------------------------------------------


def test_a_secrets_file_readable_by_others_is_reported_and_fixed_when_read():
    import keyring
    from keyring.backends import fail

    from kame_desktop import doctor

    keyring.set_keyring(fail.Keyring())  # no OS keyring: the key lives in the file
    path = secrets_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"llm-api-key": KEY}), encoding="utf-8")
    os.chmod(path, 0o644)  # copied from a backup, or written by hand
    check = doctor.check_keyring()
    # Before: "warn … (readable only by you)" whatever the mode.
    assert check.status == "warn" and "readable by others (mode 0644)" in check.detail and "chmod 600" in check.fix
    assert KEY not in check.detail + check.fix
    assert llm_api_key() == KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    check = doctor.check_keyring()
    assert "readable by others" not in check.detail and "0600" in check.detail


# --- doctor without a display ---------------------------------------------------------------------


def test_doctor_without_a_display_session_says_so(monkeypatch):
    import sys

    from kame_desktop import doctor

    if not sys.platform.startswith("linux"):
        pytest.skip("DISPLAY and WAYLAND_DISPLAY are Linux's")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    check = doctor.check_qt()
    # Before: "the Qt platform plugin cannot start … → install libxcb-cursor0 …" (it is installed).
    assert check.status == "fail" and "no display session" in check.detail
    assert "DISPLAY" in check.detail and "libxcb" not in check.fix and "QT_QPA_PLATFORM=offscreen" in check.fix
