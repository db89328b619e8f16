"""The report of a run folder: report.json (figures), report.md (for people) and PNG plots; and
`compare`, two runs side by side. Plots use matplotlib's object API (no pyplot, no display)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from kame_desktop.evaluation.latency import median, p90
from kame_desktop.evaluation.questions import Question, load_set
from kame_desktop.evaluation.runner import read_run_file
from kame_desktop.evaluation.score import load_results
from kame_desktop.evaluation.scoring import heard_wer, wilson_interval
from kame_desktop.fileio import atomic_write_bytes

# The paper's speech MT-Bench (reasoning, STEM, humanities): (label, latency s, score).
# Moshi is a direct speech-to-speech model, drawn at 0 s like KAME.
PAPER_POINTS = (("Moshi", 0.0, 2.05), ("KAME + GPT-4.1", 0.0, 6.43), ("Unmute", 2.1, 7.70))


def _question_score(result: dict[str, Any]) -> float | None:
    """Mean of the turns' parsed ratings (None when no turn was rated)."""
    scores = [v["score"] for v in result.get("judge", {}).get("verdicts", []) if v["score"] is not None]
    return round(statistics.mean(scores), 2) if scores else None


def _median3(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def summarize(out: Path, questions: list[Question] | None = None) -> dict[str, Any]:
    run = read_run_file(out)
    settings = run["settings"]
    questions = questions or load_set(settings["set"], settings.get("limit"))
    results = load_results(out, questions)
    replies = [t for _, r in results for t in r["turns"]]
    latencies = [r.get("latency_ms") for _, r in results]
    measured = [x for x in latencies if x is not None]
    facts = [(q, r) for q, r in results if q.is_fact and "hit" in r]
    judged = [(q, r) for q, r in results if not q.is_fact]
    turn_scores = [v["score"] for _, r in judged for v in r.get("judge", {}).get("verdicts", []) if v["score"] is not None]
    verdicts = [v for _, r in judged for v in r.get("judge", {}).get("verdicts", [])]
    categories: dict[str, dict[str, Any]] = {}
    for q, r in results:
        c = categories.setdefault(q.category, {"questions": 0, "facts": 0, "hits": 0, "judged": 0, "scores": []})
        c["questions"] += 1
        c["facts"] += q.is_fact
        c["hits"] += bool(r.get("hit"))
        c["judged"] += not q.is_fact
        if (score := _question_score(r)) is not None:
            c["scores"].append(score)
    by_category = {
        name: {"questions": c["questions"]}
        | ({"accuracy": round(c["hits"] / c["facts"], 3)} if c["facts"] else {})
        | ({"score": round(statistics.mean(c["scores"]), 2) if c["scores"] else None} if c["judged"] else {})
        for name, c in sorted(categories.items())
    }
    hits = sum(bool(r["hit"]) for _, r in facts)
    summary: dict[str, Any] = {
        "set": settings["set"],
        "mode": settings["mode"],
        "frontend": settings["frontend"],
        "llm": settings["llm_model"] or settings["llm"],
        "policy": settings["policy"],
        "max_wait_s": settings.get("max_wait_s"),
        "questions": len(results),
        "planned": len(questions),
        "fact_accuracy": round(hits / len(facts), 3) if facts else None,
        "fact_accuracy_ci95": [round(x, 3) for x in wilson_interval(hits, len(facts))] if facts else None,
        "fact_accuracy_transcript": (
            round(sum(bool(r["hit_transcript"]) for _, r in facts) / len(facts), 3) if facts else None
        ),
        "median_latency_ms": median(measured),
        "p90_latency_ms": p90(measured),
        "median_turn_end_ms": median(  # of the first turns, as the latency
            [r["turns"][0]["turn_end_ms"] for _, r in results if r["turns"][0].get("turn_end_ms") is not None]
        ),
        "negative_latencies": sum(x < 0 for x in measured),
        "unanswered": sum(x is None for x in latencies),
        "latencies_ms": latencies,
        "judge": next((r["judge"]["name"] for _, r in judged if r.get("judge", {}).get("name")), None),
        "judge_score": round(statistics.mean(turn_scores), 2) if turn_scores else None,
        "judge_scores": [_question_score(r) for _, r in judged] if judged else None,
        "latency_score": [[r.get("latency_ms"), _question_score(r)] for _, r in judged],
        "unrated_turns": sum(v["score"] is None for v in verdicts),
        "speaker_label_replies": sum(bool(t.get("speaker_label")) for t in replies),
        "repeated_replies": sum(bool(t.get("repeated")) for t in replies),
        "replies": len(replies),
        "median_audio_wer": _median3([t["audio_wer"] for t in replies if t.get("audio_wer") is not None]),
        # What the back-end heard of the questions (their final words), over every turn that has it.
        "heard_wer": heard_wer([(t["question"], t["heard"]) for t in replies if "heard" in t]),
        "asr_model": settings.get("asr_model"),
        "by_category": by_category,
        "category_accuracy": {name: c["accuracy"] for name, c in by_category.items() if "accuracy" in c},
        "ids": [q.id for q, _ in results],
        "runs": run.get("runs", []),
    }
    return summary


# --- plots -------------------------------------------------------------------------------------


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    return fig, fig.subplots()


def _points(ax, label: str) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if c.get_label() == label)


