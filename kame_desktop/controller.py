"""The non-Qt glue of the desktop app: builds a Session from Settings (`assembly.build_session`,
the one assembly path) and runs it off the GUI thread, then stops it cleanly.

One thread ("kame-inference") loads the front-end, the back-end and the audio device, then
runs `session.run(source, sink)`; the back-end has its own worker threads. The source is wrapped
in a `ControlledSource` whose `read()` (on the inference thread, between frames) passes each
frame through the `MicGate` (push-to-talk, mute, the wake word: switches the GUI sets),
measures the frame time and the lag behind real time, and runs the actions the GUI queued (a
new conversation resets the front-end there, never under its feet).

Everything the GUI needs comes out through one callback, `notify(obj)`, from any thread: the
session's `Stamped` events plus the small notices below. The GUI's Qt bridge re-emits them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kame_desktop.assembly import BackendFactory, build_session
from kame_desktop.audio.sources import AudioSink, AudioSource
from kame_desktop.config import Settings
from kame_desktop.errors import ErrorKind, KameError, error_kind
from kame_desktop.events import FRAME_SECONDS, EventBus, Stamped
from kame_desktop.listening import ListeningNotice, WakeGate, chime

if TYPE_CHECKING:
    from kame_desktop.frontend.base import FrontEnd
    from kame_desktop.session import ScriptEntry, Session

log = logging.getLogger(__name__)


# --- notices (controller → GUI) -------------------------------------------------------------------


@dataclass(frozen=True)
class StatusNotice:
    text: str
    busy: bool = False  # loading: the GUI shows a busy indicator


@dataclass(frozen=True)
class ErrorNotice:
    source: str  # "load", "audio", "llm", ...
    message: str
    kind: ErrorKind = "failed"  # what sort of fix it needs (the banner switches on it)

    @staticmethod
    def of(source: str, e: BaseException) -> ErrorNotice:
        return ErrorNotice(source, str(e) or type(e).__name__, error_kind(e))


@dataclass(frozen=True)
class AudioRecovered:
    """The sound card works again after an audio error: the error no longer applies."""


@dataclass(frozen=True)
class FrameStats:
    frame_ms: float  # time the last frame took (step + write), vs the 80 ms budget
    lag_ms: float  # how far the session runs behind real time
    input_level: float  # RMS of the last input frame, 0..1 (after push-to-talk/mute)
    output_level: float


@dataclass(frozen=True)
class SessionEnded:
    frames: int
    run: int  # which start() it ends (a restart's old run ends after the new one began)


Notify = Callable[[object], None]
FrontEndFactory = Callable[[Settings], "FrontEnd"]
# (settings, on_error, on_recover) -> (source, sink); on_error(message) reports device trouble,
# from the very first attempt to open the device on; on_recover() says it works again.
AudioFactory = Callable[[Settings, Callable[[str], None], Callable[[], None]], "tuple[AudioSource, AudioSink]"]


def _rms(frame: np.ndarray) -> float:
    return float(min(1.0, np.sqrt(np.mean(np.square(frame, dtype=np.float32))) * 4.0))


@dataclass
class MicGate:
    """What the session hears of the microphone. The GUI thread sets the switches; the
    inference thread reads them once a frame (plain attribute reads: a change applies from the
    next frame) and keeps the levels and the chime. It outlives a run: a restart keeps them."""

    listening: str = "push_to_talk"  # push_to_talk, open_mic or wake_word
    muted: bool = False
    ptt_pressed: bool = False
    wake: WakeGate | None = None  # wake_word: built on the inference thread (it loads a model)
    input_level: float = 0.0  # RMS × 4 of the last frame heard (after the gate), 0..1
    output_level: float = 0.0  # the same of the last frame played
    chime_left: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # still to play

    def hear(self, frame: np.ndarray) -> tuple[np.ndarray, ListeningNotice | None]:
        """What the session hears of one input frame, by the listening mode, and the wake-word
        gate's new state when it changes."""
        if self.muted:
            return np.zeros_like(frame), None
        if self.ptt_pressed or self.listening == "open_mic":
            return frame, None
        wake = self.wake
        if self.listening == "wake_word" and wake is not None:
            heard, changed = wake.gate(frame, self.output_level)
            if changed == "listening":
                self.chime_left = chime()
            return heard, None if changed is None else ListeningNotice("wake_word", changed, wake.word)
        return np.zeros_like(frame), None

    def mix_chime(self, frame: np.ndarray) -> np.ndarray:
        chime, n = self.chime_left, len(frame)
        if not len(chime):
            return frame
        self.chime_left = chime[n:]
        out = np.array(frame, np.float32, copy=True)
        out[: min(n, len(chime))] += chime[:n]
        return out


