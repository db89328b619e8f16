"""simulate-oracle's request handling with a scripted provider: retries with backoff, errors
that must not be retried, the cache, the fallback, and the concurrency limit."""

from __future__ import annotations

import asyncio
import json

import pytest

from kame_desktop.errors import LlmError
from kame_desktop.training.simulate_oracle import SimulateSettings, simulate_oracle

WORDS = [
    {"speaker": "A", "word": w, "start": round(0.4 * i, 2), "end": round(0.4 * (i + 1), 2)}
    for i, w in enumerate(["hello", "there", "how", "today"])
] + [{"speaker": "B", "word": "fine", "start": 1.7, "end": 2.1}, {"speaker": "B", "word": "thanks", "start": 2.1, "end": 2.5}]


class ScriptedLlm:
    """Fails the first `failures` requests with LlmError(retryable), then answers."""

    name = "scripted"
    context_tokens = 4096

    def __init__(self, failures: int = 0, retryable: bool = True) -> None:
        self.failures = failures
        self.retryable = retryable
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def stream(self, messages):
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if self.calls <= self.failures:
                raise LlmError("scripted failure", retryable=self.retryable)
            yield " predicted "
            yield "reply "
        finally:
            self.in_flight -= 1

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def aclose(self) -> None:
        pass


@pytest.fixture
def data(tmp_path):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "d1.json").write_text(json.dumps(WORDS))
    return tmp_path


def test_retries_then_caches(data):
    llm = ScriptedLlm(failures=2)
    report = simulate_oracle(data, llm, SimulateSettings(retries=3, backoff_s=0.001, concurrency=1), show_progress=False)
    assert report.done == 1 and llm.calls == 3 + 2  # three events; the first fails twice, then answers
    records = json.loads((data / "oracle_raw" / "d1.json").read_text())
    assert [r["prediction"] for r in records] == ["predicted reply"] * 3  # stripped, joined
    again = ScriptedLlm()
    forced = simulate_oracle(data, again, SimulateSettings(force=True), show_progress=False)
    assert again.calls == 0 and forced.counters["cache_hits"] == 3


def test_not_retryable_fails_the_dialogue_once(data):
    llm = ScriptedLlm(failures=99, retryable=False)
    report = simulate_oracle(data, llm, SimulateSettings(retries=5, backoff_s=0.001), show_progress=False)
    assert llm.calls == 3 and report.failed == 1
    (line,) = report.problems
    assert line.startswith("d1: 3 of 3 LLM requests failed: scripted failure")
    assert not (data / "oracle_raw" / "d1.json").exists()


def test_fallback_is_stored_but_not_cached(data):
    llm = ScriptedLlm(failures=99, retryable=False)
    report = simulate_oracle(data, llm, SimulateSettings(retries=0, fallback=True), show_progress=False)
    assert report.done == 1
    records = json.loads((data / "oracle_raw" / "d1.json").read_text())
    assert [r["prediction"] for r in records] == ["fine thanks", "fine thanks"]  # ratio ≤ 0.5: "" (dropped)
    later = ScriptedLlm()
    simulate_oracle(data, later, SimulateSettings(force=True), show_progress=False)
    assert later.calls == 3  # the LLM is asked again once it is back


def test_concurrency_limit(data):
    llm = ScriptedLlm()
    simulate_oracle(data, llm, SimulateSettings(concurrency=2), show_progress=False)
    assert llm.calls == 3 and llm.max_in_flight == 2