def plot_latency(summary: dict[str, Any], path: Path) -> int:
    """Histogram of the latencies with one tick per question; returns the ticks drawn."""
    values = [x / 1000 for x in summary["latencies_ms"] if x is not None]
    fig, ax = _figure()
    if values:
        ax.hist(values, bins=min(20, max(5, len(values) // 3)), color="#8fb8de")
        ax.axvline(summary["median_latency_ms"] / 1000, color="#1f4e79", label=f"median {summary['median_latency_ms']:.0f} ms")
    ax.scatter(values, [0] * len(values), marker="|", s=200, color="black", label="questions")
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("latency: end of question → first reply sound (s)")
    ax.set_ylabel("questions")
    ax.set_title(f"{summary['set']} · {summary['mode']} · {summary['frontend']}")
    ax.legend()
    fig.savefig(path, dpi=110)
    return _points(ax, "questions")


def plot_categories(summary: dict[str, Any], path: Path) -> int:
    """Accuracy (facts, with the overall 95 % interval) or mean score by category; returns bars."""
    facts = summary["fact_accuracy"] is not None
    key = "accuracy" if facts else "score"
    cats = [(n, c[key]) for n, c in summary["by_category"].items() if c.get(key) is not None]
    fig, ax = _figure()
    bars = ax.bar([n for n, _ in cats], [v for _, v in cats], color="#8fb8de")
    if facts:
        low, high = summary["fact_accuracy_ci95"]
        acc = summary["fact_accuracy"]
        ax.errorbar([len(cats)], [acc], yerr=[[acc - low], [high - acc]], fmt="o", color="#1f4e79", capsize=6)
        ax.set_xticks(range(len(cats) + 1), [n for n, _ in cats] + ["all (95 % CI)"])
        ax.set_ylim(0, 1)
        ax.set_ylabel("fact accuracy")
    else:
        ax.set_ylim(0, 10)
        ax.set_ylabel("judge score (1-10)")
    ax.set_title(f"{summary['set']} by category")
    ax.tick_params(axis="x", labelrotation=30)
    fig.savefig(path, dpi=110)
    return len(bars)


def plot_latency_vs_score(summary: dict[str, Any], path: Path) -> int:
    """Judged sets: each question's (latency, score), the run's median and the paper's systems;
    returns the question points drawn."""
    pairs = [
        (lat / 1000, score) for lat, score in summary["latency_score"] if lat is not None and score is not None
    ]
    fig, ax = _figure()
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], alpha=0.4, color="#8fb8de", label="questions")
    if summary["judge_score"] is not None and summary["median_latency_ms"] is not None:
        ax.scatter([summary["median_latency_ms"] / 1000], [summary["judge_score"]], s=120, color="#1f4e79", label="this run")
    for name, lat, score in PAPER_POINTS:
        ax.scatter([lat], [score], marker="s", s=80, color="#c0504d", label="paper")
        ax.annotate(name, (lat, score), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("judge score (1-10)")
    ax.set_ylim(0, 10.5)
    ax.set_title(f"{summary['set']}: latency vs score (judge: {summary['judge']})", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys())
    fig.savefig(path, dpi=110)
    return _points(ax, "questions")


# --- files -------------------------------------------------------------------------------------


def write_report(out: Path, questions: list[Question] | None = None) -> dict[str, Any]:
    summary = summarize(out, questions)
    plots = {"latency.png": plot_latency(summary, out / "latency.png"),
             "categories.png": plot_categories(summary, out / "categories.png")}
    if summary["judge_scores"] is not None:
        plots["latency_vs_score.png"] = plot_latency_vs_score(summary, out / "latency_vs_score.png")
    summary["plots"] = plots  # file → data points drawn (ticks, bars, question points)
    atomic_write_bytes(out / "report.json", json.dumps(summary, indent=2).encode())
    atomic_write_bytes(out / "report.md", render_markdown(out, summary, questions).encode())
    return summary


def _fmt(value: Any) -> str:
    return "–" if value is None else str(value)


def render_markdown(out: Path, s: dict[str, Any], questions: list[Question] | None) -> str:
    lines = [
        f"# Evaluation: {s['set']} ({s['mode']})",
        "",
        f"Front-end **{s['frontend']}**, LLM **{s['llm']}**, policy {s['policy']}; "
        f"{s['questions']} of {s['planned']} questions answered.",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    rows = [("median latency (ms)", s["median_latency_ms"]), ("p90 latency (ms)", s["p90_latency_ms"]),
            ("of which: end of turn detected after the speech ended (median ms)", s["median_turn_end_ms"]),
            ("replies that started before the question ended", s["negative_latencies"]),
            ("questions with no audible reply", s["unanswered"])]
    if s["fact_accuracy"] is not None:
        low, high = s["fact_accuracy_ci95"]
        rows += [("fact accuracy (spoken text)", f"{s['fact_accuracy']:.1%} (95 % CI {low:.1%}–{high:.1%})"),
                 ("fact accuracy (transcript of the audio)", f"{s['fact_accuracy_transcript']:.1%}")]
    if s["judge_scores"] is not None:
        rows += [("judge", s["judge"]), ("mean judge score (1-10, all rated turns)", s["judge_score"]),
                 ("turns without a rating", s["unrated_turns"])]
    rows += [("median WER of the reply audio's transcript vs its text", s["median_audio_wer"]),
             ("WER of the question words the back-end heard", s.get("heard_wer"))]
    rows += [("replies with a speaker label", f"{s['speaker_label_replies']} / {s['replies']}"),
             ("replies repeating an earlier one", f"{s['repeated_replies']} / {s['replies']}")]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    for n, r in enumerate(s["runs"], 1):
        lines.append(f"\nRun {n}: started {r['started']}, {r['questions_run']} questions in {r['wall_s']} s; "
                     f"load average {r['load_average_1_5_15']} on {r['cpus']} CPUs at its end.")
    lines += ["", "Latency: end of the question's speech → first reply sample above −40 dBFS (the rule of "
              "`bench lite`). A negative value means sound came out before the question had ended: a KAME "
              "front-end makes sound from its first frame, so its latency is what was measured, not an answer "
              "given before the question was heard."]
    if s["judge_scores"] is not None:
        lines += ["", "Judge scores from a small local model show that the path works; they are not a quality "
                  "measure (the paper used GPT-4.1)."]
    lines += ["", "![latency](latency.png)", "", "![categories](categories.png)"]
    if s["judge_scores"] is not None:
        lines += ["", "![latency vs score](latency_vs_score.png)"]
    lines += ["", "## Questions", "", "| id | category | latency (ms) | result | said |", "| --- | --- | --- | --- | --- |"]
    for q, r in load_results(out, questions or load_set(s["set"], None)):
        result = ("hit" if r.get("hit") else "miss") if q.is_fact else _fmt(_question_score(r))
        said = " / ".join(t["said"] for t in r["turns"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {q.id} | {q.category} | {_fmt(r.get('latency_ms'))} | {result} | {said[:200]} |")
    return "\n".join(lines) + "\n"


COMPARED = ("questions", "fact_accuracy", "fact_accuracy_transcript", "median_latency_ms", "p90_latency_ms",
            "median_turn_end_ms", "median_audio_wer", "heard_wer",
            "negative_latencies", "unanswered", "judge_score", "unrated_turns", "speaker_label_replies",
            "repeated_replies")


def _saved_summary(out: Path) -> dict[str, Any] | None:
    """report.json, or None when there is none or it is damaged (the figures are then recomputed)."""
    try:
        saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def compare(a: Path, b: Path) -> tuple[str, dict[str, Any]]:
    """Markdown table and JSON of two runs' figures side by side (B − A where both are numbers)."""
    sa, sb = (_saved_summary(p) or summarize(p) for p in (a, b))
    lines = [f"| figure | A: {a.name} | B: {b.name} | B − A |", "| --- | --- | --- | --- |"]
    for key in ("set", "mode", "frontend", "llm", "policy"):
        lines.append(f"| {key} | {_fmt(sa.get(key))} | {_fmt(sb.get(key))} | |")
    delta: dict[str, Any] = {}
    for key in COMPARED:
        va, vb = sa.get(key), sb.get(key)
        delta[key] = round(vb - va, 3) if isinstance(va, int | float) and isinstance(vb, int | float) else None
        lines.append(f"| {key} | {_fmt(va)} | {_fmt(vb)} | {_fmt(delta[key])} |")
    return "\n".join(lines) + "\n", {"a": sa, "b": sb, "delta": delta}
