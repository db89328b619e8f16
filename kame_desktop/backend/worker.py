"""The back-end worker: a thread with its own asyncio loop for the OracleManager and the LLM
stream, one thread for the ASR (recognition is CPU-heavy and would stall the loop) and one for
the turn detector (backend/turn.py), so the end of the user's turn never waits behind a
recognition pass. At the turn's end the front-end hears at once (`TurnEnded`: it may speak the
answer already written from the partial words) when the recognizer has already decoded the
audio past the end of the speech; else `TurnEnded` waits for the turn's final words, as it does
with `end_of_turn` (which asks only then). The ASR commits the last words at once (`end_turn`),
and only then does the OracleManager see the turn end.

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
from dataclasses import dataclass

import numpy as np

from kame_desktop.backend.asr.base import AsrProvider
from kame_desktop.backend.cores import PauseCores
from kame_desktop.backend.llm.base import LlmProvider
from kame_desktop.backend.memory import MemoryKeeper
from kame_desktop.backend.oracle_manager import OracleManager, PolicyConfig
from kame_desktop.backend.prompts import SYSTEM_PROMPT
from kame_desktop.backend.tools.base import ToolFailed, TurnTools
from kame_desktop.backend.tools.timers import TimerStore, announcement
from kame_desktop.backend.turn import TurnDetector
from kame_desktop.errors import error_kind
from kame_desktop.events import (
    ErrorEvent,
    Event,
    Signal,
    SpeechEndEvent,
    SpeechStartEvent,
    TurnEnded,
    TurnEndEvent,
    UserSpeechStarted,
)

log = logging.getLogger(__name__)

TIMER_CHECK_S = 0.25
LLM_CLOSE_S = 30.0
SignalSink = Callable[[Signal], bool]  # posts a signal for the front-end; False if it was dropped
EventSink = Callable[[Event], None]  # publishes an event (the session stamps it)


# --- what the session's thread sends the ASR and turn-detector threads, in order -------------------


@dataclass(frozen=True)
class Audio:
    pcm: np.ndarray  # a copy of one input frame
    t_end: float  # session time of its last sample


@dataclass(frozen=True)
class Flush:
    """The audio ended: commit pending words."""

    t_end: float


@dataclass(frozen=True)
class EndTurn:
    """The turn detector ended the turn (ASR queue only): commit its words, then `event`."""

    t_end: float
    event: TurnEndEvent
    speech_end_t: float  # where the turn's speech ended (the detector's VAD)


@dataclass(frozen=True)
class Reset:
    """New conversation: forget buffered audio."""


@dataclass(frozen=True)
class Stop:
    pass


Message = Audio | Flush | EndTurn | Reset | Stop


class Backend:
    def __init__(
        self,
        llm: LlmProvider,
        asr: AsrProvider | None,
        post_signal: SignalSink,
        publish: EventSink,
        *,
        turns: TurnDetector | None = None,  # None: the recognizer's own VAD events end turns
        policy: PolicyConfig | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        audio_queue_frames: int = 250,  # 20 s of audio
        notices: list[Event] | tuple[Event, ...] = (),
        tools: TurnTools | None = None,  # what the LLM may call; with them, due timers are said
        owns_llm: bool = True,  # False: the caller's, kept open for its next session
        memory: MemoryKeeper | None = None,  # None: memory is off (nothing written or used)
    ) -> None:
        self.llm = llm
        self.asr = asr
        self.turns = turns if asr is not None else None
        self.post_signal = post_signal
        self.publish = publish
        self.policy = policy or PolicyConfig()
        self.system_prompt = system_prompt
        self.notices = tuple(notices)  # e.g. why the LLM is unavailable, published once started
        self.tools = tools
        self.owns_llm = owns_llm
        self.memory = memory
        # While a Whisper pass runs the in-process LLM takes one core; at a pause the check of the
        # words waits for its read of them (cores.py).
        self.cores = PauseCores(llm_in_process=hasattr(llm, "cores"))
        for part in (llm, asr):
            if hasattr(part, "cores"):
                part.cores = self.cores
        self._audio: queue.Queue = queue.Queue(audio_queue_frames)
        self._turn_audio: queue.Queue = queue.Queue(audio_queue_frames)
        self.dropped_audio_frames = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._manager: OracleManager | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._threads: list[threading.Thread] = []
        # On the loop: the turn end whose TurnEnded waits for that turn's final words.
        self._deferred_turn: TurnEndEvent | None = None

    @property
    def manager(self) -> OracleManager:
        assert self._manager is not None, "start() the back-end first"
        return self._manager

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run_loop, name="kame-backend", daemon=True)]
        if self.asr is not None:
            self._threads.append(threading.Thread(target=self._run_asr, name="kame-asr", daemon=True))
        if self.turns is not None:
            self._threads.append(threading.Thread(target=self._run_turns, name="kame-turn", daemon=True))
        for thread in self._threads:
            thread.start()
        self._ready.wait()
        for event in self.notices:
            self.publish(event)
        if self.tools is not None and self.tools.servers:  # the user's MCP servers, on a thread of their own
            self.tools.servers.on_change = lambda: self._to_loop(self.manager.tools_changed)
            self.tools.servers.start(self.publish, self.llm.count_tokens, self.llm.context_tokens)  # their tools' budget

    def stop(self, timeout: float = 5.0) -> None:
        servers = self.tools.servers if self.tools is not None and self.tools.servers else None
        if servers is not None:  # they end while the rest does: an LLM's close can take seconds,
            servers.begin_close()  # and the app waits for the session only so long before it exits
        if self.asr is not None:
            self._send(Stop())
            # Recognition finishes first: the words of a final flush still reach the loop, and
            # the loop does not close under the ASR thread.
            for thread in self._threads[1:]:
                thread.join(timeout)
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        for thread in self._threads[:1]:  # the loop's (the ASR's were joined above)
            # It closes the LLM, which first finishes reading the system prompt if a session ends
            # within seconds of its start (the embedded model with the tools: ~8 s on one thread);
            # a process must not exit under it.
            thread.join(timeout + LLM_CLOSE_S)
        if servers is not None:
            servers.close()  # every server the session started has ended with it

    def _run_loop(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._manager = OracleManager(
            self.llm, self.post_signal, self.publish, policy=self.policy, system_prompt=self._prompt(),
            tools=self.tools,
        )
        keeping = None
        if self.memory is not None:
            self._manager.notes = self.memory.notes
            keeping = asyncio.get_running_loop().create_task(self.memory.run(self._manager, self.llm))
            if self.memory.store.notice:  # a damaged memory file was set aside: one banner line
                self.publish(ErrorEvent("memory", self.memory.store.notice, "failed"))
        self._manager.start()
        timers = asyncio.get_running_loop().create_task(self._say_due_timers()) if self.tools else None
        self._ready.set()
        await self._stopping.wait()
        if timers is not None:
            timers.cancel()
        if keeping is not None and self.memory is not None:
            keeping.cancel()
            await self.memory.flush()  # what the user said last is kept before the session ends
        await self._manager.close()
        if self.owns_llm:
            await self.llm.aclose()

    def _prompt(self) -> str:
        """The system prompt of a new conversation: with memory, the items chosen for it."""
        if self.memory is None:
            return self.system_prompt
        return self.memory.system_prompt(self.system_prompt, self.llm.count_tokens)

    def _new_conversation(self) -> None:
        self.manager.new_conversation()
        if self.memory is not None:
            self.memory.new_conversation()
            self.manager.system_prompt = self._prompt()

    async def _say_due_timers(self) -> None:
        """Have the companion say each timer or reminder that falls due (one that fell due while
        the app was closed: at the start), when nobody is talking and no answer is on its way."""
        store, due, missed = TimerStore(), [], True  # the first look finds those missed while closed
        while True:
            try:
                due += [announcement(t) if missed else t.text for t in store.due()]
            except ToolFailed as e:
                self.publish(ErrorEvent("tool", str(e), "failed"))
            missed = False
            while due and not self.manager.busy():
                self.manager.announce(due.pop(0))
            await asyncio.sleep(TIMER_CHECK_S)

    # --- from the session (any thread) -----------------------------------------------------------

    def push_audio(self, frame: np.ndarray, t_end: float) -> None:
        """A copy of the user's audio frame ending at session time `t_end`."""
        if self.asr is not None:
            self._send(Audio(frame.copy(), t_end))

    def finish_audio(self, t_end: float) -> None:
        if self.asr is not None:
            self._send(Flush(t_end))

    def on_companion_text(self, text: str) -> None:
        if text and self._loop is not None:
            self._loop.call_soon_threadsafe(self.manager.on_companion_text, text)
            if self.memory is not None:
                self._loop.call_soon_threadsafe(self.memory.said)

    def new_conversation(self) -> None:
        if self.asr is not None:
            self._send(Reset())
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._new_conversation)

    def inject_asr_events(self, events: list[Event]) -> None:
        """Hand ASR events to the manager as if recognised (scripted sessions, tests)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_asr_events, events)

    def _send(self, message: Message) -> None:
        """To the ASR, then to the turn detector (so the ASR holds a turn's audio before its end)."""
        self._put(self._audio, message)
        if self.turns is not None:
            self._put(self._turn_audio, message)

    def _put(self, q: queue.Queue, message: Message) -> None:
        while True:
            try:
                q.put_nowait(message)
                return
            except queue.Full:
                try:
                    q.get_nowait()  # drop the oldest audio, never block the caller
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
            message: Message | None = self._audio.get()
            batch, t_end = [], 0.0
            while message is not None:  # coalesce what is queued: one recognition pass for all of it
                match message:
                    case Stop():
                        return
                    case Reset():
                        self.asr.reset()
                        batch = []
                    case Flush(t_end=t):
                        self._recognise(batch, t_end)
                        batch = []
                        self._guarded(lambda t=t: self.asr.flush(t))
                    case EndTurn(t_end=t, event=event, speech_end_t=end):
                        self._recognise(batch, t_end)
                        batch = []
                        self._guarded(lambda t=t, end=end: self.asr.end_turn(t, end), then=event)
                    case Audio(pcm=pcm, t_end=t_end):
                        batch.append(pcm)
                try:
                    message = self._audio.get_nowait()
                except queue.Empty:
                    message = None
            failures = 0 if self._recognise(batch, t_end) else failures + 1
            if failures:
                threading.Event().wait(min(0.5 * failures, 5.0))  # back off, then carry on

    def _recognise(self, batch: list[np.ndarray], t_end: float) -> bool:
        if not batch:
            return True
        pcm = np.concatenate(batch)
        return self._guarded(lambda: self.asr.feed(pcm, t_end))

    def _guarded(self, call: Callable[[], list[Event]], then: TurnEndEvent | None = None) -> bool:
        """Run one recognizer call; its events (and `then`, the turn end they complete) go to the loop."""
        try:
            events = call()
        except Exception as e:
            log.exception("ASR failed")
            self.publish(ErrorEvent("asr", f"speech recognition failed: {e}; retrying", error_kind(e)))
            events, ok = [], False
        else:
            ok = True
        if events or then is not None:
            self._to_loop(self._on_asr_events, events, then)
        return ok

    def _to_loop(self, handler: Callable, *args) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(handler, *args)
        except RuntimeError:  # the loop has closed (stop() timed out waiting for us)
            log.debug("back-end events after it stopped: dropped")

    # --- the turn-detector thread ----------------------------------------------------------------

    def _run_turns(self) -> None:
        assert self.turns is not None
        while not isinstance(message := self._turn_audio.get(), Stop):
            try:  # frame by frame, never coalesced: its decisions are on the audio clock
                match message:
                    case Reset():
                        self.turns.reset()
                        continue
                    case Flush():
                        events = self.turns.flush()
                    case Audio(pcm=pcm, t_end=t_end):
                        events = self.turns.feed(pcm, t_end)
                    case _:  # EndTurn goes to the ASR alone
                        continue
            except Exception as e:
                log.exception("turn detection failed")
                self.publish(ErrorEvent("asr", f"turn detection failed: {e}", error_kind(e)))
                self.turns.reset()
                continue
            if events:  # on the loop before anything the ASR sends about the same turn end
                self._to_loop(self._on_turn_events, events, self.turns.speech_end_t)
            for event in events:
                if isinstance(event, TurnEndEvent):
                    self._put(self._audio, EndTurn(message.t_end, event, self.turns.speech_end_t))

    # --- on the loop -----------------------------------------------------------------------------

    def _on_asr_events(self, events: list[Event], then: TurnEndEvent | None = None) -> None:
        for event in events:
            if self.turns is not None and _is_turn_event(event):
                continue  # the turn detector's are the ones that count
            self._publish_user(event)
            self.manager.on_asr(event)
            if isinstance(event, TurnEndEvent):
                self.post_signal(TurnEnded(event.source, self.manager.answer_request()))
        if then is not None:  # the turn's words are all in: now the manager hears that it ended
            self.manager.on_asr(then)
            # The detector may already hear the user again while its event is still on its way
            # here: that turn is open again. Whatever its end made ready at once (the request to
            # repeat) must not start over the user, so the front-end hears that they talk.
            talking = self.turns is not None and self.turns.in_turn
            if then is self._deferred_turn:  # not an earlier turn's, reopened since
                self._deferred_turn = None
                if not talking:
                    self.post_signal(TurnEnded(then.source, self.manager.answer_request()))
            if talking:
                self.post_signal(UserSpeechStarted())

    def _on_turn_events(self, events: list[Event], speech_end_t: float) -> None:
        for event in events:
            self._publish_user(event)
            if isinstance(event, TurnEndEvent):
                # The answer can be named now only if it was asked with all the turn's words: the
                # recognizer has decoded past the end of the speech (else it would answer "What is
                # the capital of"), and the policy asks before the turn ends.
                heard = self.asr is not None and self.asr.heard_until >= speech_end_t
                # Words the recognizer does not trust wait too: the answer may be a request to repeat.
                wait = self._turn_waits_for_words() or not heard or not self.manager.turn_understood()
                self._deferred_turn = event if wait else None
                if not wait:
                    self.post_signal(TurnEnded(event.source, self.manager.answer_request()))

    def _publish_user(self, event: Event) -> None:
        self.publish(event)
        if isinstance(event, SpeechStartEvent) and event.source == "user":
            # Talking again before a deferred turn end was announced: that turn is open again
            # (announcing it now would have the companion answer half a question over the user).
            self._deferred_turn = None
            self.post_signal(UserSpeechStarted())

    def _turn_waits_for_words(self) -> bool:
        return self.manager.policy.name == "end_of_turn"


def _is_turn_event(event: Event) -> bool:
    """The user's speech boundaries and turn end, as a recognizer's own VAD reports them."""
    if isinstance(event, SpeechStartEvent | SpeechEndEvent):
        return event.source == "user"
    return isinstance(event, TurnEndEvent) and event.source == "vad"
