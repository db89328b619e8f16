"""The conversation as turns (no Qt): each user turn's words, the companion's reply to it and,
under the reply, the LLM requests asked while that turn was spoken, with what each said and
what became of it. Built event by event from the session's records, live or from history.

Grouping: a turn opens with the user's first words after the previous turn ended (turn_end),
except words spoken before that end (their times say so): the recognizer may commit a turn's
last words after the turn detector ended it, and they are that turn's;
requests (llm_request, or an oracle_reset of a request never asked, as scripts send) belong to
the turn open when they were asked, and their text, adoption, cancellation and oracle tokens
follow them by request id. The companion's words go to the latest turn; a barge-in marks the
place its reply was cut. Older history files have no llm_adopted events: their requests show
what was asked and said, only not which one the companion heard (KAME's resets still say it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kame_desktop.backend.tools.base import ToolCall
from kame_desktop.events import (
    AnnouncementEvent,
    AsrFinalEvent,
    AsrPartialEvent,
    AsrUnclearEvent,
    AssistantTokenEvent,
    BargeInEvent,
    ErrorEvent,
    LlmAdoptedEvent,
    LlmCancelledEvent,
    LlmChunkEvent,
    LlmDoneEvent,
    LlmRequestEvent,
    OracleLateEvent,
    OracleResetEvent,
    OracleTokenEvent,
    SessionStartEvent,
    Stamped,
    ToolCallEvent,
    ToolResultEvent,
    TurnEndEvent,
    Word,
)


def piece_text(piece: str) -> str:
    return piece.replace("\u2581", " ")  # sentencepiece's word boundary


def unclear_reason(e: AsrUnclearEvent) -> str:
    """Why the companion asked to hear it again, in a few words (the OracleManager's signals)."""
    from kame_desktop.backend.oracle_manager import (
        UNCLEAR_LOGPROB,
        UNCLEAR_NO_SPEECH,
        UNCLEAR_UNHEARD_S,
        UNCLEAR_WORD_LOGPROB,
    )

    reasons = []
    if e.unheard_s is not None and e.unheard_s > UNCLEAR_UNHEARD_S:
        reasons.append(f"{e.unheard_s:.2f} s of speech after the last word heard")
    if (e.avg_logprob is not None and e.avg_logprob < UNCLEAR_LOGPROB) or (
            e.word_logprob is not None and e.word_logprob < UNCLEAR_WORD_LOGPROB):
        reasons.append("unsure of the words")
    if e.no_speech_prob is not None and e.no_speech_prob >= UNCLEAR_NO_SPEECH:
        reasons.append("maybe no speech")
    return ", ".join(reasons)


@dataclass
class Request:
    """One LLM request (or a scripted oracle answer, or the request to repeat) and its fate."""

    id: int | None
    t: float
    policy: str = ""
    words: int = 0
    text: str = ""  # what the LLM said (llm_chunk)
    oracle: str = ""  # the oracle tokens fed to KAME after its reset
    reset: bool = False  # the front-end heard it (an oracle_reset went out for it)
    adopted_ms: float | None = None
    ended: str | None = None  # "done", "done (length)", "cancelled (superseded)", …
    late: int = 0  # oracle tokens that came too late to be fed
    tools: list[str] = field(default_factory=list)  # "⚙ calculate(37*48) → 37*48 = 1776", in call order
    why: str = ""  # a request to repeat: what made the words untrustworthy

    @property
    def heard(self) -> bool:
        return self.adopted_ms is not None or self.reset


@dataclass
class Turn:
    index: int
    t: float
    final: str = ""  # the user's committed words
    partial: str = ""  # words still being revised (grey)
    ended: bool = False
    ended_at: float = 0.0  # when turn_end came (words spoken before it are still this turn's)
    unclear: bool = False  # the words were unreliable: the companion asked to hear them again
    reply: list[tuple[str, str]] = field(default_factory=list)  # (text, "said" | "cut")
    requests: list[Request] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # errors while this turn was on

    @property
    def question(self) -> str:
        return " ".join(p for p in (self.final, self.partial) if p)

    @property
    def reply_text(self) -> str:
        return "".join(text for text, kind in self.reply if kind == "said").strip()

    @property
    def interrupted(self) -> bool:
        return any(kind == "cut" for _, kind in self.reply)


class Conversation:
    """Turns built from stamped events; `handle` returns the turn an event changed (or None)."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self._requests: dict[int | None, tuple[Turn, Request]] = {}
        self._fed: Request | None = None  # the request whose oracle tokens KAME is being fed
        self._heard: Turn | None = None  # the turn the latest final words went to
        self._end_before_words: float | None = None  # a turn_end that came before any words of its turn

    def _turn(self, t: float) -> Turn:
        if not self.turns:
            self.turns.append(Turn(0, t))
        return self.turns[-1]

    def _new_turn_if_ended(self, t: float, words: tuple[Word, ...] = ()) -> Turn:
        if words:  # words spoken before a turn's end are that turn's, whenever they come
            late = next((turn for turn in self.turns[-3:] if turn.ended and words[0].start < turn.ended_at), None)
            if late is not None:
                return late
        if not self.turns or self.turns[-1].ended:
            self.turns.append(Turn(len(self.turns), t))
        turn = self.turns[-1]
        if words and self._end_before_words is not None:  # the turn ended before any of its words came
            if words[0].start < self._end_before_words:
                turn.ended, turn.ended_at = True, self._end_before_words
            self._end_before_words = None
        return turn

    def _request(self, request: int | None, t: float, policy: str = "", turn: Turn | None = None) -> tuple[Turn, Request]:
        if request not in self._requests:
            turn = turn or self._turn(t)
            entry = Request(request, t, policy)
            turn.requests.append(entry)
            self._requests[request] = (turn, entry)
        return self._requests[request]

    def handle(self, stamped: Stamped) -> Turn | None:
        t, e = stamped.t, stamped.event
        match e:
            case SessionStartEvent():  # a restarted session counts its requests from 1 again
                self._requests.clear()
                self._fed = None
                return None
            case AsrPartialEvent(text=text, words=words):
                if not text.strip() and (not self.turns or self.turns[-1].ended):
                    return None  # a cleared partial after the turn: nothing new
                turn = self._new_turn_if_ended(t, words)
                turn.partial = text.strip()
            case AsrFinalEvent(text=text, words=words):
                if not text.strip():
                    return None
                turn = self._new_turn_if_ended(t, words)
                turn.final = f"{turn.final} {text.strip()}".strip()
                turn.partial = ""  # the committed words replace the revisable ones
                self._heard = turn
            case TurnEndEvent():
                if not self.turns or self.turns[-1].ended or not self.turns[-1].question:
                    self._end_before_words = t  # no words yet (they may follow it), or none at all
                    return None
                turn = self.turns[-1]
                turn.ended, turn.ended_at = True, t  # its partial stays until its final words come
            case AsrUnclearEvent(request=request, reply=reply):
                turn, entry = self._request(request, t, "repeat", self._heard)  # the turn of the words it did not trust
                turn.unclear = True
                entry.text, entry.adopted_ms = reply, 0.0
                entry.why = unclear_reason(e)
            case LlmRequestEvent(request=request, policy=policy, word_count=words):
                turn, entry = self._request(request, t, policy)
                entry.words = words
            case ToolCallEvent(request=request, name=name, arguments=arguments):
                turn, entry = self._request(request, t)
                entry.tools.append(f"⚙ {ToolCall(name, arguments).shown()}")
            case ToolResultEvent(request=request, ok=ok, summary=summary):
                turn, entry = self._request(request, t)
                if entry.tools:
                    entry.tools[-1] += f" → {summary}" if ok else f" ✗ {summary.removeprefix('error: ')}"
            case AnnouncementEvent(request=request, text=text):
                turn, entry = self._request(request, t, "announcement")
                entry.text, entry.adopted_ms = text, 0.0
            case LlmChunkEvent(request=request, text=text):
                turn, entry = self._request(request, t)
                entry.text += text
            case LlmAdoptedEvent(request=request, after_ms=after_ms):
                turn, entry = self._request(request, t)
                entry.adopted_ms = after_ms
            case LlmDoneEvent(request=request, reason=reason):
                turn, entry = self._request(request, t)
                entry.ended = "done" if reason in (None, "stop") else f"done ({reason})"
            case LlmCancelledEvent(request=request, reason=reason):
                turn, entry = self._request(request, t)
                entry.ended = f"cancelled ({reason})" if reason else "cancelled"
            case OracleResetEvent(request=request):
                turn, entry = self._request(request, t, "script")
                entry.reset = True
                self._fed = entry
            case OracleTokenEvent(request=request, piece=piece):
                turn, entry = self._request(request, t, "script") if request is not None or self._fed is None else (
                    self._owner(self._fed), self._fed)
                if piece != "<start>":
                    entry.oracle += piece_text(piece)
            case OracleLateEvent(request=request, count=count):
                turn, entry = self._request(request, t)
                entry.late += count
            case AssistantTokenEvent(piece=piece):
                turn = self._turn(t)
                if turn.reply and turn.reply[-1][1] == "said":
                    turn.reply[-1] = (turn.reply[-1][0] + piece_text(piece), "said")
                else:
                    turn.reply.append((piece_text(piece), "said"))
            case BargeInEvent():
                turn = self._turn(t)
                turn.reply.append(("interrupted", "cut"))
            case ErrorEvent(source=source, message=message):
                turn = self._turn(t)
                turn.notes.append(f"error ({source}): {message}")
            case _:
                return None
        return turn

    def _owner(self, entry: Request) -> Turn:
        return self._requests[entry.id][0]
