"""Runs a question set through the headless Session in real time, one folder per question.

`isolated`: a fresh session per question. `conversation`: every question in one session, so the
history grows. A scripted user (evaluation.dialog) speaks each turn after the companion's reply
has ended. Per question the run keeps the reply audio of each turn, the timeline of its window and
a result.json; a question whose result.json exists is skipped, so a stopped run resumes (in
conversation mode the resumed questions start a new conversation, and their `session` says so).
Scoring and the report come after (evaluation.score, evaluation.report).

Sessions are built in one place, `open_session`, the way `bench lite` builds them: one Whisper
and one Piper (or one KAME model) shared by all sessions, a fresh LLM and front-end per session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kame_desktop.choices import LOCAL_LLM
from kame_desktop.config import using_data_dir
from kame_desktop.errors import KameError
from kame_desktop.evaluation.dialog import CAP_S, Dialog, Segment
from kame_desktop.evaluation.questions import Question, load_set
from kame_desktop.evaluation.scoring import heard_text
from kame_desktop.events import FRAME_SECONDS, EventBus, Stamped

if TYPE_CHECKING:
    from kame_desktop.config import Settings

log = logging.getLogger(__name__)

MODES = ("isolated", "conversation")
RUN_FILE = "run.json"
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class RunSettings:
    set: str
    mode: str = "isolated"
    frontend: str = "lite"  # lite | kame
    checkpoint: str | None = None  # KAME checkpoint folder or repo id
    llm: str = LOCAL_LLM  # choices.LLM_KINDS
    llm_url: str | None = None
    llm_model: str | None = None
    policy: str = "reactive"
    asr_model: str | None = None  # None: the app's default (AsrSettings.whisper_model)
    voice: str = "piper"  # who speaks the questions: piper | espeak-ng
    limit: int | None = None
    max_wait_s: float = CAP_S  # the longest a turn waits for its reply to end

    def check(self) -> None:
        from kame_desktop.choices import check_choice

        check_choice(self.mode, MODES, "mode (--mode)")
        check_choice(self.frontend, ("lite", "kame"), "front-end (--frontend)")
        if not self.max_wait_s > 0:
            raise KameError("--max-wait must be > 0 seconds")
        self.app_settings()  # the LLM provider and the policy, checked as `run` checks them

    def app_settings(self) -> Settings:
        """The Settings of the sessions this run builds (through the one assembly path)."""
        from kame_desktop.assembly import run_settings
        from kame_desktop.config import MemorySettings, ToolSettings

        settings = run_settings(frontend=self.frontend, checkpoint=self.checkpoint, llm=self.llm, llm_url=self.llm_url,
                                llm_model=self.llm_model, policy=self.policy)
        asr = dataclasses.replace(settings.asr, whisper_model=self.asr_model or settings.asr.whisper_model)
        # The `tools` set is about them: its sessions offer the built-in tools (the app's default is off).
        # Memory likewise: the `memory` set's sessions keep and use it (in the run's own folder).
        return dataclasses.replace(settings, asr=asr, tools=ToolSettings(enabled=self.set == "tools"),
                                   memory=MemorySettings(enabled=self.set == "memory"))


# --- session assembly (the one place; see the module docstring) --------------------------------


@dataclass
class Parts:
    """Loaded once per run and shared by its sessions."""

    asr: Any
    tts: Any = None  # lite: PiperTts
    kame: Any = None  # kame: KameFrontEnd (reset per session)
    llm: Any = None  # the in-process model, as the app keeps it: what it has read of the prompt stays read

    def close(self) -> None:
        if self.llm is not None:
            import asyncio

            asyncio.run(self.llm.aclose())


def load_parts(settings: RunSettings) -> Parts:
    from kame_desktop.backend.asr.whisper import WhisperAsr
    from kame_desktop.backend.factory import make_llm

    # A session of the app lasts the whole conversation: its model reads the system prompt (and
    # the tools) once. Each isolated question is a session here, so the in-process model is kept.
    app = settings.app_settings()
    llm = make_llm(app) if app.llm.provider == LOCAL_LLM else None
    asr = WhisperAsr(app.asr.whisper_model, cpu_threads=1, language=app.asr.language or None)
    if settings.frontend == "lite":
        from kame_desktop.frontend.lite.tts import PiperTts

        return Parts(asr, tts=PiperTts(threads=1), llm=llm)
    from kame_desktop.models.accelerator import require_kame

    require_kame()
    import torch

    torch.set_num_threads(1)  # 2 cores: whisper and llama.cpp take one thread each too
    from kame_desktop.frontend.kame.engine import KameFrontEnd

    if not settings.checkpoint:
        raise KameError("--frontend kame needs --checkpoint (a folder or a Hugging Face repo id)")
    return Parts(asr, kame=KameFrontEnd.load(settings.checkpoint))


@contextlib.contextmanager
def open_session(settings: RunSettings, parts: Parts, bus: EventBus) -> Iterator[Any]:
    """A ready Session (front-end + back-end) for one conversation, built by the one assembly
    path with the run's shared parts (one Whisper and one Piper, or one KAME model); closed on
    exit (parts that were passed in stay loaded)."""
    from kame_desktop.assembly import build_session

    session = build_session(settings.app_settings(), bus, frontend=parts.kame, asr=parts.asr, llm=parts.llm,
                            tts=parts.tts)
    try:
        yield session
    finally:
        session.close()


# --- the run -----------------------------------------------------------------------------------


def question_dir(out: Path, question: Question) -> Path:
    return out / "questions" / re.sub(r"[^A-Za-z0-9._-]+", "_", question.id)


def said_text(records: list[Stamped]) -> str:
    """What the companion said: its assistant_token pieces, joined."""
    return "".join(r.event.piece for r in records if r.event.kind == "assistant_token").strip()


def read_run_file(out: Path) -> dict[str, Any]:
    """The run folder's run.json; a KameError (one line) when it is damaged."""
    path = out / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise KameError(f"cannot read {path} ({e.strerror or e})") from None
    except ValueError as e:  # cut short, not UTF-8
        raise KameError(f"{path} is damaged ({e}); restore it, or start the run afresh in another --out") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise KameError(f"{path} is not a run file (no settings); start the run afresh in another --out")
    return data


