"""Settings round-trip through TOML, and the API key through the keyring or its 0600 file."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import typing
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import pytest
from keyring.backends import fail
from memory_keyring import MemoryKeyring

from kame_desktop import config, credentials
from kame_desktop.config import (
    LLM_PRESETS,
    AsrSettings,
    AudioSettings,
    DesktopSettings,
    FrontEndSettings,
    LlmSettings,
    MemorySettings,
    Settings,
    ToolSettings,
    apply_preset,
    load_settings,
    save_settings,
    settings_from_dict,
    settings_to_dict,
)
from kame_desktop.credentials import API_KEY_ENV, delete_api_key, llm_api_key, redact, store_api_key

KEY = "sk-test-0123456789abcdef"



pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py: own folders and keyring


class LockedKeyring(MemoryKeyring):
    """A keyring that exists but refuses to store (locked, user said no)."""

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError("locked")


@pytest.fixture
def memory_keyring() -> MemoryKeyring:
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    return backend


@pytest.fixture
def no_keyring() -> None:
    keyring.set_keyring(fail.Keyring())


def _non_default(value, typ=None):
    """A value of the same type (another choice, for a Literal) that differs from `value`."""
    if typing.get_origin(typ) is typing.Literal:
        return next(choice for choice in typing.get_args(typ) if choice != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value + 1.5
    if (item := config._table_list_of(typ)) is not None:  # [[tables]]: one more, every field changed
        return (*value, _all_changed(item))
    if isinstance(value, tuple):
        return (*value, "changed")
    return f"{value}-changed"


def _all_changed(cls):
    hints = typing.get_type_hints(cls, vars(config))
    return cls(**{f.name: _non_default(getattr(cls(), f.name), hints[f.name]) for f in dataclasses.fields(cls)})


def test_a_value_outside_its_choices_takes_the_default(caplog):
    path = config.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text('[frontend]\nkind = "turbo"\ndevice = "cpu"\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        loaded = load_settings()
    assert (loaded.frontend.kind, loaded.frontend.device) == ("auto", "cpu")
    assert "frontend.kind" in caplog.text


def test_folders_follow_the_environment(isolated):
    assert config.config_dir() == isolated / "config"
    assert config.data_dir() == isolated / "data"
    assert config.settings_path() == isolated / "config" / "settings.toml"


def test_missing_file_gives_defaults():
    assert load_settings() == Settings()


def test_round_trip_every_field_changed(memory_keyring):
    store_api_key(KEY)
    settings = Settings(
        llm=_all_changed(LlmSettings),
        asr=_all_changed(AsrSettings),
        audio=_all_changed(AudioSettings),
        frontend=_all_changed(FrontEndSettings),
        desktop=_all_changed(DesktopSettings),
        tools=_all_changed(ToolSettings),
        memory=_all_changed(MemorySettings),
        system_prompt="You are a pirate.\nSpeak briefly.",
        history=False,
        version=1,
    )
    flat_default, flat_new = settings_to_dict(Settings()), settings_to_dict(settings)
    for section, values in flat_new.items():  # the test really changes every field
        if isinstance(values, dict):
            assert all(values[k] != flat_default[section][k] for k in values), section
        else:
            assert values != flat_default[section], section

    path = save_settings(settings)
    assert load_settings() == settings
    assert settings_from_dict(config.tomllib.loads(path.read_text(encoding="utf-8"))) == settings
    text = path.read_text(encoding="utf-8")
    assert KEY not in text
    assert "[llm]" in text and "[frontend]" in text


def test_corrupt_toml_gives_defaults_and_keeps_the_file(isolated, caplog):
    path = isolated / "config" / "settings.toml"
    path.parent.mkdir(parents=True)
    bad = b"[llm\nmodel = 'half written"
    path.write_bytes(bad)
    with caplog.at_level(logging.WARNING, logger="kame_desktop.config"):
        assert load_settings() == Settings()
    assert (path.parent / "settings.toml.bad").read_bytes() == bad
    assert path.read_bytes() == bad  # nothing destroyed until the user saves
    assert "not valid TOML" in caplog.text


def test_wrong_types_take_defaults_and_unknown_keys_are_ignored(isolated, caplog):
    path = isolated / "settings.toml"
    path.write_text(
        'history = "yes"\nasr = 5\nfuture_option = 1\n'
        '[llm]\nthreads = "four"\nmodel = "my-model"\nbogus = 1\n'
        "[audio]\nlistening = 1\necho_cancellation = false\n"
        "[frontend]\nint8 = true\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="kame_desktop.config"):
        s = load_settings(path)
    assert s == Settings(
        llm=LlmSettings(model="my-model"),
        audio=AudioSettings(echo_cancellation=False),
        frontend=FrontEndSettings(int8=True),
    )
    assert "llm.threads" in caplog.text and "four" not in caplog.text  # values are never logged


def test_presets():
    assert LLM_PRESETS["openai"] == ("https://api.openai.com/v1", "gpt-4.1")
    assert set(LLM_PRESETS) == {"openai", "openrouter", "ollama", "lmstudio", "custom"}
    llm = apply_preset(LlmSettings(), "ollama")
    assert (llm.provider, llm.base_url) == ("openai", "http://localhost:11434/v1")
    custom = apply_preset(dataclasses.replace(llm, base_url="http://x/v1"), "custom")
    assert (custom.preset, custom.base_url) == ("custom", "http://x/v1")


def test_keyring_round_trip(memory_keyring, isolated):
    assert llm_api_key() is None
    assert store_api_key(KEY + "\n") == "keyring"
    assert memory_keyring.store == {(credentials.KEYRING_SERVICE, credentials.LLM_KEY_NAME): KEY}
    assert llm_api_key() == KEY
    assert not credentials.secrets_path().exists()
    delete_api_key()
    assert llm_api_key() is None
    delete_api_key()  # nothing stored: still fine


def test_file_fallback_without_keyring(no_keyring, monkeypatch):
    modes: list[int] = []
    real_replace = os.replace

    def spying_replace(src, dst):  # the temp file's mode just before it becomes the real file
        modes.append(stat.S_IMODE(os.stat(src).st_mode))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spying_replace)
    old_umask = os.umask(0)  # even a permissive umask must not widen the file
    try:
        assert store_api_key(KEY) == "file"
    finally:
        os.umask(old_umask)
    path = credentials.secrets_path()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert modes == [0o600]
    assert llm_api_key() == KEY

    monkeypatch.setenv(API_KEY_ENV, "sk-from-env-000")
    assert llm_api_key() == "sk-from-env-000"
    monkeypatch.delenv(API_KEY_ENV)

    delete_api_key()
    assert llm_api_key() is None
    assert not path.exists()


def test_locked_keyring_falls_back_to_file():
    keyring.set_keyring(LockedKeyring())
    assert store_api_key(KEY) == "file"
    assert llm_api_key() == KEY


def test_moving_to_the_keyring_forgets_the_file(no_keyring):
    store_api_key(KEY)
    keyring.set_keyring(MemoryKeyring())
    assert store_api_key("sk-new-key-9999") == "keyring"
    assert not credentials.secrets_path().exists()
    assert llm_api_key() == "sk-new-key-9999"


def test_redact(monkeypatch, no_keyring):
    assert redact(f"token {KEY}") == f"token {KEY}"  # no key stored: nothing to hide
    monkeypatch.setenv(API_KEY_ENV, KEY)
    assert redact(f"Authorization: Bearer {KEY}.") == "Authorization: Bearer ***."
    assert redact("a b c", key="b") == "a b c"  # a one-letter "key" would blank ordinary text


def test_save_is_atomic_and_leaves_no_temp(isolated):
    save_settings(Settings(history=False))
    save_settings(Settings(history=True))
    files = sorted(p.name for p in Path(isolated / "config").iterdir())
    assert files == ["settings.toml"]


def test_redact_fragments_of_the_key_but_not_its_public_prefix():
    key = "sk-proj-AbCdEfGh0123456789"
    assert redact(f"[{key}]", key) == "[***]"
    assert redact(f"cut: {key[:13]}", key) == "cut: ***"  # a truncated key is still a leak
    assert redact(f"end: {key[-9:]}.", key) == "end: ***."
    assert redact(f"{key[:10]} ok {key[12:22]}", key) == "*** ok ***"
    assert redact("a sk-proj- key", key) == "a sk-proj- key"  # the prefix alone says nothing
    assert redact(f"short {key[9:16]}", key) == f"short {key[9:16]}"  # 7 characters: ordinary text
    assert redact("xabcdx", "abcd") == "x***x"  # a short key is still hidden whole


def test_saving_keeps_unknown_keys_and_untouched_wrong_values_as_written(isolated, caplog):
    # Before: the next save dropped `future_option`, `[llm] bogus`, `[plugins]` and rewrote
    # `threads = "four"` as 1, so a hand edit or a newer version's settings were lost.
    path = config.settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(
        'future_option = 1\nhistory = "yes"\n'
        '[llm]\nthreads = "four"\nmodel = "my-model"\nbogus = [1, 2]\nchunk_timeout_s = -1\n'
        "[plugins]\nname = 'x'\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="kame_desktop.config"):
        loaded = load_settings()
    assert loaded.llm.threads == LlmSettings().threads and loaded.llm.chunk_timeout_s == 5.0 and loaded.history is True  # defaults meanwhile
    assert "llm.threads" in caplog.text and "llm.chunk_timeout_s" in caplog.text
    save_settings(dataclasses.replace(loaded, system_prompt="Be brief."))  # the user changed another setting
    saved = config.tomllib.loads(path.read_text(encoding="utf-8"))
    assert saved["future_option"] == 1 and saved["plugins"] == {"name": "x"} and saved["llm"]["bogus"] == [1, 2]
    assert saved["history"] == "yes" and saved["llm"]["threads"] == "four" and saved["llm"]["chunk_timeout_s"] == -1
    assert saved["system_prompt"] == "Be brief." and saved["llm"]["model"] == "my-model"
    assert load_settings() == dataclasses.replace(loaded, system_prompt="Be brief.")

    save_settings(dataclasses.replace(loaded, llm=dataclasses.replace(loaded.llm, threads=3), history=False))
    saved = config.tomllib.loads(path.read_text(encoding="utf-8"))
    assert saved["llm"]["threads"] == 3 and saved["history"] is False  # changed by the user: theirs now
    assert saved["llm"]["bogus"] == [1, 2] and saved["future_option"] == 1


def test_the_last_five_bad_copies_are_kept(isolated):
    path = config.settings_path()
    path.parent.mkdir(parents=True)
    for n in range(7):
        path.write_text(f"[llm\nbroken = {n}", encoding="utf-8")
        load_settings()
        load_settings()  # the same broken file again: not another copy
    names = sorted(p.name for p in path.parent.iterdir() if ".bad" in p.name)
    assert names == ["settings.toml.bad", *(f"settings.toml.bad.{n}" for n in range(1, 5))]
    kept = [(path.parent / name).read_text(encoding="utf-8")[-1] for name in names]
    assert kept == ["6", "5", "4", "3", "2"]  # newest first; the two oldest went


@pytest.mark.parametrize(("written", "mode"), [("true", "open_mic"), ("false", "push_to_talk")])
def test_an_earlier_versions_open_mic_is_the_listening_mode(isolated, written, mode):
    path = config.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[audio]\nopen_mic = {written}\nptt_key = \"F5\"\n", encoding="utf-8")
    s = load_settings(path)
    assert (s.audio.listening, s.audio.ptt_key) == (mode, "F5")
    save_settings(dataclasses.replace(s, audio=dataclasses.replace(s.audio, wake_word="wake_up")), path)
    text = path.read_text(encoding="utf-8")
    assert "open_mic =" not in text and f'listening = "{mode}"' in text, "saved in today's key, once"
    assert load_settings(path).audio == AudioSettings(listening=mode, ptt_key="F5", wake_word="wake_up")
    # a file with both (hand-edited): `listening` wins
    path.write_text('[audio]\nopen_mic = true\nlistening = "wake_word"\n', encoding="utf-8")
    assert load_settings(path).audio.listening == "wake_word"


def test_an_old_files_saved_defaults_move_to_todays_and_chosen_values_stay(tmp_path):
    """Every field is saved, so before settings had a version `whisper_model = "base"` and the
    LLM's `threads = 1` were only the defaults then: they read as today's, and saving writes the
    version with them. Other values, and a file with a version, keep what they say."""
    old = tmp_path / "old.toml"
    old.write_text('[asr]\nwhisper_model = "base"\nthreads = 2\n[llm]\nthreads = 1\npolicy = "polling"\n', encoding="utf-8")
    assert load_settings(old).asr == AsrSettings(whisper_model="auto", threads=2)
    assert load_settings(old).llm.threads == LlmSettings().threads == 2
    assert load_settings(old).llm.policy == "polling"
    save_settings(load_settings(old), old)
    table = config.tomllib.loads(old.read_text(encoding="utf-8"))
    assert table["version"] == 2 and table["asr"]["whisper_model"] == "auto"
    chosen = tmp_path / "chosen.toml"
    chosen.write_text('version = 2\n[asr]\nwhisper_model = "base"\n', encoding="utf-8")
    assert load_settings(chosen).asr.whisper_model == "base"
    save_settings(load_settings(chosen), chosen)
    assert config.tomllib.loads(chosen.read_text(encoding="utf-8"))["asr"]["whisper_model"] == "base"


def test_mcp_servers_are_tables_and_a_bad_value_costs_only_that_value(isolated, caplog):
    from kame_desktop.config import McpServerSettings

    path = isolated / "settings.toml"
    path.write_text('[tools]\nenabled = true\n'
                    '[[tools.mcp]]\nname = "time"\nenabled = true\ncommand = "uvx"\nargs = ["mcp-server-time"]\n'
                    '[[tools.mcp]]\nname = "web"\ntransport = "smtp"\nurl = "http://127.0.0.1:8000/mcp"\ntimeout_s = -1\n',
                    encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="kame_desktop.config"):
        tools = load_settings(path).tools
    assert tools == ToolSettings(enabled=True, mcp=(
        McpServerSettings(name="time", enabled=True, command="uvx", args=("mcp-server-time",)),
        McpServerSettings(name="web", url="http://127.0.0.1:8000/mcp")))
    assert "tools.mcp[1].transport" in caplog.text and "tools.mcp[1].timeout_s" in caplog.text
    path.write_text('[tools]\nmcp = "uvx mcp-server-time"\n', encoding="utf-8")
    assert load_settings(path).tools.mcp == ()
    assert "tools.mcp is not a list of tables" in caplog.text


@pytest.mark.parametrize("written", ["0", "-2.5", "nan", "inf", "-inf"])
def test_an_mcp_servers_time_limit_that_is_no_duration_is_one_line_naming_the_server(isolated, caplog, written):
    """A hand-edited `timeout_s` of 0, below 0, nan or inf (TOML has both) would cut every call at
    once or never: one warning line says which server's limit, what it is, and that the default is used."""
    path = isolated / "settings.toml"
    path.write_text('[[tools.mcp]]\nname = "time"\ncommand = "uvx"\n'
                    f'[[tools.mcp]]\nname = "web"\ntransport = "http"\nurl = "http://127.0.0.1:8000/mcp"\ntimeout_s = {written}\n',
                    encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="kame_desktop.config"):
        servers = load_settings(path).tools.mcp
    assert [s.timeout_s for s in servers] == [10.0, 10.0]
    assert [r.getMessage() for r in caplog.records] == [
        f"settings: tools.mcp[1].timeout_s (MCP server web) must be a finite number above 0 (it is {float(written):g}); "
        "using the default, 10"]


