"""Streaming faster-whisper on espeak-ng speech: accuracy, turns, order, clocks, trimming."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.speech import GAP_S, SENTENCES, feed_all, trim_silence, wer, words_of

from kame_desktop.errors import ModelFileError
from kame_desktop.events import (
    FRAME_SIZE,
    SAMPLE_RATE,
    AsrFinalEvent,
    AsrPartialEvent,
    SpeechEndEvent,
    SpeechStartEvent,
    TurnEndEvent,
)


def test_name_and_bad_folder(whisper_asr, tmp_path):
    from kame_desktop.backend.asr.whisper import WhisperAsr

    assert whisper_asr.name == "whisper:tiny.en+base"  # the default ("auto", English): cheap partials, accurate pauses
    with pytest.raises(ModelFileError, match="no model.bin"):
        WhisperAsr(model=tmp_path)


def test_stream_transcribes_espeak_sentences(stream_run, capsys):
    events, wall, seconds = stream_run
    finals = [e for _, e in events if isinstance(e, AsrFinalEvent)]
    ref = words_of(" ".join(SENTENCES))
    hyp = words_of(" ".join(e.text for e in finals))
    score = wer(ref, hyp)
    with capsys.disabled():
        print(f"\nwhisper:auto streaming: WER {score:.1%} over {len(ref)} words; "
              f"real-time factor {wall / seconds:.2f} ({wall:.1f} s for {seconds:.1f} s of audio)")
        print("  finals:", " | ".join(e.text for e in finals))
    assert len(ref) >= 30
    assert score <= 0.20


def test_one_turn_per_sentence(stream_run, speech):
    events, _, _ = stream_run
    _, spans = speech
    turn = [e for _, e in events if isinstance(e, SpeechStartEvent | SpeechEndEvent | TurnEndEvent)]
    assert turn == [SpeechStartEvent("user"), SpeechEndEvent("user"), TurnEndEvent("vad")] * len(SENTENCES)
    starts = [t for t, e in events if isinstance(e, SpeechStartEvent)]
    ends = [t for t, e in events if isinstance(e, TurnEndEvent)]
    for (start, end), t_start, t_end in zip(spans, starts, ends, strict=True):
        assert start < t_start < end  # reported while the sentence is being spoken
        assert end < t_end < end + GAP_S  # after the hang-over, before the next sentence


def test_partials_come_before_the_finals_of_each_utterance(stream_run):
    events, _, _ = stream_run
    utterances: list[list[object]] = []
    for _, e in events:
        if isinstance(e, SpeechStartEvent):
            utterances.append([])
        elif isinstance(e, AsrPartialEvent | AsrFinalEvent):
            utterances[-1].append(e)
    assert len(utterances) == len(SENTENCES)
    for u in utterances:
        kinds = [type(e) for e in u]
        assert AsrPartialEvent in kinds and AsrFinalEvent in kinds
        assert kinds.index(AsrPartialEvent) < kinds.index(AsrFinalEvent)
        assert u[-1].text == "" and not u[-1].words  # once all is committed, nothing is pending
    partials = [e for u in utterances for e in u if isinstance(e, AsrPartialEvent)]
    # A partial only when the text changed, or after a pause pass (the words to ask with now).
    assert all(a.text != b.text or b.pause for a, b in zip(partials, partials[1:], strict=False))
    assert any(e.pause for e in partials)


def test_word_times_are_on_the_session_clock(stream_run, speech):
    events, _, seconds = stream_run
    _, spans = speech
    words = [w for _, e in events if isinstance(e, AsrFinalEvent) for w in e.words]
    assert all(0.0 <= w.start <= w.end <= seconds for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    for t_emit, e in events:
        if isinstance(e, AsrFinalEvent):
            assert e.words[-1].end <= t_emit  # nothing from the future
            # Each word lies in some sentence (with Whisper's timing slack).
            assert all(any(s - 0.5 <= w.start and w.end <= x + 0.5 for s, x in spans) for w in e.words)


def test_flush_commits_and_reset_forgets(whisper_asr, speech):
    pcm, spans = speech
    first = pcm[: round(spans[0][1] * SAMPLE_RATE)]  # GAP + sentence, no trailing silence
    whisper_asr.reset()
    events = [e for _, e in feed_all(whisper_asr, first)]
    assert events[0] == SpeechStartEvent("user")
    assert events[-1] == SpeechEndEvent("user") and TurnEndEvent("vad") not in events
    finals = " ".join(e.text for e in events if isinstance(e, AsrFinalEvent))
    assert wer(words_of(SENTENCES[0]), words_of(finals)) <= 0.4

    events = [e for _, e in feed_all(whisper_asr, first, flush=False)]
    assert SpeechStartEvent("user") in events
    whisper_asr.reset()
    assert whisper_asr.flush(100.0) == []  # nothing pending after reset
    assert len(whisper_asr._buf.samples) == 0 and whisper_asr._utt is None


def test_long_utterance_is_trimmed_and_capped(whisper_asr, speech):
    pcm, spans = speech
    short_gap = np.zeros(round(0.2 * SAMPLE_RATE), np.float32)  # below the hang-over: one turn
    sentences = [trim_silence(pcm[round(s * SAMPLE_RATE) : round(e * SAMPLE_RATE)]) for s, e in spans[:3]]
    audio = np.concatenate([short_gap, *[x for s in sentences for x in (s, short_gap)], np.zeros(SAMPLE_RATE, np.float32)])
    whisper_asr.reset()
    trim_s, cap_s = whisper_asr.trim_s, whisper_asr.max_utterance_s
    whisper_asr.trim_s, whisper_asr.max_utterance_s = 3.0, 5.0
    whisper_asr.adaptive_pacing = False  # fed faster than real time: same passes on any CPU load
    longest = 0
    try:
        events = []
        for i in range(0, len(audio), FRAME_SIZE):
            events += whisper_asr.feed(audio[i : i + FRAME_SIZE], (i + FRAME_SIZE) / SAMPLE_RATE)
            longest = max(longest, len(whisper_asr._buf.samples))
        events += whisper_asr.flush(len(audio) / SAMPLE_RATE)
    finally:
        whisper_asr.trim_s, whisper_asr.max_utterance_s = trim_s, cap_s
        whisper_asr.adaptive_pacing = True
    assert [e for e in events if isinstance(e, TurnEndEvent)] == [TurnEndEvent("vad")]
    assert longest <= (5.0 + 1.0) * 16_000  # the cap plus one decode interval
    finals = " ".join(e.text for e in events if isinstance(e, AsrFinalEvent))
    assert wer(words_of(" ".join(SENTENCES[:3])), words_of(finals)) <= 0.35
    words = [w for e in events if isinstance(e, AsrFinalEvent) for w in e.words]
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))


def test_a_pause_is_decoded_at_once_and_its_words_are_the_final_ones(whisper_asr, piper_voice):
    """At the first silent chunk after speech the recognizer decodes (however long since its
    last pass), so the turn's words are in when the turn detector ends it there; ending the
    turn in that pause then costs no second pass."""
    from kame_desktop.bench.lite import speech_end_s

    speech = piper_voice.synthesize("What is the capital of France?")
    pcm = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), speech, np.zeros(SAMPLE_RATE // 2, np.float32)])
    end = SAMPLE_RATE // 2 + round(speech_end_s(speech) * SAMPLE_RATE)  # the end of the speech, in samples
    passes = []
    transcribe = whisper_asr._transcribe
    whisper_asr.reset()
    interval = whisper_asr.partial_interval
    whisper_asr.partial_interval = 60.0  # no interval pass: only the pause can explain one
    whisper_asr._transcribe = lambda *a, **k: passes.append(a[2]) or transcribe(*a, **k)
    try:
        events, i = [], 0
        while whisper_asr.heard_until < end / SAMPLE_RATE and i < len(pcm):
            events += whisper_asr.feed(pcm[i : i + FRAME_SIZE], (i + FRAME_SIZE) / SAMPLE_RATE)
            i += FRAME_SIZE
        assert whisper_asr.heard_until >= end / SAMPLE_RATE, "a pass heard the speech to its end"
        assert i <= end + 0.4 * SAMPLE_RATE, (i - end) / SAMPLE_RATE  # within the first 0.4 s of silence
        partial = [e for e in events if isinstance(e, AsrPartialEvent)][-1]
        assert "france" in words_of(partial.text), partial
        before = len(passes)
        final = whisper_asr.end_turn(i / SAMPLE_RATE)  # the turn detector ends the turn in this pause
    finally:
        whisper_asr.partial_interval = interval
        del whisper_asr._transcribe
    assert len(passes) == before  # its words are the pause's
    said = " ".join(e.text for e in events + final if isinstance(e, AsrFinalEvent))
    assert words_of(said)[-1] == "france", said


def test_speech_after_a_heard_pause_is_decoded_when_it_comes_in_one_chunk(whisper_asr, piper_voice):
    """A recognizer that falls behind gets the rest of the turn in one chunk, its end included:
    the pause heard earlier does not stand in for the words after it."""
    from kame_desktop.bench.lite import WINDOW, loud_windows

    def silence(s: float) -> np.ndarray:
        return np.zeros(round(s * SAMPLE_RATE), np.float32)

    def voiced(text: str) -> np.ndarray:  # without Piper's own silence around it
        pcm = piper_voice.synthesize(text)
        loud = loud_windows(pcm)
        return pcm[loud[0] * WINDOW : (loud[-1] + 1) * WINDOW]

    # A 0.3 s pause: shorter than the recognizer's own end-of-speech silence (0.5 s).
    first = np.concatenate([silence(0.5), voiced("What is the"), silence(0.3)])
    rest = np.concatenate([voiced("capital of France?"), silence(1.0)])
    whisper_asr.reset()
    events = []
    for i in range(0, len(first), FRAME_SIZE):
        events += whisper_asr.feed(first[i : i + FRAME_SIZE], (i + FRAME_SIZE) / SAMPLE_RATE)
    assert whisper_asr._utt is not None and whisper_asr._pause_heard(), "the pause was heard"
    events += whisper_asr.feed(rest, (len(first) + len(rest)) / SAMPLE_RATE)
    assert [e for e in events if isinstance(e, SpeechEndEvent)] == [SpeechEndEvent("user")]  # one utterance
    said = words_of(" ".join(e.text for e in events if isinstance(e, AsrFinalEvent)))
    assert said[-2:] == ["of", "france"], said


def test_a_turn_ended_in_a_short_pause_does_not_hear_its_last_words_again(whisper_asr, piper_voice):
    """The turn detector ends a turn in a 0.15 s pause and the user goes on: the next
    utterance's pre-roll (the audio before the VAD's late onset) must not reach back into the
    words the last one already committed ("what part of the body body pumps blood")."""
    from kame_desktop.bench.lite import WINDOW, loud_windows

    def voiced(text: str) -> np.ndarray:
        pcm = piper_voice.synthesize(text)
        loud = loud_windows(pcm)
        return pcm[loud[0] * WINDOW : (loud[-1] + 1) * WINDOW]

    first = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), voiced("What part of the body")])
    pause = np.zeros(round(0.15 * SAMPLE_RATE), np.float32)
    rest = np.concatenate([voiced("pumps blood?"), np.zeros(SAMPLE_RATE, np.float32)])
    whisper_asr.reset()
    events, t, ended = [], 0.0, False
    for pcm in (first, pause, rest):
        for i in range(0, len(pcm), FRAME_SIZE):
            t += len(pcm[i : i + FRAME_SIZE]) / SAMPLE_RATE
            events += whisper_asr.feed(pcm[i : i + FRAME_SIZE], t)
            if pcm is pause and not ended:
                events += whisper_asr.end_turn(t)  # the turn detector (its own VAD) heard the pause first
                ended = True
    events += whisper_asr.flush(t)
    assert ended
    finals = [e.text for e in events if isinstance(e, AsrFinalEvent)]
    assert len(finals) >= 2, finals  # two utterances
    said = words_of(" ".join(finals))
    assert said.count("body") == 1 and said.count("the") == 1, finals



def test_the_rest_of_a_word_the_last_final_pass_heard_is_no_utterance_of_its_own(whisper_asr, piper_voice):
    """The turn ends in a short pause, and the final pass's tail holds the word after it ("what am
    I allergic | to?"): the VAD then starts a new utterance in that word, whose audio is only the
    word's end. Whisper wrote it as "Thank you.", and the request to repeat replaced the answer."""
    from kame_desktop.bench.lite import WINDOW, loud_windows

    def voiced(text: str) -> np.ndarray:
        pcm = piper_voice.synthesize(text)
        loud = loud_windows(pcm)
        return pcm[loud[0] * WINDOW : (loud[-1] + 1) * WINDOW]

    first = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), voiced("What am I allergic")])
    rest = np.concatenate([np.zeros(round(0.08 * SAMPLE_RATE), np.float32), voiced("to?"), np.zeros(SAMPLE_RATE, np.float32)])
    pcm, cut = np.concatenate([first, rest]), len(first) / SAMPLE_RATE
    whisper_asr.reset()
    events, ended = [], False
    for i in range(0, len(pcm), FRAME_SIZE):
        t = min(i + FRAME_SIZE, len(pcm)) / SAMPLE_RATE
        events += whisper_asr.feed(pcm[i : i + FRAME_SIZE], t)
        if not ended and t >= cut + 0.24:  # the detector's decision arrives a model run later
            events += whisper_asr.end_turn(t, speech_end_t=cut)
            ended = True
    events += whisper_asr.flush(t)
    finals = [e.text for e in events if isinstance(e, AsrFinalEvent)]
    assert words_of(finals[0])[-2:] == ["allergic", "to"], finals  # the last pass heard the word
    assert finals == finals[:1], finals  # and its end made no words of its own


