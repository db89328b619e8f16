"""The judge's rating parser on canned outputs, and MT-Bench's prompt choice."""

from __future__ import annotations

import json

import pytest
from fixtures.llm import chat_reply

from kame_desktop.evaluation.judge import Judge, JudgeSettings, Prompt, build_prompt, parse_rating
from kame_desktop.evaluation.questions import Question


@pytest.mark.parametrize(
    ("output", "score", "problem"),
    [
        ("The answer is correct and concise. Rating: [[8]]", 8.0, None),
        ("Rating: [[7.5]]", 7.5, None),
        ("Accurate. Rating: [[ 9 ]] ... as I said, [[9]]", 9.0, None),  # the same rating twice
        ("First I thought [[3]], but on reflection [[6]].", None, "2 different ratings"),
        ("The answer is wrong. Rating: 4/10", None, "no rating"),  # not the required format
        ("", None, "no rating"),
        ("Rating: [[11]]", None, "rating 11 outside 1-10"),
        ("Rating: [[0]]", None, "rating 0 outside 1-10"),
        ('{"explanation": "fine", "rating": 6}', 6.0, None),  # a constrained judge
        ('{"explanation": "two\nlines", "rating": 4}', 4.0, None),  # a raw newline, as llama.cpp writes
        ('{"explanation": "fine", "rating": 12}', None, "rating 12 outside 1-10"),
        ('{"explanation": "fine"}', None, "no rating"),
        ('{"explanation": "fine", "rating": true}', None, "no rating"),
        ('{"explanation": "cut off', None, "malformed JSON verdict"),
    ],
)
def test_parse_rating(output, score, problem):
    rating = parse_rating(output)
    assert (rating.score, rating.problem) == (score, problem)


PROMPTS = {
    name: {"system_prompt": f"sys {name}", "prompt_template": template}
    for name, template in {
        "single-v1": "Q={question} A={answer}",
        "single-math-v1": "Q={question} R={ref_answer_1} A={answer}",
        "single-v1-multi-turn": "Q1={question_1} A1={answer_1} Q2={question_2} A2={answer_2}",
        "single-math-v1-multi-turn": "Q1={question_1} R1={ref_answer_1} A1={answer_1} "
        "Q2={question_2} R2={ref_answer_2} A2={answer_2}",
    }.items()
}


def test_prompt_choice_follows_reference_and_turn():
    plain = Question("81", "stem", ("What is gravity?", "And on the moon?"))
    ref = Question("101", "reasoning", ("Two plus two?", "Times three?"), reference=("4", "12"))
    answers = ["It pulls.", "Less."]
    assert build_prompt(plain, answers, 0, PROMPTS) == Prompt("single-v1", "sys single-v1", "Q=What is gravity? A=It pulls.")
    two = build_prompt(plain, answers, 1, PROMPTS)
    assert two.name == "single-v1-multi-turn" and two.user.endswith("Q2=And on the moon? A2=Less.")
    assert build_prompt(ref, ["4", "12"], 0, PROMPTS).user == "Q=Two plus two? R=4 A=4"
    assert "R2=12 A2=12" in build_prompt(ref, ["4", "12"], 1, PROMPTS).user


class _Client:
    """An OpenAI-client stand-in that answers from a script and counts the calls."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []
        self.chat = self
        self.completions = self

    def create(self, **kwargs):
        self.calls.append(kwargs)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return chat_reply(answer)


def test_verdicts_are_cached_and_failures_are_not(tmp_path):
    client = _Client([ConnectionError("refused"), "Good. Rating: [[7]]"])
    judge = Judge(JudgeSettings("http://127.0.0.1:1/v1", "m", grammar=True), cache=tmp_path, client=client)
    prompt = Prompt("single-v1", "s", "u")
    failed = judge.grade(prompt)
    assert failed.score is None and failed.problem.startswith("judge failed")
    first, again = judge.grade(prompt), judge.grade(prompt)
    assert (first.score, first.cached, again.score, again.cached) == (7.0, False, 7.0, True)
    assert len(client.calls) == 2  # the failure was retried, the verdict was not
    assert client.calls[0]["response_format"]["type"] == "json_object"
    assert client.calls[0]["temperature"] == 0
    other = Judge(JudgeSettings("http://127.0.0.1:1/v1", "other"), cache=tmp_path, client=_Client(["[[2]]"]))
    assert other.grade(prompt).score == 2.0  # another judge is another cache entry
    assert len(list(tmp_path.glob("*.json"))) == 2 and json.loads(next(tmp_path.glob("*.json")).read_text())["output"]