@dataclass
class ControlledSource:
    """Wraps the real source on the inference thread: gating, stats and queued actions."""

    inner: AudioSource
    gate: MicGate
    notify: Notify
    stop: threading.Event
    actions: queue.Queue
    index: int = field(default=0, init=False)  # frames read
    frame_ms: float = field(default=0.0, init=False)
    _t0: float | None = field(default=None, init=False)
    _step_start: float | None = field(default=None, init=False)

    def read(self) -> np.ndarray | None:
        now = time.monotonic()
        if self._step_start is not None:
            self.frame_ms = (now - self._step_start) * 1000
        while True:
            try:
                action = self.actions.get_nowait()
            except queue.Empty:
                break
            try:
                action()
            except Exception as e:
                log.exception("a queued action failed")
                self.notify(ErrorNotice.of("session", e))
        if self.stop.is_set():
            return None
        frame = self.inner.read()
        if frame is None or self.stop.is_set():
            return None
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        lag_ms = max(0.0, (now - self._t0 - self.index * FRAME_SECONDS) * 1000)
        self.index += 1
        self._step_start = now
        gate = self.gate
        frame, notice = gate.hear(frame)
        if notice is not None:
            self.notify(notice)
        gate.input_level = _rms(frame)
        self.notify(FrameStats(self.frame_ms, lag_ms, gate.input_level, gate.output_level))
        return frame


class ControlledSink:
    def __init__(self, inner: AudioSink, gate: MicGate) -> None:
        self.inner = inner
        self.gate = gate

    def write(self, frame: np.ndarray) -> None:
        self.gate.output_level = _rms(frame)
        self.inner.write(self.gate.mix_chime(frame))

    def close(self) -> None:
        self.inner.close()


