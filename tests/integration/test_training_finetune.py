"""Issue 15 end to end on CPU: the espeak-ng shards → finetune the tiny checkpoint for a few
dozen steps through accelerate (the loss falls) → Ctrl-C and --resume (the step counter goes on,
no step runs twice) → export → `kame-desktop run` loads the export and writes audio and a
timeline with oracle tokens."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

STEPS, INTERRUPT_AT, SAVE_EVERY = 40, 25, 10


def released_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """The weights of a released checkpoint (spec §1.5) for an LM config: names and shapes."""
    dim, ddim, card, text_card = config["dim"], config["depformer_dim"], config["card"], config["text_card"]
    n_q, dep_q = config["n_q"], config["dep_q"]
    hidden = int(config["hidden_scale"] * dim * 2 / 3)  # moshi's gated FFN width (11264 for 7B)
    shapes = {f"emb.{i}.weight": (card + 1, dim) for i in range(n_q)}
    shapes |= {"text_emb.weight": (text_card + 1, dim), "oracle_emb.weight": (text_card + 1, dim),
               "text_linear.weight": (text_card, dim), "out_norm.alpha": (1, 1, dim),
               "depformer_text_emb.weight": (text_card + 1, ddim)}
    shapes |= {f"depformer_in.{k}.weight": (ddim, dim) for k in range(dep_q)}
    shapes |= {f"depformer_emb.{k}.weight": (card + 1, ddim) for k in range(dep_q - 1)}
    shapes |= {f"linears.{k}.weight": (card, ddim) for k in range(dep_q)}
    for i in range(config["num_layers"]):
        p = f"transformer.layers.{i}."
        shapes |= {p + "self_attn.in_projs.0.weight": (3 * dim, dim), p + "self_attn.out_projs.0.weight": (dim, dim),
                   p + "gating.linear_in.weight": (2 * hidden, dim), p + "gating.linear_out.weight": (dim, hidden),
                   p + "norm1.alpha": (1, 1, dim), p + "norm2.alpha": (1, 1, dim)}
    dhidden = config["depformer_dim_feedforward"]
    for i in range(config["depformer_num_layers"]):  # one set of weights per codebook step
        p = f"depformer.layers.{i}."
        shapes |= {p + "norm1.alpha": (1, 1, ddim), p + "norm2.alpha": (1, 1, ddim)}
        for k in range(dep_q):
            shapes |= {p + f"self_attn.in_projs.{k}.weight": (3 * ddim, ddim),
                       p + f"self_attn.out_projs.{k}.weight": (ddim, ddim),
                       p + f"gating.{k}.linear_in.weight": (2 * (dhidden * 2 // 3), ddim),
                       p + f"gating.{k}.linear_out.weight": (ddim, dhidden * 2 // 3)}
    return shapes


@pytest.fixture(scope="module")
def finetuned(tiny_shards, tiny_checkpoint, tmp_path_factory):
    import torch
    from typer.testing import CliRunner

    from kame_desktop.cli import app
    from kame_desktop.training.dataset import Augmentation
    from kame_desktop.training.finetune import FinetuneSettings, finetune

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("finetune") / "run"
    settings = FinetuneSettings(
        shards=tiny_shards / "shards", base=str(tiny_checkpoint), out=out, max_steps=STEPS, lr=3e-3,
        warmup_steps=5, save_every=SAVE_EVERY, augmentation=Augmentation.train(), max_length=512,
    )

    def ctrl_c(step: int, record: dict) -> None:
        if step == INTERRUPT_AT:
            raise KeyboardInterrupt  # what Ctrl-C raises inside the loop

    first = finetune(settings, show_progress=False, on_step=ctrl_c)
    # The resume goes through the CLI, as a user would type it.
    result = CliRunner().invoke(app, [
        "train", "finetune", str(settings.shards), str(out), "--base", str(tiny_checkpoint), "--steps", str(STEPS),
        "--lr", "3e-3", "--warmup-steps", "5", "--save-every", str(SAVE_EVERY), "--resume",
    ])
    return settings, first, result


def test_finetune_interrupt_resume_loss_falls(finetuned, capsys):
    from kame_desktop.training.finetune import step_dirs

    settings, first, resumed = finetuned
    assert first.interrupted and (first.first_step, first.last_step) == (1, INTERRUPT_AT)
    assert resumed.exit_code == 0, resumed.output
    assert f"steps {INTERRUPT_AT + 1}–{STEPS}" in resumed.output
    log = [json.loads(line) for line in (settings.out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))  # continued, nothing repeated
    assert [s for s, _ in step_dirs(settings.out)] == [30, 40]  # keep = 2; Ctrl-C saved step 25 on the way
    for _, step in step_dirs(settings.out):  # one copy of the weights: accelerate's, which export reads
        assert sorted(p.name for p in step.glob("*.safetensors")) == ["model.safetensors"]
    losses = [r["loss"] for r in log]
    start, end = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    with capsys.disabled():
        print(f"\ntiny finetune: loss {losses[0]:.3f} (first 5 mean {start:.3f}) → {losses[-1]:.3f} "
              f"(last 5 mean {end:.3f}), {first.seconds_per_step:.3f} s/step")
    assert end < start
    assert log[0]["lr"] < log[10]["lr"] == pytest.approx(3e-3)  # warm-up, then constant


def test_resumed_run_matches_an_uninterrupted_one(finetuned, tmp_path):
    """Same data order, augmentation draws, optimizer and scheduler state after the resume."""
    from kame_desktop.training.finetune import finetune

    settings, _, _ = finetuned
    straight = finetune(replace(settings, out=tmp_path / "straight"), show_progress=False)
    log = [json.loads(line) for line in (settings.out / "log.jsonl").read_text().splitlines()]
    assert straight.losses == pytest.approx([r["loss"] for r in log], rel=1e-4)


def test_resume_after_a_crash_redoes_only_unsaved_steps(finetuned, tmp_path):
    """A crash (no Ctrl-C save) loses the steps after the last checkpoint: they run again once."""
    import shutil

    from kame_desktop.training.finetune import finetune

    settings, _, _ = finetuned
    out = Path(shutil.copytree(settings.out, tmp_path / "run"))
    shutil.rmtree(out / f"step_{STEPS}")  # as if killed after step 39 was logged, before step 40 saved
    result = finetune(replace(settings, out=out, resume=True), show_progress=False)
    assert (result.first_step, result.last_step) == (31, STEPS)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    before = [json.loads(line) for line in (settings.out / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in before], rel=1e-4)


def test_resume_rejects_changed_settings(finetuned):
    from kame_desktop.errors import TrainingDataError
    from kame_desktop.training.finetune import finetune

    settings, _, _ = finetuned
    with pytest.raises(TrainingDataError, match="batch_size"):
        finetune(replace(settings, resume=True, batch_size=2), show_progress=False)
    with pytest.raises(TrainingDataError, match="already holds a run"):
        finetune(settings, show_progress=False)


def test_export_loads_and_runs(finetuned, tiny_checkpoint, tmp_path):
    from safetensors import safe_open

    from kame_desktop.frontend.kame.checkpoint import load_lm, resolve_checkpoint
    from kame_desktop.training.export import export

    settings, _, _ = finetuned
    out = export(settings.out, tmp_path / "exported", dtype="fp32")
    config = json.loads((out / "config.json").read_text())
    base = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config == {**base, "model_type": "moshi"}  # the released layout, file names and model_type included
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    assert shapes == released_layout(base)  # spec §1.5's names and shapes, nothing more
    import torch

    lm = load_lm(resolve_checkpoint(str(out)), torch.device("cpu"), torch.float32)
    base_lm = load_lm(resolve_checkpoint(str(tiny_checkpoint)), torch.device("cpu"), torch.float32)
    assert not torch.equal(lm.oracle_emb.weight, base_lm.oracle_emb.weight)  # trained

    # `kame-desktop run` on the export with a scripted oracle: audio and oracle tokens come out.
    speech = tmp_path / "in.wav"
    sf.write(speech, np.zeros(24000, dtype=np.float32), 24000)
    script = tmp_path / "oracle.json"
    script.write_text(json.dumps([{"t": 0.16, "reset": True, "tokens": [10, 11, 12]}]))
    reply, timeline = tmp_path / "reply.wav", tmp_path / "timeline.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "kame_desktop", "run", "--checkpoint", str(out), "--input", str(speech), "--output",
         str(reply), "--timeline", str(timeline), "--tail", "0.5", "--device", "cpu", "--oracle-file", str(script)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    audio, rate = sf.read(reply)
    assert rate == 24000 and len(audio) > 0
    records = [json.loads(line) for line in timeline.read_text().splitlines()]
    assert records[0]["kind"] == "session_start"
    fed = [r["id"] for r in records if r["kind"] == "oracle_token"]
    assert fed[:4] == [config["text_card"], 10, 11, 12]


def test_export_of_a_plain_moshi_base(tiny_shards, tmp_path):
    """A base without an oracle table is upgraded (oracle = text table) and trains."""
    import shutil

    from kame_desktop.frontend.kame.tiny import make_tiny_checkpoint
    from kame_desktop.training.finetune import FinetuneSettings, finetune

    plain = make_tiny_checkpoint(tmp_path / "plain", with_oracle=False)
    shutil.copy(tiny_shards / "shards" / "espeak-000-of-001.parquet", tmp_path / "s.parquet")
    with pytest.warns(UserWarning, match="no oracle embedding"):
        result = finetune(FinetuneSettings(shards=tmp_path / "s.parquet", base=str(plain), out=tmp_path / "run",
                                           max_steps=2, save_every=2), show_progress=False)
    assert result.last_step == 2


def test_export_carries_the_base_model_type(finetuned, tiny_checkpoint, tmp_path):
    import shutil

    from kame_desktop.training.export import export

    settings, _, _ = finetuned
    base = Path(shutil.copytree(tiny_checkpoint, tmp_path / "base"))
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "hibiki"}))
    run = Path(shutil.copytree(settings.out, tmp_path / "run"))
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "base_source": str(base)}))
    out = export(run, tmp_path / "exported", dtype="fp32")
    assert json.loads((out / "config.json").read_text())["model_type"] == "hibiki"


def test_tie_mode_trains_the_text_table_and_exports_it_as_the_oracle_table(tiny_shards, tiny_checkpoint, tmp_path):
    """Spec §4.8b: a `tie` run embeds the oracle with the text table; its export's oracle_emb is
    the trained text_emb, and the engine's loader takes it."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from kame_desktop.errors import TrainingDataError
    from kame_desktop.frontend.kame.checkpoint import load_lm, resolve_checkpoint
    from kame_desktop.training.export import export
    from kame_desktop.training.finetune import FinetuneSettings, finetune

    torch.set_num_threads(1)
    shutil.copy(tiny_shards / "shards" / "espeak-000-of-001.parquet", tmp_path / "s.parquet")
    out = tmp_path / "run"
    result = finetune(FinetuneSettings(shards=tmp_path / "s.parquet", base=str(tiny_checkpoint), out=out, max_steps=2,
                                       save_every=2, lr=1e-2, warmup_steps=1, oracle_embedding_mode="tie"),
                      show_progress=False)
    assert result.last_step == 2
    assert json.loads((out / "run.json").read_text())["settings"]["oracle_embedding_mode"] == "tie"
    assert "lm.oracle_emb.weight" not in load_file(str(out / "step_2" / "model.safetensors"))  # no table of its own
    with pytest.raises(TrainingDataError, match="trained with oracle_embedding_mode 'tie', not 'separate'"):
        export(out, tmp_path / "wrong", oracle_embedding_mode="separate")
    exported = export(out, tmp_path / "exported", dtype="fp32", oracle_embedding_mode="tie")
    lm = load_lm(resolve_checkpoint(str(exported)), torch.device("cpu"), torch.float32)  # strict
    base = load_lm(resolve_checkpoint(str(tiny_checkpoint)), torch.device("cpu"), torch.float32)
    assert torch.equal(lm.oracle_emb.weight, lm.text_emb.weight)
    assert not torch.equal(lm.text_emb.weight, base.text_emb.weight)  # trained, oracle rows included
    assert not torch.equal(lm.oracle_emb.weight, base.oracle_emb.weight)
