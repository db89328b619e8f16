"""The whole harness, for real: 3 facts and 3 MT-Bench questions spoken to the lite companion
(embedded back-end) in real time, judged by a real llama_cpp.server on 127.0.0.1 constrained to a
JSON rating; then the report, a resumed run that redoes nothing, and a comparison."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kame_desktop.evaluation.questions import load_set

pytestmark = pytest.mark.slow


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "kame_desktop", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def question_set(path):
    """3 facts and the 3 speech MT-Bench questions with the shortest turns, in one JSONL file
    (each line in its own format)."""
    facts = [{"id": q.id, "category": q.category, "question": q.turns[0], "answers": list(q.answers)}
             for q in load_set("facts")[:3]]
    mtbench = sorted(load_set("mtbench-speech"), key=lambda q: sum(len(t) for t in q.turns))[:3]
    rows = facts + [{"question_id": q.id, "category": q.category, "turns": list(q.turns),
                     **({"reference": list(q.reference)} if q.reference else {})} for q in mtbench]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return [r.get("id", r.get("question_id")) for r in rows]


@pytest.mark.timeout(1500)
def test_harness_on_facts_and_mtbench(tmp_path, llama_server, monkeypatch):
    monkeypatch.setenv("KAME_CACHE_DIR", str(tmp_path / "cache"))  # fresh speech and judge caches
    ids = question_set(tmp_path / "set.jsonl")
    out = tmp_path / "run"
    args = ["eval", "run", "--set", str(tmp_path / "set.jsonl"), "--out", str(out), "--judge-url", llama_server,
            "--judge-model", "smollm2", "--judge-grammar", "--json", "--llm-model", "smollm2-135m",
            "--max-wait", "90"]  # every turn waits for its reply, however busy the machine
    report = json.loads(cli(*args).stdout.strip().splitlines()[-1])

    assert report["questions"] == 6 and report["ids"] == [str(i) for i in ids]
    assert len(report["latencies_ms"]) == 6 and all(x is not None for x in report["latencies_ms"]), report["latencies_ms"]
    assert report["fact_accuracy"] is not None and 0 <= report["fact_accuracy"] <= 1
    assert len(report["judge_scores"]) == 3
    assert any(s is not None and 1 <= s <= 10 for s in report["judge_scores"]), report["judge_scores"]
    for key in ("set", "mode", "median_latency_ms", "speaker_label_replies", "repeated_replies"):
        assert key in report
    results = [json.loads(p.read_text()) for p in sorted(out.glob("questions/*/result.json"))]
    assert sorted(len(r["turns"]) for r in results) == [1, 1, 1, 2, 2, 2]
    for r in results:
        assert all(t["said"] for t in r["turns"]), r  # the companion said something each turn
        assert all("transcript" in t and "speaker_label" in t and "repeated" in t for t in r["turns"])
        folder = out / "questions" / r["id"]
        assert all((folder / f"turn{k + 1}.wav").is_file() for k in range(len(r["turns"])))
        kinds = {json.loads(line)["kind"] for line in (folder / "timeline.jsonl").read_text().splitlines()}
        assert {"asr_final", "llm_request", "assistant_token"} <= kinds
    rated = [v for r in results for v in r.get("judge", {}).get("verdicts", []) if v["score"] is not None]
    assert rated and all(v["prompt"].startswith("single") for v in rated)

    # The plots hold one point per question: latency ticks for all 6, (latency, score) points
    # for the rated MT-Bench questions, one accuracy bar per facts category.
    plots = report["plots"]
    assert plots["latency.png"] == 6
    assert plots["latency_vs_score.png"] == sum(s is not None for s in report["judge_scores"])
    assert plots["categories.png"] == sum("accuracy" in c for c in report["by_category"].values()) > 0
    assert all((out / name).stat().st_size > 5000 for name in plots)
    assert "| fact-01 |" in (out / "report.md").read_text()

    # Resumed: nothing left to run, nothing re-judged (the verdicts come from the cache).
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("questions/*/turn1.wav")}
    again = json.loads(cli(*args).stdout.strip().splitlines()[-1])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["latencies_ms"] == report["latencies_ms"] and again["judge_scores"] == report["judge_scores"]

    rewritten = json.loads(cli("eval", "report", str(out), "--json").stdout.strip().splitlines()[-1])
    assert rewritten["judge_scores"] == report["judge_scores"]
    compared = json.loads(cli("eval", "compare", str(out), str(out), "--json").stdout.strip().splitlines()[-1])
    assert compared["delta"]["median_latency_ms"] == 0
