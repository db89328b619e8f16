"""`simulate-oracle --strategy random` (spec §4.8b): oracle events without an LLM.

Every turn that follows a speaker change is a target response. Its events are the usual ones
(spec §4.2); the last must show the truth (a hint, ratio > 0.5) and is marked `use_hint: true`;
the earlier ones carry responses of *other* dialogues from a training-only pool (deduplicated by
token sequence, 0.5–2× the target's token length, none twice for one target, none equal to a turn
of this dialogue), marked `use_hint: false`. Each target draws from its own seeded generator, so
the result does not depend on which dialogues are processed or in which order.

A target that cannot end on its truth is an error naming the dialogue's turn, as the reference's
generator reports it (`no_scheduled_events`, `no_eligible_hint`, `events_after_last_eligible_hint`,
`Insufficient random responses`): no event is added or dropped to hide it.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from kame_desktop.errors import TrainingDataError
from kame_desktop.training.layout import Word
from kame_desktop.training.oracle_events import OracleEvent, oracle_events

Tokens = Callable[[str], tuple[Hashable, ...]]  # a tokenizer: text → token sequence
LENGTH_RATIO = (0.5, 2.0)  # candidate token length, relative to the target's


@dataclass(frozen=True)
class Candidate:
    text: str
    tokens: tuple[Hashable, ...]
    owners: frozenset[str]  # the pool dialogues it comes from


def word_tokens(text: str) -> tuple[str, ...]:
    """Whitespace words: the token unit when no checkpoint's tokenizer is given."""
    return tuple(text.split())


def _targets(events: Sequence[OracleEvent]) -> dict[tuple[int, int], list[int]]:
    """Event indices per target response (its first word, the channel that speaks it), in order."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        groups[e.target, e.channel].append(i)
    return dict(sorted(groups.items()))


def build_pool(dialogues: dict[str, list[Word]], tokens: Tokens, interval: float) -> list[Candidate]:
    """Every target response of the pool's dialogues, once per token sequence."""
    texts: dict[tuple[Hashable, ...], str] = {}
    owners: dict[tuple[Hashable, ...], set[str]] = defaultdict(set)
    for dialogue, words in dialogues.items():
        events = oracle_events(words, interval)
        for indices in _targets(events).values():
            text = events[indices[-1]].truth
            seq = tokens(text)
            if seq:
                texts[seq] = min(texts.get(seq, text), text)
                owners[seq].add(dialogue)
    return [Candidate(texts[seq], seq, frozenset(owners[seq])) for seq in sorted(texts, key=repr)]


def _turn_starts(words: Sequence[Word]) -> list[int]:
    """Indices of the first word of every turn after a speaker change (file order)."""
    return [i for i in range(1, len(words)) if words[i].speaker != words[i - 1].speaker]


def _turns(words: Sequence[Word]) -> list[str]:
    starts = [0, *_turn_starts(words), len(words)]
    return [" ".join(w.word for w in words[a:b]) for a, b in pairwise(starts)]


def _describe(words: Sequence[Word], first: int) -> str:
    w = words[first]
    return f"turn at word {first} (speaker {w.speaker}, {w.start:.2f} s, {w.word!r}…)"


def predict_random(
    dialogue: str, words: list[Word], events: list[OracleEvent], pool: Sequence[Candidate], tokens: Tokens,
    seed: int = 0, length_ratio: tuple[float, float] = LENGTH_RATIO,
) -> list[tuple[str, bool]]:
    """(prediction, use_hint) per event; raises TrainingDataError for a target that cannot end
    on its truth or finds too few responses in the pool."""
    groups = _targets(events)
    starts = _turn_starts(words)
    for a, b in pairwise([*starts, len(words)]):  # a target may start past an overlapped word
        if not any(a <= first < b for first, _ in groups):
            raise TrainingDataError(f"{_describe(words, a)}: no_scheduled_events (no event predicts it; "
                                    "a shorter --interval may give it one)")
    excluded = {tokens(t) for t in _turns(words)} | {tokens(e.truth) for e in events}
    lo, hi = length_ratio
    out: list[tuple[str, bool]] = [("", False)] * len(events)
    for (first, channel), indices in groups.items():
        last = events[indices[-1]]
        eligible = [i for i in indices if events[i].hint]  # a hint is shown past half the turn
        where = f"{_describe(words, first)}, last event at {last.t:.2f} s with ratio {last.ratio:.2f}"
        if not eligible:
            raise TrainingDataError(f"{where}: no_eligible_hint (no event past half the turn before it)")
        if eligible[-1] != indices[-1]:
            raise TrainingDataError(f"{where}: events_after_last_eligible_hint (a pause lowered the ratio)")
        length = len(tokens(last.truth))
        candidates = [c for c in pool if dialogue not in c.owners and c.tokens not in excluded
                      and lo * length <= len(c.tokens) <= hi * length]
        need = len(indices) - 1
        if len(candidates) < need:
            raise TrainingDataError(
                f"{_describe(words, first)}: Insufficient random responses (need {need}, found {len(candidates)} "
                f"of {lo:g}–{hi:g}× its {length} tokens); give a larger --pool of training transcripts"
            )
        key = hashlib.sha256(f"{seed}\0{dialogue}\0{first}\0{channel}".encode()).digest()
        picks = random.Random(int.from_bytes(key, "big")).sample(candidates, need)
        for i, pick in zip(indices[:-1], picks, strict=True):
            out[i] = (pick.text, False)
        out[indices[-1]] = ("", True)  # the truth, as the hint
    return out
