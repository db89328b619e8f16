"""The cores at the user's pause (backend/cores.py): the answer writes its first clause before
the accurate ASR checks its words, and the LLM holds while the check runs."""

from __future__ import annotations

import asyncio
import threading
import time

from fixtures.llm import ScriptedLlm

from kame_desktop.backend.cores import HOLD_S, PauseCores, first_clause_written
from kame_desktop.backend.oracle_manager import OracleManager, PolicyConfig
from kame_desktop.events import AsrPartialEvent, LlmChunkEvent


def test_the_first_clause_is_what_the_lite_voice_opens_with():
    assert not first_clause_written("The capital of Fra")
    assert first_clause_written("The capital of France is Paris.")
    assert first_clause_written("Paris, of course")
    assert not first_clause_written("Yes, it")  # a clause of fewer than three words waits
    assert not first_clause_written("It is 3.5 km")  # a decimal point ends no clause
    assert first_clause_written("one two three four five six seven eight nine")


def check_after_a_pause(policy: str, chunks: tuple[str, ...]) -> tuple[int, float, list[str]]:
    """The ASR's side in a thread (the pause pass's words asked, then the accurate check) while
    the OracleManager streams `chunks`: (answer chunks written when the check was let run, how
    long it waited, the order of what happened)."""
    events, cores = [], PauseCores()
    order: list[str] = []
    seen: dict[str, float] = {}

    def asr_side(asked: threading.Event) -> None:
        asked.wait()
        start = time.monotonic()
        cores.before_check()
        seen["waited"] = time.monotonic() - start
        seen["chunks"] = sum(isinstance(e, LlmChunkEvent) for e in list(events))
        order.append("check")
        cores.after_check()

    async def main():
        manager = OracleManager(ScriptedLlm(chunks=chunks, delay=0.1), lambda _: True, events.append,
                                policy=PolicyConfig(name=policy), cores=cores)
        manager.start()
        asked = threading.Event()
        checker = threading.Thread(target=asr_side, args=(asked,))
        checker.start()
        cores.answer_asked()  # what the ASR does as it sends the pause pass's words
        asked.set()
        manager.on_asr(AsrPartialEvent("what is the capital of France", pause=True))
        await asyncio.to_thread(checker.join)
        await asyncio.sleep(0.05 * len(chunks))
        await manager.close()

    asyncio.run(main())
    return seen["chunks"], seen["waited"], order


def test_the_check_waits_for_the_answers_first_clause():
    chunks, waited, _ = check_after_a_pause("reactive", ("The capital", " of Fra", "nce is Paris.", " It is", " big."))
    assert chunks >= 3  # "The capital of France is Paris." was written before the check ran
    assert waited < HOLD_S  # let run by the clause, not by the time limit


def test_without_speculation_at_the_pause_the_check_never_waits():
    chunks, waited, _ = check_after_a_pause("end_of_turn", ("The capital of France is Paris.",))
    assert chunks == 0 and waited < 0.05  # nothing was asked at the pause: nobody waits for it


def test_the_llm_holds_while_the_check_runs_and_goes_on_after_it():
    cores = PauseCores()
    cores.answering()
    cores.first_clause()
    cores.before_check()  # the clause is written: the check runs now and the LLM holds
    stop, wrote = threading.Event(), threading.Event()
    writer = threading.Thread(target=lambda: (cores.may_write(stop), wrote.set()))
    writer.start()
    assert not wrote.wait(0.2)  # held
    cores.after_check()
    assert wrote.wait(HOLD_S)
    writer.join()


def test_a_held_llm_stops_at_once_when_its_answer_is_cancelled():
    cores = PauseCores()
    cores.answering()
    cores.first_clause()
    cores.before_check()
    stop = threading.Event()
    stop.set()
    start = time.monotonic()
    cores.may_write(stop)
    assert time.monotonic() - start < HOLD_S / 2


def test_an_answer_that_ends_lets_everyone_go():
    cores = PauseCores()
    cores.answering()
    cores.answer_ended()  # dropped or finished before its first clause
    start = time.monotonic()
    cores.before_check()
    cores.may_write(threading.Event())
    assert time.monotonic() - start < 0.05


def test_without_speculation_at_the_pause_the_llm_is_never_held():
    cores = PauseCores(enabled=False)  # end_of_turn / polling: nothing is asked at the pause
    cores.answering()
    cores.first_clause()
    cores.before_check()
    start = time.monotonic()
    cores.may_write(threading.Event())
    assert time.monotonic() - start < 0.05