def test_the_llm_takes_one_core_during_each_pass_and_the_check_follows_the_pause_words_ask(whisper_asr, piper_voice):
    """`auto` with the session's PauseCores (cores.py): every pass runs between asr_busy (or, for
    the accurate model's check, before_check) and asr_idle, so the in-process LLM steps on one
    thread while one runs; the cheap pause pass tells the cores its words go out (pause_asked)
    before the check of them starts."""
    from kame_desktop.backend.cores import PauseCores

    calls = []

    class Recording(PauseCores):
        def asr_busy(self):
            calls.append("busy")
            super().asr_busy()

        def before_check(self):
            calls.append("check")
            super().before_check()

        def asr_idle(self):
            calls.append("idle")
            super().asr_idle()

        def pause_asked(self):
            calls.append("asked")
            super().pause_asked()

    speech = piper_voice.synthesize("What is the capital of France?")
    pcm = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), speech, np.zeros(SAMPLE_RATE, np.float32)])
    transcribe, check = whisper_asr._transcribe, whisper_asr._check

    def decode(*a, **k):  # a pass of its own (the decode after a check that did not take the words is the check's)
        if k.get("encoded") is None:
            calls.append("accurate" if a[5] is whisper_asr._model else "cheap")
        return transcribe(*a, **k)

    whisper_asr.reset()
    whisper_asr.cores = Recording()
    whisper_asr._transcribe = decode
    whisper_asr._check = lambda *a: calls.append("accurate") or check(*a)
    try:
        events = []
        for i in range(0, len(pcm), FRAME_SIZE):
            events += whisper_asr.feed(pcm[i : i + FRAME_SIZE], (i + FRAME_SIZE) / SAMPLE_RATE)
    finally:
        del whisper_asr._transcribe, whisper_asr._check
        whisper_asr.cores = None
    first = calls.index("accurate")
    # (before_check narrows the LLM with asr_busy once the LLM has read the words)
    assert calls[first - 6 : first + 2] == ["busy", "cheap", "idle", "asked", "check", "busy", "accurate", "idle"], " ".join(calls)
    passes = [c for c in calls if c in ("cheap", "accurate")]
    assert calls.count("busy") == calls.count("idle") == len(passes), calls
    assert passes.index("accurate") >= 2, "passes while the user talks narrow the LLM too"
    assert "check" not in calls[: first - 2] and "asked" not in calls[: first - 3]
    pause = [e for e in events if isinstance(e, AsrPartialEvent) and e.pause]
    assert pause, "the pause pass"
    said = " ".join(e.text for e in events if isinstance(e, AsrFinalEvent))
    assert words_of(said)[-1] == "france", said


