"""Streaming ASR with faster-whisper: a growing window per utterance.

While the VAD hears the user, the utterance's audio (16 kHz, from the last trim point) is
re-transcribed every `partial_interval` seconds of new audio, or every `last decode time` when
decoding is slower than that, so a slow CPU stays near real time instead of falling behind.
Each pass's words are the partial. When the turn ends (or the VAD's hang-over ends the speech),
the last pass over the whole utterance commits its words as `AsrFinalEvent`, then
`SpeechEndEvent("user")` and `TurnEndEvent("vad")` follow. Only an utterance longer than
`trim_s` commits earlier, the words on which two consecutive passes agree (LocalAgreement-2):
it is trimmed at the last committed word (committed text becomes the prompt) and forced to
commit at `max_utterance_s`, so memory and decode cost stay bounded.

The *pause pass*: at the VAD's first silent chunk, the utterance so far is decoded at once (not
at the next interval), and its partial is marked `pause`: the words the answer is asked with
(the OracleManager asks at once), and the final words if the turn ends in this pause.

Two models (`model="auto"` for English): a cheap one for the passes while the user talks (the
partials speculation re-asks on) and a first pause pass, and an accurate one right after it
(the next chunk), and for the last pass, over the whole utterance: its words are the final
ones, and they are asked again only where they differ. At the pause the accurate one first
scores the cheap one's words (one teacher-forced step: `CHECK_MIN_PROB`) and takes them when it
finds each likely; only otherwise does it decode, searching `ACCURATE_BEAM` beams. Every other
pass is greedy.

The model loads in the constructor (seconds; the back-end worker builds providers off the GUI
thread), so a missing model fails early rather than at the first word.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kame_desktop.audio.vad import SileroVad
from kame_desktop.backend.asr.base import SegmentingAsr
from kame_desktop.backend.asr.whisper_tokens import tokenize
from kame_desktop.backend.cores import PauseCores
from kame_desktop.errors import DeviceError, ModelFileError
from kame_desktop.events import AsrFinalEvent, AsrPartialEvent, Event, Word

log = logging.getLogger(__name__)

SR = SegmentingAsr.RATE
EMBEDDED_WHISPER = ("base", "tiny.en")  # shipped on PyPI (models/embedded.py): never the hub
_TAIL_S = 0.2  # audio kept after the VAD's end point for the last pass
PAUSE_TAIL_S = 0.03  # silence a pass must have heard after the speech to count as its end: the VAD's first silent chunk
_FORCE_KEEP_S = 1.0  # at the length cap, words ending this close to the buffer end stay open
# "Sound after the words" (asr_* unheard_s): the audio counts as sound down to this far below the
# words' level (their 32 ms frames' 90th percentile); measured: README, "Didn't catch that".
SOUND_DROP_DB = 15.0
_LEVEL_FRAME = 512  # 32 ms at 16 kHz
_CONTINUED_S = 0.3  # an utterance the VAD starts this soon after the audio heard continues it
_SYLLABLE_S = 0.15  # less loud sound than this is no new word
_SPOKEN = re.compile(r"[^\W_]")  # a letter or digit
# Whisper times the words it writes for a window's padding where the speech ends, some with no length.
_NO_LENGTH_S = 0.021  # one of its 20 ms timestamp steps (and float rounding)
_MIN_PERIOD = 2  # words repeated: one word said twice can be speech ("no, no")


# faster-whisper pads every window to Whisper's 30 s before encoding. The CTranslate2 encoder
# also takes shorter input, and encoding is most of a pass: 30 s costs 0.57 s here, 10 s 0.065 s,
# 5 s 0.03 s (1 thread). So each pass pads only to its audio plus a margin, at least 7.5 s (whisper.cpp's
# audio_ctx does the same); the accuracy tests run with it. Shorter windows make Whisper loop more
# often (a pass that repeats itself to the token limit: 5 of 348 streaming passes at 5 s, 2.7 s
# each; none at 7.5 s or 10 s, 7.5 s taking 239 ms a pass to 10 s's 308), and a loop is cut short
# at a token budget the speech could never need.
_window = threading.local()
_MARGIN_FRAMES = 100  # 1 s of mel frames after the audio
_MIN_FRAMES = 750
_TOKENS_PER_S = 15  # budget per second of audio (speech needs ~8, timestamps included), +_TOKENS_SLACK
_TOKENS_SLACK = 10
# The accurate model of a pair ("auto") searches 5 beams (Whisper's own default): it runs only
# where the words become final, and there it hears better for little time. Base on Piper clips
# of the 66 facts questions ending 50 ms after the speech (1 thread): heard WER 0.039 → 0.031,
# 259 → 280 ms a pass.
# Passes while the user talks, and a model alone, stay greedy.
ACCURATE_BEAM = 5
# The accurate model's check of the cheap pause pass's words scores them first, in one pass (its
# encoder, then one decoder step over the words: teacher-forced), and takes them when every token
# of a word is at least this likely to it; else it decodes (the encoder's output reused). Base
# scoring tiny.en's words on Piper clips of the 66 facts questions and bench lite's 12 (the
# pause's audio, 1 thread): 59 of 78 taken, none of them words base's own decode heard otherwise
# (case and punctuation aside); ~105 ms a check against ~280 ms for the decode.
CHECK_MIN_PROB = 0.3


def _pad_to_window(array, length: int = 3000, *, axis: int = -1):
    frames = getattr(_window, "frames", None) or length
    return _fw_pad_or_trim(array, min(length, frames), axis=axis)


def _install_short_windows() -> None:
    # pad_or_trim is faster-whisper's own, not its API: pyproject pins the minor range (1.2)
    # this was tested with; a release that renames or stops calling it only loses the speed-up.
    global _fw_pad_or_trim
    import faster_whisper.transcribe as fw

    if fw.pad_or_trim is not _pad_to_window:
        _fw_pad_or_trim = fw.pad_or_trim
        fw.pad_or_trim = _pad_to_window


def _frame_levels(audio: np.ndarray) -> np.ndarray:
    """The level (dB) of each whole 32 ms frame of 16 kHz `audio`."""
    n = len(audio) // _LEVEL_FRAME
    frames = np.asarray(audio[: n * _LEVEL_FRAME], np.float64).reshape(n, _LEVEL_FRAME)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)


def words_level(audio: np.ndarray, t0: float, words: list[Word]) -> float | None:
    """The level (dB) of the loud part of `words` in 16 kHz `audio` starting at session time
    `t0`: the 90th percentile of the frames they span (None: no frame)."""
    return _spoken_level(_frame_levels(audio), t0, words)


def _spoken_level(level: np.ndarray, t0: float, words: list[Word]) -> float | None:
    starts = t0 + np.arange(len(level)) * _LEVEL_FRAME / SR
    spoken = level[(starts >= words[0].start) & (starts < words[-1].end)] if words else level[:0]
    return float(np.percentile(spoken, 90)) if len(spoken) else None


def sound_after_words(audio: np.ndarray, t0: float, words: list[Word], speech_end: float) -> float | None:
    """Seconds the sound went on after the last of `words` (16 kHz `audio` starting at session
    time `t0`): up to the last 32 ms frame within SOUND_DROP_DB of the words' level, and at most
    to `speech_end` (the VAD's). Whisper writes what it understood and stops: speech that noise
    covered, after the last word it wrote, is speech nobody heard. None without words."""
    if not words:
        return None
    level = _frame_levels(audio)
    if not len(level):
        return 0.0
    starts = t0 + np.arange(len(level)) * _LEVEL_FRAME / SR
    reference = _spoken_level(level, t0, words)
    loud = np.nonzero(level >= (level.max() if reference is None else reference) - SOUND_DROP_DB)[0]
    end = float(starts[loud[-1]]) + _LEVEL_FRAME / SR if len(loud) else words[-1].end
    return round(max(0.0, min(end, speech_end) - words[-1].end), 3)


def normalize_word(word: str) -> str:
    """Lower case without punctuation: what agreement between hypotheses compares."""
    return re.sub(r"[^\w']+", "", word.lower())


def _text(words: list[Word]) -> str:
    return " ".join(w.word for w in words)


@dataclass
class _Utterance:
    """State of the utterance being recognized (None between utterances)."""

    start: int = 0  # absolute 16 kHz sample where the VAD heard it begin
    since_decode: int = 0  # 16 kHz samples since the last pass
    tail: list[Word] = field(default_factory=list)  # last hypothesis' uncommitted words
    partial: str = ""  # text of the last partial sent
    committed: list[Word] = field(default_factory=list)
    committed_end: float = -math.inf  # session time where the committed words end
    decoded_to: int = 0  # absolute 16 kHz sample the last pass heard up to
    tail_accurate: bool = True  # the partial words are the accurate model's
    quick_to: int = 0  # absolute 16 kHz sample the cheap model's pause pass heard up to
    quick: list[Word] | None = None  # the words of that pass, when it was the last one (the check's to score)
    accurate_to: int = 0  # … the last pass of the accurate model (the only one, with one model)


class WhisperAsr(SegmentingAsr):
    """`AsrProvider` over faster-whisper. `model`: "auto" (English: the embedded tiny.en while
    the user talks and the embedded base at pauses; other languages: base), "base" or "tiny.en"
    (the embedded models, no network), a faster-whisper size or repo name (downloaded by
    faster-whisper: only when the user chose it) or a CTranslate2 model folder."""

    def __init__(
        self,
        model: str | os.PathLike[str] = "auto",
        device: str = "auto",
        compute_type: str | None = None,  # None: int8 on CPU, float16 on CUDA
        cpu_threads: int = 1,
        language: str | None = "en",  # None: detect per pass (slower)
        partial_interval: float = 0.4,
        vad: SileroVad | None = None,
        max_utterance_s: float = 25.0,
        trim_s: float = 12.0,
        cache_dir: str | os.PathLike[str] | None = None,
        short_windows: bool = True,  # pad each pass to its audio, not to 30 s (see _pad_to_window)
    ) -> None:
        from faster_whisper import WhisperModel

        accurate, cheap = _model_pair(model, language)
        device = _resolve_device(device)
        compute_type = compute_type or ("int8" if device == "cpu" else "float16")
        loaded, names = {}, []
        for choice in dict.fromkeys((cheap, accurate)):
            path, name = _resolve_model(choice, cache_dir)
            names.append(name.removeprefix("whisper:"))
            try:
                loaded[choice] = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
            except Exception as e:  # ctranslate2 and the hub raise plain RuntimeError/ValueError/OSError
                raise ModelFileError(
                    f"Could not load the Whisper model '{choice}' ({e}); use 'auto' (embedded) or a CTranslate2 model folder"
                ) from e
        self._model, self._cheap_model = loaded[accurate], loaded[cheap]
        self.two_models = accurate != cheap
        if self.two_models:  # what the check scores the cheap model's words with
            from faster_whisper.tokenizer import Tokenizer

            self._vocab = self._model.hf_tokenizer.get_vocab()
            self._sot = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe",
                                  language=language).sot_sequence
        self.name = "whisper:" + "+".join(names)  # e.g. whisper:tiny.en+base: partials, then pauses
        fw_log = logging.getLogger("faster_whisper")
        if fw_log.level == logging.NOTSET:  # it logs one INFO line per pass, several per second here
            fw_log.setLevel(logging.WARNING)
        super().__init__(vad)
        self.short_windows = short_windows
        if short_windows:
            _install_short_windows()
        self.language = language
        self.partial_interval = partial_interval
        self.max_utterance_s = max_utterance_s
        self.trim_s = trim_s
        self.last_decode_s = 0.0  # wall time of the last pass (paces the next one)
        self.cores: PauseCores | None = None  # the session's: the LLM takes one core while a pass runs
        # The last pass's words -> (avg_logprob, no_speech_prob) of the segment each came from, and
        # the word's own log probability (Whisper's word probability: its tokens' mean).
        self._confidence: dict[Word, tuple[float, float, float]] = {}
        # The last pass's sound after its words (sound_after_words), where it heard the speech end.
        self._unheard: float | None = None
        # Off: a pass every partial_interval of audio whatever the CPU (runs that are not paced
        # at real time, where wall-clock pacing only adds run-to-run variation).
        self.adaptive_pacing = True
        self.reset()

    # --- SegmentingAsr ---------------------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        self._utt: _Utterance | None = None
        self.heard_until = -math.inf  # a new conversation's clock starts again at 0
        self._heard_level: float | None = None  # the last utterance's speech level (dB)

    def _utterance_started(self, sample: int) -> list[Event]:
        self._utt = _Utterance(start=sample)
        return []

    def _more_audio(self, n: int) -> list[Event]:
        u = self._utt
        assert u is not None
        u.since_decode += n
        if self._pause_heard():
            self.heard_until = self._buf.t_end  # silence since: nothing more to decode
            return []
        silence = self.vad.silence_start
        if silence is not None and self._buf.total >= silence + PAUSE_TAIL_S * SR:
            # A pause the last pass did not reach: decode now, not at the next interval, so the
            # words up to it are known when the turn detector ends the turn here. With two
            # models the cheap one goes first (its words are asked at once), and the accurate one
            # at the next chunk: the LLM writes while it checks them.
            quick = self.two_models and u.quick_to < silence + PAUSE_TAIL_S * SR
            if quick:
                u.quick_to = self._buf.total
            return self._decode(final=False, pause=True, quick=quick)
        pace = self.last_decode_s if self.adaptive_pacing else 0.0
        if u.since_decode >= max(self.partial_interval, pace) * SR:
            return self._decode(final=False)
        return []

    def _utterance_ended(self, sample: int) -> list[Event]:
        u = self._utt
        assert u is not None
        # Its speech is what the last utterance's final pass already heard (a turn ended in a
        # short pause, and that pass's tail held the word after it: "what am I allergic | to?"):
        # its words are in that utterance, and Whisper given only the end of a word writes
        # something ("Thank you."). It gives no words.
        if self._only_heard_before(u, sample):
            events = self._settle(u, [], final=True, t0=0.0, t1=0.0)  # clears a partial it showed
        # The last pass heard the speech to its end (the VAD's end point, where the turn detector
        # heard it end, or the pause the turn ended in) with the accurate model: its words are
        # the final ones.
        elif u.tail_accurate and (u.accurate_to >= sample or self._pause_heard()):
            events = self._settle(u, list(u.tail), final=True, t0=0.0, t1=0.0)
        else:
            events = self._decode(final=True, end_sample=sample + round(_TAIL_S * SR))
        self._heard_to = max(self._heard_to, u.decoded_to)  # its last pass heard the audio up to here
        if u.committed:
            self._heard_level = words_level(self._buf.samples, self._buf.time_of(self._buf.start), u.committed[-8:])
        self._utt = None
        return events

    def _only_heard_before(self, u: _Utterance, end: int) -> bool:
        """The utterance began as the audio the last utterance's final pass heard ended (the
        VAD, reset when the turn ended, reports the word it is still in as a start), and after
        that audio, up to `end`, less than a syllable is as loud as that utterance's words
        (within SOUND_DROP_DB): the tail of the word that pass heard begin."""
        if self._heard_level is None or u.start >= self._heard_to + round(_CONTINUED_S * SR):
            return False
        after = self._buf.samples[max(self._heard_to - self._buf.start, 0) : max(end - self._buf.start, 0)]
        loud = np.count_nonzero(_frame_levels(after) >= self._heard_level - SOUND_DROP_DB)
        return loud * _LEVEL_FRAME < _SYLLABLE_S * SR

    def word_times(self, pcm16k: np.ndarray) -> list[Word]:
        """The words of a whole clip (16 kHz) with their times in it: where benchmarks and tests
        cut speech at a word boundary."""
        return self._transcribe(np.asarray(pcm16k, np.float32), 0.0, len(pcm16k) / SR, None, True)

    # --- internals -----------------------------------------------------------------------------

    def _decode(self, final: bool, end_sample: int | None = None, pause: bool = False, quick: bool = False) -> list[Event]:
        u = self._utt
        assert u is not None
        accurate = not quick and (final or pause or not self.two_models)
        n = len(self._buf.samples) if end_sample is None else min(max(end_sample - self._buf.start, 0), len(self._buf.samples))
        t0, t1 = self._buf.time_of(self._buf.start), self._buf.time_of(self._buf.start + n)
        # Committed words whose audio was trimmed away give the model its context back.
        prompt = _text([w for w in u.committed if w.end <= t0][-30:]) or None
        model = self._model if accurate else self._cheap_model
        if self.cores is not None:  # the LLM takes one core while a pass runs (cores.py)
            if accurate and self.two_models:
                self.cores.before_check()  # after the LLM has read the words it checks
            else:
                self.cores.asr_busy()
        started = time.perf_counter()
        try:
            words, encoded = None, None
            # The cheap pause pass heard all this pass hears (the pause, or the speech up to the
            # end point the turn ended at): its words are checked, not decoded anew.
            heard_all = pause or (end_sample is not None and u.quick_to >= end_sample - round(_TAIL_S * SR))
            if accurate and u.quick and heard_all and prompt is None and not u.committed:
                words, encoded = self._check(self._buf.samples[:n], u.quick)
            if words is None:
                words = self._transcribe(self._buf.samples[:n], t0, t1, prompt, final, model,
                                         beam=ACCURATE_BEAM if accurate and self.two_models else 1, encoded=encoded)
        finally:
            if self.cores is not None:
                self.cores.asr_idle()
        u.quick = words if pause and quick else None
        if pause and quick and self.cores is not None:
            self.cores.pause_asked()  # its words are asked now and checked at the next chunk
        # A pass that heard the speech end (a pause, the end point): how long it went on after the words.
        speech_end = self.vad.silence_start if pause else (end_sample - round(_TAIL_S * SR) if final and end_sample else None)
        self._unheard = None if speech_end is None else sound_after_words(
            self._buf.samples[:n], t0, words, self._buf.time_of(speech_end))
        if not accurate or not self.two_models:  # paces the passes while the user talks
            self.last_decode_s = time.perf_counter() - started
        u.since_decode = 0
        u.decoded_to = self._buf.start + n
        if accurate:  # the final words come from this model: they are known up to here
            self.heard_until = t1
            u.accurate_to = u.decoded_to
        u.tail_accurate = accurate
        # Words are committed by agreement only where the window must be trimmed: in a short
        # utterance the last pass decodes all of it, which hears better than words agreed on at
        # the moving edge of partial windows (README, "Hearing the question").
        events = self._settle(u, self._unseen(words, u), final, t0, t1, agree=t1 - t0 > self.trim_s, pause=pause)
        if not final and t1 - t0 > self.trim_s:
            self._trim(u, t1)
        return events

    def _pause_heard(self) -> bool:
        """The VAD is in a pause, and the last pass heard the speech up to it and a little of it:
        everything since is silence, so the words so far are all known (and final, if the turn
        ends in this pause)."""
        assert self._utt is not None
        silence = self.vad.silence_start
        return silence is not None and self._utt.accurate_to >= silence + PAUSE_TAIL_S * SR

    def _settle(self, u: _Utterance, new: list[Word], final: bool, t0: float, t1: float, *, agree: bool = True,
                pause: bool = False) -> list[Event]:
        """Commit what the hypothesis `new` of the audio [t0, t1] agrees on with the last one
        (all of it when final; nothing unless `agree`); the rest is the partial (sent marked
        `pause` after a pause pass, even when unchanged: the words to ask with now)."""
        if final:
            commit, tail = new, []
        else:
            agreed = 0
            for a, b in zip(u.tail, new, strict=False):
                if not agree or normalize_word(a.word) != normalize_word(b.word):
                    break
                agreed += 1
            commit, tail = new[:agreed], new[agreed:]
            if t1 - t0 > self.max_utterance_s:  # cap: commit all but the words still being spoken
                while tail and tail[0].end < t1 - _FORCE_KEEP_S:
                    commit.append(tail.pop(0))
        events: list[Event] = []
        if commit:
            events.append(AsrFinalEvent(_text(commit), tuple(commit), *self._scores(commit), self._unheard if final else None,
                                        self._word_score(commit)))
            u.committed += commit
            u.committed_end = commit[-1].end
        u.tail = tail
        if _text(tail) != u.partial or pause:
            u.partial = _text(tail)
            events.append(AsrPartialEvent(u.partial, tuple(tail), *self._scores(tail), pause=pause,
                                          unheard_s=self._unheard if pause else None, word_logprob=self._word_score(tail)))
        return events

    def _word_score(self, words: list[Word]) -> float | None:
        """The mean log probability of `words` (None: none scored)."""
        scores = [self._confidence[w][2] for w in words if w in self._confidence]
        return round(sum(scores) / len(scores), 3) if scores else None

    def _scores(self, words: list[Word]) -> tuple[float | None, float | None]:
        """(avg_logprob, no_speech_prob) of `words`: the mean of their segments' average log
        probability (per word) and the highest no-speech probability among them."""
        scores = [self._confidence[w] for w in words if w in self._confidence]
        if not scores:
            return None, None
        return round(sum(s[0] for s in scores) / len(scores), 3), round(max(s[1] for s in scores), 3)

    def _trim(self, u: _Utterance, t1: float) -> None:
        # Cut at the last committed word; with nothing committed (noise, music), keep trim_s.
        cut = self._buf.sample_of(u.committed_end) if u.committed_end > -math.inf else self._buf.start
        if t1 - self._buf.time_of(cut) > self.max_utterance_s:
            cut = self._buf.sample_of(t1 - self.trim_s)
        self._buf.drop_before(cut)

    def _check(self, audio: np.ndarray, heard: list[Word]) -> tuple[list[Word] | None, object]:
        """The accurate model scores the cheap pause pass's words `heard` over `audio` (its
        encoder, then one teacher-forced decoder step): (the words, when every token of each is
        at least CHECK_MIN_PROB likely to it, else None; the encoder's output, for the decode)."""
        model = self._model
        self._window_for(audio)
        try:
            features = model.feature_extractor(audio)[:, :-1]  # transcribe's window drops the last frame too
            encoded = model.encode(_pad_to_window(features))
        finally:
            _window.frames = None
        # Base writes a question's first word capitalized; case is no disagreement (normalize_word).
        first = heard[0]
        words = [Word(first.word[:1].upper() + first.word[1:], first.start, first.end), *heard[1:]]
        pieces = [tokenize(" " + w.word, self._vocab) for w in words]
        tokens = [t for word in pieces for _piece, ids in word for t in ids]
        probs = iter(model.model.align(encoded, self._sot, [tokens], features.shape[-1])[0].text_token_probs)
        no_speech = max((self._confidence.get(w, (0.0, 0.0, 0.0))[1] for w in heard), default=0.0)
        scored: list[tuple[Word, list[float]]] = []
        for word, word_pieces in zip(words, pieces, strict=True):
            # Punctuation is no disagreement either: only the pieces with a letter or digit count.
            said = [p for piece, ids in word_pieces for p in [next(probs) for _ in ids] if _SPOKEN.search(piece)]
            if any(p < CHECK_MIN_PROB for p in said):
                return None, encoded
            scored.append((word, said))
        logprobs = [math.log(max(p, 1e-6)) for _w, said in scored for p in said]
        avg = sum(logprobs) / len(logprobs) if logprobs else 0.0
        self._confidence = {w: (avg, no_speech, math.log(max(sum(said) / len(said), 1e-6)) if said else 0.0)
                            for w, said in scored}
        return words, encoded

    def _window_for(self, audio: np.ndarray) -> None:
        """Pad this pass's window to its audio (see _pad_to_window), only on this thread: other
        faster-whisper users keep the 30 s windows."""
        frames = math.ceil(len(audio) / SR) * 100 + _MARGIN_FRAMES
        _window.frames = max(_MIN_FRAMES, frames) if self.short_windows else None

    def _transcribe(self, audio: np.ndarray, t0: float, t1: float, prompt: str | None, final: bool,
                    model=None, beam: int = 1, encoded=None) -> list[Word]:
        """`encoded`: the encoder's output for this audio's window (the check's), not computed again."""
        if len(audio) < SR // 10:
            return []
        model = model or self._model
        self._window_for(audio)
        if encoded is not None:
            model.encode = _encoded_first(encoded, model.encode)  # the instance's, for this pass only
        try:
            segments, _info = model.transcribe(
                audio,
                language=self.language,
                beam_size=beam,
                word_timestamps=True,
                vad_filter=False,  # our VAD already cut the utterance
                condition_on_previous_text=False,
                initial_prompt=prompt,
                max_new_tokens=math.ceil(len(audio) / SR * _TOKENS_PER_S) + _TOKENS_SLACK,
                # Partials are revised anyway; only the last pass pays for temperature fallback.
                temperature=(0.0, 0.2, 0.4, 0.6) if final else 0.0,
            )
            words: list[Word] = []
            self._confidence = {}
            for seg in segments:  # a lazy generator: the decoding happens here
                if seg.no_speech_prob > 0.6 and seg.avg_logprob < -1.0:  # Whisper's own silence rule
                    continue
                if seg.compression_ratio > 2.4:  # a repetition loop ("and today and today …")
                    continue
                for w in seg.words or ():
                    text = w.word.strip()
                    if text:
                        start = min(max(t0 + float(w.start), t0), t1)
                        end = min(max(t0 + float(w.end), start), t1)
                        words.append(Word(text, round(start, 3), round(end, 3)))
                        self._confidence[words[-1]] = (float(seg.avg_logprob), float(seg.no_speech_prob),
                                                       math.log(max(float(w.probability), 1e-6)))
        finally:
            _window.frames = None
            model.__dict__.pop("encode", None)
        return _without_padding_copy(words)

    @staticmethod
    def _unseen(words: list[Word], u: _Utterance) -> list[Word]:
        """The words of a hypothesis after the committed ones (the window may still hold them)."""
        new = [w for w in words if (w.start + w.end) / 2 > u.committed_end]
        # A committed word re-timed past the commit point would be said twice: drop a repeat.
        last = [normalize_word(w.word) for w in u.committed[-3:]]
        for k in (3, 2, 1):
            head = [normalize_word(w.word) for w in new[:k]]
            if len(last) >= k and head == last[-k:] and (k > 1 or new[0].start < u.committed_end):
                return new[k:]
        return new


def _without_padding_copy(words: list[Word]) -> list[Word]:
    """`words` without the copies Whisper often writes into a window's padding when the speech
    reaches the window's end: "What is the capital of France? What is the capital of France?
    What" (tiny.en, in 30 of 443 passes over Piper clips cut every 160 ms; too short a text for
    the compression ratio to catch). The text then repeats its opening words over and over (a
    period of two or more words), and the copies' words are timed where the speech ends, some
    with no length (said words have some): cut at the first copy."""
    said = [(i, normalize_word(w.word)) for i, w in enumerate(words)]
    said = [(i, text) for i, text in said if text]  # punctuation alone repeats nothing
    for period in range(_MIN_PERIOD, len(said) - 1):  # a copy of two words or more
        if all(said[k][1] == said[k - period][1] for k in range(period, len(said))):
            cut = said[period][0]
            if any(w.end - w.start <= _NO_LENGTH_S for w in words[cut:]):
                return words[:cut]
            return words
    return words


def _encoded_first(encoded, encode):
    """An encode that gives `encoded` for a pass's first window and encodes any later one."""
    pending = [encoded]

    def first_window(features):
        return pending.pop() if pending else encode(features)

    return first_window


def _resolve_model(model: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None) -> tuple[str, str]:
    """(what faster-whisper loads, the provider's name)."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if isinstance(model, os.PathLike) or path.is_dir() or text.startswith((".", "~", "/")) or "\\" in text:
        if not (path / "model.bin").is_file():
            raise ModelFileError(
                f"{path} is not a CTranslate2 Whisper model folder (no model.bin); pick another folder or use 'base'"
            )
        return str(path), f"whisper:{path.name}"
    if text in EMBEDDED_WHISPER:
        from kame_desktop.models.embedded import embedded_whisper_model

        return str(embedded_whisper_model(cache_dir, name=text)), f"whisper:{text}"
    return text, f"whisper:{text}"


def _model_pair(model: str | os.PathLike[str], language: str | None) -> tuple[str | os.PathLike[str], str | os.PathLike[str]]:
    """(the accurate model: pauses and the last pass; the cheap one: passes while the user talks)."""
    if model != "auto":
        return model, model
    if language == "en":
        return "base", "tiny.en"
    return "base", "base"  # tiny.en hears English only


def _resolve_device(device: str) -> str:
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    if device == "auto":
        return "cuda" if gpus else "cpu"
    if device.startswith("cuda") and not gpus:
        raise DeviceError("CUDA was requested for Whisper but no CUDA GPU is available; use device 'auto' or 'cpu'")
    return device
