"""Spec §4.9–4.10 pieces of finetune: the loss weights on a hand-built batch, the ZeRO-3 gating
layout (same numbers, inference names back on export), parameter groups."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from kame_desktop.training.finetune import (  # noqa: E402
    BareGating,
    FinetuneSettings,
    KameTrainModel,
    LossWeights,
    bare_gating_,
    compute_losses,
    inference_key,
    parameter_groups,
)
from kame_desktop.training.streams import StreamLayout  # noqa: E402

PAD = 3


def _ce(logits: list[float], target: int) -> float:
    return -(logits[target] - math.log(sum(math.exp(x) for x in logits)))


def test_loss_weights_by_hand():
    torch.manual_seed(0)
    text_logits = torch.randn(1, 3, 5)  # positions 0..2 predict labels 1..3, text_card 5
    audio_logits = torch.randn(1, 2, 3, 4)  # dep_q 2, card 4
    # labels [B, K=5, 4]: column 0 is the initial column (never a target)
    labels = torch.tensor([[[-1, PAD, 1, 0],     # text: PAD, token, EPAD (counts as a token)
                            [-1, 2, -1, 0],      # codebook 0 (semantic): two valid
                            [-1, 1, 3, -1],      # codebook 1 (acoustic): two valid
                            [-1, 0, 0, 0], [-1, 1, 1, 1]]])  # user streams: no loss
    got = compute_losses(text_logits, audio_logits, labels, PAD, LossWeights())
    t = text_logits[0].tolist()
    non_pad = (_ce(t[1], 1) + _ce(t[2], 0)) / 2
    text = non_pad + 0.5 * _ce(t[0], PAD)
    a0, a1 = audio_logits[0, 0].tolist(), audio_logits[0, 1].tolist()
    audio = (100 * (_ce(a0[0], 2) + _ce(a0[2], 0)) + 1 * (_ce(a1[0], 1) + _ce(a1[1], 3))) / (100 * 2 + 1 * 2)
    assert got["text_loss"].item() == pytest.approx(text, rel=1e-5)
    assert got["audio_loss"].item() == pytest.approx(audio, rel=1e-5)
    assert got["loss"].item() == pytest.approx(text + audio, rel=1e-5)
    other = compute_losses(text_logits, audio_logits, labels, PAD, LossWeights(text_pad=1.0, semantic=1.0))
    assert other["text_loss"].item() == pytest.approx(non_pad + _ce(t[0], PAD), rel=1e-5)


def test_all_ignored_gives_zero_not_nan():
    labels = torch.full((1, 5, 3), -1)
    got = compute_losses(torch.randn(1, 2, 5), torch.randn(1, 2, 2, 4), labels, PAD)
    assert got["loss"].item() == 0.0


def _tiny_lm():
    from kame_desktop.frontend.kame.model import KameLMModel
    from kame_desktop.frontend.kame.tiny import TINY_LM_KWARGS

    torch.manual_seed(0)
    return KameLMModel(**dict(TINY_LM_KWARGS, text_card=48))


def test_bare_gating_same_output_and_names():
    from moshi.modules.gating import ActivationGating
    from moshi.utils.compile import no_compile

    lm = _tiny_lm()
    codes = torch.randint(0, 32, (1, 5, 6))
    codes[:, 0] = torch.randint(0, 48, (1, 6))
    with no_compile():
        before = lm(codes).logits
    names_before = set(lm.state_dict())
    n = bare_gating_(lm)
    assert n == 2 + 1 * 2  # two temporal layers, one depformer layer with a gating per step
    assert not any(isinstance(m, ActivationGating) for m in lm.modules())
    assert any(isinstance(m, BareGating) for m in lm.modules())
    with no_compile():
        torch.testing.assert_close(lm(codes).logits, before, equal_nan=True)
    renamed = {inference_key(k) for k in lm.state_dict()}
    assert renamed == names_before
    assert "transformer.layers.0.gating.linear_in_weight" in lm.state_dict()
    assert inference_key("depformer.layers.0.gating.1.linear_out_weight") == "depformer.layers.0.gating.1.linear_out.weight"


def test_parameter_groups_and_checkpointing_flag(tmp_path):
    layout = StreamLayout(48, 64, 4, 2, (0, 0, 1, 0, 1), 3, 0)
    model = KameTrainModel(_tiny_lm(), layout, LossWeights(), activation_checkpointing=True)
    assert model.lm.transformer.checkpointing and model.lm.depformer.checkpointing
    settings = FinetuneSettings(shards=tmp_path, base="x", out=tmp_path)
    temporal, depth = parameter_groups(model, settings)
    assert temporal["lr"] == depth["lr"] == 3e-5 and temporal["weight_decay"] == depth["weight_decay"] == 0.1
    names = {id(p): n for n, p in model.lm.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in temporal["params"]} == {
        "emb", "text_emb", "oracle_emb", "transformer", "out_norm", "text_linear"}
    assert {names[id(p)].split(".")[0] for p in depth["params"]} >= {"depformer_in", "depformer", "linears"}
    total = sum(len(g["params"]) for g in (temporal, depth))
    assert total == len(list(model.lm.parameters()))
    (only,) = parameter_groups(model, FinetuneSettings(shards=tmp_path, base="x", out=tmp_path, parameters="depformer"))
    assert only["params"] and not model.lm.text_emb.weight.requires_grad


def test_forward_matches_teacher_forcing_shapes():
    from kame_desktop.training.dataset import build_examples, collate

    layout = StreamLayout(48, 64, 4, 2, (0, 0, 1, 0, 1), 3, 0)
    model = KameTrainModel(_tiny_lm(), layout, LossWeights(), activation_checkpointing=False)
    T = 7
    row = {"dialogue_id": "x", "A": [[3] * T, [1] * T, [2] * T], "B": [[3] * T, [4] * T, [5] * T]}
    batch = collate(build_examples(row, layout, use_oracle=False), layout)
    out = model(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.labels), torch.from_numpy(batch.oracle))
    assert set(out) == {"loss", "text_loss", "audio_loss"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.lm.oracle_emb.weight.grad is not None


def test_tie_mode_embeds_the_oracle_with_the_text_table():
    """`tie` (spec §4.8b): the same losses as a separate table equal to the text table, no
    oracle table in the state dict, and the oracle's gradient reaches the text table."""
    import numpy as np

    from kame_desktop.training.dataset import build_examples, collate

    layout = StreamLayout(48, 64, 4, 2, (0, 0, 1, 0, 1), 3, 0)
    T = 7
    row = {"dialogue_id": "x", "A": [[3] * T, [1] * T, [2] * T], "B": [[3] * T, [4] * T, [5] * T]}
    batch = collate(build_examples(row, layout, use_oracle=False), layout)
    batch.oracle[0, 0, 2:5] = [48, 7, 9]  # a start token and two oracle tokens
    args = [torch.from_numpy(np.ascontiguousarray(a)) for a in (batch.input_ids, batch.labels, batch.oracle)]
    separate_lm = _tiny_lm()
    with torch.no_grad():
        separate_lm.oracle_emb.weight.copy_(separate_lm.text_emb.weight)
    separate = KameTrainModel(separate_lm, layout, LossWeights(), activation_checkpointing=False)
    tied = KameTrainModel(_tiny_lm(), layout, LossWeights(), activation_checkpointing=False, oracle_embedding_mode="tie")
    assert not any(k.startswith("lm.oracle_emb.") for k in tied.state_dict())
    expected, got = separate(*args), tied(*args)
    assert torch.allclose(expected["loss"], got["loss"])
    got["loss"].backward()
    no_oracle = KameTrainModel(_tiny_lm(), layout, LossWeights(), activation_checkpointing=False, oracle_embedding_mode="tie")
    no_oracle(*args[:2], None)["loss"].backward()
    grads = tied.lm.text_emb.weight.grad, no_oracle.lm.text_emb.weight.grad
    assert grads[0][9].abs().sum() > 0 and grads[1][9].abs().sum() == 0  # id 9 is only ever an oracle token
