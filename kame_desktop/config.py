"""Settings (TOML under the platformdirs config folder). API keys never go into the TOML file:
they are kept by credentials.py (the OS keyring, or a 0600 file where no keyring exists).

The schema is frozen dataclasses, one per settings page; `load_settings()` / `save_settings()`
read and write them (atomically), unknown keys are ignored and missing ones take the defaults,
so an older or hand-edited file never stops the app from starting; saving keeps unknown keys and
untouched values as written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import sys
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import platformdirs

from kame_desktop.choices import (
    DEFAULT_KAME_REPO,
    LOCAL_LLM,
    OPENAI_LLM,
    OPENAI_MODEL,
    OPENAI_URL,
    WHISPER_ASR,
    AsrKind,
    ComputeDevice,
    FrontEndKind,
    ListeningMode,
    LlmKind,
    McpTransport,
    Policy,
    Precision,
    TurnDetection,
    WakeWord,
)
from kame_desktop.fileio import atomic_write_bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only (tomli is tomllib's backport)
    import tomli as tomllib

log = logging.getLogger(__name__)

APP_NAME = "kame-desktop"
CONFIG_DIR_ENV = "KAME_CONFIG_DIR"  # tests and portable installs redirect the folders
DATA_DIR_ENV = "KAME_DATA_DIR"
SETTINGS_FILE = "settings.toml"

# OpenAI-compatible presets: name -> (base URL, default model). "custom" leaves both to the
# user. Ollama and LM Studio ignore the API key; LM Studio answers with the model it has loaded.
LLM_PRESETS: dict[str, tuple[str, str]] = {
    "openai": (OPENAI_URL, OPENAI_MODEL),
    "openrouter": ("https://openrouter.ai/api/v1", "openai/gpt-4.1"),
    "ollama": ("http://localhost:11434/v1", "llama3.2"),
    "lmstudio": ("http://localhost:1234/v1", "local-model"),
    "custom": ("", ""),
}


@dataclass(frozen=True)
class LlmSettings:
    provider: LlmKind = LOCAL_LLM  # llama.cpp in process, or OPENAI_LLM (any compatible server)
    preset: str = "openai"  # a key of LLM_PRESETS (for provider openai)
    base_url: str = OPENAI_URL
    model: str = OPENAI_MODEL  # model name for provider openai
    gguf_path: str = ""  # a GGUF file, or an embedded model's name; empty: the embedded default (backend/llm/local.py)
    threads: int = 2  # local: both cores while it writes (measured: README, "Hearing the question")
    policy: Policy = "reactive"
    first_chunk_timeout_s: float = 10.0  # no answer this long after asking: an error (and a retry)
    chunk_timeout_s: float = 5.0  # an answer that stops this long mid-way: the same
    max_streams: int = 3  # openai: answers kept streaming at once, the heard one adopted on its first text; 1: cancel at ask


@dataclass(frozen=True)
class AsrSettings:
    provider: AsrKind = WHISPER_ASR
    # "auto" (English: embedded tiny.en while the user talks, base at pauses; other languages: base),
    # "base" or "tiny.en" (embedded), another size name (downloaded), or a CTranslate2 folder
    whisper_model: str = "auto"
    language: str = "en"  # what the user speaks (a Whisper language code)
    threads: int = 1
    turn_detection: TurnDetection = "smart"  # the end of the user's turn: by meaning, or after a fixed silence


@dataclass(frozen=True)
class AudioSettings:
    input_device: str = ""  # empty: the system default
    output_device: str = ""
    echo_cancellation: bool = True  # off for headsets
    listening: ListeningMode = "push_to_talk"  # hold a key, open mic, or a wake word then one turn
    ptt_key: str = "Space"
    wake_word: WakeWord = "alexa"  # chosen by `bench wake` (audio/wake_word.py MEASURED)
    wake_sensitivity: float = 0.5  # 0..1; 0.5: the model's own threshold, higher hears it more readily


@dataclass(frozen=True)
class FrontEndSettings:
    kind: FrontEndKind = "auto"
    checkpoint: str = DEFAULT_KAME_REPO  # repo id or folder
    device: ComputeDevice = "auto"
    dtype: Precision = "auto"
    int8: bool = False


@dataclass(frozen=True)
class DesktopSettings:
    global_key: bool = True  # the talk key works while another application has focus (hotkey.py)
    keep_in_tray: bool = True  # closing the window leaves the companion in the tray, where there is one
    tray_notice_shown: bool = False  # the first close to the tray says where the companion went


@dataclass(frozen=True)
class McpServerSettings:
    """One MCP server whose tools the LLM may call (backend/tools/mcp_servers.py), as a
    `[[tools.mcp]]` table. An HTTP server's token is never here: the keyring keeps it, under the
    server's name (credentials.mcp_token)."""

    name: str = ""  # its tools are offered as name.tool (letters, digits, - and _)
    enabled: bool = False  # off until the user turns it on
    transport: McpTransport = "stdio"
    command: str = ""  # stdio: the program, its arguments and extra environment ("NAME=value")
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    url: str = ""  # http: the streamable-HTTP endpoint (e.g. http://127.0.0.1:8000/mcp)
    token_header: str = "Authorization"  # carries the stored token ("Bearer " added for Authorization)
    timeout_s: float = 10.0  # a call that takes longer is cut (the model is told so)


