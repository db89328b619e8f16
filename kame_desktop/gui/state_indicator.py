"""The companion's state at a glance — loading, listening, hearing you, thinking, speaking, muted,
or not listening (and why) — a large coloured pill driven only by the session's events and the
controller's notices."""

from __future__ import annotations

from typing import Literal

from PySide6.QtWidgets import QLabel, QWidget

from kame_desktop.audio.wake_word import PHRASES
from kame_desktop.controller import AudioRecovered, ErrorNotice, SessionEnded, StatusNotice
from kame_desktop.events import ErrorEvent, SpeechEndEvent, SpeechStartEvent, Stamped, TurnEndEvent
from kame_desktop.listening import ListeningNotice

State = Literal["loading", "waiting", "listening", "hearing", "thinking", "speaking", "muted", "error", "stopped"]

# state -> (text, background colour)
LOOK: dict[str, tuple[str, str]] = {
    "loading": ("Loading…", "#9e9e9e"),
    "waiting": ("Waiting for the wake word", "#00695c"),  # the text names the word (on_notice)
    "listening": ("Listening", "#2e7d32"),
    "hearing": ("Hearing you", "#1565c0"),
    "thinking": ("Thinking…", "#ef6c00"),
    "speaking": ("Speaking", "#6a1b9a"),
    "muted": ("Muted", "#616161"),
    "error": ("Not listening", "#c62828"),
    "stopped": ("Stopped", "#9e9e9e"),
}


MIC_PROBLEM = "the microphone or speaker"


class StateIndicator(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stateIndicator")
        self.conversation: State = "loading"  # what the conversation is doing
        self.problem: str | None = None  # why the companion cannot listen (audio, loading)
        self.muted = False
        self.wake_word: str | None = None  # wake-word mode: the word it waits for
        # One style sheet, a rule per state: a state change only switches the `state` property.
        rules = "".join(f'#stateIndicator[state="{s}"] {{ background: {colour}; }}' for s, (_t, colour) in LOOK.items())
        self.setStyleSheet(
            "#stateIndicator { color: white; font-size: 16pt; font-weight: bold; border-radius: 14px;"
            " padding: 6px 18px; }" + rules
        )
        self._render()

    @property
    def state(self) -> State:
        if self.problem is not None:
            return "error"
        if self.muted and self.conversation not in ("loading", "stopped"):
            return "muted"
        return self.conversation

    def set_muted(self, muted: bool) -> None:
        self.muted = muted
        self._render()

    def on_notice(self, obj: object) -> None:
        match obj:
            case StatusNotice(text=text, busy=True):
                if text.startswith("Opening the audio"):  # a new run: old problems are gone
                    self.problem = None
                self.conversation = "loading"
            case StatusNotice(text="Ready"):
                self.conversation = "waiting" if self.wake_word else "listening"
            case ListeningNotice(mode="wake_word", state=state, wake_word=word):
                self.wake_word = word
                if self.conversation not in ("loading", "stopped"):
                    self.conversation = state or "waiting"  # the chime and this say it listens now
            case ListeningNotice():
                self.wake_word = None
                if self.conversation == "waiting":
                    self.conversation = "listening"
            case ErrorNotice(source="audio" | "load" as source, message=message):
                self.problem = MIC_PROBLEM if source == "audio" else "the session did not start"
                self.setToolTip(message)
            case AudioRecovered() if self.problem == MIC_PROBLEM:
                self.problem = None
            case SessionEnded():
                self.conversation = "stopped"
            case Stamped(event=SpeechStartEvent(source="user")):
                self.conversation = "hearing"
            case Stamped(event=TurnEndEvent()):
                self.conversation = "thinking"
            case Stamped(event=SpeechStartEvent(source="assistant")):
                self.conversation = "speaking"
            case Stamped(event=SpeechEndEvent(source="assistant")) if self.conversation != "waiting":
                self.conversation = "listening"
            case Stamped(event=ErrorEvent(source="llm")) if self.conversation == "thinking":
                self.conversation = "listening"  # no answer is coming: the banner says why
            case _:
                return
        self._render()

    def _render(self) -> None:
        state = self.state
        text = LOOK[state][0]
        if state == "waiting" and self.wake_word:
            text = f"Say “{PHRASES.get(self.wake_word, self.wake_word)}”"
        self.setText(f"Not listening — {self.problem}" if state == "error" else text)
        if self.property("state") != state:
            self.setProperty("state", state)
            self.style().unpolish(self)
            self.style().polish(self)
