"""When the user's turn is over: the back-end's turn detector, on its own path beside the ASR.

It is fed the same audio as the recognizer (24 kHz, the session clock) but runs only a Silero VAD
and, for `smart`, Smart Turn v3.2, so a recognition pass never delays the decision. It emits the
user's `SpeechStartEvent`, `SpeechEndEvent` and `TurnEndEvent("vad", turn_detection, probability)`.

- `silence`: the turn ends after `TURN_HANGOVER_MS` of silence (a fixed hang-over).
- `smart`: at the VAD's first silent chunk of each pause the model reads the turn's speech;
  complete (probability ≥ `SMART_THRESHOLD`) ends the turn once the pause has lasted
  `CONFIRM_MS` (`SHORT_CONFIRM_MS` after very little speech), else the turn waits for more
  speech, and `MAX_SILENCE_MS` of silence ends it whatever was said (a fallback, recorded
  with the probability, below the threshold). The model is asked once per pause, not again as
  the silence grows: it reads the speech without its trailing silence (audio/smart_turn.py), so
  a second look would see the same audio, and with the silence left in it called 15 of 16
  questions cut before their last word finished within 0.9 s, i.e. it would cut off a
  mid-sentence pause. The check comes at the first silent chunk because the VAD itself hears
  silence only 0.1–0.2 s after the last word.

Every decision is made on the audio clock (silence counted in samples), so it is the same on any
machine; only the events' arrival in the session depends on the model's speed.
"""

from __future__ import annotations

import functools

import numpy as np

from kame_desktop.audio.smart_turn import WINDOW_S, SmartTurn
from kame_desktop.audio.vad import SAMPLE_RATE as RATE
from kame_desktop.audio.vad import TURN_HANGOVER_MS, SileroVad
from kame_desktop.choices import TURN_DETECTIONS, check_choice
from kame_desktop.events import SAMPLE_RATE, Event, SpeechEndEvent, SpeechStartEvent, TurnEndEvent

SMART_THRESHOLD = 0.5  # Smart Turn's own decision point
CONFIRM_MS = 96  # a "complete" turn still ends only if the pause lasts this long (see feed)
SHORT_SPEECH_MS = 600  # ...and after less speech than this ("Which", "What"), this long:
SHORT_CONFIRM_MS = 250
MAX_SILENCE_MS = 1000  # nobody is left waiting longer than this
PREROLL_S = 0.5  # audio before the VAD's start that the model sees (as pipecat gives it)


@functools.cache
def shared_smart_turn() -> SmartTurn:
    """One loaded model per process (sessions come and go; loading takes a second)."""
    return SmartTurn()


class TurnDetector:
    """`feed(pcm, t_end)` → the user's speech and turn events in this chunk of audio."""

    def __init__(self, mode: str = "smart", *, vad: SileroVad | None = None, model: SmartTurn | None = None) -> None:
        import soxr

        self.mode = check_choice(mode, TURN_DETECTIONS, "turn detection")
        smart = mode == "smart"
        self._soxr = soxr
        self.vad = vad or SileroVad(min_silence_ms=MAX_SILENCE_MS if smart else TURN_HANGOVER_MS)
        self.model = (model or shared_smart_turn()) if smart else None
        self.reset()

    def reset(self) -> None:
        self._resampler = self._soxr.ResampleStream(SAMPLE_RATE, RATE, 1, dtype="float32")
        self.vad.reset()
        self._audio = np.zeros(0, np.float32)  # the turn's audio (with pre-roll), at most WINDOW_S
        self.in_turn = False
        self._checked = False  # the model has judged this pause
        self._complete = False  # ... and called the turn complete
        self._confirm = 0  # samples of pause that confirm it
        self._speech_from = 0.0  # VAD-clock seconds where the turn's speech began
        self.probability: float | None = None  # the last check's answer in this turn
        self.speech_end_t = 0.0  # session time where the speech of this turn (so far) ends

    def feed(self, pcm: np.ndarray, t_end: float) -> list[Event]:
        x = self._resampler.resample_chunk(np.asarray(pcm, np.float32).reshape(-1))
        keep = WINDOW_S * RATE if self.in_turn else round(PREROLL_S * RATE)
        self._audio = np.concatenate([self._audio, x])[-keep:]
        events: list[Event] = []
        for kind, t_vad in self.vad.process(x):
            if kind == "start" and not self.in_turn:
                self.in_turn = True
                self._speech_from = t_vad
                self.probability = None
                events.append(SpeechStartEvent("user"))
            elif kind == "end" and self.in_turn:  # the hang-over, or smart's maximum silence
                events += self._end_turn()
        if self.in_turn:  # now while speaking; in a pause, where the VAD heard it begin
            pause = self.vad.silence_start
            self.speech_end_t = t_end if pause is None else t_end - (self.vad.received - pause) / RATE
        silence = self.vad.silence_samples
        if not silence:
            self._checked = self._complete = False  # speaking (again): the next pause is judged afresh
        elif self.model is not None and self.in_turn and not self._checked:
            self._checked = True
            self.probability = round(self.model.probability(self._audio), 3)
            self._complete = self.probability >= SMART_THRESHOLD
            short = self.vad.silence_start / RATE - self._speech_from < SHORT_SPEECH_MS / 1000
            self._confirm = (SHORT_CONFIRM_MS if short else CONFIRM_MS) * RATE // 1000
        # The model reads the pause at its first silent chunk, but "complete" ends the turn only
        # once the pause has lasted CONFIRM_MS: a stop consonant or a breath inside a question
        # ("What part of the body | pumps blood?") is a VAD pause of less than that, and Smart
        # Turn called such fragments complete. Live, the check itself takes longer than the
        # window, so the audio that confirms it is usually queued by the time it returns. After
        # a word or two the model is least sure (it called "Which" and "What" complete at 0.97
        # and 0.87 between a question's first words): there the pause must be longer.
        if self._complete and self.in_turn and silence >= self._confirm:
            self.vad.end_speech()
            events += self._end_turn()
        return events

    def flush(self) -> list[Event]:
        """The audio ended (push-to-talk released, file over): whoever ended it announces the turn."""
        events: list[Event] = [SpeechEndEvent("user")] if self.in_turn else []
        self.reset()
        return events

    def _end_turn(self) -> list[Event]:
        self.in_turn = False
        self._checked = self._complete = False
        self._audio = self._audio[-round(PREROLL_S * RATE) :]
        return [SpeechEndEvent("user"), TurnEndEvent("vad", self.mode, self.probability)]
