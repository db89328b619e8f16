"""The back-end worker: a thread with its own asyncio loop for the OracleManager and the LLM
stream, plus one thread for the ASR (recognition is CPU-heavy and would stall the loop).

Everything that reaches it from the session is thread-safe and never blocks: audio goes into a
bounded queue (the oldest audio is dropped, with an error event, if recognition falls behind),
the rest is scheduled onto the loop. Failures become `error` events; the front-end keeps
running on PAD oracle meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

import numpy as np

from kame_desktop.backend.asr.base import AsrProvider
from kame_desktop.backend.llm.base import LlmProvider
from kame_desktop.backend.oracle_manager import OracleManager, PolicyConfig
from kame_desktop.backend.prompts import SYSTEM_PROMPT
from kame_desktop.errors import error_kind
from kame_desktop.events import (
    ErrorEvent,
    Event,
    Signal,
    SpeechStartEvent,
    TurnEnded,
    TurnEndEvent,
    UserSpeechStarted,
)

log = logging.getLogger(__name__)

SignalSink = Callable[[Signal], bool]  # posts a signal for the front-end; False if it was dropped
EventSink = Callable[[Event], None]  # publishes an event (the session stamps it)

_FLUSH = object()  # end of the audio: commit pending words
_RESET = object()  # new conversation: forget buffered audio
_STOP = object()


class Backend:
    def __init__(
        self,
        llm: LlmProvider,
        asr: AsrProvider | None,
        post_signal: SignalSink,
        publish: EventSink,
        *,
        policy: PolicyConfig | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        audio_queue_frames: int = 250,  # 20 s of audio
        notices: list[Event] | tuple[Event, ...] = (),
    ) -> None:
        self.llm = llm
        self.asr = asr
        self.post_signal = post_signal
        self.publish = publish
        self.policy = policy or PolicyConfig()
        self.system_prompt = system_prompt
        self.notices = tuple(notices)  # e.g. why the LLM is unavailable, published once started
        self._audio: queue.Queue = queue.Queue(audio_queue_frames)
        self.dropped_audio_frames = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._manager: OracleManager | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._threads: list[threading.Thread] = []

    @property
    def manager(self) -> OracleManager:
        assert self._manager is not None, "start() the back-end first"
        return self._manager

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run_loop, name="kame-backend", daemon=True)]
        if self.asr is not None:
            self._threads.append(threading.Thread(target=self._run_asr, name="kame-asr", daemon=True))
        for thread in self._threads:
            thread.start()
        self._ready.wait()
        for event in self.notices:
            self.publish(event)

    def stop(self, timeout: float = 5.0) -> None:
        if self.asr is not None:
            self._put(_STOP)
            # Recognition finishes first: the words of a final flush still reach the loop, and
            # the loop does not close under the ASR thread.
            for thread in self._threads[1:]:
                thread.join(timeout)
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        for thread in self._threads[:1]:  # the loop's (the ASR's were joined above)
            thread.join(timeout)

    def _run_loop(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._manager = OracleManager(
            self.llm, self.post_signal, self.publish, policy=self.policy, system_prompt=self.system_prompt
        )
        self._manager.start()
        self._ready.set()
        await self._stopping.wait()
        await self._manager.close()
        await self.llm.aclose()

    # --- from the session (any thread) -----------------------------------------------------------

    def push_audio(self, frame: np.ndarray, t_end: float) -> None:
        """A copy of the user's audio frame ending at session time `t_end`."""
        if self.asr is not None:
            self._put((frame.copy(), t_end))

    def finish_audio(self, t_end: float) -> None:
        if self.asr is not None:
            self._put((_FLUSH, t_end))

    def on_companion_text(self, text: str) -> None:
        if text and self._loop is not None:
            self._loop.call_soon_threadsafe(self.manager.on_companion_text, text)

    def new_conversation(self) -> None:
        if self.asr is not None:
            self._put(_RESET)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.manager.new_conversation)

    def inject_asr_events(self, events: list[Event]) -> None:
        """Hand ASR events to the manager as if recognised (scripted sessions, tests)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_asr_events, events)

    def _put(self, item) -> None:
        while True:
            try:
                self._audio.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._audio.get_nowait()  # drop the oldest audio, never block the caller
                    self.dropped_audio_frames += 1
                    if self.dropped_audio_frames % 25 == 1:
                        self.publish(
                            ErrorEvent("asr", "speech recognition is falling behind real time; audio dropped", "busy")
                        )
                except queue.Empty:
                    pass

    # --- the ASR thread --------------------------------------------------------------------------

    def _run_asr(self) -> None:
        assert self.asr is not None
        failures = 0
        while True:
            item = self._audio.get()
            batch, t_end = [], 0.0
            while item is not None:  # coalesce what is queued: one recognition pass for all of it
                if item is _STOP:
                    return
                if item is _RESET:
                    self.asr.reset()
                    batch = []
                elif item[0] is _FLUSH:
                    self._recognise(batch, t_end)
                    batch = []
                    self._guarded(lambda t=item[1]: self.asr.flush(t))
                else:
                    batch.append(item[0])
                    t_end = item[1]
                try:
                    item = self._audio.get_nowait()
                except queue.Empty:
                    item = None
            failures = 0 if self._recognise(batch, t_end) else failures + 1
            if failures:
                threading.Event().wait(min(0.5 * failures, 5.0))  # back off, then carry on

    def _recognise(self, batch: list[np.ndarray], t_end: float) -> bool:
        if not batch:
            return True
        pcm = np.concatenate(batch)
        return self._guarded(lambda: self.asr.feed(pcm, t_end))

    def _guarded(self, call: Callable[[], list[Event]]) -> bool:
        try:
            events = call()
        except Exception as e:
            log.exception("ASR failed")
            self.publish(ErrorEvent("asr", f"speech recognition failed: {e}; retrying", error_kind(e)))
            return False
        if events and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_asr_events, events)
            except RuntimeError:  # the loop has closed (stop() timed out waiting for us)
                log.debug("ASR events after the back-end stopped: dropped")
        return True

    # --- on the loop -----------------------------------------------------------------------------

    def _on_asr_events(self, events: list[Event]) -> None:
        for event in events:
            self.publish(event)
            if isinstance(event, SpeechStartEvent) and event.source == "user":
                self.post_signal(UserSpeechStarted())
            self.manager.on_asr(event)
            if isinstance(event, TurnEndEvent):
                self.post_signal(TurnEnded(event.source, self.manager.answer_request()))
