"""LiteFrontEnd: speaks the back-end's answer when the user's turn ends.

While the user talks, the OracleManager already streams answers to what has been heard (its
speculation); this front-end keeps each request's text. At `TurnEnded(request=r)` it speaks r:
at once when r already has text (the final transcript added nothing material, so r is still
the right answer), else as soon as r's first words arrive. Speech is synthesized sentence by
sentence on a worker thread while the text streams in, so `step()` never waits for the TTS and
always returns one 1920-sample frame. The first clause of the newest answer is synthesized
ahead, while the user is still talking, so a reply can start in the frame the turn ends, and a
sentence synthesized for an earlier answer is not synthesized again (the answer asked again with
the final words often opens as the speculative one did). Only what fits a spoken reply is kept
of an answer: at most two sentences, and a second one only if the two stay within ~30 words
(`spoken_length`), so it never trails off mid-sentence. A user who starts speaking while it
talks (its own VAD on the input, no cross-thread delay) stops it within a frame or two:
barge-in; one who goes on talking after the turn ended, before the reply made a sound, gets no
reply until the back-end ends the turn again (it never starts talking over the user). Except in
the first `ECHO_SETTLE_S` of the session's first reply: on open mic the echo canceller has heard
no far-end speech yet and needs ~0.3 s of it to converge (silence does not train it), so what
the VAD hears then is mostly the companion's own echo; those onsets are ignored, and the VAD
starts afresh after it, so a user who really is talking interrupts a few frames later.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from kame_desktop.events import (
    FRAME_SIZE,
    SAMPLE_RATE,
    AssistantTokenEvent,
    BargeInEvent,
    ErrorEvent,
    Event,
    OracleDone,
    OracleReset,
    OracleText,
    Signal,
    SpeechEndEvent,
    SpeechStartEvent,
    TurnEnded,
    UserSpeechStarted,
)
from kame_desktop.frontend.base import FrameResult
from kame_desktop.frontend.lite.sentences import (
    TTS_PIECE_CHARS,
    first_clause,
    split_ready,
    spoken_length,
    tts_pieces,
    word_schedule,
)

log = logging.getLogger(__name__)

SCAN_CHARS = 600  # answer text split per frame at most: a huge answer never stalls a frame
# A sentence up to twice TTS_PIECE_CHARS (the longest text one Piper call gets) goes to Piper
# whole (a cut mid-sentence costs its prosody), and a stretch with no sentence end is spoken
# before it ends only past three times that (~50 words: no ordinary sentence is that long).
WHOLE_SENTENCE_CHARS = 2 * TTS_PIECE_CHARS
UNPUNCTUATED_CHARS = 3 * TTS_PIECE_CHARS
ECHO_SETTLE_S = 0.5
VOICED_SENTENCES = 16  # synthesized sentences kept for reuse (a few MB)


@dataclass
class Answer:
    text: str = ""
    done: bool = False


AnswerKey = tuple[int, int | None]  # (epoch, request): TTS jobs of an interrupted reply never play


@dataclass
class AnswerProgress:
    """How much of one answer went to the TTS."""

    sent_chars: int = 0
    scanned: tuple[int, bool] | None = None  # (text length, done) at the last scan that saw it all
    queued: int = 0  # sentences handed to the TTS
    played: int = 0  # sentences whose audio went to the output


@dataclass
class Reply:
    """The answer being spoken."""

    request: int | None
    key: AnswerKey


class Synthesized(NamedTuple):
    """One sentence back from the TTS worker."""

    key: AnswerKey
    index: int  # the sentence's place in its answer
    audio: np.ndarray | None  # None: synthesis failed
    words: list[tuple[int, str]]  # (sample offset in `audio`, piece)
    error: str | None = None


@dataclass
class Playback:
    """Everything about speaking: the reply, the TTS bookkeeping and the audio queued for the
    output. `reset()` and an interruption start a fresh one, with the next epoch."""

    epoch: int = 0  # TTS jobs keyed with an older one (an interrupted reply's) are dropped
    reply: Reply | None = None
    awaiting_turn: bool = False  # the turn ended: speak `awaiting` as soon as it has text
    progress: dict[AnswerKey, AnswerProgress] = field(default_factory=dict)  # per answer sent to the TTS
    done: dict[AnswerKey, dict[int, Synthesized]] = field(default_factory=dict)  # finished TTS jobs
    out: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    words: list[tuple[int, str]] = field(default_factory=list)  # (sample offset in `out`, piece)
    speaking: bool = False


@dataclass
class LiteState:
    """One conversation's state in the front-end: `reset()` replaces it whole (as moshi's
    `_LMGenState`); a barge-in replaces only its playback (the answers stay)."""

    answers: dict[int | None, Answer] = field(default_factory=dict)  # by request
    latest: int | None = None  # the newest request: its first clause is synthesized ahead
    awaiting: int | None = None  # the request the turn's end named: the one to speak
    play: Playback = field(default_factory=Playback)


def _newer(request: int | None, than: int | None) -> bool:
    return request is not None and than is not None and request > than


class LiteFrontEnd:
    kind = "lite"

    def __init__(self, tts, *, barge_in: bool = True, vad=None, echo_settle_s: float = ECHO_SETTLE_S) -> None:
        import soxr

        self.tts = tts
        self.model = tts.name
        self.device = "cpu"
        self.barge_in = barge_in
        self._vad = vad
        if barge_in and vad is None:
            from kame_desktop.audio.vad import SileroVad

            # Only its onset matters here; the back-end's VAD ends turns.
            self._vad = SileroVad(min_silence_ms=300)
        self._resampler = soxr.ResampleStream(SAMPLE_RATE, 16_000, 1, dtype="float32")
        self._jobs: queue.Queue = queue.Queue()
        # The sentences spoken last, by text (only the TTS thread touches it): an answer asked
        # again with the final words often opens as the speculative one did, and its first
        # sentence then costs no second synthesis on the critical path.
        self._voiced: OrderedDict[str, np.ndarray] = OrderedDict()
        self._ready: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._synthesize_loop, name="kame-tts", daemon=True)
        self._worker.start()
        # Of the first reply of the front-end's life, not of each conversation: the echo
        # canceller stays converged across a reset.
        self._settle_frames = round(echo_settle_s * SAMPLE_RATE / FRAME_SIZE)
        self.state = LiteState()
        self.reset()

    # --- lifecycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        # A new epoch: audio still being synthesized for the old conversation is dropped.
        self.state = LiteState(play=Playback(epoch=self.state.play.epoch + 1))
        if self._vad is not None:
            self._vad.reset()

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(timeout=2)

    # --- the TTS worker ---------------------------------------------------------------------------

    def _synthesize_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            key, index, sentence = job
            if key[0] != self.state.play.epoch:
                continue  # interrupted or reset meanwhile
            try:
                audio = self._voiced.pop(sentence, None)
                if audio is None:
                    audio = np.clip(self.tts.synthesize(sentence), -1.0, 1.0)
                self._voiced[sentence] = audio  # the newest last
                if len(self._voiced) > VOICED_SENTENCES:
                    self._voiced.popitem(last=False)
                self._ready.put(Synthesized(key, index, audio, word_schedule(sentence, len(audio))))
            except Exception as e:  # a TTS failure loses a sentence, not the conversation
                log.exception("TTS failed")
                self._ready.put(Synthesized(key, index, None, [], f"speech synthesis failed: {e}"))

    # --- per frame --------------------------------------------------------------------------------

    def step(self, frame: np.ndarray, signals: Sequence[Signal] = ()) -> FrameResult:
        events: list[Event] = []
        for signal in signals:
            self._apply(signal, events)
        started = self._user_started(frame)  # also keeps the VAD's state current
        if self.state.play.speaking and self._echo_settling():
            started = False
        if self.barge_in and self.state.play.speaking and started:
            self._interrupt(events)
        state = self.state
        play = state.play
        if play.reply is None and play.awaiting_turn and self._has_text(state.awaiting):
            self._start_reply(state.awaiting)
        if play.reply is not None:
            self._feed_tts(play.reply.key)
        elif state.latest in state.answers:
            self._feed_tts((play.epoch, state.latest), ahead=True)
        self._collect_audio(events)
        return FrameResult(self._play(events), tuple(events))

    def _apply(self, signal: Signal, events: list[Event]) -> None:
        match signal:
            case OracleReset():
                self._on_reset(signal.request)
            case OracleText():
                self._on_text(signal)
            case OracleDone():
                self._answer(signal.request).done = True
            case TurnEnded():
                self._on_turn_end(signal.request)
            case UserSpeechStarted():
                self._on_user_speech(events)

    def _answer(self, request: int | None) -> Answer:
        return self.state.answers.setdefault(request, Answer())

    def _on_reset(self, request: int | None) -> None:
        state = self.state
        play = state.play
        if play.reply is not None and play.reply.request != request:
            # The answer being spoken will get no more text (superseded): finish what it has.
            self._answer(play.reply.request).done = True
        state.answers[request] = Answer()
        state.latest = request
        if play.awaiting_turn and _newer(request, state.awaiting) and not self._has_text(state.awaiting):
            # The turn ended before its last words were recognized, and this request has
            # them: the one awaited (asked with fewer words) will never be spoken.
            state.awaiting = request
        if request is not None:  # keep memory bounded over long sessions
            for old in [r for r in state.answers if r is not None and r < request - 8]:
                del state.answers[old]
                play.progress.pop((play.epoch, old), None)
                play.done.pop((play.epoch, old), None)

    def _on_text(self, signal: OracleText) -> None:
        answer = self._answer(signal.request)
        if answer.done:
            return  # capped at what a reply says (or finished): the rest is not spoken
        answer.text = f"{answer.text} {signal.text}" if answer.text else signal.text
        if (cut := spoken_length(answer.text)) is not None:
            answer.text, answer.done = answer.text[:cut], True

    def _on_turn_end(self, request: int | None) -> None:
        state = self.state
        state.awaiting = request if request is not None else state.latest
        state.play.awaiting_turn = state.play.reply is None or state.play.reply.request != state.awaiting

    def _on_user_speech(self, events: list[Event]) -> None:
        play = self.state.play
        if play.speaking:
            if self.barge_in and not self._settle_frames:
                self._interrupt(events)
        elif play.awaiting_turn or play.reply is not None:
            # The user went on talking after the turn ended and before the reply made a
            # sound (a pause the detector took for the end): the turn is open again, and
            # the back-end ends it anew. Nothing was said, so nothing is cut.
            play.awaiting_turn, play.reply = False, None

    def _user_started(self, frame: np.ndarray) -> bool:
        if self._vad is None:
            return False
        pcm16k = self._resampler.resample_chunk(np.ascontiguousarray(frame, dtype=np.float32))
        return any(kind == "start" for kind, _t in self._vad.process(pcm16k))

    def _has_text(self, request: int | None) -> bool:
        return bool(self.state.answers.get(request, Answer()).text)

    def _echo_settling(self) -> bool:
        """Counts down the first reply's settle window (once per frame spoken); True inside it."""
        if not self._settle_frames:
            return False
        self._settle_frames -= 1
        if not self._settle_frames and self._vad is not None:
            self._vad.reset()  # what it heard was the echo: onsets from here on are the user's
        return True

    def _start_reply(self, request: int | None) -> None:
        play = self.state.play
        play.reply = Reply(request, (play.epoch, request))
        play.awaiting_turn = False

    def _feed_tts(self, key: AnswerKey, ahead: bool = False) -> None:
        """Hand the answer's next ready sentences to the TTS; `ahead` (the user is still talking)
        only its first clause. Bounded work per frame: nothing when no text came since the last
        scan, else one window of at most SCAN_CHARS unsent characters."""
        answer = self.state.answers.get(key[1], Answer())
        progress = self.state.play.progress.setdefault(key, AnswerProgress())
        seen = (len(answer.text), answer.done)
        if (ahead and progress.queued) or progress.scanned == seen:
            return
        start = progress.sent_chars
        rest = answer.text[start : start + SCAN_CHARS]
        whole = start + SCAN_CHARS >= len(answer.text)  # the window reaches the end of the text
        done = answer.done and whole
        opening = not progress.queued
        sentences, used = first_clause(rest, done) if opening else split_ready(rest, done)
        if not sentences and len(rest) > UNPUNCTUATED_CHARS:
            # A long stretch with nowhere to cut (no punctuation): speak its whole words now, in
            # pieces the TTS takes without a memory spike, rather than wait for the window to fill.
            # (The text after the last space may be a word still growing: it waits, unless the
            # window is full.)
            used = rest.rfind(" ") + 1 or (0 if whole else len(rest))
            sentences = [rest[:used].strip()] if used else []
        for sentence in sentences:
            for piece in tts_pieces(sentence) if len(sentence) > WHOLE_SENTENCE_CHARS else [sentence]:
                self._jobs.put((key, progress.queued, piece))
                progress.queued += 1
        progress.sent_chars += used
        # All of the text seen: wait for more. Else the next window goes next frame; and the
        # opening clause leaves the rest for the next scan (when the reply starts, if spoken ahead).
        progress.scanned = seen if whole and not (opening and sentences) else None

    def _collect_audio(self, events: list[Event]) -> None:
        play = self.state.play
        while True:
            try:
                result: Synthesized = self._ready.get_nowait()
            except queue.Empty:
                break
            if result.key[0] == play.epoch:
                play.done.setdefault(result.key, {})[result.index] = result
        if play.reply is None:
            return
        key = play.reply.key
        progress = play.progress.setdefault(key, AnswerProgress())
        done = play.done.get(key, {})
        while progress.played in done:  # sentences go out in order, whatever order they finished in
            result = done.pop(progress.played)
            progress.played += 1
            if result.error:
                events.append(ErrorEvent("tts", result.error))
            if result.audio is not None and len(result.audio):
                base = len(play.out)
                play.out = np.concatenate([play.out, result.audio])
                play.words.extend((base + offset, piece) for offset, piece in result.words)
        answer = self.state.answers.get(play.reply.request, Answer())
        finished = answer.done and progress.sent_chars >= len(answer.text) and progress.played == progress.queued
        if finished and not len(play.out):
            play.reply = None
            play.progress.pop(key, None)
            play.done.pop(key, None)

    def _play(self, events: list[Event]) -> np.ndarray:
        play = self.state.play
        out = np.zeros(FRAME_SIZE, dtype=np.float32)
        n = min(FRAME_SIZE, len(play.out))
        if n:
            if not play.speaking:
                play.speaking = True
                events.append(SpeechStartEvent("assistant"))
            out[:n] = play.out[:n]
            play.out = play.out[n:]
            while play.words and play.words[0][0] < FRAME_SIZE:
                events.append(AssistantTokenEvent(None, play.words.pop(0)[1]))
            play.words = [(offset - FRAME_SIZE, piece) for offset, piece in play.words]
        elif play.speaking:
            play.speaking = False
            events.append(SpeechEndEvent("assistant"))
        return out

    def _interrupt(self, events: list[Event]) -> None:
        """The user talks over the reply: stop now and listen; the reply is recorded as cut."""
        play = self.state.play
        request = play.reply.request if play.reply else None
        # The next epoch: the rest of this reply's audio, queued or in synthesis, is dropped.
        self.state.play = Playback(epoch=play.epoch + 1)
        events.append(BargeInEvent(request))
        events.append(SpeechEndEvent("assistant"))
