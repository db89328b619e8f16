"""The errors a user can act on. Every message says what to do next; the CLI prints it as one
line, the GUI as a banner."""


class KameError(Exception):
    """Base of every error the user can act on; the message says what to do next."""


class CheckpointError(KameError):
    """A checkpoint (folder, repo, file) is missing, corrupt or does not match its config."""


class AudioFileError(KameError):
    """An audio file is missing or cannot be read as audio."""


class OracleScriptError(KameError):
    """An --oracle-file script is missing or malformed."""


class DeviceError(KameError):
    """A device is missing or failing: the compute device (GPU, int8 support) or an audio device
    (no PortAudio, no microphone, unplugged)."""


class LlmError(KameError):
    """The back-end LLM failed: unreachable, refused the key, rate-limited, timed out, or sent a
    broken stream. `retryable` says whether asking again later may help."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class AsrError(KameError):
    """The speech recognizer failed (model missing, service down, bad response)."""


class ModelFileError(KameError):
    """A model file (GGUF, Whisper weights) is missing, corrupt or of the wrong kind."""


class TrainingDataError(KameError):
    """A training input (dialogue audio or transcript, oracle file, shard, run folder) is missing,
    malformed or inconsistent; the message names the file and what is wrong."""
