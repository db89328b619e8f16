"""The API key (and each MCP server's token): kept in the OS keyring, or in a 0600 file
(secrets.json beside the settings) where no keyring exists, never in the settings file; and the
API key hidden (`redact`, `KeyRedactor`) from everything that is logged, saved or exported,
fragments included."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from kame_desktop.config import APP_NAME, Settings, config_dir, save_settings, settings_path
from kame_desktop.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

KEYRING_SERVICE = APP_NAME
LLM_KEY_NAME = "llm-api-key"
MCP_TOKEN_PREFIX = "mcp-token:"  # + the server's name: an HTTP MCP server's token
API_KEY_ENV = "KAME_LLM_API_KEY"
SECRETS_FILE = "secrets.json"  # the key's home only where the OS has no usable keyring
REDACTED = "***"
_MIN_REDACT = 4  # shorter "keys" would blank ordinary words; no real API key is that short


def save_settings_and_key(settings: Settings, key: str | None, path: Path | None = None,
                          tokens: dict[str, str] | None = None) -> None:
    """Save the settings and (when `key` is not None) the API key, and MCP servers' `tokens`
    (server name → token; "" forgets it), together or not at all: a secret that cannot be stored
    puts the settings file and the secrets stored before it back as they were. Raises KameError
    with one line that says where and what to do."""
    from kame_desktop.errors import KameError

    path = path or settings_path()
    try:
        before: bytes | None = path.read_bytes()
    except FileNotFoundError:
        before = None
    except OSError:  # a folder in its place, unreadable: saving over it fails below and says so
        before = None
    try:
        save_settings(settings, path)
    except OSError as e:
        raise KameError(
            f"cannot save the settings to {path} ({e.strerror or type(e).__name__}) — make {path.parent} "
            "writable (and remove anything in the file's place); nothing was changed",
            kind="bad_input",
        ) from None
    if key is None and not tokens:
        return
    secrets = ({LLM_KEY_NAME: key} if key is not None else {}) | {
        MCP_TOKEN_PREFIX + server: token for server, token in (tokens or {}).items()}
    before_secrets = {name: _read_secret(name) for name in secrets}
    stored: list[str] = []

    def what(name: str) -> str:
        return "the API key" if name == LLM_KEY_NAME else "the MCP server's token"

    try:
        for name, value in secrets.items():
            stored.append(name)  # counted before: it may fail after the keyring or the file took it
            _store_secret(name, value, what(name))
    except OSError as e:
        for name in reversed(stored):  # each secret stored before it as it was: all or nothing
            try:
                _store_secret(name, before_secrets[name] or "", what(name))
            except OSError as e2:
                log.warning("cannot put a stored secret back as it was: %s", e2.strerror or type(e2).__name__)
        try:
            if before is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(path, before)
        except OSError as e2:
            log.warning("cannot put %s back as it was: %s", path, e2.strerror or type(e2).__name__)
        raise KameError(
            f"cannot store {what(stored[-1])} in {secrets_path()} ({e.strerror or type(e).__name__}) — make "
            f"{secrets_path().parent} writable, or install a keyring; the settings were not changed",
            kind="bad_input",
        ) from None


def _usable_keyring() -> Any:
    """The `keyring` module when the OS has a real backend, else None (headless Linux without a
    Secret Service, or a user who chose the fail/null backend)."""
    try:
        import keyring
        from keyring.backends import fail, null
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception as e:  # a broken backend configuration: same as none
        log.debug("keyring unavailable: %s", type(e).__name__)
        return None
    return None if isinstance(backend, fail.Keyring | null.Keyring) else keyring


def keyring_backend() -> str | None:
    """The OS keyring backend that holds the API key (`doctor` shows it), or None: the key
    would go to the 0600 file."""
    keyring = _usable_keyring()
    if keyring is None:
        return None
    backend = keyring.get_keyring()
    return f"{type(backend).__module__}.{type(backend).__name__}"


def secrets_path() -> Path:
    return config_dir() / SECRETS_FILE


def secrets_file_mode() -> int | None:
    """secrets.json's permission bits, or None when there is no such file."""
    try:
        return secrets_path().stat().st_mode & 0o777
    except OSError:
        return None


def _read_secrets_file() -> dict[str, str]:
    path = secrets_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", path, type(e).__name__)
        return {}
    mode = secrets_file_mode()
    if mode is not None and mode & 0o077:  # copied, restored or edited: others could read the key
        try:
            os.chmod(path, 0o600)
            log.warning("%s was readable by others (mode %o); it is now 0600", path, mode)
        except OSError as e:
            log.warning("%s is readable by others (mode %o) and cannot be fixed: %s", path, mode, e.strerror)
    return data if isinstance(data, dict) else {}


def _write_secrets_file(secrets: dict[str, str]) -> None:
    path = secrets_path()
    if not secrets:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # atomic_writer's temp file comes from mkstemp, i.e. os.open(..., 0o600): the key is never
    # readable by others, not even for a moment; the rename keeps that mode.
    atomic_write_bytes(path, json.dumps(secrets).encode("utf-8"), mode=0o600)


def llm_api_key() -> str | None:
    """The back-end LLM's API key: the environment first, then the OS keyring, then the 0600
    file fallback. Never raises: a missing keyring is just no stored key."""
    key = os.environ.get(API_KEY_ENV)
    if key:
        return key
    return _read_secret(LLM_KEY_NAME)


def store_api_key(key: str) -> Literal["keyring", "file"]:
    """Keep the API key in the OS keyring, or in the 0600 file where there is none; returns
    where it went (the settings dialog says so). An empty key deletes the stored one."""
    return _store_secret(LLM_KEY_NAME, key, "the API key")