def test_the_accurate_model_of_a_pair_searches_beams_and_the_cheap_one_is_greedy(whisper_asr, piper_voice, monkeypatch):
    """`auto`: where base decodes the words that become final (its check did not take tiny.en's),
    it searches beams (ACCURATE_BEAM); tiny.en's passes while the user talks, and its pause pass,
    stay greedy."""
    from kame_desktop.backend.asr import whisper
    from kame_desktop.backend.asr.whisper import ACCURATE_BEAM

    monkeypatch.setattr(whisper, "CHECK_MIN_PROB", 1.01)  # no word is that likely: the check decodes
    beams = []
    for name, model in (("accurate", whisper_asr._model), ("cheap", whisper_asr._cheap_model)):
        def recorded(audio, real=model.transcribe, name=name, **options):
            beams.append((name, options["beam_size"]))
            return real(audio, **options)

        monkeypatch.setattr(model, "transcribe", recorded)
    speech = piper_voice.synthesize("How many legs does a spider have?")
    pcm = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), speech, np.zeros(SAMPLE_RATE, np.float32)])
    whisper_asr.reset()
    events = []
    for i in range(0, len(pcm), FRAME_SIZE):
        events += whisper_asr.feed(pcm[i : i + FRAME_SIZE], (i + FRAME_SIZE) / SAMPLE_RATE)
    assert ACCURATE_BEAM > 1
    assert {b for n, b in beams if n == "accurate"} == {ACCURATE_BEAM}, beams
    assert {b for n, b in beams if n == "cheap"} == {1} and len(beams) > 2, beams
    said = " ".join(e.text for e in events if isinstance(e, AsrFinalEvent))
    assert words_of(said)[-1] == "have", said


