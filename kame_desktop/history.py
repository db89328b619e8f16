"""Conversation history: one JSON-lines file per conversation under the data folder, in the event
schema of `events.py` (a header line, then `Stamped.to_record()` records), plus the exports
(JSON: the same lines; Markdown: a readable transcript, also used by the GUI's copy action).

Every string is redacted against the current API key before it reaches a file or the clipboard.
Saves and exports are written atomically. The live conversation is appended as it goes
(`ConversationLog`: each batch appended and fsync'ed), so a kill or a power cut loses at most the
batch being written, and a line cut short costs only that line when the file is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kame_desktop.config import data_dir
from kame_desktop.credentials import redact
from kame_desktop.errors import HistoryError
from kame_desktop.events import (
    AsrFinalEvent,
    AssistantTokenEvent,
    BargeInEvent,
    ErrorEvent,
    LlmChunkEvent,
    LlmRequestEvent,
    RecordRedactor,
    SessionStartEvent,
    SpeechEndEvent,
    Stamped,
    TurnEndEvent,
)
from kame_desktop.fileio import atomic_writer

log = logging.getLogger(__name__)

HISTORY_VERSION = 1
SUFFIX = ".jsonl"
DEFAULT_TITLE = "Conversation"
_TITLE_WORDS = 8
_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # ids name files: no separators, no "..", no surprises


@dataclass(frozen=True)
class ConversationInfo:
    id: str
    title: str
    started: str  # ISO 8601, UTC
    path: Path
    n_events: int
    problem: str = ""  # why the file cannot be opened (listed only with include_unreadable)


# --- records <-> files --------------------------------------------------------------------------


def conversation_title(records: list[Stamped]) -> str:
    """The user's first final words, trimmed to a few, or "Conversation"."""
    for r in records:
        if isinstance(r.event, AsrFinalEvent) and r.event.text.strip():
            words = r.event.text.split()
            return " ".join(words[:_TITLE_WORDS]) + (" …" if len(words) > _TITLE_WORDS else "")
    return DEFAULT_TITLE


def make_header(records: list[Stamped], title: str | None = None, started: str | None = None) -> dict[str, Any]:
    start = next((r.event for r in records if isinstance(r.event, SessionStartEvent)), None)
    return {
        "kind": "header",
        "version": HISTORY_VERSION,
        "title": title or conversation_title(records),
        "started": started or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "frontend": start.frontend if start else None,
        "llm": start.llm if start else None,
    }


@contextlib.contextmanager
def _writing(path: Path, fix: str) -> Iterator[None]:
    """An OSError while writing `path` (a read-only or missing folder, a full disk) as a
    HistoryError naming the folder and `fix`; the temp file's name says nothing to the user."""
    try:
        yield
    except OSError as e:
        raise HistoryError(f"cannot write to {path.parent} ({e.strerror or type(e).__name__}) — {fix}") from None


_HISTORY_FIX = "make that folder writable or free some disk space, or turn history off in Settings"
_EXPORT_FIX = "choose another folder, or free some disk space"


