"""Spec §4.7/§4.8: examples (delays, +1 event alignment, array_split chunks, label masks) and
the collation-time oracle rendering with its augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from kame_desktop.training.dataset import Augmentation, Event, build_examples, collate, render_oracle
from kame_desktop.training.streams import StreamLayout

# A tiny layout: text + 2 Moshi + 2 user codebooks, Moshi-style delays.
LAYOUT = StreamLayout(text_card=48, card=32, n_q=4, dep_q=2, delays=(0, 0, 1, 0, 1), pad_id=3, epad_id=0)


def row(T: int = 6) -> dict:
    a = [[5, 6, 3, 0, 7, 3][:T]] + [list(range(10, 10 + T)), list(range(20, 20 + T))]
    b = [[3] * T] + [list(range(0, T)), list(range(1, 1 + T))]
    oracle = {
        "event_frame_pos": [0, 3], "event_ratio": [0.5, 1.0], "event_skip_forbid": [0, 1],
        "pred_values": [11, 12], "pred_offsets": [0, 1, 2], "hint_values": [13], "hint_offsets": [0, 0, 1],
    }
    r = {"dialogue_id": "d/1", "A": a, "B": b}
    for k, v in oracle.items():
        r[f"A_oracle_{k}"] = v
    return r


def test_example_streams_delays_labels_and_event_alignment():
    (ex,) = build_examples(row(), LAYOUT)
    assert ex.input_ids.shape == (5, 1 + 6 + 1)
    text, a0, a1, u0, u1 = ex.input_ids.tolist()
    assert text == [48, 5, 6, 3, 0, 7, 3, 3]  # start, data, PAD tail
    assert a0 == [32, 10, 11, 12, 13, 14, 15, 32]  # delay 0: data then audio padding (= start id)
    assert a1 == [32, 32, 20, 21, 22, 23, 24, 25]  # delay 1
    assert u0 == [32, 0, 1, 2, 3, 4, 5, 32] and u1 == [32, 32, 1, 2, 3, 4, 5, 6]
    assert ex.labels[0].tolist() == [-1, 5, 6, 3, 0, 7, 3, 3]
    assert ex.labels[1].tolist() == [-1, 10, 11, 12, 13, 14, 15, -1]
    assert [e.pos for e in ex.events] == [1, 4]  # frame + 1 for the initial column
    assert ex.events[1].hint == (13,) and ex.events[1].skip_forbid


def test_array_split_chunks_and_min_length():
    exs = build_examples(row(), LAYOUT, max_length=3)
    # length 8 → ceil(8/3) = 3 chunks of 3, 3, 2 (numpy.array_split), events keep chunk-local positions
    assert [e.length for e in exs] == [3, 3, 2]
    assert exs[0].input_ids[0, 0] == 48 and exs[1].input_ids[0, 0] != 48
    assert [ev.pos for ev in exs[0].events] == [1] and [ev.pos for ev in exs[1].events] == [1]
    assert [e.length for e in build_examples(row(), LAYOUT, max_length=3, min_length=3)] == [3, 3]


def test_main_speaker_b_uses_b_rows():
    r = row()
    for k in list(r):
        if k.startswith("A_oracle_"):
            r["B" + k[1:]] = r[k]
    (ex,) = build_examples(r, LAYOUT, main_speaker="B")
    assert ex.input_ids[0, 1:7].tolist() == [3] * 6
    assert ex.input_ids[3, 1:7].tolist() == list(range(10, 16))  # A's audio is now the user's


def test_worked_check_hint_only():
    events = [Event(0, 0.0, False, (), (11,)), Event(3, 0.0, False, (), (12,))]
    out = render_oracle(events, 6, start_id=99, pad_id=0, aug=Augmentation(hint_only=True))
    assert out.tolist() == [99, 11, 0, 99, 12, 0]


def test_hint_vs_prediction_overwrite_and_end_of_example():
    events = [Event(0, 0.9, False, (21, 22, 23, 24), (31,)), Event(2, 1.0, False, (25,), (32,)),
              Event(5, 1.0, False, (26, 27), ())]
    out = render_oracle(events, 7, start_id=99, pad_id=3)
    # ratio < 1 → prediction; ratio 1 with a hint → the hint; an empty hint → the prediction.
    # The later event overwrites only where it writes: 24 (from the first) survives at 4.
    assert out.tolist() == [99, 21, 99, 32, 24, 99, 26]


def test_skip_never_drops_the_last_of_a_run():
    events = [Event(p, 0.5, p == 9, (7,), ()) for p in (1, 5, 9)]
    aug = Augmentation(skip_prob=(0.999, 0.999))
    for seed in range(20):
        out = render_oracle(events, 12, 99, 3, aug, np.random.default_rng(seed))
        assert out[9] == 99 and out[10] == 7


def test_shift_bounds_seeded():
    events = [Event(20, 0.5, True, (7,), ())]
    aug = Augmentation(shift_prob=1.0)
    shifts = set()
    for seed in range(300):
        out = render_oracle(events, 40, 99, 3, aug, np.random.default_rng(seed))
        (pos,) = np.flatnonzero(out == 99)
        shifts.add(int(pos) - 20)
    assert shifts <= set(range(-15, 0)) | set(range(1, 11))
    assert min(shifts) == -15 and max(shifts) == 10  # the whole range is reachable
    again = [render_oracle(events, 40, 99, 3, aug, np.random.default_rng(5)).tolist() for _ in range(2)]
    assert again[0] == again[1]  # the same seed, the same draw


def test_shift_clamped_to_length():
    events = [Event(0, 0.5, True, (7,), ())]
    aug = Augmentation(shift_prob=1.0, right_shift=(10, 10), left_shift=(10, 10))
    for seed in range(10):
        out = render_oracle(events, 3, 99, 3, aug, np.random.default_rng(seed))
        assert len(out) == 3 and (out == 3).sum() >= 2  # shifted by at most length - 1


def test_skip_probability_per_example_within_bounds():
    events = [Event(p, 0.5, False, (7,), ()) for p in range(0, 400, 2)]
    aug = Augmentation(skip_prob=(0.1, 0.7))
    kept = [((render_oracle(events, 400, 99, 3, aug, np.random.default_rng(s)) == 99).sum()) / 200 for s in range(30)]
    assert all(0.2 < k < 0.95 for k in kept)  # 1 - U(0.1, 0.7), with sampling noise
    assert np.std(kept) > 0.05  # drawn per example, not fixed


def test_curriculum_probability():
    aug = Augmentation(hint_only=True, hint_only_warmup=(10, 20))
    assert [aug.hint_only_probability(s) for s in (0, 10, 15, 20, 30)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert Augmentation().hint_only_probability(0) == 0.0


def test_collate_pads_with_minus_one_and_renders_oracle():
    exs = build_examples(row(), LAYOUT) + build_examples(row(4), LAYOUT)
    batch = collate(exs, LAYOUT)
    assert batch.input_ids.shape == (2, 5, 8) and batch.oracle.shape == (2, 1, 8)
    assert (batch.input_ids[1, :, 6:] == -1).all() and (batch.labels[1, :, 6:] == -1).all()
    assert batch.mask.sum(axis=1).tolist() == [8, 6]
    assert batch.oracle[0, 0].tolist() == [3, 48, 11, 3, 48, 13, 3, 3]
    assert batch.oracle[1, 0, 6:].tolist() == [3, 3]


@pytest.mark.parametrize("T", [1, 2])
def test_short_rows(T):
    (ex,) = build_examples(row(T), LAYOUT)
    assert ex.length == 1 + T + 1


def test_use_hint_selects_and_survives_skipping():
    # Three events, none the last of a run; the middle one is marked to show the truth.
    events = [Event(1, 1.0, False, (21,), (31,), use_hint=False), Event(5, 0.2, False, (22,), (32,), use_hint=True),
              Event(9, 1.0, False, (23,), (33,), use_hint=False)]
    plain = render_oracle(events, 12, 99, 3)
    # use_hint, not the ratio, picks: prediction for False (ratio 1.0 notwithstanding), hint for True.
    assert plain.tolist() == [3, 99, 21, 3, 3, 99, 32, 3, 3, 99, 23, 3]
    aug = Augmentation(skip_prob=(0.999, 0.999))
    for seed in range(20):
        out = render_oracle(events, 12, 99, 3, aug, np.random.default_rng(seed))
        assert out.tolist() == [3] * 5 + [99, 32] + [3] * 5  # only the use_hint event is never skipped
    # Hint-only mode leaves out the explicit distractors.
    assert render_oracle(events, 12, 99, 3, Augmentation(hint_only=True)).tolist() == [3] * 5 + [99, 32] + [3] * 5


def test_use_hint_column_reaches_events_and_chunks():
    r = row()
    r["A_oracle_event_use_hint"] = [0, 1]
    first, second = build_examples(r, LAYOUT, max_length=4)
    assert [(e.pos, e.use_hint) for e in first.events + second.events] == [(1, False), (0, True)]
    r["A_oracle_event_use_hint"] = None  # null: unspecified, the old behaviour
    (ex,) = build_examples(r, LAYOUT)
    assert [e.use_hint for e in ex.events] == [None, None]
