"""The KAME model on PyPI moshi: oracle order (bit-exact), oracle schedule, causality, the zero
token, teacher forcing = streaming, stale-session replay, and parity with plain moshi."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from moshi.models.lm import LMGen, LMModel

from kame_desktop.events import FRAME_SIZE, OracleReset, OracleTokenEvent, OracleTokens
from kame_desktop.frontend.kame import checkpoint as ckpt
from kame_desktop.frontend.kame.engine import KameFrontEnd
from kame_desktop.frontend.kame.model import KameLMGen, KameLMModel
from kame_desktop.frontend.kame.oracle import OracleStream

CPU = torch.device("cpu")


def load(tiny_checkpoint, dtype=torch.float32) -> tuple[KameLMModel, ckpt.CheckpointFiles]:
    files = ckpt.resolve_checkpoint(str(tiny_checkpoint))
    return ckpt.load_lm(files, CPU, dtype), files


def user_codes(lm, steps: int, seed: int = 0) -> torch.Tensor:
    """Random user audio codes [steps, 1, n_user, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, lm.card, (steps, 1, lm.n_q - lm.dep_q, 1), generator=g)


def make_gen(lm, oracle, **kwargs) -> KameLMGen:
    gen = KameLMGen(lm, oracle, **kwargs)
    gen.streaming_forever(1)
    return gen


class ForwardTextSpy:
    """Records the arguments of every forward_text call of a model (the temporal step)."""

    def __init__(self, lm: KameLMModel) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        original = lm.forward_text

        def spy(sequence, sum_condition=None, cross=None, oracle_tokens=None):
            self.calls.append((sequence.clone(), None if oracle_tokens is None else oracle_tokens.clone()))
            transformer_out, text_logits = original(sequence, sum_condition, cross, oracle_tokens)
            self.outputs.append(transformer_out.clone())
            return transformer_out, text_logits

        lm.forward_text = spy
        lm.transformer.register_forward_pre_hook(lambda _m, args, kwargs=None: self.inputs.append(args[0].clone()))

    @property
    def oracle_ids(self) -> list[int]:
        return [int(o.flatten()[0]) for _, o in self.calls]


def run_schedule(lm, updates: dict[int, tuple[bool, list[int]]], steps: int, gen=None, oracle=None):
    oracle = oracle or OracleStream(lm.text_initial_token_id, lm.text_padding_token_id)
    gen = gen or make_gen(lm, oracle)
    codes = user_codes(lm, steps)
    outputs = []
    for step in range(steps):
        if step in updates:
            reset, tokens = updates[step]
            if reset:
                oracle.reset(gen.step_count)
            oracle.append(tokens, gen.step_count)
        outputs.append(gen.step(codes[step]))
    return gen, oracle, outputs


def test_oracle_schedule_of_the_worked_example(tiny_checkpoint):
    lm, _ = load(tiny_checkpoint)
    spy = ForwardTextSpy(lm)
    updates = {2: (True, [10, 11]), 4: (False, [12]), 8: (False, [13, 14]), 10: (True, [])}
    run_schedule(lm, updates, 13)
    start = lm.text_card
    assert spy.oracle_ids == [3, 3, start, 10, 11, 12, 3, 3, 3, 3, start, 3, 3]


@pytest.mark.parametrize("replay", [False, True])
def test_session_reset_clears_the_oracle_unless_reference_mode(tiny_checkpoint, replay):
    lm, files = load(tiny_checkpoint)
    frontend = KameFrontEnd(ckpt.load_lm(files, CPU, torch.float32), ckpt.load_mimi(files, CPU),
                            ckpt.load_tokenizer(files), replay_stale_oracle=replay, warmup_frames=0)
    silence = np.zeros(FRAME_SIZE, dtype=np.float32)

    def fed_ids(results) -> list[int]:
        ids = []
        for result in results:
            tokens = [e.id for e in result.events if isinstance(e, OracleTokenEvent)]
            ids.append(tokens[0] if tokens else 3)
        return ids

    for step in range(6):
        signals = [OracleReset(0), OracleTokens(0, (20, 21, 22))] if step == 3 else []
        frontend.step(silence, signals)
    frontend.reset()
    second_session = fed_ids([frontend.step(silence) for _ in range(8)])
    start = lm.text_card
    if replay:  # the reference's stale replay: the old run at its old offsets
        assert second_session == [3, 3, 3, start, 20, 21, 22, 3]
    else:
        assert second_session == [3] * 8


