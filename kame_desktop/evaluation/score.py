"""Scores a run folder in place: each reply's faster-whisper transcript, fact hits, speaker labels,
repeats and (MT-Bench) the judge's verdicts. Idempotent: what is already there is kept, so a
rerun only fills the gaps (a new judge replaces the verdicts of another)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from kame_desktop.evaluation.judge import Judge, build_prompt
from kame_desktop.evaluation.latency import turn_latency_ms
from kame_desktop.evaluation.questions import Question
from kame_desktop.evaluation.runner import RESULT_FILE, question_dir, read_result
from kame_desktop.evaluation.scoring import (
    audio_wer,
    clock_answers,
    fact_hit,
    repeated,
    speaker_label,
    tool_set,
)
from kame_desktop.events import SAMPLE_RATE

log = logging.getLogger(__name__)


class Transcriber:
    """faster-whisper over a whole reply (the embedded base model, loaded on first use)."""

    def __init__(self) -> None:
        self._model = None

    def __call__(self, pcm: np.ndarray) -> str:
        import soxr

        if not len(pcm) or float(np.max(np.abs(pcm))) < 1e-3:
            return ""  # silence: whisper would invent words
        if self._model is None:
            from faster_whisper import WhisperModel

            from kame_desktop.models.embedded import embedded_whisper_model

            self._model = WhisperModel(str(embedded_whisper_model()), device="cpu", compute_type="int8", cpu_threads=2)
        segments, _ = self._model.transcribe(soxr.resample(pcm, SAMPLE_RATE, 16_000), language="en", beam_size=1)
        return " ".join(s.text.strip() for s in segments).strip()


def load_results(out: Path, questions: list[Question]) -> list[tuple[Question, dict[str, Any]]]:
    """The questions that have a result, in the order they were asked."""
    found = []
    for q in questions:
        path = question_dir(out, q) / RESULT_FILE
        if path.is_file() and (result := read_result(path)) is not None:
            found.append((q, result))
    return sorted(found, key=lambda qr: (qr[1]["session"], qr[1]["frames"][0]))


def turn_end_ms(records: list[dict[str, Any]], turn: dict[str, Any]) -> float | None:
    """How long after the user's speech ended the turn end that the reply followed was detected
    (the last `turn_end` before the reply's first sound): the share of the latency that the
    end-of-turn decision takes (VAD hang-over, ASR lag)."""
    latency = turn.get("latency_ms")
    until = turn["end_s"] if latency is None else turn["speech_end_s"] + latency / 1000
    ends = [r["t"] for r in records if r["kind"] == "turn_end" and turn["start_s"] <= r["t"] <= until]
    return round((ends[-1] - turn["speech_end_s"]) * 1000, 1) if ends else None


def _timeline(folder: Path) -> list[dict[str, Any]]:
    path = folder / "timeline.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_run(out: Path, questions: list[Question], judge: Judge | None = None, progress=None) -> None:
    from kame_desktop.audio.files import read_audio
    from kame_desktop.fileio import atomic_write_bytes

    transcribe = Transcriber()
    earlier: dict[int, list[str]] = {}  # session → its replies so far
    before: dict[int, np.ndarray] = {}  # session → the output just before the next turn
    for question, result in load_results(out, questions):
        folder = question_dir(out, question)
        session = result["session"]
        replies = earlier.setdefault(session, [])
        records = _timeline(folder)
        for k, turn in enumerate(result["turns"]):
            pcm = read_audio(folder / f"turn{k + 1}.wav")
            # From the audio, at every scoring: a fix of the rule applies to old runs too.
            lead = before.get(session, np.zeros(0, dtype=np.float32))
            turn["latency_ms"] = turn_latency_ms(lead, pcm, turn["speech_end_s"] - turn["start_s"])
            before[session] = pcm
            turn["turn_end_ms"] = turn_end_ms(records, turn)
            if "transcript" not in turn:
                turn["transcript"] = transcribe(pcm)
            turn["audio_wer"] = audio_wer(turn["said"], turn["transcript"])
            turn["speaker_label"] = speaker_label(turn["said"])
            turn["repeated"] = repeated(turn["said"], replies)
            replies.append(turn["said"])
        result["latency_ms"] = result["turns"][0]["latency_ms"]  # the question's: its first turn's
        if question.is_fact:
            set_by_tool = [tool_set(records, a) for a in question.answers]
            if any(s is not None for s in set_by_tool):  # a timer: what was done, not what was said
                result["hit"] = result["hit_transcript"] = any(set_by_tool)
            else:
                answers = clock_answers(question.answers, result.get("answered_at", 0.0))
                result["hit"] = fact_hit(result["turns"][0]["said"], answers)
                result["hit_transcript"] = fact_hit(result["turns"][0]["transcript"], answers)
        elif judge is not None and result.get("judge", {}).get("name") != judge.settings.name:
            answers = [t["said"] for t in result["turns"]]
            verdicts = [judge.grade(build_prompt(question, answers, k)) for k in range(len(answers))]
            if all(v.problem is None or not v.problem.startswith("judge failed") for v in verdicts):
                result["judge"] = {"name": judge.settings.name, "verdicts": [dataclasses.asdict(v) for v in verdicts]}
            else:  # a judge that could not be reached is tried again next time
                result["judge"] = {"name": None, "verdicts": [dataclasses.asdict(v) for v in verdicts]}
        atomic_write_bytes(folder / RESULT_FILE, json.dumps(result, indent=2, ensure_ascii=False).encode())
        if progress:
            progress(question)