def write_conversation(
    path: Path, header: dict[str, Any], records: list[Stamped], fix: str = _EXPORT_FIX
) -> dict[str, Any]:
    """Header line then one record per line, redacted, atomically; returns the header as written.
    Raises HistoryError (saying `fix`) when the file cannot be written."""
    redact_record = RecordRedactor()  # the key looked up once: the keyring may be slow
    header = redact_record(header)
    with _writing(path, fix), atomic_writer(path, mode=0o600) as f:  # transcripts are private to the user
        for obj in [header, *(redact_record(r.to_record()) for r in records)]:
            f.write((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
    return header


def read_conversation(path: Path) -> tuple[dict[str, Any], list[Stamped]]:
    """(header, records) of a history file or a JSON export. Raises HistoryError when the file
    or its header cannot be read; a record line that cannot be read is skipped (see
    `read_conversation_lines`)."""
    header, records, _skipped = read_conversation_lines(path)
    return header, records


def _header_and_lines(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The file's header and its non-blank lines (the header's first). Raises OSError or
    ValueError (JSON, or no header line)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    header = json.loads(lines[0]) if lines else None
    if not isinstance(header, dict) or header.get("kind") != "header":
        raise ValueError("no header line")
    return header, lines


def _why(e: OSError | ValueError) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"


def read_conversation_lines(path: Path) -> tuple[dict[str, Any], list[Stamped], int]:
    """(header, records, lines skipped). A line that is not a record this version knows (cut
    short by a crash or a full disk, or an event kind from a newer version) costs that line,
    not the conversation. Raises HistoryError when the file or its header is unreadable."""
    try:
        header, lines = _header_and_lines(path)
    except (OSError, ValueError) as e:
        raise HistoryError(f"{path} is not a readable conversation ({_why(e)}); delete it or restore a copy") from None
    records: list[Stamped] = []
    for line in lines[1:]:
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):  # that line only
            records.append(Stamped.from_record(json.loads(line)))
    skipped = len(lines) - 1 - len(records)
    if skipped:
        log.warning("%s: skipped %d unreadable line(s) of %d", path.name, skipped, len(lines) - 1)
    return header, records, skipped


# --- the store ----------------------------------------------------------------------------------


class HistoryStore:
    """Saved conversations, one `<id>.jsonl` file each, under `root` (default: data_dir()/history)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else data_dir() / "history"

    def path(self, conversation_id: str) -> Path:
        """The file of a conversation: an id the app made, or the name of a file already in the
        folder (one copied in by hand is listed, so it can be opened and deleted too); never a
        path that leads out of the folder."""
        path = self.root / f"{conversation_id}{SUFFIX}"
        if _ID_RE.match(conversation_id) or (Path(conversation_id).name == conversation_id
                                             and conversation_id not in (".", "..") and path.is_file()):
            return path
        raise HistoryError(f"'{conversation_id}' is not a conversation id")

    def save(
        self, records: list[Stamped], title: str | None = None, *, conversation_id: str | None = None
    ) -> ConversationInfo:
        """Save a conversation; with `conversation_id`, replace that one (the GUI saves as the
        conversation grows), keeping its start time."""
        started = None
        if conversation_id is None:
            now = datetime.now(timezone.utc)
            conversation_id = f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"  # sortable, unique
        elif self.path(conversation_id).exists():
            with contextlib.suppress(HistoryError):  # an unreadable file is replaced by a good one
                started = read_conversation(self.path(conversation_id))[0].get("started")
        path = self.path(conversation_id)
        header = write_conversation(path, make_header(records, title, started), records, _HISTORY_FIX)
        return ConversationInfo(conversation_id, header["title"], header["started"], path, len(records))

    def list(self, include_unreadable: bool = False) -> list[ConversationInfo]:
        """Saved conversations, newest first. A file that cannot be opened is skipped with a
        warning, or with `include_unreadable` listed last with its `problem` (the History dialog
        marks it, so the user can delete it)."""
        found: list[ConversationInfo] = []
        broken: list[ConversationInfo] = []
        for path in self.root.glob(f"*{SUFFIX}") if self.root.is_dir() else []:
            try:
                header, lines = _header_and_lines(path)
            except (OSError, ValueError) as e:
                log.warning("skipping history file %s: %s", path.name, type(e).__name__)
                broken.append(ConversationInfo(path.stem, path.name, "", path, 0, f"unreadable: {_why(e)}"))
                continue
            title, started = header.get("title"), header.get("started")
            found.append(
                ConversationInfo(
                    path.stem,
                    title if isinstance(title, str) and title else DEFAULT_TITLE,
                    started if isinstance(started, str) else "",
                    path,
                    len(lines) - 1,
                )
            )
        # UTC ISO strings sort as times; the id (which starts with the time) breaks ties
        found.sort(key=lambda c: (c.started, c.id), reverse=True)
        return found + sorted(broken, key=lambda c: c.title) if include_unreadable else found

    def load(self, conversation_id: str) -> list[Stamped]:
        return self.load_lines(conversation_id)[0]

    def load_lines(self, conversation_id: str) -> tuple[list[Stamped], int]:
        """(records, lines skipped) of a saved conversation (`read_conversation_lines`)."""
        path = self.path(conversation_id)
        if not path.exists():
            raise HistoryError(f"conversation {conversation_id} is not in {self.root}")
        return read_conversation_lines(path)[1:]

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation; one already gone is not an error. Raises HistoryError when
        the folder does not let it go."""
        path = self.path(conversation_id)
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise HistoryError(
                f"cannot delete {path.name} from {self.root} ({e.strerror or type(e).__name__}) — make that folder writable"
            ) from None


class ConversationLog:
    """The live conversation, appended to its history file as it goes, off the caller's thread.

    `append(records)` hands over the records not yet written (the caller keeps the count in
    `handed`): the first batch that has words creates the file (header + records), each batch
    is appended and fsync'ed. A write that fails is kept in `error` (and raised by `wait`); the
    records stay handed over, and the next batch retries the ones not written."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store
        self.id: str | None = None
        self.handed = 0  # records handed over so far (the caller's list index)
        self.error: HistoryError | None = None
        self._pending: list[Stamped] = []  # handed over, not yet on disk
        self._queue: queue.Queue[list[Stamped] | None] = queue.Queue()  # batches; None: a wait() marker; []: the end
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._redact: RecordRedactor | None = None
        self._done: list[threading.Event] = []

    def append(self, records: list[Stamped]) -> None:
        """Write `records` (the next ones after those handed over) soon, on the writer thread."""
        if not records:
            return
        self.handed += len(records)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kame-history", daemon=True)
            self._thread.start()
        self._queue.put(list(records))

    def wait(self, timeout: float = 10.0) -> None:
        """Until what was handed over is written; raises the write's HistoryError if one failed."""
        if self._thread is not None:
            done = threading.Event()
            self._done.append(done)
            self._queue.put(None)  # a marker: everything before it has been written
            done.wait(timeout)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """End the writer thread once what was handed over is written (the log is done)."""
        if self._thread is not None:
            self._queue.put([])  # the end marker
            self._thread.join(10.0)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch == []:
                return
            if batch is None:
                self._done.pop(0).set()
                continue
            self._pending += batch
            if not has_text(self._pending) and self.id is None:
                continue  # no file for a conversation without words (yet)
            try:
                self._write(self._pending)
                self._pending, self.error = [], None
            except HistoryError as e:
                self.error = e
                log.warning("%s", e)

    def _write(self, records: list[Stamped]) -> None:
        if self._redact is None:
            self._redact = RecordRedactor()  # the key looked up once, on this thread: the keyring may be slow
        lines = [self._redact(r.to_record()) for r in records]
        if self.id is None:
            now = datetime.now(timezone.utc)
            conversation_id = f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
            header = self._redact(make_header(records))
            lines.insert(0, header)
        else:
            conversation_id = self.id
        path = self.store.path(conversation_id)
        data = "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in lines).encode("utf-8")
        with _writing(path, _HISTORY_FIX):
            if self.id is None:
                path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # transcripts are private
            size = os.fstat(fd).st_size
            try:
                os.write(fd, data)
                os.fsync(fd)
            except OSError:  # a full disk: no half batch left behind for the retry to follow
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
            finally:
                os.close(fd)
            if self.id is None:  # the new file's name survives a power cut too
                with contextlib.suppress(OSError):
                    dir_fd = os.open(path.parent, os.O_RDONLY)
                    try:
                        os.fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
        self.id = conversation_id


def has_text(records: list[Stamped]) -> bool:
    """Whether a conversation has words worth keeping."""
    return any(r.event.kind in ("asr_final", "assistant_token", "oracle_token", "llm_chunk") for r in records)


# --- exports ------------------------------------------------------------------------------------


def export_json(records: list[Stamped], path: Path, title: str | None = None) -> None:
    """The conversation as JSON lines: a header then the event records (the history schema)."""
    write_conversation(path, make_header(records, title), records)


def export_markdown(records: list[Stamped], path: Path, title: str | None = None) -> None:
    text = render_markdown(records, title)
    with _writing(path, _EXPORT_FIX), atomic_writer(path) as f:
        f.write(text.encode("utf-8"))


def _clock(t: float) -> str:
    minutes, seconds = divmod(t, 60.0)
    return f"{int(minutes)}:{seconds:04.1f}"


def render_markdown(records: list[Stamped], title: str | None = None) -> str:
    """A readable transcript: what the user said, each oracle answer (as a quote) and what the
    companion said, with session times. Redacted like everything that leaves the app."""
    # entries: [speaker, time, text parts, request]; consecutive pieces of the same speaker
    # join into one paragraph until someone else speaks or the turn ends.
    entries: list[list[Any]] = []
    answers: dict[int, list[str]] = {}
    open_speaker: str | None = None
    for r in records:
        e = r.event
        if isinstance(e, AsrFinalEvent) and e.text.strip():
            if open_speaker != "user":
                entries.append(["user", r.t, [], None])
            entries[-1][2].append(e.text.strip())
            open_speaker = "user"
        elif isinstance(e, AssistantTokenEvent) and e.piece:
            if open_speaker != "assistant":
                entries.append(["assistant", r.t, [], None])
            entries[-1][2].append(e.piece)
            open_speaker = "assistant"
        elif isinstance(e, LlmRequestEvent):
            answers[e.request] = []
            entries.append(["oracle", r.t, [], e.request])
            open_speaker = None
        elif isinstance(e, LlmChunkEvent):
            answers.setdefault(e.request, []).append(e.text)
        elif isinstance(e, TurnEndEvent) or (isinstance(e, SpeechEndEvent) and e.source == "assistant"):
            open_speaker = None
        elif isinstance(e, BargeInEvent):
            entries.append(["note", r.t, ["(interrupted)"], None])
            open_speaker = None
        elif isinstance(e, ErrorEvent):
            entries.append(["note", r.t, [f"error ({e.source}): {e.message}"], None])
            open_speaker = None

    start = next((r.event for r in records if isinstance(r.event, SessionStartEvent)), None)
    lines = [f"# {title or conversation_title(records)}", ""]
    if start:
        lines += [f"_Front-end {start.frontend} ({start.model}), LLM {start.llm or '-'}, ASR {start.asr or '-'}_", ""]
    for speaker, t, parts, request in entries:
        if speaker == "user":
            lines.append(f"**You** ({_clock(t)}): {' '.join(parts)}")
        elif speaker == "assistant":
            lines.append(f"**Companion** ({_clock(t)}): {' '.join(''.join(parts).split())}")
        elif speaker == "oracle":
            answer = "".join(answers.get(request, [])).strip()
            if not answer:
                continue  # a request cancelled before any text: nothing to read
            quoted = "\n> ".join(answer.splitlines())
            lines.append(f"> *Oracle, request {request}* ({_clock(t)}): {quoted}")
        else:
            lines.append(f"_{' '.join(parts)} ({_clock(t)})_")
        lines.append("")
    text = "\n".join(lines).rstrip() + "\n"
    return redact(text)
