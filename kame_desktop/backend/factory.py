"""Build the back-end's providers from plain settings (`assembly.backend_settings` makes them
from the app's Settings). Heavy imports stay inside, so choosing a provider costs nothing until
it is used."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kame_desktop.backend.asr.base import AsrProvider
from kame_desktop.backend.llm.base import LlmProvider
from kame_desktop.backend.prompts import ANSWER_TOKENS
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
from kame_desktop.config import llm_api_key
from kame_desktop.errors import KameError

if TYPE_CHECKING:
    from kame_desktop.backend.worker import Backend, EventSink, SignalSink

log = logging.getLogger(__name__)


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
    system_prompt: str = ""  # empty: the built-in prompt


def make_llm(settings: BackendSettings) -> LlmProvider:
    check_choice(settings.llm, LLM_KINDS, "LLM provider")
    if settings.llm == "local":
        from kame_desktop.backend.llm.local import LocalLlm

        return LocalLlm(
            model_path=settings.llm_model,
            n_threads=settings.llm_threads,
            max_tokens=ANSWER_TOKENS,
            first_chunk_timeout=settings.llm_first_chunk_timeout_s,
            chunk_timeout=settings.llm_chunk_timeout_s,
        )
    if settings.llm == "openai":
        from kame_desktop.backend.llm.openai_compat import OpenAiLlm

        return OpenAiLlm(
            settings.llm_url or OPENAI_URL,
            settings.llm_model or OPENAI_MODEL,
            api_key=llm_api_key(),
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

        return OpenAiAsr(settings.asr_url or settings.llm_url or OPENAI_URL, api_key=llm_api_key())
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
        if hasattr(llm, "load"):
            llm.load()  # fail early, and keep model loading out of the paced session
    except KameError as e:
        llm = UnavailableLlm(f"{settings.llm} (unavailable)", str(e), e.kind)
        notices.append(ErrorEvent("llm", str(e), e.kind))
        log.warning("%s", e)
    return Backend(
        llm,
        asr if asr is not None else make_asr(settings),
        post_signal,
        publish,
        turns=TurnDetector(settings.turn_detection),
        policy=PolicyConfig(name=settings.policy),
        system_prompt=settings.system_prompt.strip() or SYSTEM_PROMPT,
        notices=notices,
    )
