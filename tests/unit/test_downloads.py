"""Model downloads against a local HTTP server posing as the Hugging Face hub (the endpoint
HF_ENDPOINT would name): planning, verified atomic landing, resume after an interrupted transfer,
rejection of a corrupted file, cancellation, and no network."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from fixtures.disk import fill, small_disk

from kame_desktop.errors import DownloadCancelled, DownloadError, NotEnoughSpace
from kame_desktop.models import downloads
from kame_desktop.models.catalog import load_catalog
from kame_desktop.models.downloads import download, plan_download


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def hub(fake_hub):  # tests/conftest.py
    return fake_hub


def _plan(hub, tmp_path: Path, files=None):
    return plan_download(hub.repo, files=files, endpoint=hub.url, models_dir=tmp_path / "models")


def test_plan_lists_checkpoint_files_sizes_hashes_licence_and_free_disk(hub, tmp_path):
    plan = _plan(hub, tmp_path)
    assert [f.path for f in plan.files] == ["model.safetensors", "mimi.safetensors", "tok.model", "config.json"]
    by_name = {f.path: f for f in plan.files}
    assert by_name["model.safetensors"].size == 1_500_000
    assert by_name["model.safetensors"].sha256 == hashlib.sha256(hub.weights).hexdigest()
    assert by_name["config.json"].sha256 is None
    assert by_name["config.json"].git_sha1 == _git_sha1(hub.files["config.json"])
    assert plan.total_bytes == sum(len(hub.files[n]) for n in by_name)
    assert plan.license == "mit" and plan.gated is False
    assert plan.revision == hub.commit and plan.checkpoint
    assert plan.dest_dir == tmp_path / "models" / "acme" / "kame-test"
    assert plan.free_bytes > 0 and plan.enough_space
    assert plan.needed_bytes() == plan.total_bytes


def test_plan_of_named_files_and_missing_file(hub, tmp_path):
    plan = _plan(hub, tmp_path, files=["spare.bin"])
    assert [f.path for f in plan.files] == ["spare.bin"] and not plan.checkpoint
    with pytest.raises(DownloadError, match="nope.gguf not found"):
        _plan(hub, tmp_path, files=["nope.gguf"])


def test_full_download_verifies_and_lands_as_a_checkpoint_folder(hub, tmp_path):
    plan = _plan(hub, tmp_path)
    seen: list[tuple[int, int]] = []
    folder = download(plan, progress=lambda done, total: seen.append((done, total)))
    assert folder == plan.dest_dir
    for name in ("config.json", "model.safetensors", "mimi.safetensors", "tok.model"):
        assert (folder / name).read_bytes() == hub.files[name]
    assert not list(folder.glob("*.part"))
    assert seen[-1] == (plan.total_bytes, plan.total_bytes)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # a second call finds everything in place and fetches nothing
    hub.ranges.clear()
    assert download(plan) == folder and hub.ranges == {}
    # the checkpoint loader takes the folder as a local checkpoint
    pytest.importorskip("moshi")
    from kame_desktop.frontend.kame.checkpoint import resolve_checkpoint

    files = resolve_checkpoint(str(folder))
    assert files.lm_weights == folder / "model.safetensors" and files.tokenizer == folder / "tok.model"


def test_single_file_download_returns_the_file(hub, tmp_path):
    plan = _plan(hub, tmp_path, files=["spare.bin"])
    assert download(plan, tmp_path / "elsewhere") == tmp_path / "elsewhere" / "spare.bin"


def test_interrupted_transfer_resumes_with_a_range_request(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "CHUNK", 1 << 16)
    plan = _plan(hub, tmp_path, files=["model.safetensors"])
    hub.drop_after["model.safetensors"] = 700_000
    with pytest.raises(DownloadError, match="resume"):
        download(plan)
    part = plan.dest_dir / "model.safetensors.part"
    n = part.stat().st_size
    assert 0 < n <= 700_000
    assert not (plan.dest_dir / "model.safetensors").exists()
    path = download(plan)
    assert hub.ranges["model.safetensors"] == [None, f"bytes={n}-"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(hub.weights).hexdigest()
    assert not part.exists()


def test_server_ignoring_range_restarts_the_file(hub, tmp_path):
    plan = _plan(hub, tmp_path, files=["model.safetensors"])
    hub.drop_after["model.safetensors"] = 400_000
    with pytest.raises(DownloadError):
        download(plan)
    hub.ignore_range = True
    assert download(plan).read_bytes() == hub.weights


def test_corrupted_file_is_rejected_and_deleted(hub, tmp_path):
    plan = _plan(hub, tmp_path)
    hub.corrupt.add("model.safetensors")
    with pytest.raises(DownloadError, match="corrupted.*downloaded again on retry"):
        download(plan)
    assert not (plan.dest_dir / "model.safetensors").exists()
    assert not (plan.dest_dir / "model.safetensors.part").exists()
    assert not (plan.dest_dir / "config.json").exists()  # no config: the folder is not a checkpoint yet
    hub.corrupt.clear()
    assert (download(plan) / "model.safetensors").read_bytes() == hub.weights


def test_corrupted_small_file_fails_its_git_hash(hub, tmp_path):
    plan = _plan(hub, tmp_path, files=["tok.model"])
    hub.corrupt.add("tok.model")
    with pytest.raises(DownloadError, match="corrupted"):
        download(plan)
    assert not (plan.dest_dir / "tok.model").exists()


def test_cancel_keeps_the_part_for_a_later_resume(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "CHUNK", 1 << 16)
    plan = _plan(hub, tmp_path, files=["model.safetensors"])
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 300_000:
            cancel.set()

    with pytest.raises(DownloadCancelled):
        download(plan, progress=progress, cancel=cancel)
    part = plan.dest_dir / "model.safetensors.part"
    n = part.stat().st_size
    assert 300_000 <= n < len(hub.weights)
    assert plan.bytes_on_disk() == n
    assert download(plan).read_bytes() == hub.weights
    assert hub.ranges["model.safetensors"][-1] == f"bytes={n}-"


def test_cancel_during_a_stall_reacts_at_once_and_says_cancelled(hub, tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(downloads, "CHUNK", 1 << 16)
    plan = _plan(hub, tmp_path, files=["model.safetensors"])
    hub.stall_after["model.safetensors"] = 300_000  # then silence, for hub.STALL_S (15 s)
    cancel, reached, outcome = threading.Event(), threading.Event(), []

    def progress(done: int, total: int) -> None:
        if done >= 4 * (1 << 16):  # the last whole chunk before the stall
            reached.set()

    def fetch() -> None:
        try:
            download(plan, progress=progress, cancel=cancel)
        except Exception as e:  # noqa: BLE001 (the test looks at it)
            outcome.append((e, time.monotonic()))

    worker = threading.Thread(target=fetch)
    worker.start()
    assert reached.wait(30)
    time.sleep(0.5)  # the read now waits on the stalled server
    cancelled_at = time.monotonic()
    cancel.set()
    worker.join(30)
    error, ended_at = outcome[0]
    assert isinstance(error, DownloadCancelled) and "cancelled" in str(error), error
    assert ended_at - cancelled_at < 3.0, "Cancel reacts within a second or so, not after the stall"
    part = plan.dest_dir / "model.safetensors.part"
    assert part.stat().st_size >= 4 * (1 << 16)  # kept for the next call to resume
    assert download(plan).read_bytes() == hub.weights


def test_a_disk_that_fills_mid_download_says_how_much_is_needed_and_a_rerun_resumes(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "CHUNK", 1 << 16)
    with small_disk(tmp_path / "models", size="2m") as disk:
        plan = plan_download(hub.repo, files=["model.safetensors"], endpoint=hub.url, models_dir=disk)
        assert plan.enough_space  # 1.5 MB on a 2 MB disk: it fits when planned

        def progress(done: int, total: int) -> None:
            if done >= 300_000 and not (disk / ".filler").exists():
                fill(disk)  # another program takes the rest of the disk

        with pytest.raises(NotEnoughSpace) as failed:
            download(plan, progress=progress)
        part = plan.dest_dir / "model.safetensors.part"
        kept = part.stat().st_size
        message = str(failed.value)
        assert "disk is full" in message and "resumes" in message, message
        assert f"{downloads._fmt(len(hub.weights) - kept)} more are needed" in message, message
        (disk / ".filler").unlink()
        assert download(plan).read_bytes() == hub.weights
        assert hub.ranges["model.safetensors"][-1] == f"bytes={kept}-"


def test_a_short_body_shows_the_bytes_that_rounding_hides(hub, tmp_path):
    plan = _plan(hub, tmp_path, files=["model.safetensors"])
    hub.short_by["model.safetensors"] = 10
    with pytest.raises(DownloadError, match=r"stopped after 1,499,990 of 1,500,000 bytes; start it again to resume"):
        download(plan)
    assert download(plan).read_bytes() == hub.weights


def test_not_enough_disk_space(hub, tmp_path, monkeypatch):
    plan = _plan(hub, tmp_path)
    monkeypatch.setattr(downloads, "free_space", lambda path: 1000)
    with pytest.raises(NotEnoughSpace, match="not enough disk space"):
        download(plan)


def test_server_down_says_no_network_and_offers_lite(hub, tmp_path):
    plan = _plan(hub, tmp_path)
    hub.stop()
    with pytest.raises(DownloadError, match="no network.*lite"):
        download(plan)
    with pytest.raises(DownloadError, match="no network.*lite"):
        _plan(hub, tmp_path)


def test_offline_mode_is_respected(tmp_path):
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE is not set in this run")
    with pytest.raises(DownloadError, match="offline.*lite"):
        plan_download("acme/any", endpoint="http://127.0.0.1:9", models_dir=tmp_path)


def test_hf_endpoint_env_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1234/")
    assert downloads.resolve_endpoint() == "http://127.0.0.1:1234"
    assert downloads.resolve_endpoint("http://x/") == "http://x"


def test_models_dir_and_unsafe_names(tmp_path, monkeypatch):
    monkeypatch.setenv("KAME_MODELS_DIR", str(tmp_path))
    assert downloads.model_dir("SakanaAI/kame") == tmp_path / "SakanaAI" / "kame"
    for bad in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(DownloadError, match="unsafe"):
            downloads.model_dir(bad)


def test_catalog_ships_kame_and_gguf_models():
    entries = load_catalog()
    kame = next(e for e in entries if e.kind == "kame")
    assert kame.repo == "SakanaAI/kame" and kame.files == () and kame.approx_bytes > 10e9
    gguf = [e for e in entries if e.kind == "gguf"]
    assert len(gguf) >= 3
    for e in gguf:
        assert len(e.files) == 1 and e.files[0].endswith(".gguf") and e.license and 0.5e9 < e.approx_bytes < 5e9
