"""KAME checkpoints: resolving files (local folder or Hugging Face repo, spec §1.5) and loading
them strictly into KameLMModel, Mimi and the SentencePiece tokenizer.

A checkpoint is a folder or a hub repo with a flat `config.json`: file-name keys
(`moshi_name`, `mimi_name`, `tokenizer_name`, `mimi_config_name`, `lora_name`), `lm_gen_config`
and a few other known keys; every other key is an LMModel keyword argument. A plain name is a
file of the folder (or of the repo), `hf://owner/repo/path` a file of another repo, `file://` a
local path. Every problem becomes a CheckpointError that names the file and what to do.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kame_desktop.choices import CHECKPOINT_NAMES
from kame_desktop.errors import CheckpointError, DeviceError

log = logging.getLogger(__name__)

DEFAULT_NAMES = {key: name for key, name in CHECKPOINT_NAMES.items() if name is not None}  # the required files
_NON_LM_KEYS = ("mimi_config_name", "lora_name", "model_type", "lm_gen_config", "tts_config", "stt_config", "model_id")
_SAFETENSORS_SUFFIXES = (".safetensors", ".sft", ".sfts")


def moshi_7b_kwargs() -> dict[str, Any]:
    """The LM keyword arguments of Moshi 7B (spec §1.1), used when a checkpoint has no config."""
    from moshi.models.loaders import _lm_kwargs

    return dict(_lm_kwargs)


@dataclass(frozen=True)
class CheckpointFiles:
    source: str  # the folder or repo id the user gave
    lm_weights: Path
    mimi_weights: Path
    tokenizer: Path
    lm_kwargs: dict[str, Any]
    lm_gen_config: dict[str, Any] = field(default_factory=dict)
    mimi_config: dict[str, Any] | None = None
    lora_weights: Path | None = None
    model_type: str = "moshi"

    @property
    def num_codebooks(self) -> int:
        """Mimi codebooks the LM uses: max(dep_q, n_q - dep_q)."""
        return max(self.lm_kwargs["dep_q"], self.lm_kwargs["n_q"] - self.lm_kwargs["dep_q"])


class MissingHubFile(CheckpointError):
    """The hub repo exists but has no such file (a checkpoint without config.json is allowed)."""


def _hub_download(repo: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        # huggingface_hub draws its own progress bar while downloading.
        return Path(hf_hub_download(repo, filename, revision=revision))
    except RepositoryNotFoundError as e:
        raise CheckpointError(
            f"Hugging Face repo '{repo}' not found (or it is private: log in with `huggingface-cli login`)"
        ) from e
    except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: catch it first
        raise CheckpointError(
            f"cannot download '{filename}' from '{repo}': no network and no cached copy; "
            "connect to the internet or give a local checkpoint folder"
        ) from e
    except EntryNotFoundError as e:
        raise MissingHubFile(f"'{filename}' is not in Hugging Face repo '{repo}'") from e
    except OSError as e:
        raise CheckpointError(f"cannot download '{filename}' from '{repo}': {e}") from e


def _resolve_name(name: str, folder: Path | None, repo: str | None, revision: str | None) -> Path:
    if name.startswith("hf://"):
        parts = name.removeprefix("hf://").split("/")
        if len(parts) < 3:
            raise CheckpointError(f"'{name}' is not of the form hf://owner/repo/path")
        return _hub_download("/".join(parts[:2]), "/".join(parts[2:]), revision)
    if name.startswith("file://"):
        return Path(name.removeprefix("file://"))
    if folder is not None:
        return folder / name
    assert repo is not None
    return _hub_download(repo, name, revision)


def _override(path: str | Path | None, revision: str | None) -> Path | None:
    """A user override is a local path unless it carries hf://."""
    if path is None:
        return None
    return _resolve_name(str(path), Path("."), None, revision)