def test_changing_one_oracle_token_changes_that_step_and_not_before(tiny_checkpoint):
    outputs = []
    for token in (10, 11):
        lm, _ = load(tiny_checkpoint)
        spy = ForwardTextSpy(lm)
        oracle = OracleStream(lm.text_initial_token_id, lm.text_padding_token_id)
        gen = make_gen(lm, oracle, temp=0.0, temp_text=0.0)  # greedy: runs comparable step by step
        run_schedule(lm, {0: (True, [5, 6, token, 7])}, 6, gen=gen, oracle=oracle)
        outputs.append(torch.stack(spy.outputs))
    # Step 3 is fed o[2] (step 0 is the start token).
    assert torch.equal(outputs[0][:3], outputs[1][:3])
    assert not torch.equal(outputs[0][3], outputs[1][3])


def test_zero_token_contributes_exactly_nothing(tiny_checkpoint):
    lm, _ = load(tiny_checkpoint)
    seq = torch.randint(0, lm.card, (1, lm.num_codebooks, 5))
    seq[:, 0] = torch.randint(0, lm.text_card, (1, 5))
    with torch.no_grad():
        plain_out, plain_logits = lm.forward_text(seq)
        zero_out, zero_logits = lm.forward_text(seq, oracle_tokens=torch.full((1, 1, 5), -1))
        pad_out, _ = lm.forward_text(seq, oracle_tokens=torch.full((1, 1, 5), 3))
    assert torch.equal(plain_out, zero_out) and torch.equal(plain_logits, zero_logits)
    assert not torch.equal(plain_out, pad_out)  # a real token does contribute


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_transformer_input_is_audio_plus_text_plus_oracle_in_spec_order(tiny_checkpoint, dtype):
    lm, _ = load(tiny_checkpoint, dtype)
    spy = ForwardTextSpy(lm)
    steps = 12
    tokens = torch.randint(4, lm.text_card, (steps,)).tolist()
    run_schedule(lm, {0: (True, tokens)}, steps)
    reordered_differs = False
    with torch.no_grad():
        for (seq, oracle), actual in zip(spy.calls, spy.inputs, strict=True):
            audio = lm.emb[0](seq[:, 1])
            for k in range(1, lm.n_q):
                audio = audio + lm.emb[k](seq[:, k + 1])
            text = lm.text_emb(seq[:, 0])
            oracle_emb = lm.oracle_emb(oracle[:, 0])
            assert torch.equal(actual, audio + (text + oracle_emb))
            reordered_differs |= not torch.equal(actual, (audio + text) + oracle_emb)
    if dtype == torch.bfloat16:
        assert reordered_differs, "negative control: the other order must round differently in bf16"


def test_depformer_never_sees_the_oracle(tiny_checkpoint):
    lm, _ = load(tiny_checkpoint)
    in_depformer: list[bool] = []
    oracle_calls: list[bool] = []
    depformer_inputs: list[torch.Tensor] = []
    transformer_outs: list[torch.Tensor] = []
    text_tokens: list[torch.Tensor] = []

    def enter_depformer(_module, args):
        in_depformer.append(True)
        depformer_inputs.append(args[0].clone())

    lm.depformer.register_forward_pre_hook(enter_depformer)
    lm.depformer.register_forward_hook(lambda *_: in_depformer.clear())
    lm.oracle_emb.register_forward_hook(lambda *_: oracle_calls.append(bool(in_depformer)))
    lm.out_norm.register_forward_hook(lambda _m, _a, out: transformer_outs.append(out.clone()))
    oracle = OracleStream(lm.text_initial_token_id, lm.text_padding_token_id)
    gen = make_gen(lm, oracle, on_text_hook=lambda t: text_tokens.append(t.clone()))
    steps = 6
    run_schedule(lm, {0: (True, [5, 6, 7, 8, 9])}, steps, gen=gen, oracle=oracle)

    assert oracle_calls == [False] * steps  # once per step, in the temporal transformer only
    assert len(depformer_inputs) == steps * lm.dep_q
    with torch.no_grad():
        for step in range(steps):
            # Codebook 0 of each step: depformer_in[0](transformer_out) + depformer_text_emb(text).
            expected = lm.depformer_in[0](transformer_outs[step]) + lm.depformer_text_emb(text_tokens[step][:, None])
            assert torch.equal(depformer_inputs[step * lm.dep_q], expected)