class Controller:
    """Starts, runs and stops one Session at a time. All public methods are for the GUI thread
    and return at once (stop() waits for the inference thread, at most `join_timeout`)."""

    def __init__(
        self,
        settings: Settings,
        notify: Notify,
        *,
        frontend_factory: FrontEndFactory | None = None,
        audio_factory: AudioFactory | None = None,
        backend_factory: BackendFactory | None = None,
        script: Iterable[ScriptEntry] = (),
    ) -> None:
        self.settings = settings
        self.notify = notify
        self.frontend_factory = frontend_factory  # None: the one the settings describe
        self.audio_factory = audio_factory or build_audio
        self.backend_factory = backend_factory  # None: the one the settings describe
        self.script = list(script)
        self.mic = MicGate(settings.audio.listening)
        self.records: list[Stamped] = []  # this conversation's events (history, export)
        self.session: Session | None = None
        self._source: AudioSource | None = None  # the running session's, for stop() to close
        self._thread: threading.Thread | None = None
        self._previous: threading.Thread | None = None  # the run a restart's run waits for
        self.run_id = 0
        self._stop = threading.Event()  # one per run: a run that outlives stop() stays stopped
        self._actions: queue.Queue[Callable[[], None]] = queue.Queue()
        self._records_lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def listening(self) -> str:
        """The listening mode in force (push-to-talk when the wake-word model failed to load)."""
        return self.mic.listening

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop = threading.Event()
        self._actions = queue.Queue()  # actions queued for an older run die with it
        self.run_id += 1
        self._thread = threading.Thread(
            target=self._run,
            args=(self._stop, self._actions, self.run_id, self._previous),
            name="kame-inference",
            daemon=True,
        )
        self._thread.start()

    def stop(self, join_timeout: float = 0.8) -> None:
        """Stop the source, join the inference thread, stop the back-end, close the front-end."""
        self._stop.set()
        source = self._source
        if source is not None and hasattr(source, "close"):
            try:
                source.close()  # unblocks a device read
            except Exception:
                log.exception("closing the audio source failed")
        thread = self._thread or self._previous  # a second stop() still waits for the run the first stopped
        if thread is not None:
            thread.join(join_timeout)
            if thread.is_alive():
                log.warning("the inference thread did not stop within %.1f s", join_timeout)
            self._previous = thread
        self._thread = None
        self._source = None

    def restart(self, settings: Settings) -> None:
        self.stop()
        self.settings = settings
        self.mic.listening, self.mic.wake = settings.audio.listening, None
        self.start()

    def _run(self, stop: threading.Event, actions: queue.Queue, run: int, previous: threading.Thread | None) -> None:
        if previous is not None and previous.is_alive():
            previous.join(120)  # its model leaves the GPU (front-end close) before the next loads
        self.session = None  # nothing may keep the old front-end alive
        session: Session | None = None
        parts: list[Any] = []  # audio source and sink, closed at the end
        try:
            # The devices first: "no microphone" reaches the banner at once, not after the
            # models have loaded (the session still starts: the device retries by itself).
            self.notify(StatusNotice("Opening the audio device…", busy=True))
            source, sink = self.audio_factory(self.settings, self._on_audio_error, self._on_audio_recovered)
            parts = [source, sink]
            self._source = source
            if not stop.is_set():
                self.notify(StatusNotice("Loading the models…", busy=True))
                bus = EventBus()
                bus.subscribe(self._on_event)
                frontend = self.frontend_factory(self.settings) if self.frontend_factory else None
                # An injected front-end (tests) stays its owner's: the session only resets it.
                session = build_session(self.settings, bus, frontend=frontend, backend=self.backend_factory)
        except Exception as e:
            if isinstance(e, KameError):  # the user's to fix, and the message says how: no traceback
                log.warning("loading the session failed: %s", e)
            else:
                log.exception("loading the session failed")
            self.notify(ErrorNotice.of("audio" if not parts else "load", e))
            self.notify(StatusNotice("Not running"))
            self._cleanup(session, parts)
            return
        frames = 0
        try:
            if not stop.is_set():
                self.session = session
                self._load_wake()
                self.notify(StatusNotice("Ready"))
                frames = session.run(
                    ControlledSource(source, self.mic, self.notify, stop, actions), ControlledSink(sink, self.mic), self.script
                )
        except Exception as e:
            log.exception("the session failed")
            self.notify(ErrorNotice.of("session", e))
        finally:
            self._cleanup(session, parts)
            self.notify(SessionEnded(frames, run))

    def _cleanup(self, session: Session | None, parts: list[Any]) -> None:
        if session is not None:
            try:
                session.close(timeout=0.5)
            except Exception:
                log.exception("closing the session failed")
            if self.session is session:
                self.session = None  # drop it, so its models can be freed before the next load
        unique = [p for i, p in enumerate(parts) if all(p is not q for q in parts[:i])]
        for part in unique:  # a duplex device is both source and sink: close it once
            if hasattr(part, "close"):
                try:
                    part.close()
                except Exception:
                    log.exception("closing audio failed")

    def _on_audio_error(self, message: str) -> None:
        self.notify(ErrorNotice("audio", message, "device"))

    def _on_audio_recovered(self) -> None:
        self.notify(AudioRecovered())

    # --- events ---------------------------------------------------------------------------------

    def _on_event(self, stamped: Stamped) -> None:
        wake = self.mic.wake
        if wake is not None:
            wake.on_event(stamped.event)
        with self._records_lock:
            self.records.append(stamped)
        self.notify(stamped)

    def take_records(self) -> list[Stamped]:
        with self._records_lock:
            records, self.records = self.records, []
        return records

    # --- from the GUI ---------------------------------------------------------------------------

    def set_ptt(self, pressed: bool) -> None:
        self.mic.ptt_pressed = pressed

    def set_listening(self, mode: str) -> None:
        """push_to_talk, open_mic or wake_word (whose model loads on the inference thread)."""
        self.mic.listening = mode
        if mode == "wake_word" and self.running:
            self.post(self._load_wake)
        else:
            self.notify(ListeningNotice(mode))

    # --- listening (the inference thread) -------------------------------------------------------

    def _load_wake(self) -> None:
        """Load the wake-word model when the mode needs it; a missing or damaged one is said in
        one line and push-to-talk takes over."""
        mic = self.mic
        if mic.listening != "wake_word":
            self.notify(ListeningNotice(mic.listening))
            return
        audio = self.settings.audio
        if mic.wake is None or mic.wake.word != audio.wake_word:
            try:
                mic.wake = WakeGate(audio.wake_word, audio.wake_sensitivity)
            except KameError as e:
                log.warning("wake word unavailable: %s", e)
                mic.wake, mic.listening = None, "push_to_talk"
                self.notify(ErrorNotice("wake_word", f"{e} — listening with push-to-talk instead", e.kind))
                self.notify(ListeningNotice("push_to_talk"))
                return
        self.notify(ListeningNotice("wake_word", mic.wake.state, mic.wake.word))

    def set_muted(self, muted: bool) -> None:
        self.mic.muted = muted

    def post(self, action: Callable[[], None]) -> None:
        """Run `action` on the inference thread before the next frame."""
        self._actions.put(action)

    def new_conversation(self) -> list[Stamped]:
        """Reset the front-end (on the inference thread) and the back-end; returns the records of
        the conversation that ends (for history)."""
        session = self.session
        if session is not None and self.running:

            def reset() -> None:
                session.frontend.reset()
                if session.backend is not None:
                    session.backend.new_conversation()

            self.post(reset)
        return self.take_records()


def has_words(records: list[Stamped]) -> bool:
    return any(r.event.kind in ("asr_final", "assistant_token", "oracle_token", "llm_chunk") for r in records)


# --- the default audio: the sound card ------------------------------------------------------------


def build_audio(
    settings: Settings, on_error: Callable[[str], None], on_recover: Callable[[], None]
) -> tuple[AudioSource, AudioSink]:
    from kame_desktop.audio.device import DuplexAudio

    echo_canceller = None
    if settings.audio.echo_cancellation:
        try:
            from kame_desktop.audio.aec import EchoCanceller

            echo_canceller = EchoCanceller()
        except Exception as e:  # no WebRTC APM here: go on without it, and say so
            log.warning("echo cancellation unavailable (%s); use a headset", e)
    device = DuplexAudio(
        settings.audio.input_device or None,
        settings.audio.output_device or None,
        echo_canceller=echo_canceller,
        on_error=on_error,
        on_recover=on_recover,
    )
    return device, device