@pytest.mark.parametrize("old", [None, {"key": "sk-old-key-55555", "mcp-token:cal": "cal-old-token-1"}])
def test_secrets_stored_before_one_that_fails_are_put_back_as_they_were(isolated, old):
    """The API key and an MCP server's token are stored, then another token can go nowhere (the
    keyring refuses it and secrets.json cannot be written): all or nothing, like the settings file."""
    from kame_desktop.credentials import mcp_token, save_settings_and_key, store_mcp_token
    from kame_desktop.errors import KameError

    class RefusesOne(MemoryKeyring):
        def set_password(self, service: str, username: str, password: str) -> None:
            if username == "mcp-token:web":
                raise keyring.errors.PasswordSetError("locked")
            super().set_password(service, username, password)

    keyring.set_keyring(RefusesOne())
    if old:
        store_api_key(old["key"])
        store_mcp_token("cal", old["mcp-token:cal"])
    save_settings(Settings(history=True))
    before = config.settings_path().read_bytes()
    credentials.secrets_path().mkdir()  # a folder in the file's place: the file fallback fails too
    with pytest.raises(KameError) as failed:
        save_settings_and_key(Settings(history=False), KEY, tokens={"cal": "cal-new-token-2", "web": "web-token-33"})
    assert config.settings_path().read_bytes() == before
    assert llm_api_key() == (old and old["key"])
    assert mcp_token("cal") == (old and old["mcp-token:cal"])
    assert mcp_token("web") is None
    assert str(failed.value).startswith("cannot store the MCP server's token in ")  # the one that failed
    assert str(failed.value).endswith("; the settings were not changed")
