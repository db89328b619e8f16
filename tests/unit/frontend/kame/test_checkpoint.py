"""Checkpoint resolution and strict loading (spec §1.5, §7.2) on the tiny checkpoint."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import load_file, save_file

from kame_desktop.errors import CheckpointError
from kame_desktop.frontend.kame.checkpoint import (
    DEFAULT_NAMES,
    build_lm,
    estimate_memory,
    load_lm,
    load_mimi,
    load_tokenizer,
    moshi_7b_kwargs,
    resolve_checkpoint,
)
from kame_desktop.frontend.kame.tiny import make_tiny_checkpoint

CPU = torch.device("cpu")
LM_FILE = "model.safetensors"
CHECKPOINT_FILES = (LM_FILE, "mimi.safetensors", "tokenizer.model", "mimi_config.json", "config.json")


# --- helpers -------------------------------------------------------------------------------------


def load_tiny_lm(folder: Path, dtype: torch.dtype = torch.float32):
    return load_lm(resolve_checkpoint(str(folder)), CPU, dtype)


def rewrite_state(path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> dict[str, torch.Tensor]:
    """Re-save a safetensors file after `edit` changed its state dict in place; return the new state."""
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))
    return state


def edit_config(folder: Path, **changes) -> None:
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config.update(changes)
    config_file.write_text(json.dumps(config))


def copy_files(source: Path, target: Path, names=CHECKPOINT_FILES) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(source / name, target / name)
    return target


def assert_state_equal(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


@contextmanager
def no_upgrade_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*no oracle embedding")
        yield


class FakeHub:
    """hf_hub_download stand-in: repos are local folders; every call is recorded."""

    def __init__(self) -> None:
        self.repos: dict[str, Path] = {}
        self.calls: list[tuple[str, str, str | None]] = []

    def __call__(self, repo_id: str, filename: str, *, revision: str | None = None, **_) -> str:
        self.calls.append((repo_id, filename, revision))
        if repo_id not in self.repos:
            raise RepositoryNotFoundError(f"no repo {repo_id}")
        path = self.repos[repo_id] / filename
        if not path.is_file():
            raise EntryNotFoundError(f"no {filename} in {repo_id}")
        return str(path)


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    hub = FakeHub()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    return hub


# --- 1. strict load of the tiny folder -----------------------------------------------------------


def test_tiny_checkpoint_loads_strictly_with_moshi_keys_plus_oracle(tiny_checkpoint):
    from moshi.models.lm import LMModel

    files = resolve_checkpoint(str(tiny_checkpoint))
    with no_upgrade_warning():
        model = load_lm(files, CPU, torch.float32)

    base_keys = set(LMModel(device="meta", **files.lm_kwargs).state_dict())
    assert set(model.state_dict()) == base_keys | {"oracle_emb.weight"}
    assert "oracle_emb.weight" not in base_keys
    text_card, dim = files.lm_kwargs["text_card"], files.lm_kwargs["dim"]
    assert model.state_dict()["oracle_emb.weight"].shape == (text_card + 1, dim)
    assert_state_equal(model, load_file(str(tiny_checkpoint / LM_FILE)))
    assert not any(p.is_meta for p in model.parameters())
    assert not model.training


def test_tiny_mimi_and_tokenizer_load(tiny_checkpoint):
    files = resolve_checkpoint(str(tiny_checkpoint))
    mimi = load_mimi(files, CPU)
    assert_state_equal(mimi, load_file(str(tiny_checkpoint / "mimi.safetensors")))
    assert mimi.num_codebooks == files.num_codebooks == 2
    tokenizer = load_tokenizer(files)
    assert 0 < tokenizer.vocab_size() <= files.lm_kwargs["text_card"]
    assert tokenizer.pad_id() == files.lm_kwargs["existing_text_padding_id"] == 3


# --- 2. legacy upgrade ---------------------------------------------------------------------------


def test_plain_moshi_file_gets_oracle_as_a_copy_of_text_emb(tmp_path):
    folder = make_tiny_checkpoint(tmp_path / "legacy", with_oracle=False)
    file_state = load_file(str(folder / LM_FILE))
    assert "oracle_emb.weight" not in file_state

    with pytest.warns(UserWarning, match="no oracle embedding"):
        model = load_tiny_lm(folder)

    oracle, text = model.oracle_emb.weight, model.text_emb.weight
    assert torch.equal(oracle, text)
    assert torch.equal(text, file_state["text_emb.weight"])
    assert oracle.data_ptr() != text.data_ptr()
    with torch.no_grad():
        oracle.add_(1.0)
    assert torch.equal(text, file_state["text_emb.weight"])


def test_file_with_oracle_is_not_upgraded(tiny_checkpoint):
    with no_upgrade_warning():
        model = load_tiny_lm(tiny_checkpoint)
    file_state = load_file(str(tiny_checkpoint / LM_FILE))
    assert torch.equal(model.oracle_emb.weight, file_state["oracle_emb.weight"])
    assert not torch.equal(model.oracle_emb.weight, model.text_emb.weight)


# --- 3. dtype ------------------------------------------------------------------------------------


def test_load_as_bf16_casts_every_float_tensor(tiny_checkpoint):
    model = load_tiny_lm(tiny_checkpoint, torch.bfloat16)
    state = model.state_dict()
    floats = {k: v for k, v in state.items() if v.dtype.is_floating_point}
    assert floats and all(v.dtype == torch.bfloat16 for v in floats.values()), {
        k: v.dtype for k, v in floats.items() if v.dtype != torch.bfloat16
    }
    for key, value in load_file(str(tiny_checkpoint / LM_FILE)).items():
        assert torch.equal(state[key], value.to(torch.bfloat16)), key


# --- 4. path resolution --------------------------------------------------------------------------


def test_plain_names_are_files_of_the_folder(tiny_checkpoint, fake_hub):
    files = resolve_checkpoint(str(tiny_checkpoint))
    assert files.lm_weights == tiny_checkpoint / LM_FILE
    assert files.mimi_weights == tiny_checkpoint / "mimi.safetensors"
    assert files.tokenizer == tiny_checkpoint / "tokenizer.model"
    assert files.mimi_config == json.loads((tiny_checkpoint / "mimi_config.json").read_text())
    assert files.lora_weights is None and files.model_type == "moshi" and files.lm_gen_config == {}
    assert fake_hub.calls == []
    assert resolve_checkpoint(f"file://{tiny_checkpoint}").lm_weights == tiny_checkpoint / LM_FILE


def test_plain_names_follow_a_config_path_in_another_folder(tiny_checkpoint, tmp_path):
    other = copy_files(tiny_checkpoint, tmp_path / "other")
    files = resolve_checkpoint(str(tiny_checkpoint), config_path=other / "config.json")
    assert files.lm_weights == other / LM_FILE
    assert files.mimi_weights == other / "mimi.safetensors"
    assert files.tokenizer == other / "tokenizer.model"


def test_file_urls_in_config_are_absolute_local_paths(tiny_checkpoint, tmp_path, fake_hub):
    folder = copy_files(tiny_checkpoint, tmp_path / "config-only", ["config.json", "mimi_config.json"])
    edit_config(
        folder,
        moshi_name=f"file://{tiny_checkpoint / LM_FILE}",
        mimi_name=f"file://{tiny_checkpoint / 'mimi.safetensors'}",
        tokenizer_name=f"file://{tiny_checkpoint / 'tokenizer.model'}",
    )
    files = resolve_checkpoint(str(folder))
    assert files.lm_weights == tiny_checkpoint / LM_FILE
    assert files.mimi_weights == tiny_checkpoint / "mimi.safetensors"
    assert files.tokenizer == tiny_checkpoint / "tokenizer.model"
    assert fake_hub.calls == []
    assert_state_equal(load_lm(files, CPU, torch.float32), load_file(str(tiny_checkpoint / LM_FILE)))


def test_hf_urls_in_config_are_fetched_from_that_repo(tiny_checkpoint, tmp_path, fake_hub):
    folder = copy_files(tiny_checkpoint, tmp_path / "local", ["config.json", "mimi_config.json", LM_FILE])
    tok_repo = copy_files(tiny_checkpoint, tmp_path / "tok-repo" / "sub" / "dir", ["tokenizer.model"])
    mimi_repo = copy_files(tiny_checkpoint, tmp_path / "mimi-repo", ["mimi.safetensors"])
    fake_hub.repos.update({"owner/tok": tok_repo.parent.parent, "kyutai/mimi": mimi_repo})
    edit_config(
        folder,
        tokenizer_name="hf://owner/tok/sub/dir/tokenizer.model",
        mimi_name="hf://kyutai/mimi/mimi.safetensors",
    )

    files = resolve_checkpoint(str(folder), revision="v1")
    assert sorted(fake_hub.calls) == [
        ("kyutai/mimi", "mimi.safetensors", "v1"),
        ("owner/tok", "sub/dir/tokenizer.model", "v1"),
    ]
    assert files.tokenizer == tok_repo / "tokenizer.model"
    assert files.mimi_weights == mimi_repo / "mimi.safetensors"
    assert files.lm_weights == folder / LM_FILE


def test_malformed_hf_url_is_an_error(tiny_checkpoint_copy, fake_hub):
    edit_config(tiny_checkpoint_copy, tokenizer_name="hf://owner/tokenizer.model")
    with pytest.raises(CheckpointError, match="hf://owner/repo/path"):
        resolve_checkpoint(str(tiny_checkpoint_copy))
    assert fake_hub.calls == []


def test_repo_id_fetches_config_and_names_from_the_repo(
    tiny_checkpoint, tiny_checkpoint_copy, fake_hub, monkeypatch
):
    fake_hub.repos["owner/kame"] = tiny_checkpoint_copy
    monkeypatch.chdir(tiny_checkpoint)  # local files of the same names must not be used
    files = resolve_checkpoint("owner/kame", revision="abc")
    assert fake_hub.calls[0] == ("owner/kame", "config.json", "abc")
    assert sorted(fake_hub.calls) == sorted(("owner/kame", name, "abc") for name in CHECKPOINT_FILES)
    assert files.source == "owner/kame"
    assert files.lm_weights == tiny_checkpoint_copy / LM_FILE
    assert files.tokenizer == tiny_checkpoint_copy / "tokenizer.model"


def test_repo_id_with_a_local_config_path(tiny_checkpoint, tmp_path, fake_hub):
    repo = copy_files(
        tiny_checkpoint,
        tmp_path / "repo",
        ["mimi_config.json", LM_FILE, "mimi.safetensors", "tokenizer.model"],
    )
    fake_hub.repos["owner/kame"] = repo
    files = resolve_checkpoint("owner/kame", config_path=tiny_checkpoint / "config.json")
    assert ("owner/kame", "config.json", None) not in fake_hub.calls
    assert files.lm_weights == repo / LM_FILE
    assert files.lm_kwargs["dim"] == 32


def test_overrides_are_local_paths_unless_hf(tiny_checkpoint, tmp_path, fake_hub, monkeypatch):
    weights = copy_files(tiny_checkpoint, tmp_path / "weights", [LM_FILE])
    fake_hub.repos["owner/tok"] = tiny_checkpoint
    monkeypatch.chdir(tmp_path)
    files = resolve_checkpoint(
        str(tiny_checkpoint),
        lm_weights="weights/model.safetensors",
        mimi_weights=tiny_checkpoint / "mimi.safetensors",
        tokenizer="hf://owner/tok/tokenizer.model",
    )
    assert files.lm_weights.resolve() == weights / LM_FILE
    assert files.mimi_weights == tiny_checkpoint / "mimi.safetensors"
    assert files.tokenizer == tiny_checkpoint / "tokenizer.model"
    assert fake_hub.calls == [("owner/tok", "tokenizer.model", None)]


def test_override_name_is_not_looked_up_in_the_checkpoint_folder(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint file missing: model.safetensors"):
        resolve_checkpoint(str(tiny_checkpoint), lm_weights="model.safetensors")


def test_folder_without_config_falls_back_to_moshi_7b(tmp_path):
    for name in DEFAULT_NAMES.values():
        (tmp_path / name).touch()
    with pytest.warns(UserWarning, match="no config.json"):
        files = resolve_checkpoint(str(tmp_path))
    assert files.lm_kwargs == moshi_7b_kwargs()
    assert files.lm_weights == tmp_path / "model.safetensors"
    assert files.mimi_weights == tmp_path / "tokenizer-e351c8d8-checkpoint125.safetensors"
    assert files.tokenizer == tmp_path / "tokenizer_spm_32k_3.model"
    assert files.mimi_config is None and files.lm_gen_config == {}


@pytest.mark.parametrize("missing", list(DEFAULT_NAMES.values()))
def test_folder_without_config_names_the_missing_default_file(tmp_path, missing):
    for name in DEFAULT_NAMES.values():
        if name != missing:
            (tmp_path / name).touch()
    with pytest.warns(UserWarning, match="no config.json"), pytest.raises(CheckpointError, match=missing):
        resolve_checkpoint(str(tmp_path))


def test_repo_without_config_falls_back_to_moshi_7b(tmp_path, fake_hub):
    for name in DEFAULT_NAMES.values():
        (tmp_path / name).touch()
    fake_hub.repos["kyutai/moshiko"] = tmp_path
    with pytest.warns(UserWarning, match="no config.json"):
        files = resolve_checkpoint("kyutai/moshiko")
    assert files.lm_kwargs == moshi_7b_kwargs()
    assert files.tokenizer == tmp_path / "tokenizer_spm_32k_3.model"
    assert ("kyutai/moshiko", "config.json", None) in fake_hub.calls


def test_unknown_repo_is_an_error(fake_hub):
    with pytest.raises(CheckpointError, match="'owner/nothing' not found"):
        resolve_checkpoint("owner/nothing")


def test_file_missing_from_repo_is_named(tiny_checkpoint, tmp_path, fake_hub):
    fake_hub.repos["owner/kame"] = copy_files(
        tiny_checkpoint, tmp_path / "repo", ["config.json", "mimi_config.json"]
    )
    with pytest.raises(CheckpointError, match="'model.safetensors' is not in Hugging Face repo 'owner/kame'"):
        resolve_checkpoint("owner/kame")


# --- 5. a real hub cache, offline ----------------------------------------------------------------


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache; hf_hub_download reads these constants at call time."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_repo(cache: Path, repo: str, source: Path) -> Path:
    """Lay `source`'s files out as the cached main revision of `repo`; return the snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    storage = cache / ("models--" + repo.replace("/", "--"))
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    return copy_files(source, storage / "snapshots" / commit)


