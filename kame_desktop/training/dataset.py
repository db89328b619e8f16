"""Training examples from Parquet shards (spec §4.7) and their collation with simulated-oracle
augmentation (spec §4.8). numpy only; finetune turns the batches into tensors.

An example is the main speaker's text and audio rows followed by the other speaker's audio
rows, delayed per stream behind one initial column, with the oracle events aligned to the input
timeline (+1 for that column). The collator renders each example's oracle row: a start token at
each kept event followed by its tokens, one per frame, then an optional shift of the whole row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kame_desktop.errors import TrainingDataError
from kame_desktop.training.streams import StreamLayout
from kame_desktop.training.text_align import OracleArrays

IGNORE = -1  # collation padding and the losses' ignore index (moshi's zero token)


@dataclass(frozen=True)
class Event:
    pos: int  # input position (initial column included)
    ratio: float
    skip_forbid: bool
    pred: tuple[int, ...]
    hint: tuple[int, ...]
    use_hint: bool | None = None  # the oracle file's choice (spec §4.8b); None: by ratio, as before


@dataclass(frozen=True)
class Example:
    dialogue_id: str
    input_ids: np.ndarray  # int64 [K, L]
    labels: np.ndarray  # int64 [K, L]: input with initial/padding tokens masked to -1
    events: tuple[Event, ...] = field(default=())

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


def delay_streams(streams: np.ndarray, layout: StreamLayout) -> np.ndarray:
    """[K, T] undelayed → [K, 1 + T + max_delay]: initial column, per-stream delay, padding
    (PAD for text, the audio start id for audio), spec §4.7 step 2."""
    K, T = streams.shape
    out = np.empty((K, 1 + T + layout.max_delay), dtype=np.int64)
    for k, d in enumerate(layout.delays):
        initial = layout.text_start if k == 0 else layout.audio_start
        pad = layout.pad_id if k == 0 else layout.audio_start
        out[k, : 1 + d] = initial
        out[k, 1 + d : 1 + d + T] = streams[k]
        out[k, 1 + d + T :] = pad
    return out


def mask_labels(input_ids: np.ndarray, layout: StreamLayout) -> np.ndarray:
    """Every value at or above its stream's initial id becomes -1 (spec §4.7 step 6)."""
    labels = input_ids.copy()
    labels[0][labels[0] >= layout.text_start] = IGNORE
    labels[1:][labels[1:] >= layout.audio_start] = IGNORE
    return labels


def build_examples(
    row: dict[str, Any], layout: StreamLayout, main_speaker: str = "A", max_length: int | None = None,
    min_length: int = 0, use_oracle: bool = True,
) -> list[Example]:
    """The examples of one shard row with `main_speaker` as Moshi (spec §4.7)."""
    other = "B" if main_speaker == "A" else "A"
    main = np.asarray(row[main_speaker], dtype=np.int64)
    them = np.asarray(row[other], dtype=np.int64)
    expected = 1 + layout.num_codebooks
    if main.ndim != 2 or main.shape[0] != expected or them.shape != main.shape:
        raise TrainingDataError(
            f"{row.get('dialogue_id')}: streams of shape {main.shape}/{them.shape}, expected [{expected}, T] "
            "(tokenized for another checkpoint?)"
        )
    streams = np.concatenate([main[: 1 + layout.dep_q], them[1 : 1 + layout.user_q]])
    delayed = delay_streams(streams, layout)
    events: list[Event] = []
    if use_oracle:
        columns = {k: row[f"{main_speaker}_oracle_{k}"] for k in OracleArrays.FIELDS}
        columns[OracleArrays.USE_HINT] = row.get(f"{main_speaker}_oracle_{OracleArrays.USE_HINT}")  # None: unspecified
        arrays = OracleArrays.from_arrays(columns)
        for i in range(len(arrays)):
            pos = int(arrays.frame_pos[i]) + 1 + layout.delays[0]
            if 0 <= pos < delayed.shape[1]:
                pred, hint = arrays.tokens(i)
                use_hint = None if arrays.use_hint is None else bool(arrays.use_hint[i])
                events.append(Event(pos, float(arrays.ratio[i]), bool(arrays.skip_forbid[i]), tuple(pred), tuple(hint),
                                    use_hint))
    chunks = [(0, delayed.shape[1])]
    if max_length:
        n = math.ceil(delayed.shape[1] / max_length)
        bounds = np.cumsum([0] + [len(c) for c in np.array_split(np.arange(delayed.shape[1]), n)])
        chunks = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    out = []
    for start, end in chunks:
        if end - start < max(min_length, 2):  # a lone frame has nothing to predict
            continue
        ids = delayed[:, start:end]
        local = tuple(replace(e, pos=e.pos - start) for e in events if start <= e.pos < end)
        out.append(Example(str(row.get("dialogue_id", "")), ids, mask_labels(ids, layout), local))
    return out


