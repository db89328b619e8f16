"""The ground floor everyone may import: audio framing constants, the back-end → front-end
signals, the event schema (one schema for the timeline, history and exports) and the EventBus.

Naming rule: a *signal* (back-end → front-end, drained by the inference thread before a frame)
is named for what happened, with no suffix (`OracleReset`, `TurnEnded`); an *event* (anything →
EventBus → timeline, GUI, history) ends in `Event`, and its `kind` is the snake-case name without
the suffix (`OracleResetEvent` → `oracle_reset`). A signal and the event that reports it may
therefore share a stem. A `Stamped` event carries the input-frame index at which the session
recorded it; its record is `{"kind", "frame", "t", **fields}` with t = frame × 0.08 s, the
session's audio clock. README.md has the table of every kind and its fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from kame_desktop.fileio import atomic_writer

SAMPLE_RATE = 24_000
FRAME_SIZE = 1920  # one 80 ms frame at 24 kHz
FRAME_RATE = SAMPLE_RATE / FRAME_SIZE  # 12.5 Hz
FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE


def frame_time(frame: int) -> float:
    return round(frame * FRAME_SECONDS, 6)


# --- signals: what the back-end (or a script) tells the front-end, text level -----------------


@dataclass(frozen=True)
class Signal:
    """Base of the signals drained by the inference thread before each frame."""


@dataclass(frozen=True)
class OracleReset(Signal):
    """A new LLM answer starts: the oracle run restarts at the next frame."""

    request: int | None


@dataclass(frozen=True)
class OracleText(Signal):
    """A chunk of the current answer's text (the KAME front-end tokenizes it)."""

    request: int | None
    text: str


@dataclass(frozen=True)
class OracleTokens(Signal):
    """Raw oracle token ids appended to the current run (scripts and tests)."""

    request: int | None
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class OracleDone(Signal):
    """The answer of `request` is complete (the lite front-end speaks its last sentence)."""

    request: int | None


@dataclass(frozen=True)
class UserSpeechStarted(Signal):
    """The user started speaking (VAD)."""


@dataclass(frozen=True)
class TurnEnded(Signal):
    """The user's turn is over; `source` is "vad", "ptt" or "asr". `request` is the back-end
    request whose answer fits the finished turn (None: the latest one)."""

    source: str
    request: int | None = None


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__name__.removesuffix("Event")
        cls.kind = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        _EVENT_TYPES[cls.kind] = cls

    def fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class SessionStartEvent(Event):
    frontend: str
    model: str
    device: str
    llm: str | None = None
    asr: str | None = None


@dataclass(frozen=True)
class AsrPartialEvent(Event):
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float | None = None  # the recognizer's confidence, where it gives one (see asr_final)
    no_speech_prob: float | None = None
    # The pause pass's (whisper): all the words up to a pause the user is in; ask with them now.
    pause: bool = False
    unheard_s: float | None = None  # a pause pass's: as in asr_final
    word_logprob: float | None = None  # as in asr_final


@dataclass(frozen=True)
class AsrFinalEvent(Event):
    text: str
    words: tuple[Word, ...] = ()
    # Whisper: the mean over the words of their segment's average token log probability, and the
    # highest no-speech probability among those segments; None where the recognizer gives none.
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    # Whisper: seconds the speech went on after the last word it wrote (noise covered the rest);
    # None where not measured (words committed before the speech ended, other recognizers).
    unheard_s: float | None = None
    word_logprob: float | None = None  # Whisper: the mean over the words of their log probability


@dataclass(frozen=True)
class AsrUnclearEvent(Event):
    """The turn's words are unreliable (the recognizer's confidence): instead of answering them,
    the companion hears `reply` (a short request to repeat) as the answer of `request`."""

    request: int
    heard: str  # the words that were not trusted
    reply: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    unheard_s: float | None = None
    word_logprob: float | None = None


@dataclass(frozen=True)
class SpeechStartEvent(Event):
    source: str  # "user" or "assistant"


@dataclass(frozen=True)
class SpeechEndEvent(Event):
    source: str


@dataclass(frozen=True)
class TurnEndEvent(Event):
    source: str  # "vad", "ptt" or "asr"
    turn_detection: str | None = None  # "smart" or "silence" (source "vad")
    probability: float | None = None  # smart: the model's last answer (below 0.5: the maximum silence ended it)


@dataclass(frozen=True)
class LlmRequestEvent(Event):
    request: int
    policy: str
    word_count: int  # user words the request includes


