"""Spec §4.4/§4.5: frame-aligned text (pads, end-pads, the frame formula) and oracle tokens."""

from __future__ import annotations

import numpy as np
import pytest

from kame_desktop.errors import TrainingDataError
from kame_desktop.training.layout import Word
from kame_desktop.training.text_align import Piece, align_text, encode_lines, fit_length, tokenize_oracle

PAD, EPAD = 3, 0


class CharTokenizer:
    """One piece per character (its id = 10 + position in the alphabet, space = 9); a piece
    starting with a space covers the space and the next letter, as SentencePiece's ▁x."""

    newline = 8

    def pieces(self, text: str) -> list[Piece]:
        out, i = [], 0
        while i < len(text):
            n = 2 if text[i] == " " and i + 1 < len(text) else 1
            out.append(Piece(text[i : i + n], (self._id(text[i + n - 1]),)))
            i += n
        return out

    def encode(self, text: str) -> list[int]:
        return [self._id(c) for c in text if c != " "]

    @staticmethod
    def _id(c: str) -> int:
        return 9 if c == " " else 10 + ord(c) - ord("a")


def test_pieces_frame_index_pad_and_epad():
    # "ab" at 0.0–0.16 s: a at frame 0, b at 0.08 s → frame 1. " cd" spreads 0.5–0.68 s over
    # 3 characters: " c" starts at 0.5 (frame 6), "d" at 0.62 (frame 7).
    ws = [Word("A", "ab", 0.0, 0.16), Word("A", "cd", 0.5, 0.68)]
    row = align_text(ws, CharTokenizer(), PAD, EPAD)
    assert len(row) == int((0.68 + 1.0) * 12.5) == 21
    assert row.tolist() == [10, 11, PAD, PAD, PAD, EPAD, 12, 13] + [PAD] * 13


def test_frame_index_is_float_floor_division():
    # int(0.48 // 0.08) is 5, not 6: the reference's float arithmetic, kept.
    ws = [Word("A", "ab", 0.0, 0.16), Word("A", "c", 0.48, 0.56)]
    row = align_text(ws, CharTokenizer(), PAD, EPAD)
    assert row[:7].tolist() == [10, 11, PAD, PAD, EPAD, 12, PAD]


def test_collisions_move_forward_and_epad_only_after_pad():
    # Three pieces in one 80 ms frame: they take frames 2, 3, 4; the EPAD goes before the first only.
    ws = [Word("A", "abc", 0.16, 0.20)]
    row = align_text(ws, CharTokenizer(), PAD, EPAD)
    assert row[:6].tolist() == [PAD, EPAD, 10, 11, 12, PAD]


def test_zero_length_word_thirteen_pieces_only_twelve_fit():
    ws = [Word("A", "abcdefghijklm", 0.0, 0.0)]
    with pytest.raises(TrainingDataError, match="past the end"):
        align_text(ws, CharTokenizer(), PAD, EPAD)
    row = align_text(ws, CharTokenizer(), PAD, EPAD, strict=False)
    assert len(row) == 12 and row.tolist() == list(range(10, 22))


def test_words_sorted_by_start_and_mismatch_raises():
    ws = [Word("A", "cd", 0.48, 0.64), Word("A", "ab", 0.0, 0.16)]
    assert align_text(ws, CharTokenizer(), PAD, EPAD)[:2].tolist() == [10, 11]

    class Broken(CharTokenizer):
        def pieces(self, text):
            return [Piece("zz", (1,))]

    with pytest.raises(TrainingDataError, match="do not match"):
        align_text(ws, Broken(), PAD, EPAD)


def test_fit_length():
    row = np.array([5, 6, 7], dtype=np.int32)
    assert fit_length(row, 2, PAD).tolist() == [5, 6]
    assert fit_length(row, 5, PAD).tolist() == [5, 6, 7, PAD, PAD]


