"""The log file: `kame-desktop.log` in the platformdirs log folder (or $KAME_LOG_DIR), rotated
at 1 MB with 3 old files kept, INFO and up ($KAME_LOG_LEVEL=DEBUG for more).

Never a secret: every line passes through the API key's `KeyRedactor` as it is written.
Never a conversation, except at DEBUG with history on: the words said are user data the user
has agreed to keep only by keeping history, so `TranscriptLog` (subscribed to a session's bus
only when history is on) logs them at DEBUG on its own logger, and the file logs DEBUG only
when asked to.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path

from kame_desktop.config import APP_NAME
from kame_desktop.credentials import KeyRedactor, llm_api_key
from kame_desktop.events import AsrFinalEvent, AssistantTokenEvent, SpeechEndEvent, Stamped

LOG_DIR_ENV = "KAME_LOG_DIR"
LOG_LEVEL_ENV = "KAME_LOG_LEVEL"
LOG_FILE = f"{APP_NAME}.log"
MAX_BYTES = 1 << 20
BACKUPS = 3
TRANSCRIPT_LOGGER = "kame_desktop.transcript"
_KEY_TTL_S = 2.0  # how long a looked-up key is reused (a key changed in Settings is caught after)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_dir() -> Path:
    if os.environ.get(LOG_DIR_ENV):
        return Path(os.environ[LOG_DIR_ENV])
    import platformdirs

    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def log_path() -> Path:
    return log_dir() / LOG_FILE


def file_level() -> int:
    return logging.DEBUG if os.environ.get(LOG_LEVEL_ENV, "").upper() == "DEBUG" else logging.INFO


class RedactingFileHandler(logging.handlers.RotatingFileHandler):
    """Writes each formatted record (traceback included) with the current API key redacted."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8", delay=True)
        self._redactor, self._looked_up = KeyRedactor(None), float("-inf")

    failed = False  # the file could not be written: the handler has stopped (see handleError)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """A write that failed (a full disk, the folder gone): say so once, stop writing the file
        (logging's default prints a traceback for every record), and let the rest of logging go
        on without it: the stderr handler still shows warnings and errors."""
        if self.failed:
            return
        self.failed = True
        self.setLevel(logging.CRITICAL + 1)
        with contextlib.suppress(Exception):  # the buffered lines cannot be flushed either
            self.close()
        error = sys.exc_info()[1]
        why = getattr(error, "strerror", None) or error or "unknown error"
        logging.getLogger(__name__).warning(
            "cannot write the log file %s (%s): it is off until the next start; warnings and errors still "
            "go to stderr", self.baseFilename, why)

    def format(self, record: logging.LogRecord) -> str:
        now = time.monotonic()
        if now - self._looked_up > _KEY_TTL_S:
            self._redactor, self._looked_up = KeyRedactor(llm_api_key()), now
        return self._redactor(super().format(record))


def add_file_log(level: int | None = None) -> logging.Handler | None:
    """Log to the file from now on (the root logger); None when the folder cannot be written
    (the app still runs, the log is only lost)."""
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RedactingFileHandler(path)
    except OSError as e:
        logging.getLogger(__name__).warning("no log file (%s): %s", path, e.strerror or e)
        return None
    handler.setLevel(file_level() if level is None else level)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, handler.level))
    return handler


class TranscriptLog:
    """A bus subscriber that logs what was said, at DEBUG (subscribe it only with history on)."""

    def __init__(self) -> None:
        self.log = logging.getLogger(TRANSCRIPT_LOGGER)
        self._reply: list[str] = []

    def __call__(self, stamped: Stamped) -> None:
        if not self.log.isEnabledFor(logging.DEBUG):
            return
        match stamped.event:
            case AssistantTokenEvent(piece=piece):
                self._reply.append(piece)
            case SpeechEndEvent(source="assistant"):
                self._flush()
            case AsrFinalEvent(text=text):
                self._flush()
                self.log.debug("user: %s", text)

    def _flush(self) -> None:
        if self._reply:
            self.log.debug("assistant: %s", "".join(self._reply).strip())
            self._reply.clear()
