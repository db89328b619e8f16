"""`eval` on bad input and damaged run folders: one line on stderr each, never a traceback, and a
resumed run asks again a question whose result cannot be read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kame_desktop.evaluation.questions import Question
from kame_desktop.evaluation.runner import question_dir

QUESTIONS = [Question("f1", "science", ("Which planet is largest?",), answers=("jupiter",)),
             Question("f2", "animals", ("How many legs does a spider have?",), answers=("8", "eight")),
             Question("f3", "science", ("What is water made of?",), answers=("hydrogen",))]


def kame(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kame_desktop", *map(str, args)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def one_line(proc: subprocess.CompletedProcess[str], prefix: str = "error: ") -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    return lines[0]


def write_set(path: Path) -> Path:
    rows = [{"id": q.id, "question": q.turns[0], "answers": list(q.answers), "category": q.category} for q in QUESTIONS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_run(out: Path, set_path: Path) -> None:
    """A finished run folder of the three questions, by hand (as runner and score write it)."""
    settings = {"set": str(set_path), "mode": "isolated", "frontend": "lite", "checkpoint": None, "llm": "local",
                "llm_url": None, "llm_model": None, "policy": "reactive", "voice": "piper", "limit": None,
                "max_wait_s": 15.0}
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"settings": settings, "runs": []}))
    for n, q in enumerate(QUESTIONS):
        d = question_dir(out, q)
        d.mkdir(parents=True)
        turn = {"question": q.turns[0], "said": q.answers[0], "start_s": 0.0, "speech_end_s": 1.0, "end_s": 5.0,
                "latency_ms": 500.0 + n, "transcript": q.answers[0]}
        result = {"id": q.id, "category": q.category, "session": n, "frames": [0, 60], "turns": [turn],
                  "latency_ms": 500.0 + n, "hit": True, "hit_transcript": True}
        (d / "result.json").write_text(json.dumps(result))


def cut(path: Path) -> None:
    """What a run stopped while writing leaves (or a disk that filled)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_set_file_in_utf16_is_one_line(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text(write_set(path).read_text(), encoding="utf-16")
    line = one_line(kame("eval", "run", "--set", path, "--out", tmp_path / "run"))
    assert str(path) in line and "UTF-16" in line and "UTF-8" in line


def test_an_out_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "out.txt").write_text("mine\n")
    line = one_line(kame("eval", "run", "--set", write_set(tmp_path / "set.jsonl"), "--out", tmp_path / "out.txt"))
    assert "--out" in line and "is a file" in line
    assert (tmp_path / "out.txt").read_text() == "mine\n"


@pytest.mark.parametrize("command", ["report", "run"])
def test_a_damaged_run_json_is_one_line(tmp_path, command):
    out = tmp_path / "run"
    make_run(out, write_set(tmp_path / "set.jsonl"))
    cut(out / "run.json")
    args = ("report", out) if command == "report" else ("run", "--set", tmp_path / "set.jsonl", "--out", out)
    line = one_line(kame("eval", *args))
    assert str(out / "run.json") in line and "damaged" in line


def test_a_report_leaves_out_an_unreadable_result_and_says_so_once(tmp_path):
    out = tmp_path / "run"
    make_run(out, write_set(tmp_path / "set.jsonl"))
    cut(question_dir(out, QUESTIONS[1]) / "result.json")
    proc = kame("eval", "report", out, "--json")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "f2" in warnings[0] and "eval run" in warnings[0], proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["ids"] == ["f1", "f3"] and summary["planned"] == 3


def test_a_resumed_run_asks_again_a_question_whose_result_is_unreadable(tmp_path):
    from kame_desktop.evaluation.runner import pending_questions  # what run_questions runs

    out = tmp_path / "run"
    make_run(out, write_set(tmp_path / "set.jsonl"))
    assert pending_questions(out, QUESTIONS) == ([], 3)
    cut(question_dir(out, QUESTIONS[2]) / "result.json")
    (question_dir(out, QUESTIONS[1]) / "result.json").write_text('{"id": "f2"}')  # not a result
    pending, next_session = pending_questions(out, QUESTIONS)
    assert [q.id for q in pending] == ["f2", "f3"]
    assert next_session == 1  # after the readable result's session (0)
