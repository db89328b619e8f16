"""Build the back-end's providers from plain settings (`assembly.backend_settings` makes them
from the app's Settings). Heavy imports stay inside, so choosing a provider costs nothing until
it is used."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kame_desktop.backend.asr.base import AsrProvider
from kame_desktop.backend.llm.base import LlmProvider
from kame_desktop.backend.prompts import ANSWER_TOKENS, MESSAGE_TOKENS
from kame_desktop.choices import (
    ASR_KINDS,
    LLM_KINDS,
    OPENAI_MODEL,
    OPENAI_URL,
    AsrKind,
    LlmKind,
    Policy,
    TurnDetection,
    check_choice,
)
from kame_desktop.config import llm_api_key, llm_url_problem
from kame_desktop.errors import AsrError, KameError, LlmError

if TYPE_CHECKING:
    from kame_desktop.backend.worker import Backend, EventSink, SignalSink

log = logging.getLogger(__name__)

LOCAL_CONTEXT_TOKENS = 4096  # the in-process model's context window (n_ctx)
REMOTE_CONTEXT_TOKENS = 8192  # what a remote model is assumed to take (its own is not asked)
DIALOGUE_TOKENS = 64  # the least room a request keeps for the user's latest words


def system_prompt_room(context_tokens: int) -> int:
    """The most tokens a system prompt may take in a model of `context_tokens`: the rest of a
    request is the answer, the messages' wrapping and a few of the user's words."""
    return context_tokens - ANSWER_TOKENS - 2 * MESSAGE_TOKENS - DIALOGUE_TOKENS


def context_tokens_of(llm: LlmKind) -> int:
    return LOCAL_CONTEXT_TOKENS if llm == "local" else REMOTE_CONTEXT_TOKENS


def prompt_too_long(tokens: int, context_tokens: int) -> str | None:
    """The error for a system prompt of `tokens` tokens, or None when it fits."""
    room = system_prompt_room(context_tokens)
    if tokens <= room:
        return None
    return (f"the system prompt is too long for the model: {tokens} tokens, {tokens - room} more than the "
            f"{room} it can take (context {context_tokens}) — shorten it in Settings → Persona")


@dataclass(frozen=True)
class BackendSettings:
    llm: LlmKind = "local"
    llm_url: str | None = None
    llm_model: str | None = None  # a model name (openai) or a GGUF path (local)
    llm_threads: int = 1
    llm_first_chunk_timeout_s: float = 10.0  # asked -> first text
    llm_chunk_timeout_s: float = 5.0  # text -> next text
    asr: AsrKind = "whisper"
    asr_model: str = "base"
    asr_threads: int = 1
    asr_url: str | None = None
    turn_detection: TurnDetection = "smart"  # how the end of the user's turn is heard
    policy: Policy = "reactive"  # when to ask the LLM
    llm_max_streams: int = 3  # overlapping answers where the provider serves them (spec §3.3b)
    system_prompt: str = ""  # empty: the built-in prompt


def make_llm(settings: BackendSettings) -> LlmProvider:
    check_choice(settings.llm, LLM_KINDS, "LLM provider")
    if settings.llm == "local":
        from kame_desktop.backend.llm.local import LocalLlm

        return LocalLlm(
            model_path=settings.llm_model,
            n_ctx=LOCAL_CONTEXT_TOKENS,
            n_threads=settings.llm_threads,
            max_tokens=ANSWER_TOKENS,
            first_chunk_timeout=settings.llm_first_chunk_timeout_s,
            chunk_timeout=settings.llm_chunk_timeout_s,
        )
    if settings.llm == "openai":
        from kame_desktop.backend.llm.openai_compat import OpenAiLlm

        url = settings.llm_url or ""  # never another host in place of the user's: the key would go there
        if problem := llm_url_problem(url):
            raise LlmError(f"{problem} (Settings → LLM)", False, kind="bad_input")
        return OpenAiLlm(
            url,
            settings.llm_model or OPENAI_MODEL,
            api_key=llm_api_key(),
            context_tokens=REMOTE_CONTEXT_TOKENS,
            max_tokens=ANSWER_TOKENS,
            first_chunk_timeout=settings.llm_first_chunk_timeout_s,
            chunk_timeout=settings.llm_chunk_timeout_s,
        )
    raise AssertionError(settings.llm)


def make_asr(settings: BackendSettings) -> AsrProvider:
    check_choice(settings.asr, ASR_KINDS, "ASR provider")
    if settings.asr == "whisper":
        from kame_desktop.backend.asr.whisper import WhisperAsr

        return WhisperAsr(model=settings.asr_model, cpu_threads=settings.asr_threads)
    if settings.asr == "openai":
        from kame_desktop.backend.asr.openai_asr import OpenAiAsr

        # OpenAI's own service unless the LLM's server is chosen: then that server, or none
        url = settings.asr_url or (OPENAI_URL if settings.llm_url is None else settings.llm_url)
        if problem := llm_url_problem(url):
            raise AsrError(f"{problem} (Settings → LLM)", kind="bad_input")
        return OpenAiAsr(url, api_key=llm_api_key())
    if settings.asr == "kyutai-stt":
        from kame_desktop.backend.asr.kyutai import KyutaiStt

        return KyutaiStt()
    raise AssertionError(settings.asr)


def make_backend(
    settings: BackendSettings, post_signal: SignalSink, publish: EventSink, *, asr: AsrProvider | None = None
) -> Backend:
    """The back-end, not started (Session.start starts it): it posts signals for the front-end
    on `post_signal` and events on `publish`; `asr` is a recognizer the caller built (else one
    from the settings). An LLM that cannot be set up (a bad GGUF, a missing package) does not
    stop the conversation: the front-end goes on without hints and every request says why."""
    from kame_desktop.backend.llm.base import UnavailableLlm
    from kame_desktop.backend.oracle_manager import PolicyConfig
    from kame_desktop.backend.prompts import SYSTEM_PROMPT
    from kame_desktop.backend.turn import TurnDetector
    from kame_desktop.backend.worker import Backend
    from kame_desktop.events import ErrorEvent

    notices = []
    try:
        llm = make_llm(settings)
        llm.load()  # fail early, and keep model loading out of the paced session
    except KameError as e:
        llm = UnavailableLlm(f"{settings.llm} (unavailable)", str(e), e.kind)
        notices.append(ErrorEvent("llm", str(e), e.kind))
        log.warning("%s", e)
    system_prompt = settings.system_prompt.strip() or SYSTEM_PROMPT
    if not isinstance(llm, UnavailableLlm) and (
        too_long := prompt_too_long(llm.count_tokens(system_prompt), llm.context_tokens)
    ):  # every request would fail with the server's "exceeds the context window": say why once
        llm = UnavailableLlm(f"{llm.name} (prompt too long)", too_long, "bad_input")
        notices.append(ErrorEvent("llm", too_long, "bad_input"))
        log.warning("%s", too_long)
    return Backend(
        llm,
        asr if asr is not None else make_asr(settings),
        post_signal,
        publish,
        turns=TurnDetector(settings.turn_detection),
        policy=PolicyConfig(name=settings.policy, max_streams=max(1, settings.llm_max_streams)),
        system_prompt=system_prompt,
        notices=notices,
    )