def test_teacher_forcing_reproduces_greedy_streaming(tiny_checkpoint):
    lm, _ = load(tiny_checkpoint)
    steps = 10
    oracle_tokens = torch.randint(4, lm.text_card, (steps,))
    oracle = OracleStream(lm.text_initial_token_id, lm.text_padding_token_id)
    gen = make_gen(lm, oracle, temp=0.0, temp_text=0.0)
    oracle.reset(0)
    oracle.append(oracle_tokens.tolist(), 0)
    codes = user_codes(lm, steps)
    generated = [out for step in range(steps) if (out := gen.step(codes[step])) is not None]
    assert len(generated) == steps - 1
    g = torch.cat(generated, dim=2)  # [1, 1 + dep_q, T-1]
    user = torch.cat(list(codes), dim=2)[:, :, 1:steps]  # shifted left by one frame (spec §1.4)
    lm, _ = load(tiny_checkpoint)  # the same weights, not in streaming mode
    with torch.no_grad():
        out = lm.forward(torch.cat([g, user], dim=1), oracle_tokens=oracle_tokens[None, None, : steps - 1])
    text_pred = out.text_logits.argmax(-1)
    assert torch.equal(text_pred[out.text_mask], g[:, :1][out.text_mask])
    audio_pred = out.logits.argmax(-1)
    assert out.mask.any()
    assert torch.equal(audio_pred[out.mask], g[:, 1:][out.mask])
    # Negative control: another oracle changes what teacher forcing predicts.
    with torch.no_grad():
        other = lm.forward(torch.cat([g, user], dim=1), oracle_tokens=torch.full((1, 1, steps - 1), 3))
    assert not torch.equal(other.text_logits[out.text_mask], out.text_logits[out.text_mask])


def test_forward_rejects_a_misshaped_oracle(tiny_checkpoint):
    lm, _ = load(tiny_checkpoint)
    codes = torch.zeros(1, lm.num_codebooks, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="oracle_tokens must have shape"):
        lm.forward(codes, oracle_tokens=torch.zeros(1, 4, dtype=torch.long))


def test_zeroed_oracle_engine_matches_plain_moshi(tiny_checkpoint):
    files = ckpt.resolve_checkpoint(str(tiny_checkpoint))
    lm = ckpt.load_lm(files, CPU, torch.float32)
    with torch.no_grad():
        lm.oracle_emb.weight.zero_()
    frontend = KameFrontEnd(lm, ckpt.load_mimi(files, CPU), ckpt.load_tokenizer(files), seed=1234)
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal(FRAME_SIZE).astype(np.float32) * 0.1 for _ in range(20)]
    ours = [frontend.step(f, [OracleReset(0), OracleTokens(0, (5, 6, 7))] if i == 2 else []) for i, f in enumerate(frames)]

    state = ckpt.read_state_dict(files.lm_weights)
    del state["oracle_emb.weight"]
    plain_lm = LMModel(device="meta", dtype=torch.float32, **files.lm_kwargs)
    plain_lm.load_state_dict(state, assign=True)
    plain_lm.eval()
    mimi = ckpt.load_mimi(files, CPU)
    gen = LMGen(plain_lm)
    mimi.streaming_forever(1)
    gen.streaming_forever(1)
    torch.manual_seed(1234)
    plain_pcm, plain_text = [], []
    with torch.no_grad():
        for i, frame in enumerate(frames):
            codes = mimi.encode(torch.from_numpy(frame)[None, None])
            if i == 0:
                mimi.reset_streaming()  # as the engine (and the Moshi server) does
            tokens = gen.step(codes)
            if tokens is None:
                plain_pcm.append(np.zeros(FRAME_SIZE, dtype=np.float32))
                plain_text.append(None)
            else:
                plain_pcm.append(mimi.decode(tokens[:, 1:])[0, 0].numpy())
                plain_text.append(int(tokens[0, 0, 0]))

    assert any(isinstance(e, OracleTokenEvent) for r in ours for e in r.events)  # the oracle was active
    for result, pcm in zip(ours, plain_pcm, strict=True):
        assert np.array_equal(result.pcm, pcm)
    sampled = [t for t in plain_text if t is not None and t not in (3, 0)]
    ours_text = [e.id for r in ours for e in r.events if e.kind == "assistant_token"]
    assert ours_text == sampled
    assert len(set(sampled)) > 1  # sampling was on and produced varied tokens