def read_result(path: Path) -> dict[str, Any] | None:
    """A question's result.json, or None (with a warning) when it cannot be read: a run that
    was stopped while writing it, or a damaged file. `eval run` on the folder redoes the question."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        if _is_result(result):
            return result
        problem = "not a result file"
    except (OSError, ValueError) as e:  # ValueError: cut short, not UTF-8
        problem = str(getattr(e, "strerror", None) or e)
    if path not in _said_unreadable:  # once per file, however often the report reads it
        _said_unreadable.add(path)
        log.warning("%s is unreadable (%s): left out; `eval run` with this --out asks the question again", path, problem)
    return None


_said_unreadable: set[Path] = set()


def _is_result(data: Any) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("session"), int) and isinstance(data.get("frames"), list)
            and len(data["frames"]) == 2 and isinstance(data.get("turns"), list) and bool(data["turns"]))


def pending_questions(out: Path, questions: list[Question]) -> tuple[list[Question], int]:
    """The questions without a readable result, and the number of the next session."""
    pending, sessions = [], []
    for q in questions:
        path = question_dir(out, q) / RESULT_FILE
        result = read_result(path) if path.is_file() else None
        if result is None:
            pending.append(q)
        else:
            sessions.append(result["session"])
    return pending, 1 + max(sessions, default=-1)


def check_run_folder(out: Path, settings: RunSettings) -> None:
    """A KameError (one line) unless `out` can take this run: a new folder, or one that holds a
    run with the same settings (to resume)."""
    if out.exists() and not out.is_dir():
        raise KameError(f"--out {out} is a file; give a folder for the run (a new one, or an earlier run's to resume)")
    if (out / RUN_FILE).is_file():
        mine, theirs = dataclasses.asdict(settings), read_run_file(out)["settings"]
        differ = sorted(k for k in mine if k != "limit" and theirs.get(k) != mine[k])
        if differ:
            raise KameError(f"{out} holds a run with other settings ({', '.join(differ)}); choose another --out")


def _check_run_file(out: Path, settings: RunSettings) -> None:
    path = out / RUN_FILE
    mine = dataclasses.asdict(settings)
    check_run_folder(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    from kame_desktop.fileio import atomic_write_bytes

    runs = read_run_file(out).get("runs", []) if path.is_file() else []
    atomic_write_bytes(path, json.dumps({"settings": mine, "runs": runs}, indent=2).encode())


def _log_run(out: Path, started: float, questions: int) -> None:
    """Append this run's wall time and the machine's load to run.json: real-time figures on a
    shared machine mean little without them."""
    import platform

    from kame_desktop.fileio import atomic_write_bytes

    path = out / RUN_FILE
    data = read_run_file(out)
    data.setdefault("runs", []).append({
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "questions_run": questions,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
    })
    atomic_write_bytes(path, json.dumps(data, indent=2).encode())


class _Recorder:
    """Writes a question's folder once its last turn's segment has closed."""

    def __init__(self, out: Path, settings: RunSettings, records: list[Stamped], session_index: int,
                 plan: list[tuple[Question, int]], on_done: Callable[[Question], None]) -> None:
        self.out, self.settings, self.records = out, settings, records
        self.session_index, self.plan, self.on_done = session_index, plan, on_done
        self._turns: list[tuple[Segment, np.ndarray]] = []

    def __call__(self, segment: Segment, pcm: np.ndarray) -> None:
        from kame_desktop.audio.files import write_wav

        question, turn = self.plan[segment.index]
        self._turns.append((segment, pcm))
        if turn + 1 < len(question.turns):
            return
        folder = question_dir(self.out, question)
        folder.mkdir(parents=True, exist_ok=True)
        first, last = self._turns[0][0], self._turns[-1][0]
        window = sorted((r for r in list(self.records) if first.start <= r.frame < last.end), key=lambda r: r.frame)
        turns = []
        for k, (seg, audio) in enumerate(self._turns):
            write_wav(folder / f"turn{k + 1}.wav", audio)
            mine = [r for r in window if seg.start <= r.frame < seg.end]
            turns.append({
                "question": question.turns[k],
                "start_s": round(seg.start_s, 3),
                "end_s": round(seg.end * FRAME_SECONDS, 3),
                "speech_end_s": round(seg.speech_end_s, 3),
                "said": said_text(mine),
                "heard": heard_text(mine),  # the user's final words the back-end heard
                "errors": [r.event.message for r in mine if r.event.kind == "error"],
            })
        with (folder / "timeline.jsonl").open("w", encoding="utf-8") as f:
            for r in window:
                f.write(json.dumps(r.to_record(), ensure_ascii=False) + "\n")
        result = {
            "id": question.id,
            "category": question.category,
            "answers": list(question.answers),
            "session": self.session_index,
            "frames": [first.start, last.end],
            "turns": turns,
            "answered_at": round(time.time(), 1),  # the clock the `tools` set's time answers are checked against
        }
        from kame_desktop.fileio import atomic_write_bytes

        atomic_write_bytes(folder / RESULT_FILE, json.dumps(result, indent=2, ensure_ascii=False).encode())
        self._turns = []
        self.on_done(question)


def run_questions(settings: RunSettings, out: Path, progress: Callable[[Question], None] | None = None) -> list[Question]:
    """Run every question of the set without a result yet; returns the questions of the set.
    Timers and notes the companion is asked to set go to the run's own folder (`out/data`),
    never the user's."""
    settings.check()
    questions = load_set(settings.set, settings.limit)
    _check_run_file(out, settings)
    pending, next_session = pending_questions(out, questions)
    if not pending:
        return questions
    with using_data_dir(out / "data"):
        _run_pending(settings, out, pending, next_session, progress or (lambda q: None))
    return questions


