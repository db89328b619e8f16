"""The turn detector on Piper-spoken questions, decided on the audio clock (no wall time):
finished questions end the turn at once, questions cut before their last word wait, and a
mid-sentence pause is not taken for the end."""

from __future__ import annotations

import numpy as np
import pytest

from kame_desktop.backend.turn import MAX_SILENCE_MS, SMART_THRESHOLD, TurnDetector
from kame_desktop.bench.lite import paused, speech_end_s, turn_ends
from kame_desktop.events import SAMPLE_RATE, SpeechStartEvent, TurnEndEvent

# Questions whose last word finishes them ("... of", "... for the" is plainly unfinished).
QUESTIONS = (
    "What is the capital of France?",
    "What is the population of Japan?",
    "Please tell me the weather for tomorrow.",
    "What is the best way to learn Spanish?",
    "Could you play some music by the Beatles?",
    "How many people live in London?",
    "Tell me a joke about a penguin.",
    "Where can I buy a new pair of shoes?",
    "I want to buy a present for my mother.",
    "Remind me to call my sister.",
)
LEAD = np.zeros(SAMPLE_RATE // 2, np.float32)


@pytest.fixture(scope="module")
def smart():
    return TurnDetector("smart")


@pytest.fixture(scope="module")
def spoken(piper_voice, whisper_asr):
    """(whole question, the question cut before its last word) for each, after 0.5 s of silence."""
    import soxr

    out = []
    for text in QUESTIONS:
        audio = piper_voice.synthesize(text)
        words = whisper_asr.word_times(soxr.resample(audio, SAMPLE_RATE, whisper_asr.RATE))
        cut = round(words[-1].start * SAMPLE_RATE)
        out.append((np.concatenate([LEAD, audio]), np.concatenate([LEAD, audio[:cut]])))
    return out


def ended_by_the_model(ends: list[tuple[float, TurnEndEvent]]) -> bool:
    return bool(ends) and ends[0][1].probability is not None and ends[0][1].probability >= SMART_THRESHOLD


def test_finished_questions_end_the_turn_and_cut_ones_wait(smart, spoken):
    complete, incomplete = [], []
    for (whole, cut), text in zip(spoken, QUESTIONS, strict=True):
        complete.append(ended_by_the_model(turn_ends(smart, whole)))
        p_whole = smart.probability
        ends = turn_ends(smart, cut)
        incomplete.append(not ended_by_the_model(ends))
        if incomplete[-1]:  # nobody is left hanging: the maximum silence ends it
            assert ends and ends[0][0] - speech_end_s(cut) >= MAX_SILENCE_MS / 1000
        print(f"\n{text!r}: whole {p_whole}, cut {ends[0][1].probability if ends else None}", end="")
    print(f"\ncomplete {sum(complete)}/10, cut incomplete {sum(incomplete)}/10")
    assert sum(complete) >= 8, complete
    assert sum(incomplete) >= 7, incomplete


def test_smart_ends_finished_questions_sooner_than_the_fixed_silence(smart, spoken):
    silence = TurnDetector("silence", model=smart.model)
    for whole, _ in spoken:
        end = speech_end_s(whole)
        (t_silence, e_silence), = turn_ends(silence, whole)
        assert e_silence == TurnEndEvent("vad", "silence", None)
        assert t_silence - end >= 0.5  # the hang-over, on the audio clock
        ends = turn_ends(smart, whole)
        if ended_by_the_model(ends):
            assert ends[0][0] < t_silence - 0.3


def test_a_mid_sentence_pause_is_not_the_end_for_smart_but_is_for_silence(smart, piper_voice, whisper_asr):
    # 0.8 s: longer than the fixed hang-over plus the VAD's own lag, shorter than the maximum silence.
    pcm, resumed = paused(whisper_asr, piper_voice, "What is the capital of France?", pause_s=0.8)
    assert all(t > resumed for t, _ in turn_ends(smart, pcm))
    assert any(t < resumed for t, _ in turn_ends(TurnDetector("silence", model=smart.model), pcm))


# Questions Smart Turn called complete at a breath or a stop consonant inside them, or after
# their first word (on the audio clock, with this much silence before them): "What part of the
# body | pumps blood?", "Which | bird is …"
SPLIT = (
    ("What part of the body pumps blood?", 0.3),
    ("What do bees make?", 0.3),
    ("What is the capital of Canada?", 0.3),
    ("Which bird is a symbol of peace?", 0.0),
    ("Which planet is closest to the sun?", 0.0),
    ("Which ancient people built the pyramids of Giza?", 0.0),
)


def test_a_pause_inside_a_question_shorter_than_the_confirmation_does_not_end_it(smart, piper_voice, monkeypatch):
    from kame_desktop.backend import turn

    def splits() -> list[str]:
        out = []
        for text, lead in SPLIT:
            speech = piper_voice.synthesize(text)
            pcm = np.concatenate([np.zeros(round(lead * SAMPLE_RATE), np.float32), speech])
            end = lead + speech_end_s(speech)
            ends = [t for t, _ in turn_ends(smart, pcm)]
            assert ends and ends[-1] >= end, (text, ends, end)  # the turn ends after the question
            out += [f"{text} ({t:.2f} of {end:.2f} s)" for t in ends if t < end - 0.1]
        return out

    assert splits() == []
    monkeypatch.setattr(turn, "CONFIRM_MS", 0)  # the model's word alone, at the first silent chunk
    monkeypatch.setattr(turn, "SHORT_CONFIRM_MS", 0)
    assert splits(), "these questions no longer show the problem: choose others"


def test_after_a_first_word_only_a_longer_pause_ends_the_turn(smart, piper_voice, monkeypatch):
    """"What", a 0.16 s pause, "part of the body pumps blood?": Smart Turn calls "What" complete
    (it did so live, between a question's first words), so after so little speech the pause
    that confirms it must be longer than a breath."""
    from kame_desktop.backend import turn
    from kame_desktop.bench.lite import WINDOW, loud_windows

    def voiced(text: str) -> np.ndarray:
        pcm = piper_voice.synthesize(text)
        loud = loud_windows(pcm)
        return pcm[loud[0] * WINDOW : (loud[-1] + 1) * WINDOW]

    first = np.concatenate([LEAD, voiced("What")])
    pcm = np.concatenate([first, np.zeros(round(0.16 * SAMPLE_RATE), np.float32), voiced("part of the body pumps blood?")])
    cut = len(first) / SAMPLE_RATE
    assert all(t > cut + 0.5 for t, _ in turn_ends(smart, pcm))
    monkeypatch.setattr(turn, "SHORT_CONFIRM_MS", turn.CONFIRM_MS)  # no longer pause after a short start
    assert any(t < cut + 0.5 for t, _ in turn_ends(smart, pcm)), "Smart Turn no longer ends it after 'What': choose another"


def test_the_turn_knows_where_the_speech_ended(smart, spoken):
    # The recognizer's last pass is the turn's final one when it heard up to speech_end_t: so all
    # of the speech lies before it, and it is not the (later) moment the turn was decided.
    for whole, _ in spoken:
        decided, _event = turn_ends(smart, whole)[-1]
        end = speech_end_s(whole)
        print(f"\nspeech end {end:.3f}, speech_end_t {smart.speech_end_t:.3f}, decided {decided:.3f}", end="")
        # (30 ms of slack: the last −40 dBFS window may be a breath's decay the VAD calls silence)
        assert end - 0.03 <= smart.speech_end_t <= end + 0.2 and smart.speech_end_t < decided


def test_speech_starts_once_per_turn_and_flush_closes_it(smart, spoken):
    whole, _ = spoken[0]
    smart.reset()
    events = smart.feed(whole[: len(whole) // 2], len(whole) / 2 / SAMPLE_RATE)
    assert [e for e in events if isinstance(e, SpeechStartEvent)] == [SpeechStartEvent("user")]
    assert smart.in_turn and [e.kind for e in smart.flush()] == ["speech_end"] and not smart.in_turn


def test_an_unknown_mode_is_one_clear_error():
    from kame_desktop.errors import ChoiceError

    with pytest.raises(ChoiceError, match="unknown turn detection 'fast'; use one of smart, silence"):
        TurnDetector("fast")