def test_cached_repo_loads_offline(tiny_checkpoint, hub_cache):
    from kame_desktop.frontend.kame.engine import KameFrontEnd

    snapshot = cache_repo(hub_cache, "owner/name", tiny_checkpoint)
    files = resolve_checkpoint("owner/name")
    assert files.lm_weights == snapshot / LM_FILE
    assert files.mimi_weights == snapshot / "mimi.safetensors"
    assert files.tokenizer == snapshot / "tokenizer.model"

    front = KameFrontEnd.load("owner/name", device="cpu")
    assert front.model == "owner/name"
    assert_state_equal(front.lm, load_file(str(tiny_checkpoint / LM_FILE)))
    assert front.tokenizer.vocab_size() == files.lm_kwargs["text_card"]


def test_uncached_repo_offline_is_an_error(tiny_checkpoint, hub_cache):
    cache_repo(hub_cache, "owner/name", tiny_checkpoint)
    with pytest.raises(CheckpointError, match="'owner/other': no network and no cached copy"):
        resolve_checkpoint("owner/other")


def test_file_missing_from_cached_repo_offline_is_named(tiny_checkpoint, hub_cache):
    (cache_repo(hub_cache, "owner/name", tiny_checkpoint) / "tokenizer.model").unlink()
    with pytest.raises(
        CheckpointError, match="'tokenizer.model' from 'owner/name': no network and no cached copy"
    ):
        resolve_checkpoint("owner/name")


