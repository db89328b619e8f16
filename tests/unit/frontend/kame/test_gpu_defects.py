"""The GPU-path defects of issue 17, each pinned on a CPU: a fake CUDA device (monkeypatched
availability and free memory), a stubbed CUDAGraphed, a faked macOS. What only a real device
can show is in scripts/gpu-check."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from kame_desktop.errors import DeviceError, KameError
from kame_desktop.events import FRAME_SIZE
from kame_desktop.frontend import select
from kame_desktop.frontend.base import FrameResult
from kame_desktop.frontend.kame import checkpoint as ckpt
from kame_desktop.frontend.kame.engine import KameFrontEnd
from kame_desktop.models import compute

GB = 1_000_000_000
ROOT = Path(__file__).resolve().parents[4]


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(FRAME_SIZE).astype(np.float32) * 0.1 for _ in range(n)]


# --- 1. auto sizes int8 only where it can load, and the load gets the decision -----------------


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA GPU with `free` bytes free and the KAME weights cached; `int8` says whether
    bitsandbytes is there."""

    class Gpu:
        free = 24 * GB
        int8 = True

    gpu = Gpu()
    monkeypatch.setattr(select, "gpu_hint", lambda: "an NVIDIA GPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(compute, "free_memory_bytes", lambda device: gpu.free)
    monkeypatch.setattr(
        compute,
        "int8_unavailable_reason",
        lambda device: None if gpu.int8 else "int8 needs the bitsandbytes package",
        raising=False,
    )
    monkeypatch.setattr(select, "kame_weights_cached", lambda repo: True)
    return gpu


def test_auto_on_a_big_gpu_loads_bf16_without_int8(fake_cuda):
    choice = select.choose_frontend("auto")
    assert (choice.kind, choice.device, choice.dtype, choice.int8) == ("kame", "cuda", "bf16", False)


def test_auto_on_a_16_gb_gpu_loads_int8_when_bitsandbytes_is_there(fake_cuda):
    fake_cuda.free = 13 * GB  # ~17.7 GB needed in bf16, ~11.1 GB in int8
    choice = select.choose_frontend("auto")
    assert (choice.kind, choice.int8) == ("kame", True)
    assert "int8" in choice.reason


def test_auto_on_a_16_gb_gpu_without_bitsandbytes_is_lite_and_says_why(fake_cuda):
    fake_cuda.free, fake_cuda.int8 = 13 * GB, False
    choice = select.choose_frontend("auto")
    assert choice.kind == "lite"
    assert "bitsandbytes" in choice.reason and "13.0 GB free" in choice.reason


def test_auto_with_too_little_memory_even_for_int8_is_lite(fake_cuda):
    fake_cuda.free = 6 * GB
    choice = select.choose_frontend("auto")
    assert choice.kind == "lite" and "6.0 GB free" in choice.reason


def test_auto_with_int8_asked_but_not_loadable_is_lite(fake_cuda):
    fake_cuda.int8 = False
    choice = select.choose_frontend("auto", int8=True)
    assert choice.kind == "lite" and "bitsandbytes" in choice.reason


def test_explicit_kame_carries_the_users_load_settings(fake_cuda):
    choice = select.choose_frontend("kame", device="cuda", dtype="fp16", int8=True)
    assert (choice.device, choice.dtype, choice.int8) == ("cuda", "fp16", True)


def test_the_app_loads_what_auto_chose(fake_cuda, monkeypatch):
    """The assembly path passes the choice's int8 into the load (it used the setting)."""
    from kame_desktop import assembly
    from kame_desktop.config import Settings

    fake_cuda.free = 13 * GB
    loads = []
    monkeypatch.setattr(KameFrontEnd, "load", classmethod(lambda cls, source, **kw: loads.append((source, kw))))
    threads = torch.get_num_threads()
    try:
        assembly.build_frontend(Settings())
    finally:
        torch.set_num_threads(threads)
    [(source, kwargs)] = loads
    assert source == select.DEFAULT_KAME_REPO
    assert (kwargs["device"], kwargs["dtype"], kwargs["int8"]) == ("cuda", "bf16", True)


def test_auto_with_a_gpu_but_without_moshi_is_lite(fake_cuda, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "moshi" else find_spec(name, *a))
    choice = select.choose_frontend("auto")
    assert choice.kind == "lite" and "moshi" in choice.reason


def test_auto_without_torch_is_lite_and_imports_no_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # an import of torch raises ImportError
        "from kame_desktop.frontend import select\n"
        "select.gpu_hint = lambda: 'an NVIDIA GPU'\n"  # a GPU, but no torch to drive it
        "c = select.choose_frontend('auto'); print(c.kind, '|', c.reason)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    kind, reason = out.stdout.strip().split(" | ")
    assert kind == "lite" and "torch is not installed" in reason and "kame-desktop[kame]" in reason


# --- 2. a restart releases the old model before the next one loads ------------------------------


def test_close_releases_the_lm_mimi_and_generator(tiny_checkpoint, monkeypatch):
    frontend = KameFrontEnd.load(str(tiny_checkpoint), device="cpu", temperature=0)
    frontend.step(frames(1)[0])
    refs = [weakref.ref(x) for x in (frontend.lm, frontend.mimi, frontend.lm_gen)]
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # as if it had run on CUDA
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append([r() is None for r in refs]))
    gc.disable()  # only close() may collect: the graph closures are cycles
    try:
        frontend.close()
        assert [r() is None for r in refs] == [True, True, True]
    finally:
        gc.enable()
    assert emptied == [[True, True, True]]  # the cache is emptied after the model is gone
    frontend.close()  # twice is harmless
    with pytest.raises(KameError, match="closed"):
        frontend.step(frames(1)[0])


