"""The latency rule on synthetic output tracks: end of the question's speech → first audible
reply sample (a 20 ms window above −40 dBFS), negative when the reply starts first."""

from __future__ import annotations

import numpy as np

from kame_desktop.evaluation.latency import latency_ms, median, p90, reply_onset_s, turn_latency_ms
from kame_desktop.events import SAMPLE_RATE


def track(seconds: float, *sounds: tuple[float, float], level: float = 0.1) -> np.ndarray:
    """Silence with a 440 Hz tone over each (start, end) in seconds."""
    pcm = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
    for start, end in sounds:
        a, b = int(start * SAMPLE_RATE), int(end * SAMPLE_RATE)
        pcm[a:b] = level * np.sin(2 * np.pi * 440 * np.arange(b - a) / SAMPLE_RATE)
    return pcm


def test_a_reply_after_the_question():
    out = track(6, (3.5, 5.0))
    assert latency_ms(out, start_s=0.0, speech_end_s=2.0) == 1500.0


def test_a_reply_that_starts_before_the_question_ends_is_negative():
    out = track(6, (1.2, 4.0))  # e.g. a KAME front-end talking over the user
    assert latency_ms(out, start_s=0.0, speech_end_s=2.0) == -800.0


def test_no_reply_at_all():
    assert latency_ms(track(6), start_s=0.0, speech_end_s=2.0) is None
    assert latency_ms(track(6, (0.5, 0.9), level=0.001), 0.0, 2.0) is None  # below −40 dBFS


def test_sound_before_the_question_started_is_not_its_reply():
    out = track(10, (1.0, 2.0), (6.0, 7.0))
    assert latency_ms(out, start_s=4.0, speech_end_s=5.0) == 1000.0


def test_the_end_of_an_earlier_reply_still_playing_is_skipped():
    out = track(10, (1.0, 4.6), (6.0, 7.0))  # the last reply runs past the next question's start
    assert reply_onset_s(out, 4.0) == 6.0
    assert reply_onset_s(track(10, (1.0, 9.0)), 4.0) is None  # it never stops: no onset of its own


def test_a_leftover_caught_in_a_gap_between_words_is_still_a_leftover():
    out = track(10, (1.0, 3.95), (4.05, 4.3), (6.0, 7.0))  # quiet just as the question starts
    assert reply_onset_s(out, 4.0) == 6.0


def test_word_gaps_do_not_end_a_leftover_reply():
    # The last reply goes on 0.3 s into the question, with a 0.1 s gap between two words.
    out = track(10, (1.0, 4.1), (4.2, 4.3), (6.0, 7.0))
    assert reply_onset_s(out, 4.0) == 6.0


def test_turn_latency_sees_the_previous_turns_output():
    previous = track(2, (0.0, 2.0))  # still talking when this turn starts
    turn = track(6, (0.0, 0.3), (3.0, 4.0))  # cut by the user's barge-in, then the reply
    assert turn_latency_ms(previous, turn, speech_end_s=2.0) == 1000.0
    assert turn_latency_ms(track(2), turn, speech_end_s=2.0) == -2000.0  # nothing before: it is this turn's
    assert turn_latency_ms(track(0), turn, speech_end_s=2.0) == -2000.0  # the session's first turn


def test_summary_figures():
    assert median([300.0, -100.0, 900.0]) == 300.0
    assert p90([float(x) for x in range(11)]) == 9.0
    assert median([]) is None and p90([]) is None
