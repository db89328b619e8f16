"""`kame-desktop eval run | report | compare`. Heavy modules load inside the commands."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from kame_desktop.choices import EMBEDDED_LLMS, LLM_KINDS, LOCAL_LLM, OPENAI_LLM, one_of
from kame_desktop.errors import KameError

app = typer.Typer(help="Evaluation: what the companion knows (facts, speech MT-Bench) and how fast it says it.")
log = logging.getLogger(__name__)


def _bar(total: int, what: str):
    from rich.console import Console
    from rich.progress import Progress

    progress = Progress(transient=True, console=Console(stderr=True))  # stdout is for --json
    task = progress.add_task(what, total=total)
    return progress, lambda _question: progress.advance(task)


@app.command("run")
def run_cmd(
    set_name: Annotated[str, typer.Option("--set", help="facts, tools, memory, mtbench, mtbench-speech or a JSONL file.")],
    out: Annotated[Path, typer.Option(help="Run folder (a rerun resumes: finished questions are skipped).")],
    mode: Annotated[str, typer.Option(help="isolated (a fresh session per question) or conversation (one).")] = "isolated",
    frontend: Annotated[str, typer.Option(help="lite or kame.")] = "lite",
    checkpoint: Annotated[str | None, typer.Option(help="KAME checkpoint folder or repo id (means --frontend kame).")] = None,
    llm: Annotated[str, typer.Option(help=f"Back-end LLM: {one_of(LLM_KINDS)}.")] = LOCAL_LLM,
    llm_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (--llm openai).")] = None,
    llm_model: Annotated[str | None, typer.Option(help=f"Model name ({OPENAI_LLM}); GGUF path or embedded model ({LOCAL_LLM}: {', '.join(EMBEDDED_LLMS)}).")] = None,
    policy: Annotated[str, typer.Option(help="When to ask the LLM: reactive, polling or end_of_turn.")] = "reactive",
    asr_model: Annotated[str | None, typer.Option(help="Whisper model: auto (the app's default), tiny.en, base, a size name or a folder.")] = None,
    voice: Annotated[str, typer.Option(help="Who speaks the questions: piper or espeak-ng.")] = "piper",
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible judge for MT-Bench sets.")] = None,
    judge_model: Annotated[str, typer.Option(help="The judge's model name.")] = "gpt-4.1",
    judge_grammar: Annotated[
        bool, typer.Option(help="Constrain the judge to a JSON rating (llama_cpp.server) so a weak local model rates.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N questions.")] = None,
    max_wait: Annotated[
        float, typer.Option(help="Seconds a turn waits after the question for the reply to end (the paper's 15).")
    ] = 15.0,
    json_output: Annotated[bool, typer.Option("--json", help="Last stdout line: the report as one JSON object.")] = False,
) -> None:
    """Speak every question to the companion in real time, score the replies, write the report."""
    from kame_desktop.evaluation.judge import Judge, JudgeSettings
    from kame_desktop.evaluation.report import write_report
    from kame_desktop.evaluation.runner import RunSettings, check_run_folder, run_questions
    from kame_desktop.evaluation.score import score_run

    if checkpoint:
        frontend = "kame"
    settings = RunSettings(set=set_name, mode=mode, frontend=frontend, checkpoint=checkpoint, llm=llm,
                           llm_url=llm_url, llm_model=llm_model, policy=policy, asr_model=asr_model, voice=voice, limit=limit,
                           max_wait_s=max_wait)
    settings.check()
    from kame_desktop.evaluation.questions import load_set

    questions = load_set(set_name, limit)
    check_run_folder(out, settings)  # before the progress bar takes stderr
    progress, advance = _bar(len(questions), f"{set_name} ({mode})")
    with progress:
        run_questions(settings, out, advance)
    judge = Judge(JudgeSettings(judge_url, judge_model, grammar=judge_grammar)) if judge_url else None
    if judge is None and not all(q.is_fact for q in questions):
        log.warning("no --judge-url: MT-Bench answers are kept but not rated")
    progress, advance = _bar(len(questions), "scoring")
    with progress:
        score_run(out, questions, judge, advance)
    _print_summary(write_report(out, questions), out, json_output)


@app.command("report")
def report_cmd(
    out: Annotated[Path, typer.Argument(help="A run folder.")],
    json_output: Annotated[bool, typer.Option("--json", help="Last stdout line: the report as one JSON object.")] = False,
) -> None:
    """Rewrite report.md, report.json and the plots of a run folder."""
    from kame_desktop.evaluation.report import write_report

    if not (out / "run.json").is_file():
        raise KameError(f"{out} is not a run folder (no run.json)")
    _print_summary(write_report(out), out, json_output)


@app.command("compare")
def compare_cmd(
    a: Annotated[Path, typer.Argument(help="Run folder A.")],
    b: Annotated[Path, typer.Argument(help="Run folder B.")],
    json_output: Annotated[bool, typer.Option("--json", help="Last stdout line: both runs and B − A as JSON.")] = False,
) -> None:
    """Two runs side by side."""
    from kame_desktop.evaluation.report import compare

    for folder in (a, b):
        if not (folder / "run.json").is_file():
            raise KameError(f"{folder} is not a run folder (no run.json)")
    table, data = compare(a, b)
    typer.echo(table, err=json_output)
    if json_output:
        typer.echo(json.dumps(data))


def _print_summary(summary: dict, out: Path, json_output: bool) -> None:
    keys = ("set", "mode", "questions", "fact_accuracy", "median_latency_ms", "judge_score",
            "speaker_label_replies", "repeated_replies")
    for key in keys:
        typer.echo(f"{key:>22}: {summary.get(key)}", err=True)
    typer.echo(f"{'report':>22}: {out / 'report.md'}", err=True)
    if json_output:
        typer.echo(json.dumps(summary))