@dataclass(frozen=True)
class LlmFirstChunkEvent(Event):
    request: int
    ttft_ms: float


@dataclass(frozen=True)
class LlmChunkEvent(Event):
    request: int
    text: str


@dataclass(frozen=True)
class LlmDoneEvent(Event):
    request: int
    reason: str | None = None


@dataclass(frozen=True)
class LlmCancelledEvent(Event):
    request: int
    reason: str | None = None


@dataclass(frozen=True)
class ToolCallEvent(Event):
    """The LLM called a tool while answering `request` (arguments: its JSON text)."""

    request: int
    name: str
    arguments: str


@dataclass(frozen=True)
class AnnouncementEvent(Event):
    """The companion says `text` unasked (a timer or reminder fell due), as answer `request`."""

    request: int
    text: str


@dataclass(frozen=True)
class ToolResultEvent(Event):
    request: int
    name: str
    ok: bool
    summary: str  # the result (or why it failed), shortened


@dataclass(frozen=True)
class LlmAdoptedEvent(Event):
    """The front-end hears this request's answer from now on (its first text arrived)."""

    request: int
    after_ms: float  # since the request was sent


@dataclass(frozen=True)
class OracleResetEvent(Event):
    request: int | None


@dataclass(frozen=True)
class OracleTokenEvent(Event):
    request: int | None
    id: int
    piece: str


@dataclass(frozen=True)
class OracleLagEvent(Event):
    """KAME: time from a request's first LLM chunk to its first oracle token fed to the model."""

    request: int | None
    lag_ms: float


@dataclass(frozen=True)
class OracleLateEvent(Event):
    request: int | None
    count: int


@dataclass(frozen=True)
class AssistantTokenEvent(Event):
    id: int | None
    piece: str


@dataclass(frozen=True)
class BargeInEvent(Event):
    request: int | None


@dataclass(frozen=True)
class ErrorEvent(Event):
    source: str
    message: str
    error_kind: str = "failed"  # errors.ErrorKind: what sort of fix it needs (the banner's switch)


@dataclass(frozen=True)
class RecoveredEvent(Event):
    """The trouble an earlier `error` event of `source` told of is over (an MCP server is back):
    `message` says so, `error` is that event's message (the banner that still shows it goes)."""

    source: str
    message: str
    error: str


@dataclass(frozen=True)
class Stamped:
    """An event with the input frame at which the session recorded it."""

    frame: int
    event: Event

    @property
    def t(self) -> float:
        return frame_time(self.frame)

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.event.kind, "frame": self.frame, "t": self.t, **self.event.fields()}

    @staticmethod
    def from_record(record: dict[str, Any]) -> Stamped:
        fields = {k: v for k, v in record.items() if k not in ("kind", "frame", "t")}
        cls = _EVENT_TYPES[record["kind"]]
        if isinstance(fields.get("words"), list | tuple):  # ASR words
            fields["words"] = tuple(Word(**w) for w in fields["words"])
        return Stamped(int(record["frame"]), cls(**fields))


