"""Simulated oracle events from a word-level transcript (spec §4.2), and the prompts that ask an
LLM for each event's prediction. Pure logic: no I/O, no LLM.

An event every `interval` seconds once two words are heard: who speaks now, how much of the
current turn is spoken (`ratio`), and the ground truth of the other speaker's next turn (`hint`,
shown to the LLM only past the half of the turn, in bands that allow closer copies as the turn
nears its end).
"""

from __future__ import annotations

from dataclasses import dataclass

from kame_desktop.training.layout import CHANNEL, Word

TURN_GAP_S = 1.0  # a gap this long between consecutive word ends closes a turn
MIN_WORDS = 2
RECENT_WORDS = 5
SYSTEM_PROMPT = "You are an assistant that predicts the next response in a spoken conversation."


@dataclass(frozen=True)
class OracleEvent:
    t: float  # seconds
    context: str  # "A: …" / "B: …" lines
    total_word_count: int
    trigger_word: str
    recent_words: str
    ratio: float  # spoken share of the current speaker's turn
    channel: int  # channel of the speaker whose next reply is predicted
    truth: str  # the next speaker's actual next turn (always known to the simulator)
    target: int = -1  # index (file order) of that turn's first word: the response this event predicts

    @property
    def timestamp_ms(self) -> int:
        return round(self.t * 1000)

    @property
    def hint(self) -> str:
        """The hint as stored: only past the half of the turn."""
        return self.truth if self.ratio > 0.5 else ""

    def record(self, prediction: str, use_hint: bool | None = None) -> dict:
        """The oracle_raw record, keys in the spec's order (`use_hint` last, when given)."""
        record = {
            "timestamp_ms": self.timestamp_ms,
            "conversation_context": self.context,
            "prediction": prediction,
            "total_word_count": self.total_word_count,
            "trigger_word": self.trigger_word,
            "recent_words": self.recent_words,
            "current_spoken_ratio": self.ratio,
            "channel": self.channel,
            "hint": self.hint,
        }
        if use_hint is not None:
            record["use_hint"] = use_hint
        return record


def _context(words: list[Word]) -> str:
    lines: list[tuple[str, list[str]]] = []
    for w in words:
        if lines and lines[-1][0] == w.speaker:
            lines[-1][1].append(w.word)
        else:
            lines.append((w.speaker, [w.word]))
    return "\n".join(f"{s}: {' '.join(ws)}" for s, ws in lines)


def _other(speaker: str) -> str:
    return "B" if speaker == "A" else "A"


def oracle_events(words: list[Word], interval: float = 0.5, target_channel: int | None = None) -> list[OracleEvent]:
    """The events of one dialogue, words in file order (spec §4.2 steps 1–6)."""
    if not words:
        return []
    last_end = max(w.end for w in words)
    events: list[OracleEvent] = []
    t = interval
    while t < last_end:
        here, t = t, t + interval  # floating accumulation, as the reference
        heard = [i for i, w in enumerate(words) if w.end <= here]
        if len(heard) < MIN_WORDS:
            continue
        so_far = [words[i] for i in heard]
        current = so_far[-1].speaker
        channel = CHANNEL[_other(current)]
        if target_channel is not None and channel != target_channel:
            continue
        spoken = 0
        for w in reversed(so_far):
            if w.speaker != current:
                break
            spoken += 1
        # The rest of the turn: following words of the same speaker, each within the gap.
        complete, prev_end = spoken, so_far[-1].end
        for w in words[heard[-1] + 1 :]:
            if w.speaker != current or w.end - prev_end >= TURN_GAP_S:
                break
            complete, prev_end = complete + 1, w.end
        truth, target = _next_turn(words, so_far[-1].end, current)
        if not truth:
            break  # nothing left to predict in this dialogue
        events.append(
            OracleEvent(
                t=here,
                context=_context(so_far),
                total_word_count=len(so_far),
                trigger_word=so_far[-1].word,
                recent_words=" ".join(w.word for w in so_far[-RECENT_WORDS:]),
                ratio=spoken / complete,
                channel=channel,
                truth=truth,
                target=target,
            )
        )
    return events


def _next_turn(words: list[Word], after: float, current: str) -> tuple[str, int]:
    """The other speaker's words after `after` and the index of the first: skip the current
    speaker's, collect the next speaker's, stop at the current speaker's first word after that."""
    collected: list[str] = []
    first = -1
    for i, w in enumerate(words):
        if w.end <= after:
            continue
        if w.speaker == current:
            if collected:
                break
            continue
        if not collected:
            first = i
        collected.append(w.word)
    return " ".join(collected), first


# --- prompts ----------------------------------------------------------------------------------

_BANDS: tuple[tuple[float, str], ...] = (
    (0.65, "Rely mostly on the flow of the conversation. You may borrow a few keywords from the hint, "
           "but do not follow it closely."),
    (0.8, "Respect the flow of the conversation while drawing on the hint; include some content of your "
          "own that differs from it."),
    (0.95, "The hint is an important clue to what will be said; use it, but do not copy it word for word."),
    (0.99, "You may use the hint quite directly, as long as the answer still reads like a prediction."),
    (float("inf"), "Your answer may closely match the hint."),
)

_RULES = (
    "Rules: sound confident and never ask for confirmation. Use at most 30 words, and at least 10 "
    "when you can. Write conversational spoken language. No quotes, bullet points or explanations, "
    "no formatting, and no punctuation other than periods and commas. Answer with the predicted "
    "utterance only."
)


def band_guidance(ratio: float) -> str | None:
    """The hint guidance for this spoken ratio; None at or below one half (no hint shown)."""
    if ratio <= 0.5:
        return None
    return next(text for limit, text in _BANDS if ratio <= limit)


def prompt_messages(event: OracleEvent) -> list[dict[str, str]]:
    """Chat messages asking for the next speaker's reply at this event. The fixed rules sit in
    the system message and the conversation comes first in the user message, so consecutive
    events of a dialogue share a long prompt prefix (llama.cpp reuses its evaluated prefix)."""
    speaker = "A" if event.channel == 1 else "B"
    nxt = _other(speaker)
    parts = [
        f"Conversation so far:\n{event.context}",
        f"Speaker {speaker} has said about {round(event.ratio * 100)}% of the current turn.",
    ]
    guidance = band_guidance(event.ratio)
    if guidance is None:
        parts.append("Predict from the conversation history only.")
    else:
        parts.append(f"Hidden hint (do not quote it): the reply will be similar to: {event.truth}")
        parts.append(guidance)
    parts.append(f"What will speaker {nxt} say next?")
    return [{"role": "system", "content": f"{SYSTEM_PROMPT} {_RULES}"}, {"role": "user", "content": "\n\n".join(parts)}]
