"""What counts as the same words, for the back-end's comparisons: the policy's "words that
changed" and memory's topics."""

from __future__ import annotations

import re
from collections.abc import Sequence


def normalized_words(text: str) -> list[str]:
    """Lower-case words without punctuation: what counts as 'the same words'."""
    return [w for w in (re.sub(r"[^\w']", "", w.lower()) for w in text.split()) if w]


def shared_prefix(a: Sequence, b: Sequence) -> int:
    """How many leading items `a` and `b` have in common."""
    return next((n for n, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
