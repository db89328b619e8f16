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
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
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

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# A full stop after these ends no sentence: "J.K. Rowling", "Dr. Jones", "the U.S. Navy".
_INITIALS = re.compile(r"(?:\b[A-Za-z]\.)+$")
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "mt.", "jr.", "sr.", "prof.", "vs.", "e.g.", "i.e.",
                            "approx.", "no."})
SCAN_CHARS = 600  # answer text split per frame at most: a huge answer never stalls a frame
# The longest text one Piper call gets: its memory grows steeply with the text (600 characters
# took it from 181 MB to 1.6 GB), so a long stretch without punctuation is spoken in pieces cut
# at word boundaries; 100 characters is a sentence of ~17 words (measured: an unpunctuated
# 1,150-character answer peaked at 920 MB in 600-character calls, 280 MB in these, 195 MB for a
# two-sentence answer).
TTS_PIECE_CHARS = 100
# A sentence up to twice that goes to Piper whole (a cut mid-sentence costs its prosody), and a
# stretch with no sentence end is spoken before it ends only past three times that (~50 words:
# no ordinary sentence is that long).
WHOLE_SENTENCE_CHARS = 2 * TTS_PIECE_CHARS
UNPUNCTUATED_CHARS = 3 * TTS_PIECE_CHARS
_LONG_CLAUSE_WORDS = 14  # speak a long unpunctuated stretch at its last comma rather than wait
ECHO_SETTLE_S = 0.5
MAX_SENTENCES = 2
MAX_WORDS = 30  # the prompt's length for a spoken answer
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
    output. `reset()` and an interruption start a fresh one (and a new epoch)."""

    reply: Reply | None = None
    awaiting_turn: bool = False  # the turn ended: speak `awaiting` as soon as it has text
    progress: dict[AnswerKey, AnswerProgress] = field(default_factory=dict)  # per answer sent to the TTS
    done: dict[AnswerKey, dict[int, Synthesized]] = field(default_factory=dict)  # finished TTS jobs
    out: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    words: list[tuple[int, str]] = field(default_factory=list)  # (sample offset in `out`, piece)
    speaking: bool = False


_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
_FIRST_CLAUSE_WORDS = 3
# A long first sentence with no comma yet is cut before a word that starts a phrase, once it has
# this many words: the reply's first sound then waits for a few words, not the whole sentence
# (generating and synthesizing "…during the day because of the way sunlight scatters." costs
# 300-800 ms more here). Short sentences ("Paris is the capital of France.") stay whole.
_FIRST_PHRASE_WORDS = 5
# …and one with no phrase word either ("Mount Everest is approximately 8,848 meters (29,029 feet)
# tall.": a 1.3 s synthesis before any sound) at its first _FIRST_PHRASE_WORDS words, once it has
# _FIRST_MAX_WORDS.
_FIRST_MAX_WORDS = 9
_PHRASE_STARTS = frozenset({"because", "and", "but", "so", "which", "that", "when", "where", "while", "who",
                            "with", "in", "on", "at", "for", "from", "by", "of", "to", "as", "or", "than"})


def sentence_ends(text: str) -> Iterator[re.Match[str]]:
    """The gaps after the sentences of `text` (a match spans the whitespace), abbreviations and
    initials excepted."""
    for match in _SENTENCE_END.finditer(text):
        before = text[: match.start()]
        word = before[before.rfind(" ") + 1 :]
        if before.endswith(".") and (_INITIALS.search(word) or word.lower() in _ABBREVIATIONS):
            continue
        yield match


def first_clause(text: str, done: bool) -> tuple[list[str], int]:
    """The opening clause of an answer (up to its first , ; : or sentence end, at least a few
    words, or of a long sentence its first phrase or first words): short, so the reply can start
    as soon as possible."""
    for match in _CLAUSE_END.finditer(text):
        if len(text[: match.start()].split()) >= _FIRST_CLAUSE_WORDS:
            return [text[: match.start()].strip()], match.end()
    sentences, used = split_ready(text, done, limit=1)
    if sentences:
        return sentences, used
    words = list(re.finditer(r"\S+", text))
    for word in words[_FIRST_PHRASE_WORDS:-1]:  # the last may still grow ("a" → "and")
        if word.group().lower() in _PHRASE_STARTS:
            return [text[: word.start()].strip()], word.start()
    if len(words) > _FIRST_MAX_WORDS:  # the last may still grow
        cut = words[_FIRST_PHRASE_WORDS].start()
        return [text[:cut].strip()], cut
    return [], 0


def spoken_length(text: str) -> int | None:
    """Where the spoken part of a streaming answer ends, once that is known: after its second
    sentence, or after its first when the second would take it past MAX_WORDS (the first is
    always spoken whole). None: not known yet, keep all of it."""
    ends = [m.start() for m in islice(sentence_ends(text), MAX_SENTENCES)]
    if not ends:
        return None
    if len(ends) == MAX_SENTENCES and len(text[: ends[1]].split()) <= MAX_WORDS:
        return ends[1]
    if len(ends) == MAX_SENTENCES or len(text.split()) > MAX_WORDS:
        return ends[0]
    return None


def split_ready(text: str, done: bool, limit: int | None = None) -> tuple[list[str], int]:
    """Complete sentences at the start of `text` (at most `limit`) and how many characters they
    use; with `done`, the rest counts as a sentence too."""
    sentences, used = [], 0
    for match in sentence_ends(text):
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


def tts_pieces(sentence: str, limit: int | None = None) -> list[str]:
    """`sentence` in pieces of at most `limit` (TTS_PIECE_CHARS) characters, of about even
    length, cut at word boundaries (at a comma where one is in the second half of a piece); a
    single word longer than `limit` is cut inside it."""
    limit = limit or TTS_PIECE_CHARS
    pieces, rest = [], sentence.strip()
    while len(rest) > limit:
        share = -(-len(rest) // -(-len(rest) // limit))  # an even share: no stub of a last piece
        reach = rest[: share + 1]
        cut = reach.rfind(", ") + 1
        if cut <= share // 2:
            cut = reach.rfind(" ")
        if cut <= 0:
            cut = share
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    return [*pieces, rest] if rest else pieces


def _newer(request: int | None, than: int | None) -> bool:
    return request is not None and than is not None and request > than


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
        self._epoch = 0
        self._settle_frames = round(echo_settle_s * SAMPLE_RATE / FRAME_SIZE)  # of the first reply
        self.reset()

    # --- lifecycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        self.answers: dict[int | None, Answer] = {}
        self.latest: int | None = None
        self.awaiting: int | None = None
        self._epoch += 1  # audio still being synthesized for the old conversation is dropped
        self.play = Playback()
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
        if self.play.speaking and self._echo_settling():
            started = False
        if self.barge_in and self.play.speaking and started:
            self._interrupt(events)
        play = self.play
        if play.reply is None and play.awaiting_turn and self._has_text(self.awaiting):
            self._start_reply(self.awaiting)
        if play.reply is not None:
            self._feed_tts(play.reply.key)
        elif self.latest in self.answers:
            self._feed_tts((self._epoch, self.latest), ahead=True)
        self._collect_audio(events)
        return FrameResult(self._play(events), tuple(events))

    def _apply(self, signal: Signal, events: list[Event]) -> None:
        play = self.play
        if isinstance(signal, OracleReset):
            if play.reply is not None and play.reply.request != signal.request:
                # The answer being spoken will get no more text (superseded): finish what it has.
                self.answers.setdefault(play.reply.request, Answer()).done = True
            self.answers[signal.request] = Answer()
            self.latest = signal.request
            if play.awaiting_turn and _newer(signal.request, self.awaiting) and not self._has_text(self.awaiting):
                # The turn ended before its last words were recognized, and this request has
                # them: the one awaited (asked with fewer words) will never be spoken.
                self.awaiting = signal.request
            if signal.request is not None:  # keep memory bounded over long sessions
                for old in [r for r in self.answers if r is not None and r < signal.request - 8]:
                    del self.answers[old]
                    play.progress.pop((self._epoch, old), None)
                    play.done.pop((self._epoch, old), None)
        elif isinstance(signal, OracleText):
            answer = self.answers.setdefault(signal.request, Answer())
            if answer.done:
                return  # capped at what a reply says (or finished): the rest is not spoken
            answer.text = f"{answer.text} {signal.text}" if answer.text else signal.text
            if (cut := spoken_length(answer.text)) is not None:
                answer.text, answer.done = answer.text[:cut], True
        elif isinstance(signal, OracleDone):
            self.answers.setdefault(signal.request, Answer()).done = True
        elif isinstance(signal, TurnEnded):
            self.awaiting = signal.request if signal.request is not None else self.latest
            play.awaiting_turn = play.reply is None or play.reply.request != self.awaiting
        elif isinstance(signal, UserSpeechStarted):
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
        return bool(self.answers.get(request, Answer()).text)

    def _echo_settling(self) -> bool:
        """Counts down the first reply's settle window (once per frame spoken); True inside it."""
        if not self._settle_frames:
            return False
        self._settle_frames -= 1
        if not self._settle_frames and self._vad is not None:
            self._vad.reset()  # what it heard was the echo: onsets from here on are the user's
        return True

    def _start_reply(self, request: int | None) -> None:
        self.play.reply = Reply(request, (self._epoch, request))
        self.play.awaiting_turn = False

    def _feed_tts(self, key: AnswerKey, ahead: bool = False) -> None:
        """Hand the answer's next ready sentences to the TTS; `ahead` (the user is still talking)
        only its first clause. Bounded work per frame: nothing when no text came since the last
        scan, else one window of at most SCAN_CHARS unsent characters."""
        answer = self.answers.get(key[1], Answer())
        progress = self.play.progress.setdefault(key, AnswerProgress())
        state = (len(answer.text), answer.done)
        if (ahead and progress.queued) or progress.scanned == state:
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
        progress.scanned = state if whole and not (opening and sentences) else None

    def _collect_audio(self, events: list[Event]) -> None:
        play = self.play
        while True:
            try:
                result: Synthesized = self._ready.get_nowait()
            except queue.Empty:
                break
            if result.key[0] == self._epoch:
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
        answer = self.answers.get(play.reply.request, Answer())
        finished = answer.done and progress.sent_chars >= len(answer.text) and progress.played == progress.queued
        if finished and not len(play.out):
            play.reply = None
            play.progress.pop(key, None)
            play.done.pop(key, None)

    def _play(self, events: list[Event]) -> np.ndarray:
        play = self.play
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
        request = self.play.reply.request if self.play.reply else None
        self._epoch += 1  # drop the rest of this reply's audio, queued or in synthesis
        self.play = Playback()
        events.append(BargeInEvent(request))
        events.append(SpeechEndEvent("assistant"))
