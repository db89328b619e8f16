"""Timers and reminders: kept in the data folder (so they survive a restart), said aloud when due.

The back-end checks the store a few times a second (`TimerStore.due`) and has the companion say
each one that fell due; one that fell due while the app was closed is said at the next start."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from kame_desktop.backend.tools.base import Tool, ToolFailed, object_schema
from kame_desktop.config import data_dir
from kame_desktop.fileio import atomic_writer

log = logging.getLogger(__name__)

MAX_SECONDS = 7 * 24 * 3600  # a week: longer is a calendar's job


@dataclass(frozen=True)
class Timer:
    id: str
    due: float  # epoch seconds
    text: str  # what is said when it is due
    set_at: float


def timers_path() -> Path:
    return data_dir() / "timers.json"


class TimerStore:
    """Pending timers in one JSON file (written atomically; a damaged one is set aside)."""

    _lock = threading.Lock()  # tools run on worker threads; the back-end reads on its loop

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or timers_path()

    def pending(self) -> list[Timer]:
        with self._lock:
            return self._read()

    def add(self, seconds: float, text: str) -> Timer:
        timer = Timer(uuid.uuid4().hex[:8], time.time() + seconds, text, time.time())
        with self._lock:
            self._write([*self._read(), timer])
        return timer

    def due(self, now: float | None = None) -> list[Timer]:
        """The timers due by `now`, removed from the store (each is said once)."""
        now = time.time() if now is None else now
        with self._lock:
            timers = self._read()
            due = [t for t in timers if t.due <= now]
            if due:
                self._write([t for t in timers if t.due > now])
        return sorted(due, key=lambda t: t.due)

    def _read(self) -> list[Timer]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return [Timer(**item) for item in raw]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError) as e:
            bad = self.path.with_name(self.path.name + ".bad")
            log.warning("the timers file %s is unreadable (%s); kept as %s, starting afresh", self.path, e, bad)
            with contextlib.suppress(OSError):
                self.path.replace(bad)
            return []

    def _write(self, timers: list[Timer]) -> None:
        try:
            with atomic_writer(self.path, 0o600) as f:  # what the user asked to be reminded of: theirs only
                f.write(json.dumps([asdict(t) for t in timers]).encode())
        except OSError as e:
            raise ToolFailed(f"cannot save the timers ({e.strerror or type(e).__name__})") from None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in ((hours, "hour"), (minutes, "minute"), (secs, "second")) if n]
    return " ".join(parts) or "0 seconds"


def set_timer(minutes: float, label: str = "") -> str:
    seconds = minutes * 60
    if not 1 <= seconds <= MAX_SECONDS:
        raise ToolFailed("a timer runs from 1 second to 7 days")
    name = f"{label.strip()} timer" if label.strip() else "timer"
    timer = TimerStore().add(seconds, f"Your {_duration(seconds)} {name} is done.")
    return f"timer set for {_duration(seconds)}, due at {datetime.fromtimestamp(timer.due):%H:%M:%S}"


def set_reminder(text: str, minutes: float) -> str:
    if not text.strip():
        raise ToolFailed("say what to remind about")
    if not 0 < minutes * 60 <= MAX_SECONDS:
        raise ToolFailed("a reminder is from 1 minute to 7 days ahead")
    timer = TimerStore().add(minutes * 60, f"Reminder: {text.strip()}")
    return f"reminder set for {datetime.fromtimestamp(timer.due):%H:%M}: {text.strip()}"


def list_timers() -> str:
    timers = sorted(TimerStore().pending(), key=lambda t: t.due)
    if not timers:
        return "no timers or reminders are set"
    now = time.time()
    return "; ".join(f"{t.text.removesuffix(' is done.')} in {_duration(max(0, t.due - now))}" for t in timers)


def announcement(timer: Timer, now: float | None = None) -> str:
    """What the companion says for a timer that fell due (late: when, if the app was closed)."""
    late = (time.time() if now is None else now) - timer.due
    if late > 60:
        return f"While I was closed, at {datetime.fromtimestamp(timer.due):%H:%M}: {timer.text}"
    return timer.text


TOOLS = (
    Tool("set_timer", "Start a countdown timer.",
         object_schema(("minutes",), minutes={"type": "number", "description": "its length in minutes (half a minute: 0.5)"},
                       label={"type": "string", "description": "what it is for, if the user said"}),
         set_timer, read_only=False),
    Tool("set_reminder", "Remind the user of something some minutes from now.",
         object_schema(("text", "minutes"), text={"type": "string"},
                       minutes={"type": "number", "description": "minutes from now"}),
         set_reminder, read_only=False),
    Tool("list_timers", "The timers and reminders that are set.", object_schema(), list_timers),
)