def delete_api_key() -> None:
    """Forget the stored API key everywhere it may be (keyring and file); the env var is the
    user's own and stays."""
    _delete_secret(LLM_KEY_NAME)


def mcp_token(server: str) -> str | None:
    """The token stored for the MCP server named `server`, or None."""
    return _read_secret(MCP_TOKEN_PREFIX + server)


def store_mcp_token(server: str, token: str) -> Literal["keyring", "file"]:
    """Keep an MCP server's token as the API key is kept; an empty one deletes it."""
    return _store_secret(MCP_TOKEN_PREFIX + server, token, "an MCP server's token")


def _read_secret(name: str) -> str | None:
    """The secret `name` from the OS keyring, then the 0600 file. Never raises: a missing
    keyring is just nothing stored."""
    keyring = _usable_keyring()
    if keyring is not None:
        value = None
        try:
            value = keyring.get_password(KEYRING_SERVICE, name)
        except Exception as e:  # locked or unreachable keyring: try the file
            log.debug("keyring read failed: %s", type(e).__name__)
        if value:
            return value
    return _read_secrets_file().get(name) or None


def _store_secret(name: str, value: str, what: str) -> Literal["keyring", "file"]:
    value = value.strip()  # pasted keys often carry a newline
    if not value:
        _delete_secret(name)
        return "keyring" if _usable_keyring() is not None else "file"
    keyring = _usable_keyring()
    if keyring is not None:
        try:
            keyring.set_password(KEYRING_SERVICE, name, value)
        except Exception as e:
            log.warning("the keyring refused %s (%s); keeping it in %s instead", what, type(e).__name__, secrets_path())
        else:
            _forget_file_secret(name)  # one place only: a stale file copy would outlive a change
            return "keyring"
    secrets = _read_secrets_file()
    secrets[name] = value
    _write_secrets_file(secrets)
    return "file"


def _delete_secret(name: str) -> None:
    keyring = _usable_keyring()
    if keyring is not None:
        try:
            keyring.delete_password(KEYRING_SERVICE, name)
        except Exception as e:  # PasswordDeleteError: nothing stored; anything else: nothing to do
            log.debug("keyring delete: %s", type(e).__name__)
    _forget_file_secret(name)


def _forget_file_secret(name: str) -> None:
    secrets = _read_secrets_file()
    if secrets.pop(name, None) is not None:
        _write_secrets_file(secrets)


# A key's public opening: a fragment inside it gives nothing away, so it is not redacted.
_KEY_PREFIXES = ("sk-proj-", "sk-ant-", "sk-or-v1-", "sk-svcacct-", "sk-admin-", "sk-")
_MIN_FRAGMENT = 8  # shorter pieces of a key are indistinguishable from ordinary text


class KeyRedactor:
    """Replaces the API key, and any fragment of >= 8 consecutive characters of it (a key cut by
    a truncation or split across streamed chunks), by "***". Build one per key and reuse it."""

    def __init__(self, key: str | None) -> None:
        self.key = key or ""
        if len(self.key) < _MIN_REDACT:
            self.key = ""  # a one-letter "key" would blank ordinary text
        public = next((len(p) for p in _KEY_PREFIXES if self.key.startswith(p)), 0)
        n = _MIN_FRAGMENT
        # every n-character window of the key -> whether it reaches past the public prefix (a
        # window inside the prefix is only redacted as the start of a longer fragment)
        self._grams: dict[str, bool] = {}
        for i in range(len(self.key) - n + 1):
            gram = self.key[i : i + n]
            self._grams[gram] = self._grams.get(gram, False) or i + n > public
        self.carry_chars = max(1, len(self.key) - 1)  # how much of a stream's tail `continued` needs

    def __bool__(self) -> bool:
        return bool(self.key)

    def _spans(self, text: str) -> list[list[int]]:
        """Merged [start, end) ranges of `text` covered by the key or its fragments."""
        spans: list[list[int]] = []
        n = _MIN_FRAGMENT
        if self._grams:
            prefix_at = -n - 1  # where the latest prefix-only window started
            for i in range(len(text) - n + 1):
                secret = self._grams.get(text[i : i + n])
                if secret is None:
                    continue
                if spans and i <= spans[-1][1]:
                    spans[-1][1] = i + n
                elif secret:
                    spans.append([prefix_at if i - prefix_at <= n else i, i + n])
                else:
                    prefix_at = i
        elif self.key:  # a short key: only whole
            start = text.find(self.key)
            while start >= 0:
                spans.append([start, start + len(self.key)])
                start = text.find(self.key, start + len(self.key))
        return spans

    def __call__(self, text: str) -> str:
        return self.continued("", text)

    def continued(self, before: str, text: str) -> str:
        """`text` redacted as the continuation of `before` (the stream's earlier text, already
        written): a key that starts in `before` is caught in `text` too."""
        if not self.key or not text:
            return text
        before = before[-self.carry_chars :] if self.carry_chars else ""
        offset = len(before)
        parts, at = [], 0
        for start, end in self._spans(before + text):
            if end <= offset:
                continue
            start, end = max(start, offset) - offset, end - offset
            parts += [text[at:start], REDACTED]
            at = end
        return "".join(parts) + text[at:] if parts else text


def redact(text: str, key: str | None = None) -> str:
    """`text` with the API key (`key`, or the current one) and every fragment of it of 8 or more
    characters replaced by "***"; call it on anything that may be logged, saved or exported.
    Redact before truncating: a cut key is still a leak."""
    return KeyRedactor(llm_api_key() if key is None else key)(text)