# --- 6. errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_lm_file(tiny_checkpoint_copy, damage):
    path = tiny_checkpoint_copy / LM_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match=f"{path} is not a valid weights file"):
        load_tiny_lm(tiny_checkpoint_copy)


def test_missing_tensor_is_named(tiny_checkpoint_copy):
    rewrite_state(tiny_checkpoint_copy / LM_FILE, lambda state: state.pop("text_linear.weight"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing tensors: text_linear\.weight$"):
        load_tiny_lm(tiny_checkpoint_copy)


def test_wrong_shape_is_named(tiny_checkpoint_copy):
    def widen(state):
        rows, dim = state["text_linear.weight"].shape
        state["text_linear.weight"] = torch.zeros(rows + 1, dim)

    rewrite_state(tiny_checkpoint_copy / LM_FILE, widen)
    with pytest.raises(CheckpointError) as info:
        load_tiny_lm(tiny_checkpoint_copy)
    message = str(info.value)
    assert str(tiny_checkpoint_copy / LM_FILE) in message
    rows = load_file(str(tiny_checkpoint_copy / LM_FILE))["text_linear.weight"].shape[0]
    assert f"text_linear.weight (file [{rows}, 32], expected [{rows - 1}, 32])" in message


def test_unexpected_tensor_is_named(tiny_checkpoint_copy):
    rewrite_state(
        tiny_checkpoint_copy / LM_FILE, lambda state: state.update({"extra_head.weight": torch.zeros(2)})
    )
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unexpected tensors: extra_head\.weight$"):
        load_tiny_lm(tiny_checkpoint_copy)


def test_missing_tokenizer_file(tiny_checkpoint_copy):
    (tiny_checkpoint_copy / "tokenizer.model").unlink()
    with pytest.raises(
        CheckpointError, match=r"checkpoint file missing: .*tokenizer\.model \(named in .*config\.json\)"
    ):
        resolve_checkpoint(str(tiny_checkpoint_copy))


def test_tokenizer_that_is_not_sentencepiece(tiny_checkpoint_copy):
    (tiny_checkpoint_copy / "tokenizer.model").write_bytes(b"this is not a sentencepiece model")
    files = resolve_checkpoint(str(tiny_checkpoint_copy))
    with pytest.raises(CheckpointError, match=r"tokenizer\.model is not a SentencePiece model"):
        load_tokenizer(files)


def test_tokenizer_larger_than_text_card(tiny_checkpoint_copy):
    edit_config(tiny_checkpoint_copy, text_card=100)
    with pytest.raises(
        CheckpointError, match=r"tokenizer\.model has \d+ pieces but the LM's text_card is 100"
    ):
        load_tokenizer(resolve_checkpoint(str(tiny_checkpoint_copy)))


def test_corrupt_mimi_file(tiny_checkpoint_copy):
    path = tiny_checkpoint_copy / "mimi.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{path} is not a valid weights file"):
        load_mimi(resolve_checkpoint(str(tiny_checkpoint_copy)), CPU)


def test_mimi_file_missing_a_tensor(tiny_checkpoint_copy):
    path = tiny_checkpoint_copy / "mimi.safetensors"
    missing = "quantizer.rvq_first.input_proj.weight"
    rewrite_state(path, lambda state: state.pop(missing))
    with pytest.raises(CheckpointError, match=f"{path} does not match the Mimi config") as info:
        load_mimi(resolve_checkpoint(str(tiny_checkpoint_copy)), CPU)
    assert missing in str(info.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{not json", "is not a readable JSON config"), ("[1, 2]", "must hold one JSON object")],
)
def test_invalid_config(tiny_checkpoint_copy, text, problem):
    (tiny_checkpoint_copy / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=rf"config\.json {problem}"):
        resolve_checkpoint(str(tiny_checkpoint_copy))


def test_config_missing_an_lm_key(tiny_checkpoint_copy):
    config = json.loads((tiny_checkpoint_copy / "config.json").read_text())
    del config["delays"]
    (tiny_checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: the LM config lacks 'delays'"):
        resolve_checkpoint(str(tiny_checkpoint_copy))


def test_cfg_coef_in_lm_gen_config_is_rejected(tiny_checkpoint_copy):
    edit_config(tiny_checkpoint_copy, lm_gen_config={"temp": 0.5, "cfg_coef": 2.0})
    with pytest.raises(CheckpointError, match=r"config\.json: lm_gen_config must not contain 'cfg_coef'"):
        resolve_checkpoint(str(tiny_checkpoint_copy))


def test_lm_gen_config_is_passed_on(tmp_path):
    folder = make_tiny_checkpoint(tmp_path / "gen", lm_gen_config={"temp": 0.5, "top_k": 10})
    assert resolve_checkpoint(str(folder)).lm_gen_config == {"temp": 0.5, "top_k": 10}


@pytest.mark.parametrize("source", ["no/such/folder", "./nothing-here", "owner/", "a b"])
def test_source_that_is_neither_folder_nor_repo(tmp_path, monkeypatch, fake_hub, source):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="neither a folder nor a Hugging Face repo id"):
        resolve_checkpoint(source)
    assert fake_hub.calls == []


def test_source_that_is_a_file(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="is a file; give the checkpoint folder"):
        resolve_checkpoint(str(tiny_checkpoint / "config.json"))


# --- 7. Moshi 7B on the meta device --------------------------------------------------------------


def test_moshi_7b_on_meta_matches_the_spec():
    model = build_lm(moshi_7b_kwargs(), "meta", torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 7_818_805_248
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert shapes["oracle_emb.weight"] == [32001, 4096]
    assert shapes["text_emb.weight"] == [32001, 4096]
    assert shapes["text_linear.weight"] == [32000, 4096]
    assert shapes["transformer.layers.0.self_attn.in_projs.0.weight"] == [12288, 4096]
    assert shapes["transformer.layers.0.gating.linear_in.weight"] == [22528, 4096]
    assert shapes["transformer.layers.0.gating.linear_out.weight"] == [4096, 11264]
    assert shapes["depformer_in.0.weight"] == [1024, 4096]
    assert shapes["linears.0.weight"] == [2048, 1024]
    assert shapes["emb.15.weight"] == [2049, 4096]
    assert "depformer.layers.0.self_attn.in_projs.7.weight" in shapes


def test_moshi_7b_memory_estimate():
    bf16 = estimate_memory(moshi_7b_kwargs(), torch.bfloat16)
    assert bf16.parameters == 7_818_805_248
    assert 15e9 <= bf16.weights_bytes <= 16.5e9
    assert bf16.total_bytes > bf16.weights_bytes
    int8 = estimate_memory(moshi_7b_kwargs(), torch.bfloat16, int8=True)
    assert 9e9 <= int8.total_bytes <= 12e9
    assert int8.weights_bytes < bf16.weights_bytes


# --- 8. older fused attention key names ----------------------------------------------------------


@pytest.mark.parametrize("in_name", ["in_proj_weight", "in_proj.weight"])
def test_fused_attention_names_load(tiny_checkpoint, tiny_checkpoint_copy, in_name):
    """moshi's load hook splits `in_proj_weight`/`out_proj.weight` along dim 0 into per-step slices."""
    fused_from: dict[str, int] = {}

    def fuse(state):
        prefixes = [
            k.removesuffix("in_projs.0.weight")
            for k in list(state)
            if k.endswith("self_attn.in_projs.0.weight")
        ]
        for prefix in prefixes:
            for split, fused in (("in_projs", in_name), ("out_projs", "out_proj.weight")):
                keys = sorted(
                    (k for k in state if k.startswith(f"{prefix}{split}.")),
                    key=lambda k: int(k.split(".")[-2]),
                )
                state[prefix + fused] = torch.cat([state.pop(key) for key in keys])
                fused_from[prefix + fused] = len(keys)

    fused_state = rewrite_state(tiny_checkpoint_copy / LM_FILE, fuse)
    assert not any("_projs." in key for key in fused_state)
    assert {1, 2} <= set(fused_from.values())  # temporal layers: a rename; depformer: two steps

    model = load_tiny_lm(tiny_checkpoint_copy)
    assert_state_equal(model, load_file(str(tiny_checkpoint / LM_FILE)))
