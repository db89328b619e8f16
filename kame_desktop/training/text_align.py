"""Frame-aligned text (spec §4.4) and event-level oracle tokens (spec §4.5). Pure logic over a
small tokenizer protocol, so the rules are pinned by tests with hand-made tokenizers.

Text: per speaker, words sorted by start are joined with single spaces and split into pieces;
each word's time is spread evenly over its characters (its leading space included); a piece
starts at its first character. On a grid of PAD frames covering the last piece plus 1 s, each
piece goes to the first PAD frame at or after its start frame, and the frame before it becomes
EPAD when that frame is PAD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kame_desktop.errors import TrainingDataError
from kame_desktop.training.layout import Word
from kame_desktop.training.streams import FRAME_RATE

TAIL_S = 1.0
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclass(frozen=True)
class Piece:
    surface: str  # the characters of the input this piece covers (with its leading space)
    ids: tuple[int, ...]  # one id, or the bytes of a byte-fallback character


class Tokenizer(Protocol):
    def pieces(self, text: str) -> list[Piece]:
        """Pieces whose surfaces concatenate to `text` (no BOS)."""
        ...

    def encode(self, text: str) -> list[int]:
        """Plain ids, no BOS."""
        ...


class SentencePieceTokenizer:
    """The Tokenizer protocol over a sentencepiece.SentencePieceProcessor."""

    def __init__(self, sp: Any) -> None:
        self.sp = sp

    def pieces(self, text: str) -> list[Piece]:
        out: list[list[Any]] = []  # [surface, ids]
        for p in self.sp.encode(text, return_type="proto").pieces:
            if not p.surface and out and _BYTE_PIECE.match(p.piece):
                out[-1][1].append(p.id)  # a byte-fallback character's later bytes
            elif p.surface or out:
                out.append([p.surface, [p.id]])
            # else: a lone dummy-prefix "▁" before the first word covers nothing: skipped
        return [Piece(s, tuple(ids)) for s, ids in out]

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def newline_id(self) -> int | None:
        ids = self.sp.encode("\n")
        return ids[-1] if ids else None


def speaker_text(words: list[Word]) -> tuple[str, np.ndarray, np.ndarray]:
    """The joined text and each character's start and end time."""
    ordered = sorted((w for w in words if w.word.strip()), key=lambda w: w.start)
    chars: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    for i, w in enumerate(ordered):
        text = w.word.strip() if i == 0 else " " + w.word.strip()
        step = (w.end - w.start) / len(text)
        for j, c in enumerate(text):
            chars.append(c)
            starts.append(w.start + j * step)
            ends.append(w.start + (j + 1) * step)
    return "".join(chars), np.array(starts), np.array(ends)


