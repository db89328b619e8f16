"""The back-end's system prompt (spec §3.5, in our own words) and the conversation the LLM sees
(spec §3.4): one string of `speaker: words` lines, sent as a single user message."""

from __future__ import annotations

from collections.abc import Callable

COMPANION = "Kame"

SYSTEM_PROMPT = f"""\
You are {COMPANION}, a friendly voice companion, talking with the User. The User is speaking right \
now and may not have finished. Guess where the User's words are heading and write the reply \
{COMPANION} should say next.
Rules:
- Output only the words {COMPANION} speaks: no notes, no explanations, no "{COMPANION.lower()}:" label.
- Commit to the most likely topic; never ask the User to confirm what they meant.
- Keep it short: at most 30 words.
- {COMPANION}'s earlier lines may contain mistakes; follow what the User actually said and give correct facts.
- Your text will be read aloud: no symbols that cannot be spoken (quotes, brackets, semicolons, \
asterisks, emoji, lists or markdown)."""

USER, ASSISTANT = "user", COMPANION.lower()

# Tokens an answer may take: the prompt asks for ≤ 30 words; the cap stops a model that rambles
# from generating until its context is full (answers are superseded or spoken, never that long).
ANSWER_TOKENS = 128


class Conversation:
    """The committed dialogue: a new `speaker: ` line when the speaker changes, chunks appended.
    User chunks are ASR finals (whole words); the companion's are the pieces it speaks, joined
    as text (pieces carry their own leading spaces)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

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

    def render(self, pending: str = "", count_tokens: Callable[[str], int] | None = None, budget: int = 0) -> str:
        """The text of the user message: the dialogue plus the words still being spoken; with a
        token budget, the oldest lines are dropped until it fits."""
        turns = list(self.lines)
        if pending.strip():  # words still being spoken continue the user's line, as a final would
            if turns and turns[-1][0] == USER:
                turns[-1] = (USER, f"{turns[-1][1]} {pending}")
            else:
                turns.append((USER, pending))
        lines = [f"{speaker}: {' '.join(text.split())}" for speaker, text in turns]
        if count_tokens is not None and budget > 0:
            # Newest first, each line counted once (+1 for its newline): linear in the history.
            kept, used = 0, 0
            for line in reversed(lines):
                used += count_tokens(line) + 1
                if used > budget and kept:
                    break
                kept += 1
            lines = lines[len(lines) - kept :]
        return "\n".join(lines)


def build_messages(system_prompt: str, conversation: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": conversation}]
