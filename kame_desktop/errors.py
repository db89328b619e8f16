"""The errors a user can act on. Every message says what to do next; the CLI prints it as one
line, the GUI as a banner.

Each error also carries a `kind` (`ErrorKind`): what sort of fix it needs. It travels with the
message in `error` events and controller notices, and the GUI's banner switches on it (which
sentence, whether to offer Settings) instead of reading the message.
"""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

ErrorKind = Literal[
    "unreachable",  # a server or service cannot be reached: start it, or change the URL
    "refused",  # the key or the access was refused: fix the key in Settings
    "busy",  # rate-limited, timed out, or falling behind: it retries by itself
    "bad_server",  # a server answered something that is not what was asked for
    "bad_model",  # a model file or checkpoint is missing, corrupt or of the wrong kind
    "device",  # a compute or audio device is missing, busy or refuses the format
    "bad_input",  # something the user gave (a file, a value, a setting) is wrong
    "failed",  # anything else
]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)


class KameError(Exception):
    """Base of every error the user can act on; the message says what to do next."""

    default_kind: ClassVar[ErrorKind] = "failed"

    def __init__(self, message: str = "", *, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind or self.default_kind


def error_kind(e: BaseException) -> ErrorKind:
    """The kind of any exception: a KameError's own, else "failed"."""
    return e.kind if isinstance(e, KameError) else "failed"


_SOURCES = {"llm": "LLM", "asr": "Speech recognition", "audio": "Audio", "tts": "Speech synthesis",
            "load": "Could not start the session", "session": "The session stopped", "frontend": "Front-end"}


def error_text(source: str, message: str) -> str:
    """How an error is told to the user, the same in the app's banner and on the CLI's stderr:
    where it happened, then the message (which already says what to do next)."""
    return f"{_SOURCES.get(source, source)}: {message}"


def fixed_in_settings(kind: str) -> bool:
    """Whether the fix for an error of this kind is a setting (the banner offers Settings)."""
    match kind:
        case "unreachable" | "refused" | "bad_server" | "bad_model" | "device" | "bad_input":
            return True
        case _:  # "busy" retries by itself; "failed" has no setting to blame
            return False


class ChoiceError(KameError):
    """A value is not one of the offered choices (front-end, policy, provider, …)."""

    default_kind = "bad_input"


class CheckpointError(KameError):
    """A checkpoint (folder, repo, file) is missing, corrupt or does not match its config."""

    default_kind = "bad_model"


class AudioFileError(KameError):
    """An audio file is missing or cannot be read as audio."""

    default_kind = "bad_input"


class OutputError(KameError):
    """An output file (reply audio, timeline) cannot be written: folder, permissions, disk."""

    default_kind = "bad_input"


class OracleScriptError(KameError):
    """An --oracle-file script is missing or malformed."""

    default_kind = "bad_input"


class DeviceError(KameError):
    """A device is missing or failing: the compute device (GPU, int8 support) or an audio device
    (no PortAudio, no microphone, unplugged)."""

    default_kind = "device"


class NotInstalledError(KameError):
    """An optional part (the `kame` extra: torch, moshi) is not installed; the message says
    how to install it. A setting (another front-end) also avoids it."""

    default_kind = "bad_input"


class LlmError(KameError):
    """The back-end LLM failed: unreachable, refused the key, rate-limited, timed out, or sent a
    broken stream. `retryable` says whether asking again later may help."""

    default_kind = "bad_server"

    def __init__(self, message: str, retryable: bool = True, *, kind: ErrorKind | None = None) -> None:
        super().__init__(message, kind=kind)
        self.retryable = retryable


class AsrError(KameError):
    """The speech recognizer failed (model missing, service down, bad response)."""


class ModelFileError(KameError):
    """A model file (GGUF, Whisper weights) is missing, corrupt or of the wrong kind."""

    default_kind = "bad_model"


class DownloadError(KameError):
    """A model download failed: no network, not enough disk space, refused by the hub, or corrupted."""

    default_kind = "unreachable"


class NotEnoughSpace(DownloadError):
    """The models folder's disk has less free space than the download needs."""

    default_kind = "bad_input"


class DownloadCancelled(KameError):
    """The user cancelled a download; its `.part` files stay for a later resume."""


class HistoryError(KameError):
    """A saved conversation is missing or unreadable, or the history folder cannot be written."""

    default_kind = "bad_input"


class TrainingDataError(KameError):
    """A training input (dialogue audio or transcript, oracle file, shard, run folder) is missing,
    malformed or inconsistent; the message names the file and what is wrong."""

    default_kind = "bad_input"