def _clip16k(piper_voice, text: str, silence_s: float = 0.05) -> np.ndarray:
    import soxr

    speech = soxr.resample(piper_voice.synthesize(text), SAMPLE_RATE, 16000).astype(np.float32)
    return np.concatenate([speech, np.zeros(round(silence_s * 16000), np.float32)])


def test_the_check_tokenizes_words_as_whisper_writes_them(whisper_asr, piper_voice):
    """The check scores the cheap model's words in the accurate model's tokens: exactly the tokens
    that model writes for the same text (the tokenizer.json beside it splits " the" in two)."""
    from kame_desktop.backend.asr.whisper_tokens import tokenize

    model = whisper_asr._model
    audio = _clip16k(piper_voice, "What is the capital of France? I'd like to know, please.")
    segments, _ = model.transcribe(audio, language="en", beam_size=1, without_timestamps=True)
    segments = list(segments)
    text_end = model.hf_tokenizer.token_to_id("<|endoftext|>")
    assert segments and " the" in segments[0].text, segments
    for seg in segments:
        ids = [t for _piece, piece_ids in tokenize(seg.text, model.hf_tokenizer.get_vocab()) for t in piece_ids]
        assert ids == [t for t in seg.tokens if t < text_end], seg.text


def test_the_check_takes_the_cheap_words_the_accurate_model_finds_likely_and_decodes_others(
        whisper_asr, piper_voice, monkeypatch):
    """base scores tiny.en's pause words in one teacher-forced step and takes them when it finds
    each likely; words it does not (one misheard) are decoded, with the encoder's output reused."""
    from faster_whisper import WhisperModel

    from kame_desktop.backend.oracle_manager import UNCLEAR_LOGPROB, UNCLEAR_WORD_LOGPROB

    audio = _clip16k(piper_voice, "What is the capital of France?")
    seconds = len(audio) / 16000
    heard = whisper_asr._transcribe(audio, 0.0, seconds, None, False, whisper_asr._cheap_model)
    assert words_of(" ".join(w.word for w in heard))[-2:] == ["of", "france"], heard
    taken, encoded = whisper_asr._check(audio, heard)
    assert taken is not None and words_of(" ".join(w.word for w in taken)) == words_of(" ".join(w.word for w in heard))
    assert [(w.start, w.end) for w in taken] == [(w.start, w.end) for w in heard]  # the cheap pass's times
    # Likely words are no "didn't catch that" (the turn's averages, as the OracleManager takes them).
    scores = [whisper_asr._confidence[w] for w in taken]
    assert min(avg for avg, _, _ in scores) > UNCLEAR_LOGPROB
    assert sum(word for _, _, word in scores) / len(scores) > UNCLEAR_WORD_LOGPROB

    misheard = [*heard[:-1], type(heard[-1])("Spain?", heard[-1].start, heard[-1].end)]
    assert whisper_asr._check(audio, misheard)[0] is None
    encodes = []
    real_encode = WhisperModel.encode
    monkeypatch.setattr(WhisperModel, "encode", lambda self, features: encodes.append(1) or real_encode(self, features))
    _, encoded = whisper_asr._check(audio, misheard)
    assert len(encodes) == 1
    decoded = whisper_asr._transcribe(audio, 0.0, seconds, None, False, encoded=encoded)
    assert len(encodes) == 1, "the decode encoded the audio again"
    assert words_of(" ".join(w.word for w in decoded))[-1] == "france", decoded
    assert "encode" not in vars(whisper_asr._model)