def _looks_like_repo_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def resolve_checkpoint(
    source: str,
    *,
    config_path: str | Path | None = None,
    lm_weights: str | Path | None = None,
    mimi_weights: str | Path | None = None,
    tokenizer: str | Path | None = None,
    revision: str | None = None,
) -> CheckpointFiles:
    """Find every file of a checkpoint: a local folder, `file://folder`, or a hub repo id."""
    local = Path(source.removeprefix("file://")).expanduser()
    folder: Path | None = None
    repo: str | None = None
    if local.is_dir():
        folder = local
    elif local.exists():
        raise CheckpointError(f"{source} is a file; give the checkpoint folder that holds config.json")
    elif _looks_like_repo_id(source) and not source.startswith("file://"):
        repo = source
    else:
        raise CheckpointError(f"checkpoint not found: {source} is neither a folder nor a Hugging Face repo id")

    if config_path is not None:
        config_file: Path | None = Path(config_path)
    elif folder is not None:
        config_file = folder / "config.json"
        if not config_file.exists():
            config_file = None
    else:
        try:
            config_file = _hub_download(repo, "config.json", revision)  # type: ignore[arg-type]
        except MissingHubFile:
            config_file = None
    if config_file is None:
        warnings.warn(f"{source} has no config.json; assuming Moshi 7B with the default file names", stacklevel=2)
        raw: dict[str, Any] = {}
    else:
        try:
            raw = json.loads(config_file.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{config_file} is not a readable JSON config: {e}") from e
        if not isinstance(raw, dict):
            raise CheckpointError(f"{config_file} must hold one JSON object")
        if folder is not None and config_path is not None:
            folder = config_file.parent  # plain names are relative to the config's folder

    lm_kwargs = dict(raw)
    names = {key: lm_kwargs.pop(key, default) for key, default in DEFAULT_NAMES.items()}
    extra = {key: lm_kwargs.pop(key, None) for key in _NON_LM_KEYS}
    lm_gen_config = extra["lm_gen_config"] or {}
    if "cfg_coef" in lm_gen_config:
        raise CheckpointError(
            f"{config_file}: lm_gen_config must not contain 'cfg_coef' (classifier-free guidance is "
            "a separate setting); remove that key"
        )
    if not lm_kwargs:
        lm_kwargs = moshi_7b_kwargs()
    lm_kwargs = _normalise_lm_kwargs(lm_kwargs, config_file)

    def resolve(name: str | None, override: str | Path | None) -> Path | None:
        path = _override(override, revision)
        if path is None and name is not None:
            path = _resolve_name(name, folder, repo, revision)
        if path is not None and not path.is_file():
            raise CheckpointError(f"checkpoint file missing: {path} (named in {config_file or source})")
        return path

    mimi_config = None
    mimi_config_file = resolve(extra["mimi_config_name"], None)
    if mimi_config_file is not None:
        try:
            mimi_config = json.loads(mimi_config_file.read_text())
        except ValueError as e:
            raise CheckpointError(f"{mimi_config_file} is not valid JSON: {e}") from e
    return CheckpointFiles(
        source=source,
        lm_weights=resolve(names["moshi_name"], lm_weights),  # type: ignore[arg-type]
        mimi_weights=resolve(names["mimi_name"], mimi_weights),  # type: ignore[arg-type]
        tokenizer=resolve(names["tokenizer_name"], tokenizer),  # type: ignore[arg-type]
        lm_kwargs=lm_kwargs,
        lm_gen_config=dict(lm_gen_config),
        mimi_config=mimi_config,
        lora_weights=resolve(extra["lora_name"], None),
        model_type=extra["model_type"] or "moshi",
    )


def _normalise_lm_kwargs(kwargs: dict[str, Any], config_file: Path | None) -> dict[str, Any]:
    kwargs = dict(kwargs)
    if "demux_second_stream" in kwargs:
        kwargs["demux_second_text_stream"] = kwargs.pop("demux_second_stream")
    kwargs.pop("depformer_causal", None)
    if kwargs.get("conditioners") or kwargs.get("fuser"):
        raise CheckpointError(f"{config_file}: conditioned models (conditioners/fuser) are not KAME checkpoints")
    kwargs.pop("conditioners", None)
    kwargs.pop("fuser", None)
    for key in ("dim", "text_card", "n_q", "dep_q", "card", "delays"):
        if key not in kwargs:
            raise CheckpointError(f"{config_file}: the LM config lacks '{key}'")
    return kwargs


# --- loading -------------------------------------------------------------------------------------


def read_state_dict(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file (or a torch pickle with the weights under fsdp_best_state.model)."""
    try:
        if path.suffix in _SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            return load_file(str(path), device=str(device))
        package = torch.load(path, map_location=device, weights_only=True)
        return package["fsdp_best_state"]["model"]
    except Exception as e:  # safetensors raises its own error types, torch many others
        raise CheckpointError(
            f"{path} is not a valid weights file ({type(e).__name__}: {e}); re-download it or pick another checkpoint"
        ) from e


def build_lm(lm_kwargs: dict[str, Any], device: torch.device | str, dtype: torch.dtype, quantize: bool = False):
    from kame_desktop.frontend.kame.model import KameLMModel

    kwargs = {k: v for k, v in lm_kwargs.items() if k not in ("lora", "lora_rank", "lora_scaling")}
    try:
        return KameLMModel(device=device, dtype=dtype, quantize=quantize, **kwargs)
    except (TypeError, AssertionError, ValueError) as e:
        raise CheckpointError(f"the LM config does not describe a valid model: {e}") from e


def upgrade_legacy_state(state: dict[str, torch.Tensor], path: Path) -> bool:
    """A plain Moshi checkpoint has no oracle table: start it as a copy of the text table."""
    if any(key.startswith("oracle_emb.") for key in state):
        return False
    for key in [k for k in state if k.startswith("text_emb.")]:
        state["oracle_emb." + key.removeprefix("text_emb.")] = state[key].clone()
    warnings.warn(
        f"{path} has no oracle embedding (a plain Moshi checkpoint): initialised it as a copy of the "
        "text embedding; the model will not use LLM hints well until fine-tuned",
        stacklevel=2,
    )
    return True


def _format_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _cast_(state: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """Floating tensors to the runtime dtype, except the conditioners' (kept in fp32)."""
    for key, value in state.items():
        if value.dtype.is_floating_point:
            keep_fp32 = key.startswith(("condition_provider.", "fuser."))
            state[key] = value.float() if keep_fp32 else value.to(dtype)


def _assign(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, prefix: str = "") -> tuple[list, list]:
    """Load `state` into `module` (built on meta) by assignment; returns (missing, unexpected)
    keys, prefixed. Tensors of the wrong shape are an error naming them."""
    expected = module.state_dict()
    wrong = [
        f"{prefix}{key} (file {list(value.shape)}, expected {list(expected[key].shape)})"
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if wrong:
        raise CheckpointError(f"{path}: tensors with the wrong shape for this config: {_format_keys(wrong)}")
    try:
        # strict=False so that we can name the keys ourselves; moshi's load hooks turn the older
        # fused attention names into per-step slices on the way in.
        result = module.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match its config: {e}") from e
    return [prefix + k for k in result.missing_keys], [prefix + k for k in result.unexpected_keys]


def _check_keys(path: Path, missing: list[str], unexpected: list[str]) -> None:
    if missing:
        raise CheckpointError(f"{path}: missing tensors: {_format_keys(missing)}")
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensors: {_format_keys(unexpected)}")


def load_lm(files: CheckpointFiles, device: torch.device, dtype: torch.dtype, int8: bool = False):
    """Build KameLMModel on the meta device and load the weights strictly (spec §1.5)."""
    if int8 and files.lm_weights.suffix in _SAFETENSORS_SUFFIXES and not files.lm_kwargs.get("lora"):
        return _load_lm_int8_by_layer(files, device, dtype)
    load_device = torch.device("cpu") if int8 else device
    state = read_state_dict(files.lm_weights, load_device)
    upgrade_legacy_state(state, files.lm_weights)
    _cast_(state, dtype)
    model = build_lm(files.lm_kwargs, "meta", dtype)
    _check_keys(files.lm_weights, *_assign(model, state, files.lm_weights))
    del state

    if files.lm_kwargs.get("lora"):
        from moshi.models.loaders import get_lora_moshi

        model = get_lora_moshi(
            model,
            files.lora_weights,
            files.lm_kwargs.get("lora_rank", 128),
            files.lm_kwargs.get("lora_scaling", 2.0),
            dtype=dtype,
            device=load_device,
            fuse_lora=True,
        )
    if int8:
        quantize_int8_(model, device)
    return model.eval()


_LAYER_KEY = re.compile(r"transformer\.layers\.(\d+)\.")


def _load_lm_int8_by_layer(files: CheckpointFiles, device: torch.device, dtype: torch.dtype):
    """int8 without the whole bf16 model in host RAM (~16 GB for 7B, on exactly the machines
    that need int8): everything but the temporal layers first (~2.5 GB), then one layer at a
    time read from the file, moved to the GPU and quantized there."""
    from moshi.utils import quantize
    from safetensors import safe_open

    path = files.lm_weights
    model = build_lm(files.lm_kwargs, "meta", dtype)
    layers = model.transformer.layers
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            by_layer: dict[int, list[str]] = {}
            rest: list[str] = []
            for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                match = _LAYER_KEY.match(key)
                if match:
                    by_layer.setdefault(int(match.group(1)), []).append(key)
                else:
                    rest.append(key)
            state = {key: f.get_tensor(key) for key in rest}
            upgrade_legacy_state(state, path)
            _cast_(state, dtype)
            missing, unexpected = _assign(model, state, path)
            missing = [k for k in missing if not _LAYER_KEY.match(k)]  # loaded below
            del state
            for i, layer in enumerate(layers):
                prefix = f"transformer.layers.{i}."
                part = {key.removeprefix(prefix): f.get_tensor(key) for key in by_layer.pop(i, [])}
                _cast_(part, dtype)
                layer_missing, layer_unexpected = _assign(layer, part, path, prefix)
                missing += layer_missing
                unexpected += layer_unexpected
                del part
                if not layer_missing:
                    layer.to(device)
                    quantize.replace_linear_with_qlinear(layer)
            unexpected += [key for keys in by_layer.values() for key in keys]  # layers the config lacks
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(
            f"{path} is not a valid weights file ({type(e).__name__}: {e}); re-download it or pick another checkpoint"
        ) from e
    _check_keys(path, missing, unexpected)
    return model.to(device).eval()


def quantize_int8_(model, device: torch.device) -> None:
    """moshi's int8 path (bitsandbytes): quantize the transformer's linears layer by layer while
    moving them to the GPU, so the bf16 model never has to fit on the GPU whole."""
    from moshi.utils import quantize

    for layer in model.transformer.layers:
        layer.to(device)
        quantize.replace_linear_with_qlinear(layer)
    model.to(device)


def load_tokenizer(files: CheckpointFiles):
    import sentencepiece

    try:
        tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(files.tokenizer))
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"{files.tokenizer} is not a SentencePiece model: {e}") from e
    if tokenizer.vocab_size() > files.lm_kwargs["text_card"]:
        raise CheckpointError(
            f"{files.tokenizer} has {tokenizer.vocab_size()} pieces but the LM's text_card is "
            f"{files.lm_kwargs['text_card']}: tokenizer and weights do not belong together"
        )
    return tokenizer


def load_mimi(files: CheckpointFiles, device: torch.device):
    from moshi.models.loaders import get_mimi

    try:
        mimi = get_mimi(None, files.mimi_config, device=device, num_codebooks=files.num_codebooks)
    except (KeyError, TypeError, AssertionError) as e:
        raise CheckpointError(f"the Mimi config of {files.source} is invalid: {e}") from e
    try:
        mimi.load_state_dict(read_state_dict(files.mimi_weights, device))
    except RuntimeError as e:
        raise CheckpointError(f"{files.mimi_weights} does not match the Mimi config: {e}") from e
    return mimi.eval()


# --- memory --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    weights_bytes: int
    cache_bytes: int  # the temporal transformer's KV cache over its context
    overhead_bytes: int = 500_000_000  # Mimi, activations, the CUDA context

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.cache_bytes + self.overhead_bytes

    def describe(self) -> str:
        gb = 1e9
        return (
            f"~{self.total_bytes / gb:.1f} GB (weights {self.weights_bytes / gb:.1f} GB, "
            f"KV cache {self.cache_bytes / gb:.1f} GB, other {self.overhead_bytes / gb:.1f} GB)"
        )


def estimate_memory(lm_kwargs: dict[str, Any], dtype: torch.dtype, int8: bool = False) -> MemoryEstimate:
    """Estimate device memory before loading: the model is built on the meta device to count
    parameters; with int8, the temporal transformer's linear weights (what quantize_int8_
    converts) take one byte each plus a fp32 scale per row."""
    model = build_lm(lm_kwargs, "meta", dtype)
    parameters = sum(p.numel() for p in model.parameters())
    itemsize = torch.empty((), dtype=dtype).element_size()
    weights = parameters * itemsize
    if int8:
        linears = [m for m in model.transformer.modules() if isinstance(m, torch.nn.Linear)]
        linear_params = sum(m.weight.numel() for m in linears)
        scales = sum(m.weight.shape[0] for m in linears) * 4
        weights = (parameters - linear_params) * itemsize + linear_params + scales
    context = lm_kwargs.get("context") or 3000
    cache = 2 * context * lm_kwargs.get("num_layers", 1) * lm_kwargs["dim"] * itemsize
    return MemoryEstimate(parameters, weights, cache)


def check_fits(estimate: MemoryEstimate, device: torch.device, int8: bool) -> None:
    from kame_desktop.models.compute import free_memory_bytes

    free = free_memory_bytes(device)
    if free is not None and free < estimate.total_bytes:
        hint = "close other GPU programs or use the lite front-end" if int8 else "try --int8, or the lite front-end"
        raise DeviceError(
            f"the model needs {estimate.describe()} but only {free / 1e9:.1f} GB is free on {device}; {hint}"
        )