class FakeFrontEnd:
    kind, model, device = "kame", "fake", "cuda"

    def __init__(self) -> None:
        self.closed = False

    def step(self, frame, signals=()):
        time.sleep(0.002)
        return FrameResult(np.zeros(FRAME_SIZE, np.float32))

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_a_restart_lets_go_of_the_old_front_end_before_loading_the_next():
    from kame_desktop.audio.sources import NullSink, NullSource
    from kame_desktop.config import Settings
    from kame_desktop.controller import Controller

    made: list[weakref.ref] = []
    seen_at_load: list[tuple[bool, bool]] = []
    ready = threading.Event()

    def factory(_settings):
        if made:
            gc.collect()
            old = made[-1]()
            seen_at_load.append((old is None, old is None or old.closed))
        frontend = FakeFrontEnd()
        made.append(weakref.ref(frontend))
        return frontend

    def notify(obj):
        if getattr(obj, "text", None) == "Ready":
            ready.set()

    c = Controller(
        Settings(),
        notify,
        frontend_factory=factory,
        audio_factory=lambda _s, _on_error, _on_recover: (NullSource(None), NullSink()),
        backend_factory=lambda _s, _post, _publish: None,
    )
    c.start()
    assert ready.wait(10)
    ready.clear()
    c.restart(Settings())
    assert ready.wait(10)
    c.stop()
    assert seen_at_load == [(True, True)]  # gone (closed, and no reference kept) before the load


# --- 3. torch.compile stays off on CPU and MPS ---------------------------------------------------


def test_no_torch_compile_during_warm_up_and_steps_on_cpu(tiny_checkpoint, monkeypatch):
    import moshi.modules.gating as gating
    import moshi.modules.transformer as transformer
    import moshi.utils.compile as moshi_compile

    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile was called")

    monkeypatch.setattr(torch, "compile", refuse)
    flags: list[bool] = []  # moshi's no_compile flag at each call of a lazily compiled kernel
    for module, name in ((transformer, "_rms_norm"), (gating, "gating_forward_kernel")):
        original = getattr(module, name)

        def spy(*args, _original=original, **kwargs):
            flags.append(moshi_compile._compile_disabled)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    frontend = KameFrontEnd.load(str(tiny_checkpoint), device="cpu", temperature=0)
    for frame in frames(3):
        frontend.step(frame)
    assert flags and all(flags), f"{flags.count(False)} of {len(flags)} kernel calls could compile"


# --- 4. two graphed models on two threads step one at a time ----------------------------------


