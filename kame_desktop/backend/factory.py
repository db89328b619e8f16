"""Build the back-end's providers from the app's Settings. Heavy imports stay inside, so
choosing a provider costs nothing until it is used."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kame_desktop.backend.asr.base import AsrProvider
from kame_desktop.backend.llm.base import LlmProvider
from kame_desktop.backend.prompts import ANSWER_TOKENS, MESSAGE_TOKENS
from kame_desktop.choices import (
    ASR_KINDS,
    KYUTAI_ASR,
    LLM_KINDS,
    LOCAL_LLM,
    OPENAI_ASR,
    OPENAI_LLM,
    OPENAI_MODEL,
    OPENAI_URL,
    WHISPER_ASR,
    LlmKind,
    check_choice,
)
from kame_desktop.config import Settings, llm_url_problem
from kame_desktop.credentials import llm_api_key
from kame_desktop.errors import AsrError, KameError, LlmError

if TYPE_CHECKING:
    from kame_desktop.backend.memory import MemoryKeeper
    from kame_desktop.backend.tools.base import TurnTools
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
    return LOCAL_CONTEXT_TOKENS if llm == LOCAL_LLM else REMOTE_CONTEXT_TOKENS


def prompt_too_long(tokens: int, context_tokens: int) -> str | None:
    """The error for a system prompt of `tokens` tokens, or None when it fits."""
    room = system_prompt_room(context_tokens)
    if tokens <= room:
        return None
    return (f"the system prompt is too long for the model: {tokens} tokens, {tokens - room} more than the "
            f"{room} it can take (context {context_tokens}) — shorten it in Settings → Persona")


def make_llm(settings: Settings) -> LlmProvider:
    llm = settings.llm
    check_choice(llm.provider, LLM_KINDS, "LLM provider")
    if llm.provider == LOCAL_LLM:
        from kame_desktop.backend.llm.local import LocalLlm

        return LocalLlm(
            model_path=llm.gguf_path or None,  # none: the embedded default
            n_ctx=LOCAL_CONTEXT_TOKENS,
            n_threads=llm.threads,
            max_tokens=ANSWER_TOKENS,
            first_chunk_timeout=llm.first_chunk_timeout_s,
            chunk_timeout=llm.chunk_timeout_s,
        )
    if llm.provider == OPENAI_LLM:
        from kame_desktop.backend.llm.openai_compat import OpenAiLlm

        # Never another host in place of the user's: the key would go there.
        if problem := llm_url_problem(llm.base_url):
            raise LlmError(f"{problem} (Settings → LLM)", False, kind="bad_input")
        return OpenAiLlm(
            llm.base_url,
            llm.model or OPENAI_MODEL,
            api_key=llm_api_key(),
            context_tokens=REMOTE_CONTEXT_TOKENS,
            max_tokens=ANSWER_TOKENS,
            first_chunk_timeout=llm.first_chunk_timeout_s,
            chunk_timeout=llm.chunk_timeout_s,
        )
    raise AssertionError(llm.provider)


def make_asr(settings: Settings) -> AsrProvider:
    asr = settings.asr
    check_choice(asr.provider, ASR_KINDS, "ASR provider")
    if asr.provider == WHISPER_ASR:
        from kame_desktop.backend.asr.whisper import WhisperAsr

        return WhisperAsr(model=asr.whisper_model, cpu_threads=asr.threads, language=asr.language or None)
    if asr.provider == OPENAI_ASR:
        from kame_desktop.backend.asr.openai_asr import OpenAiAsr

        # OpenAI's own service unless the LLM's server is chosen: then that server, or none
        url = settings.llm.base_url if settings.llm.provider == OPENAI_LLM else OPENAI_URL
        if problem := llm_url_problem(url):
            raise AsrError(f"{problem} (Settings → LLM)", kind="bad_input")
        return OpenAiAsr(url, api_key=llm_api_key())
    if asr.provider == KYUTAI_ASR:
        from kame_desktop.backend.asr.kyutai import KyutaiStt

        return KyutaiStt()
    raise AssertionError(asr.provider)


def make_memory_and_tools(settings: Settings) -> tuple[MemoryKeeper | None, TurnTools | None]:
    """The back-end's memory (None when switched off: nothing written or used) and the tools the
    LLM is offered (None when off; with them, the enabled MCP servers'). With tools, memory is
    written through `remember`/`forget`; without, the keeper asks the LLM itself once a turn is over."""
    from kame_desktop.backend.memory import MemoryKeeper, MemoryStore
    from kame_desktop.backend.tools import TurnTools, enabled_tools
    from kame_desktop.backend.tools.memory import memory_tools

    tools = enabled_tools(settings.tools.disabled) if settings.tools.enabled else None
    memory = MemoryKeeper(MemoryStore(), extract=tools is None) if settings.memory.enabled else None
    if memory is not None and tools is not None:
        mine = {t.name: t for t in memory_tools(memory) if t.name not in settings.tools.disabled}
        tools = TurnTools({**tools.tools, **mine})
    if tools is not None and any(server.enabled for server in settings.tools.mcp):
        from kame_desktop.backend.tools.mcp_servers import McpServers

        tools.servers = McpServers(settings.tools.mcp, settings.tools.disabled)  # started with the back-end
    return memory, tools


def make_backend(
    settings: Settings, post_signal: SignalSink, publish: EventSink, *, asr: AsrProvider | None = None,
    llm: LlmProvider | None = None,
) -> Backend:
    """The back-end, not started (Session.start starts it): it posts signals for the front-end
    on `post_signal` and events on `publish`; `asr` and `llm` are parts the caller built and
    keeps across sessions (else ones from the settings; a shared in-process model keeps what it
    has read of the prompt). An LLM that cannot be set up (a bad GGUF, a missing package) does
    not stop the conversation: the front-end goes on without hints and every request says why."""
    from kame_desktop.backend.llm.base import UnavailableLlm
    from kame_desktop.backend.oracle_manager import PolicyConfig
    from kame_desktop.backend.prompts import SYSTEM_PROMPT
    from kame_desktop.backend.turn import TurnDetector
    from kame_desktop.backend.worker import Backend
    from kame_desktop.events import ErrorEvent

    notices = []
    owns_llm = llm is None
    try:
        llm = llm or make_llm(settings)
        llm.load()  # fail early, and keep model loading out of the paced session
    except KameError as e:
        llm = UnavailableLlm(f"{settings.llm.provider} (unavailable)", str(e), e.kind)
        notices.append(ErrorEvent("llm", str(e), e.kind))
        log.warning("%s", e)
    system_prompt = settings.system_prompt.strip() or SYSTEM_PROMPT
    # Every request would fail with llama.cpp's "exceeds the context window": say why once. (A
    # server's context is not known here: it says so itself if the prompt is too long for it.)
    if settings.llm.provider == LOCAL_LLM and not isinstance(llm, UnavailableLlm) and (
        too_long := prompt_too_long(llm.count_tokens(system_prompt), llm.context_tokens)
    ):
        llm = UnavailableLlm(f"{llm.name} (prompt too long)", too_long, "bad_input")
        notices.append(ErrorEvent("llm", too_long, "bad_input"))
        log.warning("%s", too_long)
    memory, tools = make_memory_and_tools(settings)
    return Backend(
        llm,
        asr if asr is not None else make_asr(settings),
        post_signal,
        publish,
        turns=TurnDetector(settings.asr.turn_detection),
        policy=PolicyConfig(name=settings.llm.policy, max_streams=max(1, settings.llm.max_streams)),
        system_prompt=system_prompt,
        notices=notices,
        owns_llm=owns_llm,
        tools=tools,
        memory=memory,
    )