@dataclass(frozen=True)
class ToolSettings:
    # The built-in tools the LLM may call (date and time, calculator, timers, notes). Off by default:
    # listed in the embedded Qwen's prompt they are ~600 more tokens to read when a session starts
    # (8.2 s against 1.6 s on one thread here, measured), then nothing more per answer.
    enabled: bool = False
    disabled: tuple[str, ...] = ()  # single tools switched off, by name (e.g. "add_note", "calendar.add_event")
    mcp: tuple[McpServerSettings, ...] = ()  # the user's MCP servers: their tools join the built-ins


@dataclass(frozen=True)
class MemorySettings:
    # The companion remembers what you tell it about yourself (backend/memory.py): kept in the data
    # folder, put into its prompt. Off: nothing is written or used.
    enabled: bool = True


@dataclass(frozen=True)
class Settings:
    llm: LlmSettings = field(default_factory=LlmSettings)
    tools: ToolSettings = field(default_factory=ToolSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    asr: AsrSettings = field(default_factory=AsrSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    frontend: FrontEndSettings = field(default_factory=FrontEndSettings)
    desktop: DesktopSettings = field(default_factory=DesktopSettings)
    system_prompt: str = ""  # empty: the built-in prompt (backend/prompts.py)
    history: bool = True
    # Which defaults the file was written with: every field is saved, so a value that was the
    # default then (version 1, no `version` key: _V1_DEFAULTS) moves to today's (_upgrade).
    version: int = 2


def llm_url_problem(url: str) -> str | None:
    """Why `url` cannot be an OpenAI-compatible base URL (one line, saying what to type), or
    None. The app never puts another host in place of a bad one: the API key would go there.
    The URL itself is not repeated: a key pasted into the wrong field must not reach a log."""
    from urllib.parse import urlsplit

    if not url.strip():
        return "the base URL is empty — type the server's URL (e.g. http://localhost:11434/v1) or pick a preset"
    if any(c.isspace() for c in url):
        return "the base URL contains a space — remove it"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "the base URL is malformed — check the host and the port"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the base URL must start with http:// or https:// and name a host (e.g. http://localhost:1234/v1)"
    return None


def apply_preset(llm: LlmSettings, preset: str) -> LlmSettings:
    """`llm` switched to an OpenAI-compatible preset; "custom" keeps the URL and model typed."""
    url, model = LLM_PRESETS[preset]
    if preset == "custom":
        return dataclasses.replace(llm, provider=OPENAI_LLM, preset=preset)
    return dataclasses.replace(llm, provider=OPENAI_LLM, preset=preset, base_url=url, model=model)


# --- folders ------------------------------------------------------------------------------------


def config_dir() -> Path:
    """Where settings.toml (and the secrets fallback) live."""
    return Path(os.environ.get(CONFIG_DIR_ENV) or platformdirs.user_config_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """Where history (and other user data) live."""
    return Path(os.environ.get(DATA_DIR_ENV) or platformdirs.user_data_dir(APP_NAME, appauthor=False))


@contextlib.contextmanager
def environ_set(name: str, value: str) -> Iterator[None]:
    """Within the block, the environment variable `name` is `value` (then as it was)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def using_data_dir(path: Path) -> contextlib.AbstractContextManager[None]:
    """Within the block, user data (timers, notes, history) goes to `path`: evaluation runs and
    benchmarks keep theirs apart from the user's."""
    return environ_set(DATA_DIR_ENV, str(path.resolve()))


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


# --- settings <-> TOML --------------------------------------------------------------------------


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    """Settings from a parsed TOML table: unknown keys are ignored (and kept in the file when it
    is saved), and a missing value or one of the wrong type takes its default, so one bad line
    costs one setting, not all of them."""
    return _build(Settings, data, "")


def _upgrade(cls: Any, data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A table written by an earlier version, in today's keys: `[audio] open_mic = true/false`
    (before the wake word) is `listening = "open_mic"/"push_to_talk"`; in a file without a
    version, a value that was that version's default (saved with every field) is today's."""
    if cls is AudioSettings and "listening" not in data and isinstance(data.get("open_mic"), bool):
        return {**data, "listening": "open_mic" if data["open_mic"] else "push_to_talk"}
    if cls is Settings and "version" not in data:
        return {**data, **{name: _moved_defaults(name, table) for name, table in data.items()
                           if isinstance(table, Mapping) and name in _V1_DEFAULTS}}
    return data


# Version 1's defaults that changed, by section: a version-1 file holding one of them holds it
# only because every field is saved, so it reads as today's default.
_V1_DEFAULTS: dict[str, dict[str, Any]] = {"asr": {"whisper_model": "base"}, "llm": {"threads": 1}}


def _moved_defaults(section: str, table: Mapping[str, Any]) -> Mapping[str, Any]:
    today = settings_to_dict(Settings())[section]
    return {**table, **{key: today[key] for key, old in _V1_DEFAULTS[section].items() if table.get(key) == old}}


def _build(cls: Any, data: Mapping[str, Any], where: str, quiet: bool = False, whose: str = "") -> Any:
    """`cls` from the TOML table `data` found at `where`; `whose`: what the table is, for a
    person (" (MCP server web)"), named in each warning about it."""
    data = _upgrade(cls, data)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, typ, name = data[f.name], hints[f.name], where + f.name
        if dataclasses.is_dataclass(typ):
            if isinstance(value, Mapping):
                kwargs[f.name] = _build(typ, value, name + ".", quiet)
            elif not quiet:
                log.warning("settings: [%s] is not a table; using its defaults", name)
        elif (item := _table_list_of(typ)) is not None:  # [[name]] tables, e.g. [[tools.mcp]]
            if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
                kwargs[f.name] = tuple(_build(item, v, f"{name}[{i}].", quiet, _whose(item, v))
                                       for i, v in enumerate(value))
            elif not quiet:
                log.warning("settings: %s is not a list of tables; using the default", name)
        elif (checked := _check(value, typ)) is not _WRONG:
            kwargs[f.name] = checked
        elif not quiet and typ is float and isinstance(value, int | float) and not isinstance(value, bool):
            # 0, negative, nan or inf (a number is no secret: it is shown)
            log.warning("settings: %s%s must be a finite number above 0 (it is %s); using the default, %g",
                        name, whose, value, f.default)
        elif not quiet:  # the value itself is not logged: a key pasted into the wrong field must not leak
            log.warning("settings: %s%s should be of type %s; using the default", name, whose, getattr(typ, "__name__", typ))
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown and not quiet:
        log.debug("settings: ignoring unknown keys %s", ", ".join(sorted(where + k for k in unknown)))
    return cls(**kwargs)


def _whose(cls: Any, table: Mapping[str, Any]) -> str:
    """" (MCP server web)" for an MCP server's table with a name: a warning about one of several
    servers says which (the name is shown only when it is one: never a pasted secret)."""
    name = table.get("name")
    if cls is McpServerSettings and isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name):
        return f" (MCP server {name})"
    return ""


def _table_list_of(typ: Any) -> Any:
    """The dataclass of a `tuple[SomeSettings, ...]` field (an array of TOML tables), else None."""
    args = typing.get_args(typ)
    if typing.get_origin(typ) is tuple and len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


_WRONG = object()


def _check(value: Any, typ: Any) -> Any:
    """`value` if it fits the field type `typ`, else `_WRONG`. bool is an int in Python but not
    in TOML, so they are told apart; an integer is a fine float."""
    if typ is bool:
        return value if isinstance(value, bool) else _WRONG
    if typ is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _WRONG
    if typ is float:  # every float setting is a duration: finite and > 0 (TOML has inf and nan)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf
        return float(value) if ok else _WRONG
    if typ is str:
        return value if isinstance(value, str) else _WRONG
    if typing.get_origin(typ) is Literal:  # one of a set of choices (kame_desktop.choices)
        return value if value in typing.get_args(typ) else _WRONG
    if typ == tuple[str, ...]:  # a TOML list of strings
        return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else _WRONG
    return value  # a richer annotation (none yet): trust TOML's own typing


BAD_COPIES = 5  # settings.toml.bad (newest), .bad.1 … .bad.4


def load_settings(path: Path | None = None) -> Settings:
    """The saved settings, or the defaults when there is no file. A file that is not valid TOML
    is copied to `<name>.bad` (so a hand edit is never lost; the last five are kept) and the
    defaults are used."""
    return load_settings_noting(path)[0]


def load_settings_noting(path: Path | None = None) -> tuple[Settings, str]:
    """`load_settings`, and what the user must be told about it ("" when nothing): the settings
    were reset, and where the old file is kept."""
    path = path or settings_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Settings(), ""
    except OSError as e:
        log.warning("cannot read %s (%s); using default settings", path, e)
        return Settings(), f"cannot read {path} ({e.strerror or type(e).__name__}): default settings are in use — fix or remove that file"
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        bad = path.with_name(path.name + ".bad")
        log.warning("%s is not valid TOML (%s); using default settings, the file is kept as %s", path, e, bad)
        try:
            _keep_bad_copy(bad, raw)
        except OSError as e2:
            log.warning("cannot keep a copy at %s: %s", bad, e2)
            return Settings(), (f"{path} is not valid TOML: settings were reset to the defaults, and the old "
                                f"file could not be copied ({e2.strerror or type(e2).__name__}) — it is still there until you save")
        return Settings(), f"{path} is not valid TOML: settings were reset to the defaults; the old file is kept as {bad}"
    return settings_from_dict(data), ""


def _keep_bad_copy(bad: Path, raw: bytes) -> None:
    """Write `raw` to `bad`, shifting older copies to `bad.1` … (the oldest of five goes). The
    same broken file read again at the next start is not copied again."""
    try:
        if bad.read_bytes() == raw:
            return
    except FileNotFoundError:
        pass
    copies = [bad, *(bad.with_name(f"{bad.name}.{n}") for n in range(1, BAD_COPIES))]
    for n in range(len(copies) - 1, 0, -1):  # .bad.3 -> .bad.4, …, .bad -> .bad.1
        if copies[n - 1].exists():
            os.replace(copies[n - 1], copies[n])
    atomic_write_bytes(bad, raw, mode=0o600)


def _read_table(path: Path) -> dict[str, Any]:
    """The file's TOML table as written, or {} (no file, unreadable or not TOML)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _merge(cls: Any, new: dict[str, Any], written: Mapping[str, Any]) -> dict[str, Any]:
    """What to write for the settings `new` over the file's table `written`: unknown keys stay as
    they are, and so does a setting the user did not change (even one of the wrong type, whose
    default is in use until then), so saving never loses what a newer version or a hand edit
    put there."""
    hints = typing.get_type_hints(cls)
    written = _upgrade(cls, written)  # an old default is no value the user chose: it moves on
    loaded = settings_to_dict(_build(cls, written, "", quiet=True))  # what the app made of `written`
    out = dict(written)
    for f in dataclasses.fields(cls):
        name, typ, value = f.name, hints[f.name], new[f.name]
        if dataclasses.is_dataclass(typ) and isinstance(written.get(name), Mapping):
            out[name] = _merge(typ, value, written[name])
        elif name in written and loaded[name] == value:
            out[name] = written[name]  # unchanged since it was read: as written
        else:
            out[name] = value
    if cls is AudioSettings and "listening" in out:
        out.pop("open_mic", None)  # `listening` says it now (_upgrade)
    return out


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write `settings` as TOML, atomically, over what the file holds (`_merge`: unknown keys
    and untouched values are kept as written); returns the path. No secret is ever part of it."""
    import tomli_w  # only the settings dialog saves: keep it off the start-up path

    path = path or settings_path()
    table = _merge(Settings, settings_to_dict(settings), _read_table(path))
    header = "# kame-desktop settings. The API key is never stored here: it lives in the OS keyring (or a 0600 secrets.json where there is none).\n"
    atomic_write_bytes(path, (header + tomli_w.dumps(table)).encode("utf-8"))
    return path
