"""LiteFrontEnd: speaks the back-end's answer when the user's turn ends.

While the user talks, the OracleManager already streams answers to what has been heard (its
speculation); this front-end keeps each request's text. At `TurnEnded(request=r)` it speaks r:
at once when r already has text (the final transcript added nothing material, so r is still
the right answer), else as soon as r's first words arrive. Speech is synthesized sentence by
sentence on a worker thread while the text streams in, so `step()` never waits for the TTS and
always returns one 1920-sample frame. The first clause of the newest answer is synthesized
ahead, while the user is still talking, so a reply can start in the frame the turn ends. A user
who starts speaking while it talks (its own VAD on
the input, no cross-thread delay) stops it within a frame or two: barge-in.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

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

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LONG_CLAUSE_WORDS = 14  # speak a long unpunctuated stretch at its last comma rather than wait


@dataclass
class Answer:
    text: str = ""
    done: bool = False


@dataclass
class Progress:
    """How much of one answer went to the TTS."""

    sent_chars: int = 0
    queued: int = 0  # sentences handed to the TTS
    played: int = 0  # sentences whose audio went to the output


@dataclass
class Reply:
    """The answer being spoken."""

    request: int | None
    key: tuple[int, int | None]  # (epoch, request): TTS jobs of an interrupted reply never play
    progress: Progress = field(default_factory=Progress)


_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
_FIRST_CLAUSE_WORDS = 3


def first_clause(text: str, done: bool) -> tuple[list[str], int]:
    """The opening clause of an answer (up to its first , ; : or sentence end, at least a few
    words): short, so the reply can start as soon as possible."""
    for match in _CLAUSE_END.finditer(text):
        if len(text[: match.start()].split()) >= _FIRST_CLAUSE_WORDS:
            return [text[: match.start()].strip()], match.end()
    return split_ready(text, done, limit=1)


def split_ready(text: str, done: bool, limit: int | None = None) -> tuple[list[str], int]:
    """Complete sentences at the start of `text` (at most `limit`) and how many characters they
    use; with `done`, the rest counts as a sentence too."""
    sentences, used = [], 0
    for match in _SENTENCE_END.finditer(text):
        sentences.append(text[used : match.start()].strip())
        used = match.end()
        if limit is not None and len(sentences) >= limit:
            return sentences, used
    rest = text[used:]
    if done and rest.strip():
        sentences.append(rest.strip())
        used = len(text)
    elif len(rest.split()) >= _LONG_CLAUSE_WORDS and "," in rest:
        cut = rest.rindex(",") + 1
        sentences.append(rest[:cut].strip())
        used += cut
    return [s for s in sentences if s], used


def word_schedule(sentence: str, samples: int) -> list[tuple[int, str]]:
    """When each word starts in the sentence's audio, spread by character count."""
    words = sentence.split()
    total = sum(len(w) + 1 for w in words)
    schedule, chars = [], 0
    for word in words:
        schedule.append((samples * chars // max(total, 1), " " + word))
        chars += len(word) + 1
    return schedule


class LiteFrontEnd:
    kind = "lite"

    def __init__(self, tts, *, barge_in: bool = True, vad=None) -> None:
        import soxr

        self.tts = tts
        self.model = tts.name
        self.device = "cpu"
        self.barge_in = barge_in
        self._vad = vad
        if barge_in and vad is None:
            from kame_desktop.backend.asr.vad import SileroVad

            # Only its onset matters here; the back-end's VAD ends turns.
            self._vad = SileroVad(min_silence_ms=300)
        self._resampler = soxr.ResampleStream(SAMPLE_RATE, 16_000, 1, dtype="float32")
        self._jobs: queue.Queue = queue.Queue()
        self._ready: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._synthesize_loop, name="kame-tts", daemon=True)
        self._worker.start()
        self._epoch = 0
        self.reset()

    # --- lifecycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        self.answers: dict[int | None, Answer] = {}
        self.latest: int | None = None
        self.awaiting: int | None = None
        self.awaiting_turn = False
        self.reply: Reply | None = None
        self._epoch += 1  # audio still being synthesized for the old conversation is dropped
        self._progress: dict[tuple[int, int | None], Progress] = {}  # per answer sent to the TTS
        self._done: dict[tuple[int, int | None], dict[int, tuple]] = {}  # finished TTS jobs
        self._out = np.zeros(0, dtype=np.float32)
        self._words: list[tuple[int, str]] = []  # (sample offset in _out, piece)
        self._speaking = False
        if self._vad is not None:
            self._vad.reset()

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(timeout=2)

    # --- the TTS worker ---------------------------------------------------------------------------

    def _synthesize_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            key, index, sentence = job
            if key[0] != self._epoch:
                continue  # interrupted or reset meanwhile
            try:
                audio = np.clip(self.tts.synthesize(sentence), -1.0, 1.0)
                self._ready.put((key, index, audio, word_schedule(sentence, len(audio)), None))
            except Exception as e:  # a TTS failure loses a sentence, not the conversation
                log.exception("TTS failed")
                self._ready.put((key, index, None, [], f"speech synthesis failed: {e}"))

    # --- per frame --------------------------------------------------------------------------------

    def step(self, frame: np.ndarray, signals: Sequence[Signal] = ()) -> FrameResult:
        events: list[Event] = []
        for signal in signals:
            self._apply(signal, events)
        if self.barge_in and self._speaking and self._user_started(frame):
            self._interrupt(events)
        elif self._vad is not None:
            self._user_started(frame)  # keep the VAD's state current
        if self.reply is None and self.awaiting_turn and self.answers.get(self.awaiting, Answer()).text:
            self._start_reply(self.awaiting)
        if self.reply is not None:
            self._feed_tts(self.reply.key)
        elif self.latest in self.answers:
            self._feed_tts((self._epoch, self.latest), ahead=True)
        self._collect_audio(events)
        return FrameResult(self._play(events), tuple(events))

    def _apply(self, signal: Signal, events: list[Event]) -> None:
        if isinstance(signal, OracleReset):
            if self.reply is not None and self.reply.request != signal.request:
                # The answer being spoken will get no more text (superseded): finish what it has.
                self.answers.setdefault(self.reply.request, Answer()).done = True
            self.answers[signal.request] = Answer()
            self.latest = signal.request
            if signal.request is not None:  # keep memory bounded over long sessions
                for old in [r for r in self.answers if r is not None and r < signal.request - 8]:
                    del self.answers[old]
                    self._progress.pop((self._epoch, old), None)
                    self._done.pop((self._epoch, old), None)
        elif isinstance(signal, OracleText):
            answer = self.answers.setdefault(signal.request, Answer())
            answer.text = f"{answer.text} {signal.text}" if answer.text else signal.text
        elif isinstance(signal, OracleDone):
            self.answers.setdefault(signal.request, Answer()).done = True
        elif isinstance(signal, TurnEnded):
            self.awaiting = signal.request if signal.request is not None else self.latest
            self.awaiting_turn = self.reply is None or self.reply.request != self.awaiting
        elif isinstance(signal, UserSpeechStarted) and self._speaking and self.barge_in:
            self._interrupt(events)

    def _user_started(self, frame: np.ndarray) -> bool:
        if self._vad is None:
            return False
        pcm16k = self._resampler.resample_chunk(np.ascontiguousarray(frame, dtype=np.float32))
        return any(kind == "start" for kind, _t in self._vad.process(pcm16k))

    def _start_reply(self, request: int | None) -> None:
        self.reply = Reply(request, (self._epoch, request))
        self.awaiting_turn = False

    def _feed_tts(self, key: tuple[int, int | None], ahead: bool = False) -> None:
        """Hand the answer's next ready sentences to the TTS; `ahead` (the user is still talking)
        only its first clause."""
        answer = self.answers.get(key[1], Answer())
        progress = self._progress.setdefault(key, Progress())
        if ahead and progress.queued:
            return
        rest = answer.text[progress.sent_chars :]
        sentences, used = first_clause(rest, answer.done) if not progress.queued else split_ready(rest, answer.done)
        for sentence in sentences:
            self._jobs.put((key, progress.queued, sentence))
            progress.queued += 1
        progress.sent_chars += used

    def _collect_audio(self, events: list[Event]) -> None:
        while True:
            try:
                key, index, audio, words, error = self._ready.get_nowait()
            except queue.Empty:
                break
            if key[0] == self._epoch:
                self._done.setdefault(key, {})[index] = (audio, words, error)
        if self.reply is None:
            return
        key = self.reply.key
        progress = self._progress.setdefault(key, Progress())
        done = self._done.get(key, {})
        while progress.played in done:  # sentences go out in order, whatever order they finished in
            audio, words, error = done.pop(progress.played)
            progress.played += 1
            if error:
                events.append(ErrorEvent("tts", error))
            if audio is not None and len(audio):
                base = len(self._out)
                self._out = np.concatenate([self._out, audio])
                self._words.extend((base + offset, piece) for offset, piece in words)
        answer = self.answers.get(self.reply.request, Answer())
        finished = answer.done and progress.sent_chars >= len(answer.text) and progress.played == progress.queued
        if finished and not len(self._out):
            self.reply = None
            self._progress.pop(key, None)
            self._done.pop(key, None)

    def _play(self, events: list[Event]) -> np.ndarray:
        out = np.zeros(FRAME_SIZE, dtype=np.float32)
        n = min(FRAME_SIZE, len(self._out))
        if n:
            if not self._speaking:
                self._speaking = True
                events.append(SpeechStartEvent("assistant"))
            out[:n] = self._out[:n]
            self._out = self._out[n:]
            while self._words and self._words[0][0] < FRAME_SIZE:
                events.append(AssistantTokenEvent(None, self._words.pop(0)[1]))
            self._words = [(offset - FRAME_SIZE, piece) for offset, piece in self._words]
        elif self._speaking:
            self._speaking = False
            events.append(SpeechEndEvent("assistant"))
        return out

    def _interrupt(self, events: list[Event]) -> None:
        """The user talks over the reply: stop now and listen; the reply is recorded as cut."""
        request = self.reply.request if self.reply else None
        self.reply = None
        self.awaiting_turn = False
        self._epoch += 1  # drop the rest of this reply's audio, queued or in synthesis
        self._progress.clear()
        self._done.clear()
        self._out = np.zeros(0, dtype=np.float32)
        self._words.clear()
        self._speaking = False
        events.append(BargeInEvent(request))
        events.append(SpeechEndEvent("assistant"))