def read_shards(paths: list[Path]) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for path in paths:
        yield from pq.read_table(path).to_pylist()


def shard_files(shards: Path) -> list[Path]:
    files = sorted(shards.glob("*.parquet")) if shards.is_dir() else [shards]
    if not files or not all(p.is_file() for p in files):
        raise TrainingDataError(f"{shards}: no Parquet shards; run `kame-desktop train tokenize` first")
    return files


# --- collation (spec §4.8) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    shift_prob: float = 0.0
    right_shift: tuple[int, int] = (1, 10)  # frames; simulates LLM latency
    left_shift: tuple[int, int] = (1, 15)
    skip_prob: tuple[float, float] = (0.0, 0.0)  # per-example skip probability ~ U(min, max)
    max_jitter: int = 0
    hint_only: bool = False
    hint_only_warmup: tuple[int, int] | None = None  # (start, end) steps: curriculum

    @classmethod
    def train(cls) -> Augmentation:
        """The training CLI's effective defaults."""
        return cls(shift_prob=1.0, skip_prob=(0.1, 0.7))

    def hint_only_probability(self, step: int) -> float:
        if not self.hint_only:
            return 0.0
        if self.hint_only_warmup is None:
            return 1.0
        start, end = self.hint_only_warmup
        if step < start:
            return 1.0
        if step >= end:
            return 0.0
        return 1.0 - (step - start) / (end - start)


def render_oracle(
    events: tuple[Event, ...] | list[Event], length: int, start_id: int, pad_id: int,
    aug: Augmentation = Augmentation(), rng: np.random.Generator | None = None, step: int = 0,
) -> np.ndarray:
    """One example's oracle row [length] (spec §4.8 steps 1–6, draws in the spec's order)."""
    rng = rng or np.random.default_rng(0)
    row = np.full(length, pad_id, dtype=np.int64)
    lo, hi = aug.skip_prob
    skip = rng.uniform(lo, hi) if hi > 0 else 0.0
    hint_only = aug.hint_only
    if aug.hint_only and aug.hint_only_warmup is not None:
        hint_only = bool(rng.random() < aug.hint_only_probability(step))
    for e in sorted(events, key=lambda e: e.pos):  # stable
        pos = e.pos
        if not 0 <= pos < length:
            continue
        # An event marked to show the truth is never skipped (spec §4.8b).
        if not e.skip_forbid and not e.use_hint and skip > 0 and rng.random() < skip:
            continue
        if aug.max_jitter > 0:
            pos += int(rng.integers(0, aug.max_jitter + 1))
            if pos >= length:
                continue
        if e.use_hint is not None:  # the file's choice; hint-only mode leaves out its distractors
            tokens = e.hint if e.use_hint else (() if hint_only else e.pred)
        elif hint_only:
            tokens = e.hint
        else:
            tokens = e.hint if e.ratio >= 1.0 and e.hint else e.pred  # the truth once the turn is over
        if not tokens:
            continue
        row[pos] = start_id
        n = min(len(tokens), length - pos - 1)
        row[pos + 1 : pos + 1 + n] = tokens[:n]  # later events overwrite only where they write
    if aug.shift_prob > 0 and length >= 2 and rng.random() < aug.shift_prob:
        right = rng.random() < 0.5
        a, b = aug.right_shift if right else aug.left_shift
        s = int(np.clip(rng.integers(a, b + 1), 1, length - 1))
        if right:
            row = np.concatenate([np.full(s, pad_id, dtype=np.int64), row[:-s]])
        else:
            row = np.concatenate([row[s:], np.full(s, pad_id, dtype=np.int64)])
    return row


@dataclass(frozen=True)
class Batch:
    input_ids: np.ndarray  # int64 [B, K, L], padded with -1
    labels: np.ndarray  # int64 [B, K, L]
    oracle: np.ndarray  # int64 [B, 1, L], PAD where nothing is due
    mask: np.ndarray  # bool [B, L]: valid frames


def collate(
    examples: list[Example], layout: StreamLayout, aug: Augmentation = Augmentation(),
    rngs: list[np.random.Generator] | None = None, step: int = 0,
) -> Batch:
    B = len(examples)
    K = examples[0].input_ids.shape[0]
    L = max(e.length for e in examples)
    input_ids = np.full((B, K, L), IGNORE, dtype=np.int64)
    labels = np.full((B, K, L), IGNORE, dtype=np.int64)
    oracle = np.full((B, 1, L), layout.pad_id, dtype=np.int64)
    mask = np.zeros((B, L), dtype=bool)
    for b, e in enumerate(examples):
        input_ids[b, :, : e.length] = e.input_ids
        labels[b, :, : e.length] = e.labels
        mask[b, : e.length] = True
        rng = rngs[b] if rngs else None
        oracle[b, 0, : e.length] = render_oracle(e.events, e.length, layout.text_start, layout.pad_id, aug, rng, step)
    return Batch(input_ids, labels, oracle, mask)
