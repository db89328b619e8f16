"""`bench wake`'s counting: when a positive counts as heard, and how false wakes are counted."""

from __future__ import annotations

import numpy as np

from kame_desktop.audio.wake_word import STEP, WINDOW
from kame_desktop.bench.wake import RATE, _false_wakes, _first_fire


def test_a_positive_counts_only_inside_its_window():
    probs = np.zeros(40, np.float32)
    probs[30] = 0.999  # ends at 31 steps = 2.48 s
    end = 31 * STEP / RATE
    assert _first_fire(probs, 0.998, 0.5, end) == end
    assert _first_fire(probs, 0.998, 0.5, end - 0.01) is None, "too late: the question would be cut"
    assert _first_fire(probs, 0.9991, 0.5, end) is None


def test_false_wakes_count_once_per_refractory_window():
    probs = np.zeros(200, np.float32)
    probs[10:14] = 1.0  # one wake held over four steps: the detector starts afresh after the first
    probs[10 + WINDOW // STEP] = 1.0  # a window later: a second wake
    assert _false_wakes(probs, 0.99) == 2


def test_the_held_out_speech_thresholds_are_chosen_on_is_not_the_benchmarks():
    from kame_desktop.bench import wake, wake_tune

    held = wake_tune.negative_texts()
    assert len(" ".join(held).split()) > 6_000, "enough words for 30 minutes"
    assert not set(held) & set(wake._negative_texts()), "no sentence the benchmark plays"
    assert not any(wake_tune.WAKE_RE.search(t) for t in held)
    assert not set(wake_tune.QUESTIONS) & set(wake.QUESTIONS)
    assert not set(wake_tune.PIPER_LENGTHS) & set(wake.PIPER_SPEEDS)