def align_text(
    words: list[Word], tokenizer: Tokenizer, pad_id: int, epad_id: int, frame_rate: float = FRAME_RATE,
    strict: bool = True, where: str = "",
) -> np.ndarray:
    """The text stream of one speaker as int32 ids per frame (spec §4.4)."""
    text, starts, ends = speaker_text(words)
    if not text:
        return np.zeros(0, dtype=np.int32)
    pieces = tokenizer.pieces(text)
    timed: list[tuple[float, tuple[int, ...]]] = []
    pos = 0
    last_end = 0.0
    for piece in pieces:
        n = len(piece.surface)
        if text[pos : pos + n] != piece.surface:
            if strict:
                raise TrainingDataError(f"{where}: tokenizer pieces do not match the text at {text[pos:pos + 20]!r}")
            break
        if n:
            timed.append((float(starts[pos]), piece.ids))
            last_end = float(ends[pos + n - 1])
        pos += n
    n_frames = int((last_end + TAIL_S) * frame_rate)
    frames = np.full(n_frames, pad_id, dtype=np.int32)
    dropped = 0
    for start, ids in timed:
        f = int(start // (1 / frame_rate))
        for token in ids:
            while f < n_frames and frames[f] != pad_id:
                f += 1
            if f >= n_frames:
                dropped += 1
                continue
            frames[f] = token
            if f > 0 and frames[f - 1] == pad_id:
                frames[f - 1] = epad_id
    if dropped and strict:
        raise TrainingDataError(f"{where}: {dropped} text token(s) run past the end of the frames")
    return frames


def fit_length(row: np.ndarray, length: int, pad_id: int) -> np.ndarray:
    """Truncate or PAD-pad a text row to the audio's frame count."""
    if len(row) >= length:
        return row[:length]
    return np.concatenate([row, np.full(length - len(row), pad_id, dtype=row.dtype)])


# --- oracle (spec §4.5) -------------------------------------------------------------------------


@dataclass(frozen=True)
class OracleArrays:
    frame_pos: np.ndarray  # int32 [E]
    ratio: np.ndarray  # float32 [E]
    skip_forbid: np.ndarray  # int8 [E]
    pred_values: np.ndarray  # int32, all events' tokens
    pred_offsets: np.ndarray  # int32 [E + 1]
    hint_values: np.ndarray
    hint_offsets: np.ndarray
    use_hint: np.ndarray | None = None  # int8 [E]: 1 hint, 0 prediction; None: unspecified (spec §4.8b)

    FIELDS = ("event_frame_pos", "event_ratio", "event_skip_forbid", "pred_values", "pred_offsets",
              "hint_values", "hint_offsets")
    USE_HINT = "event_use_hint"  # present only when the oracle file specifies it

    def arrays(self) -> dict[str, np.ndarray]:
        out = dict(zip(self.FIELDS, (self.frame_pos, self.ratio, self.skip_forbid, self.pred_values,
                                     self.pred_offsets, self.hint_values, self.hint_offsets), strict=True))
        if self.use_hint is not None:
            out[self.USE_HINT] = self.use_hint
        return out

    @classmethod
    def from_arrays(cls, d: dict[str, Any]) -> OracleArrays:
        use_hint = d.get(cls.USE_HINT)
        return cls(*(np.asarray(d[k]) for k in cls.FIELDS),
                   use_hint=None if use_hint is None else np.asarray(use_hint, dtype=np.int8))

    def tokens(self, i: int) -> tuple[list[int], list[int]]:
        """(prediction, hint) ids of event i."""
        p = self.pred_values[self.pred_offsets[i] : self.pred_offsets[i + 1]]
        h = self.hint_values[self.hint_offsets[i] : self.hint_offsets[i + 1]]
        return p.tolist(), h.tolist()

    def __len__(self) -> int:
        return len(self.frame_pos)


def encode_lines(text: str, tokenizer: Tokenizer, newline_id: int | None) -> list[int]:
    """Stripped text, each line encoded without BOS, lines joined by the newline id (or
    concatenated when the tokenizer has none)."""
    text = text.strip()
    if not text:
        return []
    out: list[int] = []
    for i, line in enumerate(text.split("\n")):
        if i and newline_id is not None:
            out.append(newline_id)
        out += tokenizer.encode(line)
    return out


def _check_record(rec: Any, i: int, where: str) -> None:
    if not isinstance(rec, dict):
        raise TrainingDataError(f"{where}: event {i} is not an object")
    for key, kind in (("timestamp_ms", (int, float)), ("channel", int), ("prediction", str)):
        if not isinstance(rec.get(key), kind) or isinstance(rec.get(key), bool):
            raise TrainingDataError(f"{where}: event {i} has no valid {key!r}")
    if not isinstance(rec.get("hint", ""), str):
        raise TrainingDataError(f"{where}: event {i} has a hint that is not a string")
    if not isinstance(rec.get("use_hint", False), bool):
        raise TrainingDataError(f"{where}: event {i} has a use_hint that is not true or false")


def tokenize_oracle(
    records: list[dict], channel: int, n_frames: int, tokenizer: Tokenizer, newline_id: int | None,
    frame_rate: float = FRAME_RATE, where: str = "",
) -> tuple[OracleArrays, int]:
    """The events predicting `channel`'s speech, and how many fell outside the audio."""
    if not isinstance(records, list):
        raise TrainingDataError(f"{where}: expected a JSON array of events")
    for i, rec in enumerate(records):
        _check_record(rec, i, where)
    flagged = sum("use_hint" in rec for rec in records)
    if flagged not in (0, len(records)):
        raise TrainingDataError(
            f"{where}: {flagged} of {len(records)} events have use_hint; give it on every event or on none"
        )
    use_hints: list[int] | None = [] if flagged else None
    pos: list[int] = []
    ratios: list[float] = []
    forbid: list[int] = []
    preds: list[list[int]] = []
    hints: list[list[int]] = []
    outside = 0
    for i, rec in enumerate(records):
        if rec["channel"] != channel:
            continue
        last = i == len(records) - 1 or records[i + 1]["channel"] != channel
        frame = int(rec["timestamp_ms"] / 1000 * frame_rate)
        if not 0 <= frame < n_frames:
            outside += 1
            continue
        try:
            ratio = float(rec.get("current_spoken_ratio", 0.0))
        except (TypeError, ValueError):
            ratio = 0.0
        pred = encode_lines(rec["prediction"], tokenizer, newline_id)
        hint = encode_lines(rec.get("hint", ""), tokenizer, newline_id)
        if not pred and not hint:
            continue
        pos.append(frame)
        ratios.append(ratio)
        forbid.append(int(last))
        preds.append(pred)
        hints.append(hint)
        if use_hints is not None:
            use_hints.append(int(rec["use_hint"]))

    def ragged(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.zeros(len(lists) + 1, dtype=np.int32)
        offsets[1:] = np.cumsum([len(x) for x in lists]) if lists else []
        values = np.array([t for x in lists for t in x], dtype=np.int32)
        return values, offsets

    pv, po = ragged(preds)
    hv, ho = ragged(hints)
    arrays = OracleArrays(
        np.array(pos, dtype=np.int32), np.array(ratios, dtype=np.float32), np.array(forbid, dtype=np.int8),
        pv, po, hv, ho, None if use_hints is None else np.array(use_hints, dtype=np.int8),
    )
    return arrays, outside