def _run_pending(settings: RunSettings, out: Path, pending: list[Question], next_session: int,
                 done: Callable[[Question], None]) -> None:
    from kame_desktop.evaluation.speech import Speaker

    started = time.time()
    parts = load_parts(settings)
    speaker = Speaker(settings.voice, tts=parts.tts)
    spoken = {q.id: [speaker.speak(t) for t in q.turns] for q in pending}  # before any paced run
    spoken |= {f"{q.id}/tell{n}": [speaker.speak(t) for t in turns] for q in pending for n, turns in enumerate(q.tell)}
    # A question told in conversations before it is asked in a new one: it is a group of its own.
    told = [[q] for q in pending if q.tell]
    pending = [q for q in pending if not q.tell]
    groups = told + ([[q] for q in pending] if settings.mode == "isolated" else [pending] if pending else [])
    try:
        _run_groups(settings, out, parts, spoken, groups, next_session, done)
    finally:
        parts.close()
    _log_run(out, started, len(pending))


def _run_groups(settings: RunSettings, out: Path, parts: Parts, spoken: dict[str, list[np.ndarray]],
                groups: list[list[Question]], next_session: int, done: Callable[[Question], None]) -> None:
    from kame_desktop.audio.sources import NullSink

    for index, group in enumerate(groups, next_session):
        for n, _ in enumerate(group[0].tell if len(group) == 1 else ()):
            _tell(settings, parts, spoken[f"{group[0].id}/tell{n}"], question_dir(out, group[0]) / f"tell{n + 1}.json")
        plan = [(q, k) for q in group for k in range(len(q.turns))]
        records: list[Stamped] = []
        bus = EventBus()
        bus.subscribe(records.append)
        recorder = _Recorder(out, settings, records, index, plan, done)
        dialog = Dialog([spoken[q.id][k] for q, k in plan], cap_s=settings.max_wait_s, on_segment=recorder)
        with open_session(settings, parts, bus) as session:
            session.run(dialog, dialog.sink(NullSink()))