class Overlaps:
    """moshi's process-global `_in_cuda_graph`, observed: who holds it, and each time another
    thread found it taken (the real one then runs eagerly or fails its assertion)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner: int | None = None
        self.count = 0


def stub_cuda_graphs(monkeypatch) -> Overlaps:
    import moshi.models.compression
    import moshi.models.lm
    import moshi.modules.streaming

    from kame_desktop.frontend.kame import model

    overlaps = Overlaps()

    class FakeGraphed:  # graphs on any device; a call holds the global flag for a while
        def __init__(self, func, warmup_steps: int = 1, disable: bool = False) -> None:
            self.func = func

        def reset(self, warmup_steps: int = 0) -> None:
            pass

        def __call__(self, *args):
            me = threading.get_ident()
            with overlaps.lock:
                if overlaps.owner == me:  # nested in this thread's graph: eager, as moshi does
                    nested = True
                else:
                    nested = False
                    if overlaps.owner is not None:
                        overlaps.count += 1
                    overlaps.owner = me
            try:
                if not nested:
                    time.sleep(0.001)  # a capture or replay takes time
                return self.func(*args)
            finally:
                if not nested:
                    with overlaps.lock:
                        if overlaps.owner == me:
                            overlaps.owner = None

    for module in (moshi.models.lm, moshi.models.compression, moshi.modules.streaming, model):
        monkeypatch.setattr(module, "CUDAGraphed", FakeGraphed)
    return overlaps


def tiny_kyutai_stt(tiny_checkpoint):
    """KyutaiStt around the tiny checkpoint's LM and Mimi on the CPU (the real one needs CUDA
    and a hub download); only what `_step` uses."""
    from moshi.models import LMGen

    from kame_desktop.backend.asr.kyutai import KyutaiStt

    files = ckpt.resolve_checkpoint(str(tiny_checkpoint))
    stt = KyutaiStt.__new__(KyutaiStt)
    stt._torch, stt._device, stt._pad_id = torch, "cpu", 3
    stt._mimi = ckpt.load_mimi(files, torch.device("cpu"))
    stt._lm_gen = LMGen(ckpt.load_lm(files, torch.device("cpu"), torch.float32), temp=0.0, temp_text=0.0)
    stt._tokenizer = ckpt.load_tokenizer(files)
    stt._mimi.streaming_forever(1)
    stt._lm_gen.streaming_forever(1)
    return stt


def test_kame_and_kyutai_stt_never_step_graphed_at_the_same_time(tiny_checkpoint, monkeypatch):
    overlaps = stub_cuda_graphs(monkeypatch)
    frontend = KameFrontEnd.load(str(tiny_checkpoint), device="cpu", temperature=0)
    stt = tiny_kyutai_stt(tiny_checkpoint)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def loop(step) -> None:
        try:
            start.wait()
            for frame in frames(15):
                step(frame)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(fn,)) for fn in (frontend.step, stt._step)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert overlaps.count == 0, f"{overlaps.count} graphed calls found another thread's graph running"


# --- 5. MPS: bf16 only where macOS has it; memory from Metal's recommendation -------------------


@pytest.mark.parametrize(("release", "expected"), [("13.6.1", torch.float16), ("14.2", torch.bfloat16), ("15.0", torch.bfloat16)])
def test_mps_default_dtype_follows_the_macos_version(monkeypatch, release, expected):
    import platform

    monkeypatch.setattr(platform, "mac_ver", lambda: (release, ("", "", ""), "arm64"))
    assert compute.parse_dtype(None, torch.device("mps")) == expected
    assert compute.parse_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert compute.parse_dtype(None, torch.device("cpu")) == torch.float32


def test_mps_bf16_on_an_old_macos_is_refused_with_a_way_out(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "mac_ver", lambda: ("13.5", ("", "", ""), "arm64"))
    with pytest.raises(DeviceError, match="fp16"):
        compute.parse_dtype("bf16", torch.device("mps"))


def test_mps_free_memory_is_metals_recommendation_minus_what_it_holds(monkeypatch):
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 21 * GB, raising=False)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 1 * GB, raising=False)
    assert compute.free_memory_bytes(torch.device("mps")) == 20 * GB


def test_auto_on_a_small_mac_is_lite(monkeypatch):
    import platform

    monkeypatch.setattr(select, "gpu_hint", lambda: "an Apple Silicon GPU (MPS)")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(compute, "mps_available", lambda: True)
    monkeypatch.setattr(platform, "mac_ver", lambda: ("14.5", ("", "", ""), "arm64"))
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 10 * GB, raising=False)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 0, raising=False)
    monkeypatch.setattr(select, "kame_weights_cached", lambda repo: True)
    choice = select.choose_frontend("auto")
    assert choice.kind == "lite" and "mps" in choice.reason and "10.0 GB free" in choice.reason


# --- 6. int8 loads and quantizes layer by layer ------------------------------------------------


def test_int8_load_reads_and_quantizes_one_layer_at_a_time(tiny_checkpoint, monkeypatch):
    import moshi.utils.quantize as quantize
    import safetensors.torch

    files = ckpt.resolve_checkpoint(str(tiny_checkpoint))
    reference = ckpt.load_lm(files, torch.device("cpu"), torch.float32)

    def whole_file(*args, **kwargs):
        raise AssertionError("the int8 load read the whole state dict into memory")

    monkeypatch.setattr(safetensors.torch, "load_file", whole_file)
    quantized: list[list[bool]] = []  # at each quantize call: which layers hold real weights

    def fake_quantize(layer):  # the real one needs CUDA (bitsandbytes)
        layers = model_layers[0]
        quantized.append([not any(p.is_meta for p in other.parameters()) for other in layers])

    model_layers: list = []
    original_build = ckpt.build_lm

    def build(*args, **kwargs):
        model = original_build(*args, **kwargs)
        model_layers.append(model.transformer.layers)
        return model

    monkeypatch.setattr(quantize, "replace_linear_with_qlinear", fake_quantize)
    monkeypatch.setattr(ckpt, "build_lm", build)
    lm = ckpt.load_lm(files, torch.device("cpu"), torch.float32, int8=True)
    n = len(lm.transformer.layers)
    assert quantized == [[j <= i for j in range(n)] for i in range(n)]
    expected = reference.state_dict()
    got = lm.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_int8_load_by_layer_still_names_missing_and_foreign_tensors(tiny_checkpoint_copy, monkeypatch):
    import moshi.utils.quantize as quantize
    from safetensors.torch import load_file, save_file

    from kame_desktop.errors import CheckpointError

    monkeypatch.setattr(quantize, "replace_linear_with_qlinear", lambda layer: None)
    path = tiny_checkpoint_copy / "model.safetensors"
    state = {k: v.clone() for k, v in load_file(path).items()}  # not mmapped: the file is rewritten
    del state["transformer.layers.1.gating.linear_out.weight"]
    state["transformer.layers.7.norm1.alpha"] = state["transformer.layers.0.norm1.alpha"].clone()
    save_file(state, path)
    files = ckpt.resolve_checkpoint(str(tiny_checkpoint_copy))
    with pytest.raises(CheckpointError, match=r"missing tensors: transformer\.layers\.1\.gating\.linear_out"):
        ckpt.load_lm(files, torch.device("cpu"), torch.float32, int8=True)
    del state["transformer.layers.7.norm1.alpha"]
    state["transformer.layers.1.gating.linear_out.weight"] = torch.zeros(3, 3)
    save_file(state, path)
    with pytest.raises(CheckpointError, match="wrong shape"):
        ckpt.load_lm(files, torch.device("cpu"), torch.float32, int8=True)


# --- 7. "weights cached" means every file the config names ------------------------------------


def fill_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """The hub cache layout that try_to_load_from_cache reads."""
    commit = "0" * 40
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for name, data in files.items():
        path = root / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_kame_weights_cached_needs_every_named_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = "acme/kame"
    config = {"moshi_name": "lm.safetensors", "mimi_name": "hf://kyutai/codec/mimi.safetensors"}
    fill_cache(tmp_path, repo, {"config.json": json.dumps(config).encode()})
    assert not select.kame_weights_cached(repo)  # only the config: choosing KAME would download 15 GB
    fill_cache(tmp_path, repo, {"lm.safetensors": b"x", "tokenizer_spm_32k_3.model": b"x"})
    assert not select.kame_weights_cached(repo)  # the Mimi of another repo is not here yet
    fill_cache(tmp_path, "kyutai/codec", {"mimi.safetensors": b"x"})
    assert select.kame_weights_cached(repo)
    assert not select.kame_weights_cached("acme/elsewhere")


def test_int8_load_by_layer_takes_the_older_fused_attention_names(tiny_checkpoint, tiny_checkpoint_copy, monkeypatch):
    """moshi's load hooks split `in_proj_weight` / `out_proj.weight` also when a layer is
    loaded on its own."""
    import moshi.utils.quantize as quantize
    from safetensors.torch import load_file, save_file

    monkeypatch.setattr(quantize, "replace_linear_with_qlinear", lambda layer: None)
    path = tiny_checkpoint_copy / "model.safetensors"
    state = {k: v.clone() for k, v in load_file(path).items()}
    for prefix in [k.removesuffix("in_projs.0.weight") for k in list(state) if k.endswith("self_attn.in_projs.0.weight")]:
        for split, fused in (("in_projs", "in_proj_weight"), ("out_projs", "out_proj.weight")):
            keys = sorted((k for k in state if k.startswith(f"{prefix}{split}.")), key=lambda k: int(k.split(".")[-2]))
            state[prefix + fused] = torch.cat([state.pop(key) for key in keys])
    save_file(state, path)
    lm = ckpt.load_lm(ckpt.resolve_checkpoint(str(tiny_checkpoint_copy)), torch.device("cpu"), torch.float32, int8=True)
    reference = ckpt.load_lm(ckpt.resolve_checkpoint(str(tiny_checkpoint)), torch.device("cpu"), torch.float32)
    expected, got = reference.state_dict(), lm.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