class EventBus:
    """Synchronous fan-out of stamped events to subscribers (timeline, GUI bridge, tests).

    Subscribers must be quick: they run on the publishing thread (the GUI bridge re-emits
    through queued Qt signals)."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Stamped], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Callable[[Stamped], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def publish(self, frame: int, event: Event) -> None:
        stamped = Stamped(frame, event)
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback(stamped)


MAX_RECORD_BYTES = 64 * 1024  # one timeline line at most; a longer text is cut with a marker
# Text that streams over several records (an answer, the companion's words): a key split across
# two of them is caught by redacting each record as the continuation of the stream's earlier text.
_STREAMED = {"llm_chunk": "text", "assistant_token": "piece", "oracle_token": "piece"}
_MAX_STREAMS = 32  # streams (one per request) whose tail is kept


_CUT = re.compile(r" …\[cut: (\d+) more characters\]$")


def cut_text(text: str, keep: int, dropped: int = 0) -> str:
    """The first `keep` characters of `text` and a marker saying how many were dropped (one
    marker however often it is cut; `dropped`: characters cut off before)."""
    if (m := _CUT.search(text)) is not None:
        dropped, text = dropped + int(m[1]), text[: m.start()]
    if keep >= len(text) and not dropped:
        return text
    return f"{text[:keep]} …[cut: {len(text) - min(keep, len(text)) + dropped} more characters]"


def fit_record(record: dict[str, Any], limit: int = MAX_RECORD_BYTES) -> str:
    """`record` as one JSON line of at most `limit` bytes (newline excluded): its longest texts
    are cut, ending in a marker that says how much was dropped."""
    line = json.dumps(record, ensure_ascii=False)
    while len(line) > limit // 4 and (size := len(line.encode("utf-8"))) > limit:
        name = max((k for k, v in record.items() if isinstance(v, str)), key=lambda k: len(record[k]), default=None)
        text = record[name] if name is not None else ""
        if len(text) < 200:
            break  # nothing left worth cutting (a record with huge lists would go out whole)
        room = len(text.encode("utf-8")) - (size - limit) - 64  # bytes the text may keep, marker aside
        keep = len(text.encode("utf-8")[: max(0, room)].decode("utf-8", errors="ignore"))
        record = {**record, name: cut_text(text, min(keep, len(text) - 1))}
        line = json.dumps(record, ensure_ascii=False)
    return line


class RecordRedactor:
    """Redacts every string of records written in order against the API key (`api_key`; None:
    the stored one), including a key split across consecutive records of one text stream: each
    is redacted as the continuation of the stream's earlier text (kept, raw, in memory only).
    What the records said is otherwise kept as it was: their text, frames and order."""

    def __init__(self, api_key: str | None = None) -> None:
        from kame_desktop.credentials import KeyRedactor, llm_api_key

        self._redact = KeyRedactor(llm_api_key() if api_key is None else api_key)
        self._tails: dict[tuple[str, Any], str] = {}  # stream -> the end of its raw text

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        if not self._redact:
            return record
        streamed = _STREAMED.get(record.get("kind", ""))
        out = {}
        for name, value in record.items():
            if name == streamed and isinstance(value, str):
                out[name] = self._continued((record["kind"], record.get("request")), value)
            else:
                out[name] = _redact_strings(value, lambda text: self._cut(text, self._redact))
        return out

    def _continued(self, stream: tuple[str, Any], text: str) -> str:
        keep = self._redact.carry_chars
        before = self._tails.pop(stream, "")
        self._tails[stream] = (before + text[-keep:])[-keep:]
        if len(self._tails) > _MAX_STREAMS:
            del self._tails[next(iter(self._tails))]
        return self._cut(text, lambda head: self._redact.continued(before, head))

    def _cut(self, text: str, redact: Callable[[str], str]) -> str:
        # A record keeps at most 64 kB (fit_record): redact that head, then cut the rest off.
        head = text[: MAX_RECORD_BYTES + self._redact.carry_chars + 8]
        if len(head) == len(text):
            return redact(text)
        return cut_text(redact(head), MAX_RECORD_BYTES, len(text) - len(head))


def _redact_strings(value: Any, redact: Callable[[str], str]) -> Any:
    """`value` with every string in it redacted (records nest: ASR words are dicts in a list)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_strings(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_strings(v, redact) for v in value]
    return value


class TimelineWriter:
    """Writes stamped events as JSON lines, one per event, flushed as they come; records are
    redacted (`RecordRedactor`) and cut to 64 kB (`fit_record`). Like the reply's WAV, the file
    appears at `path` only when closed (temp file + rename), so a failed run never truncates an
    earlier timeline; `abort()` drops the temp file. A path that exists and is not a regular file
    (/dev/stdout, a pipe) is written straight through."""

    def __init__(self, path: Path, api_key: str | None = None) -> None:
        self._redact = RecordRedactor(api_key)
        self._atomic = None
        if path.exists() and not path.is_file():
            self._file: Any = path.open("w", encoding="utf-8")
        else:
            self._atomic = atomic_writer(path)
            self._file = io.TextIOWrapper(self._atomic.__enter__(), encoding="utf-8")

    def __call__(self, stamped: Stamped) -> None:
        self._file.write(fit_record(self._redact(stamped.to_record())) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()  # flushes: a full disk raises here, and the temp file goes
        if self._atomic is not None:
            self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop what was written (the run failed); an earlier file at `path` stays as it was."""
        with contextlib.suppress(OSError):  # the disk that failed the run may fail the flush too
            self._file.close()
        if self._atomic is not None:
            error = RuntimeError("aborted")
            self._atomic.__exit__(type(error), error, None)  # removes the temp file


def read_timeline(path: Path) -> list[Stamped]:
    with path.open(encoding="utf-8") as f:
        return [Stamped.from_record(json.loads(line)) for line in f if line.strip()]