def _repeats_its_opening(words) -> bool:
    said = words_of(" ".join(w.word for w in words))
    return len(said) >= 4 and any(said[i : i + 2] == said[:2] for i in range(2, len(said) - 1))


def test_the_copy_a_pass_writes_into_the_padding_is_cut(whisper_asr, piper_voice, monkeypatch):
    """tiny.en over speech cut mid-question often writes it again into the window's padding
    ("How many legs? How many legs? How many"): the copy is cut, the words said are kept."""
    from kame_desktop.backend.asr import whisper

    cut_copy = whisper._without_padding_copy
    monkeypatch.setattr(whisper, "_without_padding_copy", lambda words: words)  # each pass's words as Whisper wrote them
    copies = 0
    for text in ("Why is the sky blue during the day?", "How many legs does a spider have?",
                 "Could you recommend a good book for a long flight?", "What should I cook for dinner tonight?",
                 "How far away is the moon from the earth?"):
        audio = _clip16k(piper_voice, text, silence_s=0.0)
        for cut_s in (0.6, 0.76, 0.92):
            piece = audio[: round(cut_s * 16000)]
            written = whisper_asr._transcribe(piece, 0.0, cut_s, None, False, whisper_asr._cheap_model)
            kept = cut_copy(written)
            copies += _repeats_its_opening(written)
            assert not _repeats_its_opening(kept), (text, cut_s, written)
            assert kept == written[: len(kept)] and (kept or not written)
    assert copies >= 1  # the passes did write copies (5 of these 15 here)


