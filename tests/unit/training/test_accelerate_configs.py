"""The shipped accelerate configs parse with accelerate's own loaders and hold the spec's values
(§4.10): DeepSpeed ZeRO-3 with bf16, AdamW (0.9, 0.95), eps 1e-5, WarmupLR, activation
checkpointing; FSDP full sharding in bf16; one GPU in bf16."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

from accelerate.commands.config.config_args import load_config_from_file  # noqa: E402

import kame_desktop.training as training  # noqa: E402

CONFIGS = Path(training.__file__).parent / "configs"
REPO = CONFIGS.parents[2]


def test_one_gpu():
    cfg = load_config_from_file(str(CONFIGS / "one-gpu.yaml"))
    assert str(cfg.distributed_type) in ("NO", "DistributedType.NO")
    assert cfg.num_processes == 1 and str(cfg.mixed_precision).endswith("bf16")


def test_zero3_deepspeed():
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    cfg = load_config_from_file(str(CONFIGS / "zero3.yaml"))
    assert str(cfg.distributed_type).endswith("DEEPSPEED")
    ds_file = REPO / cfg.deepspeed_config["deepspeed_config_file"]  # relative to the repository root
    assert ds_file.is_file()
    ds = HfDeepSpeedConfig(str(ds_file))
    assert ds.is_zero3() and ds.get_value("zero_optimization.stage") == 3
    assert ds.get_value("bf16.enabled") is True
    assert ds.get_value("optimizer.type") == "AdamW"
    assert ds.get_value("optimizer.params.betas") == [0.9, 0.95]
    assert ds.get_value("optimizer.params.eps") == 1e-5
    assert ds.get_value("scheduler.type") == "WarmupLR"
    assert ds.get_value("scheduler.params.warmup_type") == "linear"
    assert ds.get_value("activation_checkpointing.partition_activations") is True
    assert ds.get_value("zero_optimization.stage3_gather_16bit_weights_on_model_save") is True  # export needs it
    raw = json.loads(ds_file.read_text())
    assert raw["zero_optimization"]["reduce_bucket_size"] == 2e7
    assert raw["zero_optimization"]["stage3_param_persistence_threshold"] == 5e4


def test_fsdp():
    cfg = load_config_from_file(str(CONFIGS / "fsdp.yaml"))
    assert str(cfg.distributed_type).endswith("FSDP")
    assert str(cfg.mixed_precision).endswith("bf16")
    fsdp = cfg.fsdp_config
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "StreamingTransformerLayer"
    from moshi.modules.transformer import StreamingTransformerLayer  # the class to wrap exists

    assert StreamingTransformerLayer.__name__ == fsdp["fsdp_transformer_layer_cls_to_wrap"]


def test_finetune_defaults_match_the_spec(tmp_path):
    from kame_desktop.training.finetune import FinetuneSettings

    s = FinetuneSettings(shards=tmp_path, base="x", out=tmp_path)
    assert (s.lr, s.weight_decay, s.betas, s.eps) == (3e-5, 0.1, (0.9, 0.95), 1e-5)
    assert s.augmentation.shift_prob == 1.0 and s.augmentation.skip_prob == (0.1, 0.7)
    assert (s.augmentation.right_shift, s.augmentation.left_shift) == ((1, 10), (1, 15))


def test_deepspeed_config_drives_the_wrapper(tmp_path):
    """The ZeRO-3 JSON, read through accelerate's DeepSpeedPlugin, turns on activation
    checkpointing in the model wrapper and hands the optimizer and schedule to DeepSpeed."""
    from types import SimpleNamespace

    from accelerate.utils import DeepSpeedPlugin

    from kame_desktop.training.finetune import (
        FinetuneSettings,
        _activation_checkpointing,
        _uses_deepspeed_optimizer,
    )

    plugin = DeepSpeedPlugin(hf_ds_config=str(CONFIGS / "zero3-bf16-warmlr-act_ckpt.json"))
    zero3 = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin))
    plain = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None))
    auto = FinetuneSettings(shards=tmp_path, base="x", out=tmp_path)
    assert _activation_checkpointing(auto, zero3) and _uses_deepspeed_optimizer(zero3)
    assert not _activation_checkpointing(auto, plain) and not _uses_deepspeed_optimizer(plain)
    off = FinetuneSettings(shards=tmp_path, base="x", out=tmp_path, activation_checkpointing=False)
    assert not _activation_checkpointing(off, zero3)
