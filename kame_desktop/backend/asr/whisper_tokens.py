"""Whisper's own tokens for a text: what the accurate model scores the cheap model's words with.

The `tokenizer.json` that ships beside the embedded base model does not tokenize as Whisper
does: its merges are out of order, so " the" comes out as " " + "the" (two tokens Whisper never
writes, which it then finds unlikely). Whisper's tokenizer is tiktoken's byte-level BPE, where a
token's id is its merge rank: repeatedly joining the adjacent pair whose join has the lowest id
gives Whisper's tokens from the vocabulary alone.
"""

from __future__ import annotations

import re
from functools import cache
from itertools import pairwise

# GPT-2's pre-tokenizer (tiktoken's "gpt2" pattern; \p{L} as [^\W\d_], \p{N} as \d: English text).
_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+")


@cache
def _byte_chars() -> tuple[str, ...]:
    """The printable character byte-level BPE writes for each byte (GPT-2's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


def tokenize(text: str, vocab: dict[str, int]) -> list[tuple[str, list[int]]]:
    """The pre-tokenizer's pieces of `text` (a word with its leading space, a run of punctuation…),
    each with its token ids in a Whisper vocabulary (token string → id: a tokenizer's get_vocab())."""
    chars = _byte_chars()
    pieces = []
    for piece in _PIECES.findall(text):
        parts = [chars[b] for b in piece.encode("utf-8")]
        while len(parts) > 1:
            joins = [(vocab[a + b], i) for i, (a, b) in enumerate(pairwise(parts)) if a + b in vocab]
            if not joins:
                break
            i = min(joins)[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        pieces.append((piece, [vocab[p] for p in parts]))
    return pieces
