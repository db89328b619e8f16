"""The back-end's system prompt (spec §3.5, in our own words) and the dialogue the LLM sees
(spec §3.4), in one of two forms, chosen per provider:
- `chat`: the dialogue as chat turns, the companion's lines as assistant turns — how small
  instruction-tuned models were trained; given one transcript, they continue it instead of
  answering (they recite it, speak its labels, repeat their first reply);
- `transcript`: the reference's, one user message of `speaker: words` lines (built for GPT-4.1).
Either way the history is fitted to a token budget newest first: the oldest turns go, the one at
the edge is cut to its last words, and the request never exceeds the model's context. The oldest
turns go in one step, down to half the budget, so that the prompt starts the same way from one
request to the next and a local model reuses what it has already read (its KV cache)."""

from __future__ import annotations

from collections.abc import Callable

COMPANION = "Kame"

# The seven rules of spec §3.5, put the way a small model follows them best (measured with the
# facts set, the text straight into the model: "answer directly, in one short sentence that
# states the answer" beat "guess where the User's words are heading and write the reply", 65 %
# against 61 % for Qwen2.5-Coder-0.5B; asking for a complete sentence that repeats what was asked
# ended the one-word replies ("8.", "12.") that repeated each other in a conversation: 10 of 66
# repeats → 0, accuracy 64 → 67 % alone and 59 → 70 % in a conversation).
SYSTEM_PROMPT = f"""\
You are {COMPANION}, a friendly voice companion talking with the User. Answer the User's latest \
words directly, in one short, complete sentence of at most 30 words that repeats what was asked \
and states the answer (never a single word). The User may \
still be speaking: answer what they are most likely asking, and never ask them to confirm. Your \
earlier replies may contain mistakes: follow what the User actually said and give correct facts. \
Say only your reply, with no notes and no "{COMPANION.lower()}:" label. Your words are read aloud: \
no quotes, brackets, lists, markdown or other symbols."""

USER, ASSISTANT = "user", COMPANION.lower()
DIALOGUE_FORMATS = ("chat", "transcript")

# Tokens an answer may take: the prompt asks for ≤ 30 words; the cap stops a model that rambles
# from generating until its context is full (answers are superseded or spoken, never that long).
ANSWER_TOKENS = 128
MESSAGE_TOKENS = 6  # a chat template's wrapping of one message (<|im_start|>role\n … <|im_end|>\n), and a spare
_MIN_CUT_TOKENS = 8  # a turn at the budget's edge is cut to its last words when this much room is left

Turn = tuple[str, str]  # (speaker, words)
TokenCounter = Callable[[str], int]


def _steady_case(speaker: str, text: str) -> str:
    """A user turn starts with a capital letter: Whisper's passes write its first word either way
    ("what is the" while the user talks, "What is the capital of France?" at the pause), and a
    local model re-reads a whole prompt from the first token that changed (the 1.5B: ~40 ms a
    token on the one core it has while the words are checked)."""
    first = text.split(" ", 1)[0]
    return text[:1].upper() + text[1:] if speaker == USER and first.islower() else text  # not "iPhone"


class Conversation:
    """The committed dialogue: a new turn when the speaker changes, chunks appended.
    User chunks are ASR finals (whole words); the companion's are the pieces it speaks, joined
    as text (pieces carry their own leading spaces)."""

    def __init__(self) -> None:
        self.lines: list[Turn] = []
        self.start = 0  # the first line the prompt shows (see window)

    def add(self, speaker: str, chunk: str) -> None:
        if not chunk.strip():
            return
        if self.lines and self.lines[-1][0] == speaker:
            joiner = " " if speaker == USER else ""
            self.lines[-1] = (speaker, self.lines[-1][1] + joiner + chunk)
        else:
            self.lines.append((speaker, chunk))

    def clear(self) -> None:
        self.lines.clear()
        self.start = 0

    def turns(self, pending: str = "") -> list[Turn]:
        """The dialogue plus the words still being spoken (which continue the user's turn, as a
        final would), each turn's words on one line."""
        turns = list(self.lines)
        if pending.strip():
            if turns and turns[-1][0] == USER:
                turns[-1] = (USER, f"{turns[-1][1]} {pending}")
            else:
                turns.append((USER, pending))
        return [(speaker, _steady_case(speaker, " ".join(text.split()))) for speaker, text in turns]

    def window(self, pending: str, count: TokenCounter, budget: int) -> list[Turn]:
        """The turns from `start` on; when they outgrow `budget`, `start` moves up at once to
        where the newest turns take half of it."""
        turns = self.turns(pending)
        self.start = min(self.start, len(turns))
        if sum(count(text) + MESSAGE_TOKENS for _, text in turns[self.start :]) > budget:
            self.start = len(turns) - len(fit_history(turns, count, budget // 2, MESSAGE_TOKENS))
        return turns[self.start :]

    def render(self, pending: str = "") -> str:
        """The transcript form: `speaker: words` lines (what the reference sends)."""
        return "\n".join(f"{speaker}: {text}" for speaker, text in self.turns(pending))


def _cut_to(text: str, tokens: int, count: TokenCounter) -> str:
    """The last words of `text` that fit in `tokens` (binary search over the word count)."""
    words = text.split()
    lo, hi = 0, len(words)  # lo words always fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[-mid:])) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[-lo:]) if lo else ""


def fit_history(turns: list[Turn], count: TokenCounter, budget: int, overhead: int) -> list[Turn]:
    """The newest turns whose words (+ `overhead` tokens each) fit in `budget`; the turn at the
    edge keeps its last words when there is room for a few. The newest turn is always kept, cut
    if it alone is over the budget. Linear in the history: each turn is counted once."""
    kept: list[Turn] = []
    left = budget
    for speaker, text in reversed(turns):
        cost = count(text) + overhead
        if cost <= left:
            kept.append((speaker, text))
            left -= cost
            continue
        room = left - overhead
        if room >= _MIN_CUT_TOKENS or not kept:
            cut = _cut_to(text, max(room, 0), count)
            if cut:
                kept.append((speaker, cut))
        break
    return kept[::-1]


def build_messages(
    system_prompt: str, turns: list[Turn], count: TokenCounter, budget: int, dialogue: str = "chat"
) -> list[dict[str, str]]:
    """The request's messages: the system prompt, then the dialogue fitted to `budget` tokens."""
    if dialogue == "transcript":  # one message: each line costs its label and a newline
        kept = fit_history(turns, count, budget - MESSAGE_TOKENS, overhead=3)
        text = "\n".join(f"{speaker}: {words}" for speaker, words in kept)
        return [{"role": "system", "content": system_prompt}, {"role": "user", "content": text}]
    kept = fit_history(turns, count, budget, overhead=MESSAGE_TOKENS)
    while kept and kept[0][0] != USER:  # a chat starts with the user's turn
        kept.pop(0)
    messages = [{"role": "system", "content": system_prompt}]
    messages += [{"role": "user" if s == USER else "assistant", "content": text} for s, text in kept]
    return messages


def with_note(messages: list[dict[str, str]], note: str) -> list[dict[str, str]]:
    """`note` at the start of the latest user message (memory kept during the conversation): the
    system prompt and the turns before it stay as the model has read them."""
    if not note:
        return messages
    for n in range(len(messages) - 1, 0, -1):
        if messages[n]["role"] == "user":
            return [*messages[:n], {**messages[n], "content": f"{note}\n{messages[n]['content']}"}, *messages[n + 1 :]]
    return messages
