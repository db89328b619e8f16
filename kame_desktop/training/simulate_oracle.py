"""`train simulate-oracle DATA`: an LLM's prediction for every oracle event (spec §4.2), written
to `oracle_raw/<id>.json`.

Answers are cached per dialogue in `oracle_cache/<id>.json`, keyed by the LLM's name and the
exact messages, and saved after every answer: an interrupted or failed run keeps what it got,
and a rerun asks nothing twice. Requests run concurrently up to a limit; retryable failures are
retried with exponential backoff. `--strategy random` needs no LLM (random_oracle.py): each
response's last event shows the truth, the earlier ones responses of other dialogues from a
training-only pool — a cheap way to teach the model to weigh the oracle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from kame_desktop.backend.llm.base import LlmProvider
from kame_desktop.errors import LlmError, TrainingDataError
from kame_desktop.training.layout import (
    ORACLE_DIR,
    TEXT_DIR,
    dialogue_ids,
    oracle_path,
    read_json,
    read_words,
    text_path,
    write_json,
)
from kame_desktop.training.oracle_events import OracleEvent, oracle_events, prompt_messages
from kame_desktop.training.progress import StepProgress, StepReport
from kame_desktop.training.random_oracle import predict_random

log = logging.getLogger(__name__)

CACHE_DIR = "oracle_cache"
STRATEGIES = ("llm", "random")


@dataclass(frozen=True)
class SimulateSettings:
    strategy: str = "llm"
    interval: float = 0.5
    concurrency: int = 4
    retries: int = 3  # attempts after the first, for retryable errors
    backoff_s: float = 1.0  # first retry delay; doubles each time
    fallback: bool = False  # on a final LLM error: "" (ratio ≤ 0.5) or the hint, as the reference's option
    seed: int = 0  # --strategy random
    pool: Path | None = None  # --strategy random: training transcripts (a dataset or text folder); default DATA's
    checkpoint: str | None = None  # --strategy random: token lengths in its tokenizer's pieces (default: words)
    force: bool = False  # redo dialogues that already have an oracle file


def _cache_key(llm_name: str, messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps([llm_name, messages], ensure_ascii=False).encode()).hexdigest()


class AnswerCache:
    """{key: answer} for one dialogue, saved atomically after each new answer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, str] = {}
        if path.exists():
            try:
                raw = read_json(path)
                if isinstance(raw, dict):
                    self.answers = {k: v for k, v in raw.items() if isinstance(v, str)}
            except TrainingDataError as e:  # a damaged cache only costs the answers it held
                log.warning("%s; starting it afresh", e)

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def put(self, key: str, answer: str) -> None:
        self.answers[key] = answer
        write_json(self.path, self.answers)


async def _ask(llm: LlmProvider, messages: list[dict[str, str]], settings: SimulateSettings) -> str:
    delay = settings.backoff_s
    for attempt in range(settings.retries + 1):
        try:
            return "".join([chunk async for chunk in llm.stream(messages)]).strip()
        except LlmError as e:
            if not e.retryable or attempt == settings.retries:
                raise
            log.info("LLM error (%s); retrying in %.1f s", e, delay)
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


async def _predict_llm(
    events: list[OracleEvent], llm: LlmProvider, cache: AnswerCache, settings: SimulateSettings, report: StepReport
) -> tuple[list[str | None], list[str]]:
    """Predictions in event order (None where the LLM failed) and the distinct errors."""
    semaphore = asyncio.Semaphore(max(1, settings.concurrency))
    errors: list[str] = []

    async def one(event: OracleEvent) -> str | None:
        messages = prompt_messages(event)
        key = _cache_key(llm.name, messages)
        cached = cache.get(key)
        if cached is not None:
            report.count("cache_hits")
            return cached
        async with semaphore:
            try:
                report.count("llm_calls")
                answer = await _ask(llm, messages, settings)
            except LlmError as e:
                if str(e) not in errors:
                    errors.append(str(e))
                # The fallback is not cached: a later run with the LLM back asks again.
                return event.hint if settings.fallback else None
        cache.put(key, answer)  # the event loop runs one callback at a time: no lock needed
        return answer

    return list(await asyncio.gather(*(one(e) for e in events))), errors


def _random_setup(data: Path, settings: SimulateSettings):
    """The tokenizer and the response pool of --strategy random."""
    from kame_desktop.training.random_oracle import build_pool, word_tokens

    tokens = word_tokens
    if settings.checkpoint is not None:
        from kame_desktop.frontend.kame.checkpoint import load_tokenizer, resolve_checkpoint

        sp = load_tokenizer(resolve_checkpoint(settings.checkpoint))

        def tokens(text: str) -> tuple[int, ...]:
            return tuple(sp.encode(text))

    root = settings.pool or data
    folder = root / TEXT_DIR if (root / TEXT_DIR).is_dir() else root
    dialogues = {}
    for path in sorted(folder.glob("*.json")):
        with contextlib.suppress(TrainingDataError):  # a bad transcript is reported where it is used
            dialogues[path.stem] = read_words(path)
    pool = build_pool(dialogues, tokens, settings.interval)
    if not pool:
        raise TrainingDataError(f"{folder}: no responses for --strategy random's pool (no transcripts with turns)")
    return tokens, pool


def simulate_oracle(
    data: Path, llm: LlmProvider | None, settings: SimulateSettings = SimulateSettings(), show_progress: bool = True
) -> StepReport:
    if settings.strategy not in STRATEGIES:
        raise TrainingDataError(f"unknown strategy {settings.strategy!r}; use one of {', '.join(STRATEGIES)}")
    if settings.strategy == "llm" and llm is None:
        raise TrainingDataError("--strategy llm needs an LLM")
    ids = dialogue_ids(data)
    if not ids:
        raise TrainingDataError(f"{data}: no transcripts under {data / 'text'}; run `kame-desktop train prepare` first")
    report = StepReport("simulate-oracle")
    (data / ORACLE_DIR).mkdir(exist_ok=True)
    if settings.strategy == "random":
        tokens, pool = _random_setup(data, settings)
    with StepProgress(report, len(ids), show_progress) as progress:
        loop = asyncio.new_event_loop()
        try:
            for dialogue in ids:
                with progress.dialogue(dialogue):
                    if oracle_path(data, dialogue).exists() and not settings.force:
                        report.skipped += 1
                        continue
                    words = read_words(text_path(data, dialogue))
                    events = oracle_events(words, settings.interval)
                    if settings.strategy == "random":
                        chosen = predict_random(dialogue, words, events, pool, tokens, settings.seed)
                        records = [e.record(p, use_hint) for e, (p, use_hint) in zip(events, chosen, strict=True)]
                    else:
                        cache = AnswerCache(data / CACHE_DIR / f"{dialogue}.json")
                        predictions, errors = loop.run_until_complete(
                            _predict_llm(events, llm, cache, settings, report)  # type: ignore[arg-type]
                        )
                        failed = sum(p is None for p in predictions)
                        if failed:
                            raise TrainingDataError(
                                f"{failed} of {len(events)} LLM requests failed: {'; '.join(errors)} — the answers "
                                "received are cached, rerun to ask only for the rest"
                            )
                        # Empty answers are dropped, as the reference does.
                        records = [e.record(p) for e, p in zip(events, predictions, strict=True) if p]
                    write_json(oracle_path(data, dialogue), records)
                    report.done += 1
                    report.count("events", len(records))
        finally:
            if llm is not None:
                loop.run_until_complete(llm.aclose())
            loop.close()
    return report