@pytest.mark.parametrize(("timed", "kept"), [
    # tiny.en's, over Piper speech cut at 0.76 s: the copy's words where the speech ends, some with no length
    ([("How", 0.0, 0.28), ("many", 0.28, 0.5), ("bones?", 0.5, 0.72), ("How", 0.72, 0.72), ("many", 0.72, 0.72),
      ("bones?", 0.72, 0.74)], 3),
    # two copies, the second cut short, and punctuation alone after them
    ([("How", 0.5, 0.6), ("many", 0.6, 0.68), ("bone?", 0.68, 0.68), ("How", 0.68, 0.68), ("many", 0.68, 0.68),
      ("bone?", 0.68, 0.72), ("How", 0.72, 0.72), ("many", 0.72, 0.72), (".", 0.72, 0.74)], 3),
    # said twice, each word with its length: speech
    ([("thank", 0.0, 0.2), ("you", 0.2, 0.4), ("thank", 0.4, 0.6), ("you", 0.6, 0.8)], 4),
    # one word repeated can be speech, even timed with no length
    ([("no", 0.0, 0.2), ("no", 0.2, 0.4), ("no", 0.4, 0.4)], 3),
    # words that do not repeat the opening
    ([("what", 0.0, 0.2), ("is", 0.2, 0.3), ("what", 0.3, 0.3), ("was", 0.3, 0.3)], 4),
])
def test_only_a_copy_of_the_opening_with_untimed_words_is_cut(timed, kept):
    from kame_desktop.backend.asr.whisper import _without_padding_copy
    from kame_desktop.events import Word

    words = [Word(*w) for w in timed]
    assert _without_padding_copy(words) == words[:kept]