KEEP_WAIT_S = 120.0  # the longest the user stays quiet after telling, for the companion to keep it


def _tell(settings: RunSettings, parts: Parts, utterances: list[np.ndarray], record: Path) -> None:
    """A conversation that tells the companion something (the `memory` set): spoken like the
    questions, then the user stays quiet until the companion has kept what it heard (its memory
    reads a turn once the back-end is idle), then the conversation ends. What was heard and said
    goes to `record`, with what the memory asked the model, its reply, and what it kept and
    rejected (`memory`: the run's own store, so a missed fact can be told from a misheard one)."""
    from kame_desktop.audio.sources import NullSink, NullSource
    from kame_desktop.fileio import atomic_write_bytes

    dialog = Dialog(utterances, cap_s=settings.max_wait_s)
    records: list[Stamped] = []
    bus = EventBus()
    bus.subscribe(records.append)
    with open_session(settings, parts, bus) as session:
        memory = session.backend.memory if session.backend else None
        if memory is not None:
            memory.journal = []
        quiet = NullSource(realtime=True)
        waited = [0]

        class Source:
            def read(self) -> np.ndarray | None:
                frame = dialog.read()
                if frame is not None:
                    return frame
                waited[0] += 1
                if memory is None or not memory.pending() or waited[0] * FRAME_SECONDS > KEEP_WAIT_S:
                    return None
                return quiet.read()

        session.run(Source(), dialog.sink(NullSink()))
    told = {"heard": heard_text(records), "said": said_text(records), "waited_s": round(waited[0] * FRAME_SECONDS, 1),
            "memory": memory.journal if memory is not None else None}
    atomic_write_bytes(record, json.dumps(told, indent=2, ensure_ascii=False).encode())
