"""Cleans the LLM's streamed reply before the front-end speaks it: small models open with a
speaker label ("kame:"), a preamble that names the reply ("Here's the corrected text:"), or go
on to write the user's next line ("user: …"). Labels and preambles are dropped; a user line ends
the reply.

Streaming: text is passed on as soon as it cannot be the start of a label, so a clean reply is
held back by at most its last word (and an opening that may be a preamble, until its colon)."""

from __future__ import annotations

import re

from kame_desktop.backend.prompts import ASSISTANT, USER

_SPEAKERS = (USER, ASSISTANT, "assistant")
_LABEL = re.compile(rf"\b({'|'.join(_SPEAKERS)})\s*:\s*", re.IGNORECASE)  # as evaluation.scoring counts them
# The start of a label split across chunks ("us", "kame "): held back until the next chunk.
_PARTIAL_LABEL = re.compile(
    rf"\b(?:{'|'.join(w[:k] for w in _SPEAKERS for k in range(len(w), 0, -1))})\s*$", re.IGNORECASE
)
# A preamble names the reply itself: "Here's the corrected text:", "Sure! Here is my reply:",
# "Response:". One that announces what follows ("Sure, here's a short story about a turtle:")
# is spoken: dropping it cost the 1.5B ~10 tokens (~0.5 s) before the first word of a story.
_OPENERS = ("sure", "okay", "ok", "certainly")
_NOUNS = ("text", "reply", "response", "answer")
_EDITS = ("", "corrected ", "revised ")
_NAMED = tuple(f"{h}{d}{e}{n}" for h in ("here's ", "here is ") for d in ("the ", "my ", "your ") for e in _EDITS
               for n in _NOUNS)  # then anything up to the colon ("…to your question:")
_BARE = tuple(f"{e}{n}" for e in _EDITS for n in _NOUNS)  # then the colon at once
_OPENER = re.compile(rf"(?:{'|'.join(_OPENERS)})\W*")
_PREAMBLE = re.compile(
    rf"^\s*(?:{_OPENER.pattern})?(?:(?:{'|'.join(_NAMED)})\b[^:.!?\n]{{0,40}}|(?:{'|'.join(_BARE)})):\s*",
    re.IGNORECASE,
)
_PREAMBLE_CHARS = 60  # a preamble has reached its colon by then


def _may_be_preamble(head: str) -> bool:
    """The reply's opening so far could still become a preamble: hold it back."""
    low = head.lower()
    if any(w.startswith(low) for w in _OPENERS):  # "", "s", "sur"
        return True
    opener = _OPENER.match(low)
    rest = low[opener.end() :] if opener else low
    if any(w.startswith(rest) for w in (*_NAMED, *_BARE)):  # "", "he", "here's the corr"
        return True
    named = any(rest.startswith(w) and not rest[len(w) : len(w) + 1].isalnum() for w in _NAMED)
    return named and not re.search(r"[:.!?]", rest) and len(head) < _PREAMBLE_CHARS


class ReplyCleaner:
    """push() each streamed chunk, flush() at the end; both return the text to pass on."""

    def __init__(self) -> None:
        self._buffer = ""
        self._opened = False  # the opening has been checked for a preamble
        self.ended = False  # a user line began: the rest is dropped

    def push(self, chunk: str) -> str:
        self._buffer += chunk
        return self._take(final=False)

    def flush(self) -> str:
        return self._take(final=True)

    def _take(self, final: bool) -> str:
        if self.ended:
            self._buffer = ""
            return ""
        text = self._buffer
        if not self._opened:
            if not final and _may_be_preamble(text.lstrip()):
                return ""  # wait for its colon (or for it to be something else)
            text = _PREAMBLE.sub("", text, count=1)
            self._opened = True
        out, pos = [], 0
        for m in _LABEL.finditer(text):
            out.append(text[pos : m.start()])
            pos = m.end()
            if m.group(1).lower() == USER:  # the model writes the user's turn: the reply is over
                self.ended = True
                self._buffer = ""
                return "".join(out).rstrip()
        rest = text[pos:]
        held = _PARTIAL_LABEL.search(rest) if not final else None
        cut = held.start() if held else len(rest)
        out.append(rest[:cut])
        self._buffer = rest[cut:]
        return "".join(out)
