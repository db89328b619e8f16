"""Fact scoring, speaker labels, repeats and the interval: the judge-free half of the scores."""

from __future__ import annotations

import pytest

from kame_desktop.evaluation.scoring import (
    audio_wer,
    fact_hit,
    normalize,
    repeated,
    speaker_label,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("said", "answers", "hit"),
    [
        ("A spider has eight legs.", ["8", "eight"], True),  # number word
        ("A spider has 8 legs.", ["8", "eight"], True),  # digits
        ("Spiders have 18 legs", ["8", "eight"], False),  # a number that contains the digit
        ("Spiders have eighteen legs", ["8", "eight"], False),  # a word that contains the word
        ("It's PARIS!", ["paris"], True),  # case and punctuation
        ("Paris, of course.", ["Paris"], True),
        ("parisian food", ["paris"], False),
        ("It boils at one hundred degrees", ["100", "one hundred"], True),
        ("It boils at 100°C.", ["100", "one hundred"], True),
        ("About 1,000 of them", ["1000"], True),  # digit groups
        ("twenty-four hours", ["twenty four"], True),  # hyphenated number words
        ("The formula is H2O.", ["h2o"], True),
        ("Water is H₂O.", ["h2o"], True),  # subscript digits
        ("The largest planet is Neptune.", ["jupiter"], False),
        ("", ["jupiter"], False),
    ],
)
def test_fact_hit(said, answers, hit):
    assert fact_hit(said, answers) is hit


def test_normalize_keeps_decimals_and_drops_punctuation():
    assert normalize("Pi is 3.14, roughly!") == "pi is 3.14 roughly"


@pytest.mark.parametrize(
    ("said", "label"),
    [
        ("User: what is the capital", True),
        ("Sure. kame : Paris is the capital.", True),
        ("ASSISTANT:Paris", True),
        ("The user asked about Paris.", False),  # the word without a colon
        ("Time is 10:30", False),
        ("Kamehameha: a king", False),  # not a whole word
    ],
)
def test_speaker_label(said, label):
    assert speaker_label(said) is label


def test_repeated_compares_word_sets_with_earlier_replies():
    earlier = ["The capital of France is Paris.", "Jupiter is the largest planet."]
    assert repeated("Paris is the capital of France!", earlier)  # same words, other order
    assert not repeated("The capital of Italy is Rome.", earlier)
    assert not repeated("The capital of France is Paris.", [])  # nothing earlier
    assert not repeated("", [""])  # silence repeats nothing
    # 5 shared words of 6 in the union: 0.83 ≥ 0.8; 4 of 6 (0.67) is not a repeat.
    assert repeated("a b c d e f", ["a b c d e"])
    assert not repeated("a b c d e f", ["a b c d"])


def test_wilson_interval_brackets_the_proportion():
    low, high = wilson_interval(30, 60)
    assert low < 0.5 < high and high - low < 0.3
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] > 0
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] < 1
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_audio_wer():
    assert audio_wer("The capital is Paris.", "the capital is paris") == 0.0
    assert audio_wer("The capital is Paris.", "the capital") == 0.5
    assert audio_wer("", "anything") is None
