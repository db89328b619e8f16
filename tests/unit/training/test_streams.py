"""The stream layout comes from the checkpoint's config: the Moshi 7B values of spec §1.1–1.2,
or a tiny checkpoint's own — and examples follow it."""

from __future__ import annotations

import pytest

from kame_desktop.training.dataset import build_examples
from kame_desktop.training.streams import StreamLayout


def test_moshi_7b_layout():
    from kame_desktop.frontend.kame.checkpoint import moshi_7b_kwargs

    layout = StreamLayout.from_lm_kwargs(moshi_7b_kwargs())
    assert (layout.streams, layout.num_codebooks, layout.dep_q, layout.user_q) == (17, 8, 8, 8)
    assert (layout.pad_id, layout.epad_id, layout.text_start, layout.audio_start) == (3, 0, 32000, 2048)
    assert layout.max_delay == 1
    T = 5
    row = {"A": [[3] * T] + [[1] * T] * 8, "B": [[3] * T] + [[2] * T] * 8}
    (ex,) = build_examples(row, layout, use_oracle=False)
    assert ex.input_ids.shape == (17, 1 + T + 1)
    assert ex.input_ids[1:9, 1:T].min() == 1 and ex.input_ids[9:, 2 : T + 1].max() == 2  # Moshi's, then the user's


def test_tiny_layout_and_overrides():
    from kame_desktop.frontend.kame.tiny import TINY_LM_KWARGS

    layout = StreamLayout.from_lm_kwargs(dict(TINY_LM_KWARGS, text_card=160, existing_text_end_padding_id=5))
    assert (layout.streams, layout.num_codebooks, layout.text_start, layout.audio_start) == (5, 2, 160, 64)
    assert layout.epad_id == 5
    assert StreamLayout.from_json(layout.to_json()) == layout


def test_rows_of_another_layout_are_refused():
    from kame_desktop.errors import TrainingDataError
    from kame_desktop.frontend.kame.checkpoint import moshi_7b_kwargs

    layout = StreamLayout.from_lm_kwargs(moshi_7b_kwargs())
    with pytest.raises(TrainingDataError, match="another checkpoint"):
        build_examples({"dialogue_id": "x", "A": [[3, 3]] * 3, "B": [[3, 3]] * 3}, layout, use_oracle=False)