def test_encode_lines_newline_rule():
    tok = CharTokenizer()
    assert encode_lines(" ab\ncd ", tok, 8) == [10, 11, 8, 12, 13]
    assert encode_lines("ab\ncd", tok, None) == [10, 11, 12, 13]  # no newline id: concatenated
    assert encode_lines("  ", tok, 8) == []


def test_oracle_tokenisation_frames_skip_forbid_and_drops():
    recs = [
        {"timestamp_ms": 1000, "channel": 1, "prediction": "ab", "hint": "", "current_spoken_ratio": 0.5},
        {"timestamp_ms": 1500, "channel": 1, "prediction": "b", "hint": "cd", "current_spoken_ratio": 0.75},
        {"timestamp_ms": 2000, "channel": 0, "prediction": "c", "hint": "d", "current_spoken_ratio": 1.0},
        {"timestamp_ms": 2500, "channel": 1, "prediction": " ", "hint": "", "current_spoken_ratio": 0.2},
        {"timestamp_ms": 9000, "channel": 1, "prediction": "a", "hint": "", "current_spoken_ratio": "x"},
    ]
    arrays, outside = tokenize_oracle(recs, 1, n_frames=100, tokenizer=CharTokenizer(), newline_id=8)
    # frame = int(ms / 1000 * 12.5); the empty event is dropped, 9000 ms → frame 112 is outside.
    assert outside == 1
    assert arrays.frame_pos.tolist() == [12, 18]
    assert arrays.skip_forbid.tolist() == [0, 1]  # the event before the channel changes is the run's last
    assert arrays.ratio.tolist() == [0.5, 0.75]
    assert arrays.pred_offsets.tolist() == [0, 2, 3] and arrays.pred_values.tolist() == [10, 11, 11]
    assert arrays.hint_offsets.tolist() == [0, 0, 2] and arrays.hint_values.tolist() == [12, 13]
    a0, _ = tokenize_oracle(recs, 0, n_frames=100, tokenizer=CharTokenizer(), newline_id=8)
    assert a0.frame_pos.tolist() == [25] and a0.skip_forbid.tolist() == [1]


def test_oracle_bad_records():
    with pytest.raises(TrainingDataError, match="timestamp_ms"):
        tokenize_oracle([{"channel": 1, "prediction": "a"}], 1, 10, CharTokenizer(), None)
    with pytest.raises(TrainingDataError, match="array"):
        tokenize_oracle({"a": 1}, 1, 10, CharTokenizer(), None)  # type: ignore[arg-type]


def test_oracle_use_hint_all_or_none():
    recs = [
        {"timestamp_ms": 1000, "channel": 1, "prediction": "ab", "hint": "", "use_hint": False},
        {"timestamp_ms": 1500, "channel": 1, "prediction": "", "hint": "cd", "use_hint": True},
        {"timestamp_ms": 2000, "channel": 1, "prediction": " ", "hint": "", "use_hint": False},  # no tokens: dropped
    ]
    arrays, _ = tokenize_oracle(recs, 1, 100, CharTokenizer(), 8)
    assert arrays.use_hint.tolist() == [0, 1] and arrays.arrays()["event_use_hint"].dtype == np.int8
    other, _ = tokenize_oracle(recs, 0, 100, CharTokenizer(), 8)
    assert other.use_hint.tolist() == []  # explicit, no events on this channel
    unflagged = [{k: v for k, v in r.items() if k != "use_hint"} for r in recs]
    plain, _ = tokenize_oracle(unflagged, 1, 100, CharTokenizer(), 8)
    assert plain.use_hint is None and "event_use_hint" not in plain.arrays()  # unspecified
    with pytest.raises(TrainingDataError, match="2 of 3 events have use_hint; give it on every event or on none"):
        tokenize_oracle(recs[:2] + unflagged[2:], 1, 100, CharTokenizer(), 8)
    with pytest.raises(TrainingDataError, match="event 0 has a use_hint that is not true or false"):
        tokenize_oracle([{**recs[0], "use_hint": 1}], 1, 100, CharTokenizer(), 8)
