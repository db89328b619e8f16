"""The report of a run folder, from hand-written results: figures, plots' points, compare."""

from __future__ import annotations

import json

from kame_desktop.evaluation.questions import Question
from kame_desktop.evaluation.report import compare, write_report
from kame_desktop.evaluation.runner import question_dir

QUESTIONS = [
    Question("f1", "science", ("Which planet is largest?",), answers=("jupiter",)),
    Question("f2", "animals", ("How many legs does a spider have?",), answers=("8", "eight")),
    Question("m1", "stem", ("Explain gravity.", "Shorter?")),
    Question("m2", "humanities", ("Why read?", "And poems?")),
]


def turn(said, latency, **flags):
    return {"question": "q", "said": said, "latency_ms": latency, "transcript": said.lower(),
            "audio_wer": 0.0, "speaker_label": False, "repeated": False} | flags


def make_run(folder, latencies, scores):
    (folder / "run.json").parent.mkdir(parents=True, exist_ok=True)
    settings = {"set": "mine.jsonl", "mode": "conversation", "frontend": "lite", "llm": "local",
                "llm_model": None, "policy": "reactive", "limit": None}
    (folder / "run.json").write_text(json.dumps({"settings": settings}))
    results = [
        {"hit": False, "hit_transcript": False, "turns": [turn("Neptune.", latencies[0])]},
        {"hit": True, "hit_transcript": True, "turns": [turn("Eight legs.", latencies[1], speaker_label=True)]},
        {"judge": {"name": "j", "verdicts": [{"prompt": "single-v1", "score": scores[0], "problem": None},
                                            {"prompt": "single-v1-multi-turn", "score": 3.0, "problem": None}]},
         "turns": [turn("It pulls.", latencies[2]), turn("It pulls.", 900.0, repeated=True)]},
        {"judge": {"name": "j", "verdicts": [{"prompt": "single-v1", "score": None, "problem": "no rating"},
                                            {"prompt": "single-v1-multi-turn", "score": None, "problem": "no rating"}]},
         "turns": [turn("Stories.", latencies[3]), turn("Rhymes.", None)]},
    ]
    for n, (q, r) in enumerate(zip(QUESTIONS, results, strict=True)):
        d = question_dir(folder, q)
        d.mkdir(parents=True)
        r |= {"id": q.id, "category": q.category, "session": 0, "frames": [n * 100, n * 100 + 90],
              "latency_ms": r["turns"][0]["latency_ms"]}
        (d / "result.json").write_text(json.dumps(r))


def test_report_figures_and_plots(tmp_path):
    make_run(tmp_path, [-200.0, 400.0, 600.0, None], [7.0])
    s = write_report(tmp_path, QUESTIONS)
    assert s["questions"] == 4 and s["ids"] == ["f1", "f2", "m1", "m2"]
    assert s["latencies_ms"] == [-200.0, 400.0, 600.0, None]
    assert (s["median_latency_ms"], s["negative_latencies"], s["unanswered"]) == (400.0, 1, 1)
    assert s["fact_accuracy"] == 0.5 and s["fact_accuracy_ci95"][0] < 0.5 < s["fact_accuracy_ci95"][1]
    assert s["judge_scores"] == [5.0, None] and s["judge_score"] == 5.0 and s["unrated_turns"] == 2
    assert (s["speaker_label_replies"], s["repeated_replies"], s["replies"]) == (1, 1, 6)
    assert s["by_category"]["science"] == {"questions": 1, "accuracy": 0.0}
    assert s["by_category"]["stem"] == {"questions": 1, "score": 5.0}
    assert s["category_accuracy"] == {n: c["accuracy"] for n, c in s["by_category"].items() if "accuracy" in c}
    assert s["category_accuracy"]["science"] == 0.0 and "stem" not in s["category_accuracy"]
    # ticks for the 3 measured latencies; 1 rated question with a latency; 2 fact categories
    assert s["plots"] == {"latency.png": 3, "categories.png": 2, "latency_vs_score.png": 1}
    assert all((tmp_path / name).stat().st_size > 5000 for name in s["plots"])
    md = (tmp_path / "report.md").read_text()
    assert "| f2 | animals | 400.0 | hit | Eight legs. |" in md and "negative value" in md
    assert json.loads((tmp_path / "report.json").read_text())["judge_scores"] == [5.0, None]


def test_compare_puts_two_runs_side_by_side(tmp_path):
    make_run(tmp_path / "a", [-200.0, 400.0, 600.0, None], [7.0])
    make_run(tmp_path / "b", [100.0, 500.0, 700.0, 800.0], [9.0])
    write_report(tmp_path / "a", QUESTIONS)
    write_report(tmp_path / "b", QUESTIONS)
    table, data = compare(tmp_path / "a", tmp_path / "b")
    assert data["delta"]["median_latency_ms"] == 200.0  # 600 − 400
    assert data["delta"]["judge_score"] == 1.0 and data["delta"]["fact_accuracy"] == 0.0
    assert "| median_latency_ms | 400.0 | 600.0 | 200.0 |" in table
