"""Notes the user dictates: appended to one text file in the data folder, read back on request."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from kame_desktop.backend.tools.base import Tool, ToolFailed, object_schema
from kame_desktop.config import data_dir

MAX_READ = 20  # notes read back at most (the newest)


def notes_path() -> Path:
    return data_dir() / "notes.txt"


def add_note(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise ToolFailed("the note is empty")
    path = notes_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # the user's words: theirs only
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"{datetime.now():%Y-%m-%d %H:%M}  {text}\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ToolFailed(f"cannot write the notes file ({e.strerror or type(e).__name__})") from None
    return f"noted: {text}"


def read_notes() -> str:
    try:
        lines = notes_path().read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return "there are no notes yet"
    except OSError as e:
        raise ToolFailed(f"cannot read the notes file ({e.strerror or type(e).__name__})") from None
    lines = [line for line in lines if line.strip()][-MAX_READ:]
    return "\n".join(lines) if lines else "there are no notes yet"


TOOLS = (
    Tool("add_note", "Write down a note the user dictates.",
         object_schema(("text",), text={"type": "string", "description": "the note, as the user said it"}),
         add_note, read_only=False),
    Tool("read_notes", "Read back the user's notes, newest last.", object_schema(), read_notes),
)
