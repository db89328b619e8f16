"""The one assembly path: a Session from Settings, plus optional parts that are already built.

The CLI (`run`), the desktop app's controller, the benchmarks and the evaluation harness all
call `build_session`; nothing else constructs a Session. It chooses the front-end (`auto`:
KAME where a GPU has room and the weights are here, else lite), builds it, attaches the back-end
(always for lite, which speaks the LLM's answers) and hands back a Session whose `close()`
tears down what it built. Parts passed in (a loaded Whisper, a Piper voice, a front-end that a
benchmark reuses across runs) are reset for the new conversation and left open by `close()`.

Heavy modules (torch, moshi, faster-whisper, Piper) are imported only when their part is built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kame_desktop.choices import WHISPER_ASR
from kame_desktop.config import AsrSettings, FrontEndSettings, LlmSettings, Settings
from kame_desktop.events import EventBus

if TYPE_CHECKING:
    from kame_desktop.backend.asr.base import AsrProvider
    from kame_desktop.backend.llm.base import LlmProvider
    from kame_desktop.backend.worker import Backend, EventSink, SignalSink
    from kame_desktop.frontend.base import FrontEnd
    from kame_desktop.frontend.lite.tts import PiperTts
    from kame_desktop.session import Session

log = logging.getLogger(__name__)

# (settings, signal sink, event sink) -> the back-end, or None for none (tests, scripted runs).
BackendFactory = Callable[[Settings, "SignalSink", "EventSink"], "Backend | None"]


def no_backend(settings: Settings, post_signal: SignalSink, publish: EventSink) -> None:
    """The BackendFactory of a session without a back-end (a KAME run driven by an oracle
    script). Lite ignores it: it speaks the LLM's answers."""
    return None


@dataclass(frozen=True)
class KameOptions:
    """KAME load options that are not settings (the CLI's run flags)."""

    temperature: float | None = None  # None: the checkpoint's; 0: greedy
    seed: int | None = None
    threads: int | None = None  # torch CPU threads; None: 1 beside a back-end, else torch's own
    replay_stale_oracle: bool = False  # reference quirk (spec §2.6)


def run_settings(
    *,
    frontend: str = "auto",
    checkpoint: str | None = None,
    llm: str | None = None,
    llm_url: str | None = None,
    llm_model: str | None = None,
    asr: str = WHISPER_ASR,
    policy: str = "reactive",
    device: str = "auto",
    dtype: str | None = None,
    int8: bool = False,
) -> Settings:
    """Settings from a headless run's options (`kame-desktop run`, `eval run`), checked before
    anything loads; a checkpoint means KAME, and `llm` None means the local model."""
    from kame_desktop.choices import (
        ASR_KINDS,
        COMPUTE_DEVICES,
        DEFAULT_KAME_REPO,
        FRONTEND_KINDS,
        LLM_KINDS,
        LOCAL_LLM,
        OPENAI_LLM,
        OPENAI_MODEL,
        OPENAI_URL,
        POLICIES,
        check_choice,
    )

    check_choice(frontend, FRONTEND_KINDS, "front-end (--frontend)")
    check_choice(llm or LOCAL_LLM, LLM_KINDS, "LLM provider (--llm)")
    check_choice(asr, ASR_KINDS, "ASR provider (--asr)")
    check_choice(policy, POLICIES, "policy (--policy)")
    if not device.startswith(("cuda:", "mps:")):  # an indexed device (cuda:1) is torch's to check
        check_choice(device, COMPUTE_DEVICES, "device (--device)")
    openai = llm == OPENAI_LLM
    return Settings(
        llm=LlmSettings(
            provider=llm or LOCAL_LLM,
            # --llm-url "" is refused when the LLM is made: never OpenAI's host in its place
            base_url=(OPENAI_URL if llm_url is None else llm_url) if openai else OPENAI_URL,
            model=(llm_model or OPENAI_MODEL) if openai else OPENAI_MODEL,
            gguf_path="" if openai else (llm_model or ""),
            policy=policy,
        ),
        asr=AsrSettings(provider=asr),
        frontend=FrontEndSettings(
            kind="kame" if checkpoint else frontend,
            checkpoint=checkpoint or DEFAULT_KAME_REPO,
            device=device,
            dtype=dtype or "auto",
            int8=int8,
        ),
    )


def build_frontend(
    settings: Settings, *, tts: PiperTts | None = None, kame: KameOptions = KameOptions(), with_backend: bool = True
) -> FrontEnd:
    """The front-end the settings ask for (`auto` decides here, and logs why)."""
    from kame_desktop.frontend.select import choose_frontend
    from kame_desktop.models.accelerator import require_kame

    fe = settings.frontend
    # The choice carries the device, dtype and int8 it sized the model with: the load uses them.
    choice = choose_frontend(fe.kind, fe.checkpoint if fe.kind == "kame" else None, fe.device, dtype=fe.dtype, int8=fe.int8)
    log.info("front-end: %s (%s)", choice.kind, choice.reason)
    if choice.kind == "lite":
        from kame_desktop.frontend.lite.engine import LiteFrontEnd
        from kame_desktop.frontend.lite.tts import PiperTts

        return LiteFrontEnd(tts or PiperTts(threads=1))
    require_kame()
    import torch

    # Beside a back-end on 2 cores, ASR and LLM get a thread each; torch takes one.
    torch.set_num_threads(kame.threads or (1 if with_backend else torch.get_num_threads()))
    from kame_desktop.frontend.kame.engine import KameFrontEnd

    return KameFrontEnd.load(
        choice.checkpoint or fe.checkpoint,
        device=choice.device,
        dtype=choice.dtype,
        int8=choice.int8,
        temperature=kame.temperature,
        seed=kame.seed,
        replay_stale_oracle=kame.replay_stale_oracle,
    )


def build_backend(settings: Settings, post_signal: SignalSink, publish: EventSink, *, asr: AsrProvider | None = None,
                  llm: LlmProvider | None = None) -> Backend:
    from kame_desktop.backend.factory import make_backend

    return make_backend(settings, post_signal, publish, asr=asr, llm=llm)


def build_session(
    settings: Settings,
    bus: EventBus | None = None,
    *,
    frontend: FrontEnd | None = None,
    backend: BackendFactory | None = None,
    asr: AsrProvider | None = None,
    llm: LlmProvider | None = None,
    tts: PiperTts | None = None,
    kame: KameOptions = KameOptions(),
) -> Session:
    """A ready Session (not started: `session.run` starts it).

    `backend`: None builds the one the settings describe; else a factory (`no_backend`: none,
    tests: their own). Lite always gets one: it speaks the LLM's answers.
    `frontend`, `asr`, `llm`, `tts`: parts built by the caller and reused across sessions (`llm`:
    an in-process model, which keeps what it has read of the prompt for the next session)."""
    from kame_desktop.session import Session

    owns_frontend = frontend is None
    if frontend is None:
        frontend = build_frontend(settings, tts=tts, kame=kame, with_backend=backend is not no_backend)
    else:
        frontend.reset()
    session = Session(frontend, bus or EventBus(), owns_frontend=owns_frontend)
    if settings.history:  # the log may hold what was said only where history keeps it anyway
        from kame_desktop.logs import TranscriptLog

        session.bus.subscribe(TranscriptLog())
    try:
        if asr is not None:
            asr.reset()
        if backend is None or (backend is no_backend and frontend.kind == "lite"):
            session.backend = build_backend(settings, session.signals.post, session.publish_async, asr=asr, llm=llm)
        else:
            session.backend = backend(settings, session.signals.post, session.publish_async)
    except BaseException:
        session.close()
        raise
    return session
