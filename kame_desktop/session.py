"""The headless Session: frames in → FrontEnd.step(frame, signals) → frames out, with every
event stamped on the session's audio clock and published on the EventBus. The GUI, the CLI and
the tests drive this same object; nothing here imports Qt.

Signals reach the front-end only through a bounded SignalQueue that the inference thread drains
before each frame, so a back-end (or an --oracle-file script) never touches front-end state.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kame_desktop.audio.sources import AudioSink, AudioSource
from kame_desktop.errors import OracleScriptError
from kame_desktop.events import (
    FRAME_RATE,
    FRAME_SECONDS,
    AssistantTokenEvent,
    Event,
    EventBus,
    LlmFirstChunkEvent,
    OracleLagEvent,
    OracleReset,
    OracleText,
    OracleTokenEvent,
    OracleTokens,
    SessionStartEvent,
    Signal,
)
from kame_desktop.frontend.base import FrontEnd
from kame_desktop.logrepeat import RepeatedWarning

if TYPE_CHECKING:
    from kame_desktop.backend.worker import Backend

log = logging.getLogger(__name__)


class SignalQueue:
    """Bounded, non-blocking: a full queue drops the signal (and says so) rather than ever
    blocking the back-end or the audio thread; the next LLM restart issues a fresh reset."""

    def __init__(self, maxsize: int = 64) -> None:
        self._queue: queue.Queue[Signal] = queue.Queue(maxsize)
        self.dropped = 0
        self._warn_dropped = RepeatedWarning(log, "signal queue full: dropped %s")

    def post(self, signal: Signal) -> bool:
        try:
            self._queue.put_nowait(signal)
            return True
        except queue.Full:
            self.dropped += 1
            self._warn_dropped(type(signal).__name__)  # counted: a flood must not flood stderr
            return False

    def flush_warnings(self) -> None:
        """Log how many signals were dropped in all (the session calls it when it ends)."""
        self._warn_dropped.flush()

    def drain(self) -> list[Signal]:
        signals = []
        while True:
            try:
                signals.append(self._queue.get_nowait())
            except queue.Empty:
                return signals


# --- oracle scripts (--oracle-file) --------------------------------------------------------------


@dataclass(frozen=True)
class ScriptEntry:
    frame: int  # applied just before this frame is stepped
    signals: tuple[Signal, ...]


def script_frame(t: float) -> int:
    """The frame an entry at `t` seconds applies to: ceil(round(t × 12.5, 6))."""
    return math.ceil(round(t * FRAME_RATE, 6))


MAX_SCRIPT_FRAME = 10**9  # about 2.5 years of audio: a later entry is past the end of any input


def _entry_frame(t: object, where: str) -> int:
    """Validate an entry's `t` and return its frame (at most MAX_SCRIPT_FRAME: a `t` of 1e300
    must not become a 300-digit frame number in a warning)."""
    if isinstance(t, int | float) and not isinstance(t, bool) and t >= 0:
        try:
            return min(script_frame(float(t)), MAX_SCRIPT_FRAME)
        except (OverflowError, ValueError):  # infinity, or too large for a frame index
            pass
    raise OracleScriptError(f"{where}: 't' must be a finite number of seconds >= 0")  # also NaN


def load_oracle_script(path: Path) -> list[ScriptEntry]:
    """Read a JSON list of {"t", "reset"?, "text"?, "tokens"?}; each entry becomes the signals
    reset, then text, then tokens, in file order."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OracleScriptError(f"oracle file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise OracleScriptError(f"oracle file {path} is not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise OracleScriptError(f"oracle file {path} must hold a JSON list of entries")
    entries = []
    request: int | None = None
    for n, item in enumerate(data):
        where = f"oracle file {path}, entry {n}"
        if not isinstance(item, dict):
            raise OracleScriptError(f"{where}: expected an object like {{\"t\": 1.2, \"text\": \"...\"}}")
        unknown = set(item) - {"t", "reset", "text", "tokens"}
        if unknown:
            raise OracleScriptError(f"{where}: unknown keys {sorted(unknown)}")
        t, reset, text, tokens = item.get("t"), item.get("reset", False), item.get("text"), item.get("tokens")
        frame = _entry_frame(t, where)
        if not isinstance(reset, bool):
            raise OracleScriptError(f"{where}: 'reset' must be true or false")
        if text is not None and not isinstance(text, str):
            raise OracleScriptError(f"{where}: 'text' must be a string")
        if tokens is not None and not (
            isinstance(tokens, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in tokens)
        ):
            raise OracleScriptError(f"{where}: 'tokens' must be a list of integer ids")
        signals: list[Signal] = []
        if reset:
            request = 0 if request is None else request + 1
            signals.append(OracleReset(request))
        if text:
            signals.append(OracleText(request, text))
        if tokens:
            signals.append(OracleTokens(request, tuple(tokens)))
        entries.append(ScriptEntry(frame, tuple(signals)))
    return entries


def check_script_tokens(entries: list[ScriptEntry], text_card: int, path: Path) -> None:
    for entry in entries:
        for signal in entry.signals:
            if isinstance(signal, OracleTokens):
                bad = [i for i in signal.tokens if not 0 <= i <= text_card]
                if bad:
                    raise OracleScriptError(f"oracle file {path}: token ids {bad} are outside 0..{text_card}")


# --- the session ---------------------------------------------------------------------------------


class Session:
    """Drives one front-end frame by frame; with a back-end, also feeds it the user's audio and
    the companion's words, and stamps the back-end's asynchronous events on the audio clock.
    Built by `assembly.build_session`; `close()` stops the back-end and closes the front-end
    when the session built it (`owns_frontend`)."""

    def __init__(
        self,
        frontend: FrontEnd,
        bus: EventBus | None = None,
        signals: SignalQueue | None = None,
        backend: Backend | None = None,
        *,
        owns_frontend: bool = True,
    ) -> None:
        self.frontend = frontend
        self.bus = bus or EventBus()
        self.signals = signals or SignalQueue()
        self.backend = backend
        self.owns_frontend = owns_frontend
        self.frame = 0  # index of the input frame being processed (warm-up excluded)
        self._first_chunk_frame: dict[int | None, int] = {}  # per request, for oracle_lag
        # Stamping and publishing happen under one lock so that records from the inference
        # thread and the back-end come out in frame order.
        self._lock = threading.Lock()

    def _publish(self, event: Event) -> None:
        """Publish at the current frame (the lock is held); derives `oracle_lag` on the way."""
        self.bus.publish(self.frame, event)
        if isinstance(event, LlmFirstChunkEvent):
            self._first_chunk_frame[event.request] = self.frame
        elif isinstance(event, OracleTokenEvent) and event.request in self._first_chunk_frame:
            lag_ms = (self.frame - self._first_chunk_frame.pop(event.request)) * FRAME_SECONDS * 1000
            self.bus.publish(self.frame, OracleLagEvent(event.request, round(lag_ms, 1)))

    def publish_async(self, event: Event) -> None:
        """For the back-end's events: stamped with the frame being processed now."""
        with self._lock:
            self._publish(event)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the back-end and close the front-end if this session built it. Idempotent."""
        backend, self.backend = self.backend, None
        try:
            if backend is not None:
                backend.stop(timeout)
        finally:
            self.signals.flush_warnings()
            if self.owns_frontend:
                self.owns_frontend = False
                self.frontend.close()

    def start(self) -> None:
        self.frame = 0
        self._first_chunk_frame.clear()
        fe = self.frontend
        llm = self.backend.llm.name if self.backend else None
        asr = self.backend.asr.name if self.backend and self.backend.asr else None
        self.bus.publish(0, SessionStartEvent(fe.kind, fe.model, fe.device, llm, asr))
        if self.backend:
            self.backend.start()

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Process one input frame: drain the signals posted so far, step, publish events."""
        if self.backend:
            self.backend.push_audio(frame, (self.frame + 1) * FRAME_SECONDS)
        result = self.frontend.step(frame, self.signals.drain())
        with self._lock:
            for event in result.events:
                self._publish(event)
            self.frame += 1
        if self.backend:
            said = "".join(e.piece for e in result.events if isinstance(e, AssistantTokenEvent))
            self.backend.on_companion_text(said)
        return result.pcm

    def run(self, source: AudioSource, sink: AudioSink, script: Iterable[ScriptEntry] = ()) -> int:
        """Stream every frame of `source` through the front-end into `sink`; script entries are
        posted just before their frame, as a back-end would. Returns the frames processed."""
        pending = sorted(script, key=lambda e: e.frame)  # stable: file order within a frame
        self.start()
        while (frame := source.read()) is not None:
            while pending and pending[0].frame <= self.frame:
                for signal in pending.pop(0).signals:
                    self.signals.post(signal)
            sink.write(self.step(frame))
        if self.backend:
            self.backend.finish_audio(self.frame * FRAME_SECONDS)
        return self.frame
