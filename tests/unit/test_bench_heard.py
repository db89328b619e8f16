"""What the back-end heard and when (bench/heard.py, evaluation/scoring.py), on timelines built by hand: word latency,
the heard words' error rate and the stages after the last word."""

from __future__ import annotations

import pytest

from kame_desktop.bench.heard import stages_ms, word_latencies_ms
from kame_desktop.evaluation.scoring import heard_text, heard_wer
from kame_desktop.events import (
    FRAME_SECONDS,
    AsrFinalEvent,
    AsrPartialEvent,
    LlmAdoptedEvent,
    LlmChunkEvent,
    LlmRequestEvent,
    SpeechStartEvent,
    Stamped,
)


def at(t: float, event) -> Stamped:
    return Stamped(round(t / FRAME_SECONDS), event)


def test_word_latency_is_the_end_of_a_word_to_the_first_event_that_holds_it():
    records = [
        at(0.48, AsrPartialEvent("what is")),  # words 0, 1 (ended at 0.30, 0.40)
        at(0.80, AsrPartialEvent("what is the")),  # word 2 (ended 0.60)
        at(0.96, AsrPartialEvent("what")),  # a revision that drops words hears nothing new
        at(1.28, AsrFinalEvent("what is the capital")),  # word 3 (ended 1.10)
        at(1.60, AsrPartialEvent("of")),  # word 4 (ended 1.50)
    ]
    assert word_latencies_ms(records, [0.30, 0.40, 0.60, 1.10, 1.50, 1.90]) == [180.0, 80.0, 200.0, 180.0, 100.0]


def test_heard_wer_counts_over_every_question_and_ignores_case_and_punctuation():
    pairs = [("What is the capital of France?", "what is the capital of friends"),  # 1 of 6
             ("How tall is Mount Everest?", "How tall is Mount Everest")]  # 0 of 5
    assert heard_wer(pairs) == pytest.approx(1 / 11, abs=0.001)
    assert heard_wer([]) is None
    assert heard_text([at(0.1, AsrFinalEvent("What is ")), at(0.2, AsrPartialEvent("the")),
                       at(0.3, AsrFinalEvent("the capital?"))]) == "What is the capital?"


def test_stages_follow_the_played_answer_and_speculation_makes_them_zero():
    end = 1.0  # the last word; the VAD knows the pause 0.16 s later
    asked_late = [at(1.36, LlmRequestEvent(2, "reactive", 6)), at(1.52, LlmAdoptedEvent(2, 150.0)),
                  at(1.52, LlmChunkEvent(2, "Paris is")), at(1.84, LlmChunkEvent(2, " the capital.")),
                  at(2.08, SpeechStartEvent("assistant"))]
    assert stages_ms(asked_late, end, 0.16) == {"vad": 160.0, "asr": 200.0, "llm": 480.0, "tts": 240.0}
    # Asked before the VAD noticed, the clause written before it was: only the TTS is left.
    early = [at(0.88, LlmRequestEvent(3, "reactive", 6)), at(0.96, LlmAdoptedEvent(3, 80.0)),
             at(1.04, LlmChunkEvent(3, "Paris, of course.")), at(1.36, SpeechStartEvent("assistant"))]
    assert stages_ms(early, end, 0.16) == {"vad": 160.0, "asr": 0.0, "llm": 0.0, "tts": 200.0}
    assert stages_ms(early[:3], end, 0.16)["tts"] is None  # nothing was said
