"""The run folder's bookkeeping and the scoring pass over it (no real-time run here: the whole
path is tests/integration/test_eval_harness.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures.llm import chat_reply

from kame_desktop.audio.files import write_wav
from kame_desktop.errors import KameError
from kame_desktop.evaluation.judge import Judge, JudgeSettings
from kame_desktop.evaluation.questions import Question
from kame_desktop.evaluation.runner import RunSettings, _check_run_file, question_dir, said_text
from kame_desktop.evaluation.score import score_run
from kame_desktop.events import AsrFinalEvent, AssistantTokenEvent, Stamped


def test_said_text_joins_the_spoken_pieces():
    records = [Stamped(1, AsrFinalEvent("what is it")), Stamped(9, AssistantTokenEvent(None, " It")),
               Stamped(10, AssistantTokenEvent(None, " is Paris."))]
    assert said_text(records) == "It is Paris."


def test_question_folders_are_safe_names(tmp_path):
    assert question_dir(tmp_path, Question("a/b c", "x", ("q?",))).name == "a_b_c"


def test_a_folder_resumes_only_with_the_same_settings(tmp_path):
    _check_run_file(tmp_path, RunSettings(set="facts", limit=3))
    _check_run_file(tmp_path, RunSettings(set="facts", limit=10))  # a longer run of the same
    with pytest.raises(KameError, match="mode"):
        _check_run_file(tmp_path, RunSettings(set="facts", mode="conversation"))


def test_settings_are_checked():
    with pytest.raises(KameError, match="--mode"):
        RunSettings(set="facts", mode="chatty").check()
    with pytest.raises(KameError, match="--policy"):
        RunSettings(set="facts", policy="psychic").check()


class _Client:
    def __init__(self, answer):
        self.answer, self.calls = answer, 0
        self.chat = self.completions = self

    def create(self, **kwargs):
        self.calls += 1
        answer = self.answer
        return chat_reply(answer)


def test_score_run_fills_in_hits_flags_and_verdicts(tmp_path):
    questions = [Question("f1", "science", ("Largest planet?",), answers=("jupiter",)),
                 Question("f2", "animals", ("Spider legs?",), answers=("8", "eight")),
                 Question("m1", "stem", ("Explain gravity.", "Shorter?"))]
    said = [["User: Jupiter is the largest planet."], ["Jupiter is the largest planet!"], ["It pulls.", "Pulls."]]
    silence = np.zeros(4800 * 40, dtype=np.float32)  # silent replies: transcribed as "" without a model
    reply = silence.copy()
    reply[36000:48000] = 0.1  # sound from 1.5 s to 2 s: 500 ms after the question's speech ended
    for n, (q, texts) in enumerate(zip(questions, said, strict=True)):
        folder = question_dir(tmp_path, q)
        folder.mkdir(parents=True)
        for k in range(len(texts)):
            write_wav(folder / f"turn{k + 1}.wav", reply if n == 0 else silence)
        result = {"id": q.id, "category": q.category, "session": 0, "frames": [n * 100, n * 100 + 99],
                  "turns": [{"said": t, "start_s": n * 8.0, "speech_end_s": n * 8.0 + 1.0, "end_s": n * 8.0 + 7.9}
                            | ({"transcript": "jupiter"} if n == 0 else {}) for t in texts]}
        (folder / "result.json").write_text(json.dumps(result))
    timeline = [{"kind": "turn_end", "frame": 10, "t": 0.8}, {"kind": "turn_end", "frame": 17, "t": 1.36},
                {"kind": "turn_end", "frame": 40, "t": 3.2}]  # the last comes after the reply started
    (question_dir(tmp_path, questions[0]) / "timeline.jsonl").write_text("".join(json.dumps(r) + "\n" for r in timeline))
    client = _Client("Rating: [[6]]")
    judge = Judge(JudgeSettings("http://127.0.0.1:1/v1", "stub"), cache=tmp_path / "cache", client=client)
    score_run(tmp_path, questions, judge)
    score_run(tmp_path, questions, judge)  # idempotent: nothing judged twice

    f1, f2, m1 = (json.loads((question_dir(tmp_path, q) / "result.json").read_text()) for q in questions)
    assert (f1["hit"], f1["hit_transcript"], f2["hit"]) == (True, True, False)
    assert (f1["latency_ms"], f2["latency_ms"]) == (500.0, None)  # measured on the reply audio
    assert f1["turns"][0]["speaker_label"] and not f2["turns"][0]["speaker_label"]
    assert f2["turns"][0]["repeated"] and not f1["turns"][0]["repeated"]  # same words as f1's reply
    assert [v["score"] for v in m1["judge"]["verdicts"]] == [6.0, 6.0]
    assert [v["prompt"] for v in m1["judge"]["verdicts"]] == ["single-v1", "single-v1-multi-turn"]
    assert client.calls == 2 and "hit" not in m1
    # the turn end the reply followed: the last before its first sound (1.5 s), 0.36 s after the speech
    assert f1["turns"][0]["turn_end_ms"] == 360.0 and f2["turns"][0]["turn_end_ms"] is None
