"""Model downloads from the Hugging Face hub (or any server that speaks its API, `HF_ENDPOINT`).

GUI-agnostic: the Qt model manager and the CLI drive the same two calls.

    plan = plan_download("SakanaAI/kame")            # sizes, hashes, licence, free disk; no writes
    path = download(plan, progress=cb, cancel=event)  # cb(done_bytes, total_bytes), event: threading.Event

`plan_download` asks the hub (huggingface_hub's HfApi: model_info for the licence, gating and the
commit; paths-info for each file's size and hash). Without `files` the repo is a KAME checkpoint:
config.json is read first and the files it names (moshi_name, mimi_name, tokenizer_name,
mimi_config_name, lora_name; checkpoint.py's defaults where absent) are planned with it. Every URL
is pinned to the commit the plan saw, so all files come from one revision.

`download` streams each file itself into `<dest>/<file>.part`, resumes a `.part` with a Range
request (hashing the bytes already there first), checks size and hash (LFS files: sha256; small
files: git blob sha1, the hub's only hash for them) and renames the file into place atomically;
config.json lands last, so a folder with config.json is complete and the checkpoint loader takes it
as a local folder. A corrupted file is deleted and fetched again on the next call; a cancelled or
interrupted one keeps its `.part` for the next call to resume. Files whose size already matches are
not fetched again.

The models folder: `models_dir=`, else $KAME_MODELS_DIR, else platformdirs
user_data_dir("kame-desktop")/models; a repo `owner/name` lands in `<models>/owner/name/`.
The catalog of models the app offers is `models/catalog.toml` (`catalog.load_catalog()`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from kame_desktop.choices import CHECKPOINT_NAMES
from kame_desktop.errors import DownloadCancelled, DownloadError, KameError, NotEnoughSpace
from kame_desktop.fileio import ByteProgress
from kame_desktop.models.catalog import CatalogEntry

log = logging.getLogger(__name__)


CHUNK = 1 << 18  # bytes per read and per progress call
_CANCEL_POLL_S = 0.1  # how often a download looks at its Cancel while a read waits
_TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
_OFFLINE_HINT = "the lite front-end works offline"


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative, '/'-separated, as in the repo
    size: int
    sha256: str | None  # LFS files
    git_sha1: str | None  # the git blob id (the only hash the hub has for non-LFS files)

    def new_hasher(self) -> Any:
        if self.sha256:
            return hashlib.sha256()
        h = hashlib.sha1()
        h.update(f"blob {self.size}\0".encode())
        return h

    @property
    def expected_digest(self) -> str:
        return (self.sha256 or self.git_sha1 or "").lower()


@dataclass(frozen=True)
class RepoPlan:
    repo_id: str
    revision: str  # the commit every URL is pinned to (the revision asked for if the hub gave none)
    endpoint: str
    files: tuple[RemoteFile, ...]
    license: str | None  # from the hub's card data / `license:` tags
    gated: bool | str  # False, or the hub's gating mode ("auto", "manual"): accept the terms first
    dest_dir: Path
    free_bytes: int  # free space at dest_dir when planned
    checkpoint: bool  # files came from config.json: download() returns the folder
    skipped: tuple[str, ...] = ()  # config names in other repos (hf://…): the loader fetches those

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def bytes_on_disk(self, dest_dir: Path | None = None) -> int:
        """Bytes already there: complete files (by size) and resumable `.part` files."""
        dest = dest_dir or self.dest_dir
        done = 0
        for f in self.files:
            final, part = dest / f.path, _part_path(dest / f.path)
            if final.is_file() and final.stat().st_size == f.size:
                done += f.size
            elif part.is_file():
                done += min(part.stat().st_size, f.size)
        return done

    def needed_bytes(self, dest_dir: Path | None = None) -> int:
        return self.total_bytes - self.bytes_on_disk(dest_dir)

    @property
    def enough_space(self) -> bool:
        return self.free_bytes >= self.needed_bytes()


def default_models_dir() -> Path:
    if os.environ.get("KAME_MODELS_DIR"):
        return Path(os.environ["KAME_MODELS_DIR"])
    import platformdirs

    return Path(platformdirs.user_data_dir("kame-desktop")) / "models"


def model_dir(repo_id: str, models_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a repo's files land: `<models>/owner/name`."""
    base = Path(models_dir) if models_dir is not None else default_models_dir()
    return base.joinpath(*_safe_parts(repo_id))


def resolve_endpoint(endpoint: str | None = None) -> str:
    """`endpoint`, else $HF_ENDPOINT read now (huggingface_hub reads it once, at import), else its default."""
    if endpoint:
        return endpoint.rstrip("/")
    if os.environ.get("HF_ENDPOINT"):
        return os.environ["HF_ENDPOINT"].rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def free_space(path: Path) -> int:
    """Free bytes on the disk that holds `path` (or its nearest existing parent)."""
    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def plan_entry(entry: CatalogEntry, **kwargs: Any) -> RepoPlan:
    """plan_download for a catalog entry."""
    return plan_download(entry.repo, entry.revision, list(entry.files) or None, **kwargs)


def plan_download(
    repo_id: str,
    revision: str = "main",
    files: Iterable[str] | None = None,
    *,
    endpoint: str | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> RepoPlan:
    """Ask the hub what downloading `files` of `repo_id` (default: a KAME checkpoint) involves."""
    from huggingface_hub import HfApi

    _check_online()
    base = resolve_endpoint(endpoint)
    api = HfApi(endpoint=base, token=token)
    with _hub_errors(repo_id, base):
        info = api.model_info(repo_id, revision=revision)
        commit = info.sha or revision
        skipped: list[str] = []
        if files is None:
            names = ["config.json", *_checkpoint_names(base, repo_id, commit, token, skipped)]
        else:
            names = list(dict.fromkeys(files))
        for name in names:
            _safe_parts(name)
        found = {p.path: p for p in api.get_paths_info(repo_id, names, revision=commit) if hasattr(p, "size")}
    if files is None and "config.json" not in found:
        names.remove("config.json")  # no config: the loader assumes Moshi 7B with the default names
    missing = [n for n in names if n not in found]
    if missing:
        raise DownloadError(f"{', '.join(missing)} not found in {repo_id} (revision {revision}); "
                            "check the model name or update kame-desktop")
    remote = []
    for name in sorted(names, key=lambda n: n == "config.json"):  # config.json last
        p = found[name]
        remote.append(RemoteFile(name, int(p.size), p.lfs.sha256 if p.lfs else None, None if p.lfs else p.blob_id))
    dest = model_dir(repo_id, models_dir)
    return RepoPlan(
        repo_id=repo_id, revision=commit, endpoint=base, files=tuple(remote), license=_license(info),
        gated=info.gated or False, dest_dir=dest, free_bytes=free_space(dest), checkpoint=files is None,
        skipped=tuple(skipped),
    )


def _checkpoint_names(base: str, repo_id: str, commit: str, token: str | bool | None, skipped: list[str]) -> list[str]:
    import requests

    r = requests.get(_url(base, repo_id, commit, "config.json"), headers=_headers(token), timeout=_TIMEOUT)
    if r.status_code == 404:
        config: dict[str, Any] = {}
    else:
        r.raise_for_status()
        try:
            config = json.loads(r.content)
        except ValueError as e:
            raise DownloadError(f"config.json of {repo_id} is not valid JSON ({e}); report it to the model's authors") from e
    names = []
    for key, default in CHECKPOINT_NAMES.items():
        name = config.get(key, default)
        if not name:
            continue
        if str(name).startswith(("hf://", "file://")):
            log.warning("%s names %s=%s outside the repo: the checkpoint loader fetches it", repo_id, key, name)
            skipped.append(str(name))
        else:
            names.append(str(name))
    return names


def _license(info: Any) -> str | None:
    card = info.card_data
    lic = getattr(card, "license", None) if card is not None else None
    if lic == "other" and getattr(card, "license_name", None):
        lic = card.license_name
    if isinstance(lic, list):
        lic = ", ".join(map(str, lic))
    if not lic:
        lic = next((t.removeprefix("license:") for t in info.tags or [] if t.startswith("license:")), None)
    return str(lic) if lic else None


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------


def download(
    plan: RepoPlan,
    dest_dir: str | os.PathLike[str] | None = None,
    progress: ByteProgress | None = None,
    cancel: threading.Event | None = None,
    *,
    token: str | bool | None = None,
) -> Path:
    """Fetch, resume and verify every file of `plan` into `dest_dir` (default plan.dest_dir).

    Returns the folder (for a checkpoint plan or several files) or the one file. Raises
    DownloadCancelled when `cancel` is set (the `.part` stays), DownloadError otherwise."""
    import filelock
    import requests

    dest = Path(dest_dir) if dest_dir is not None else plan.dest_dir
    _check_online()
    dest.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(dest / ".download.lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout as e:
        raise DownloadError(f"{plan.repo_id} is already being downloaded (another window?); wait for it to finish") from e
    try:
        need, free = plan.needed_bytes(dest), free_space(dest)
        if need > free:
            raise NotEnoughSpace(f"not enough disk space for {plan.repo_id} in {dest}: {_fmt(need)} needed, "
                                 f"{_fmt(free)} free; free some space or choose another models folder")
        total, done = plan.total_bytes, 0
        with requests.Session() as session:
            for f in plan.files:
                final = dest.joinpath(*_safe_parts(f.path))
                if final.is_file() and final.stat().st_size == f.size:
                    done += f.size  # verified when it landed
                    continue
                final.unlink(missing_ok=True)
                _fetch(session, plan, f, final, token, done, total, progress, cancel)
                done += f.size
        if progress is not None:
            progress(total, total)
    finally:
        lock.release()
    if plan.checkpoint or len(plan.files) != 1:
        return dest
    return dest.joinpath(*_safe_parts(plan.files[0].path))


def _fetch(
    session: Any, plan: RepoPlan, f: RemoteFile, final: Path, token: str | bool | None,
    done_before: int, total: int, progress: ByteProgress | None, cancel: threading.Event | None,
) -> None:
    import requests

    _check_cancel(cancel, f)
    part = _part_path(final)
    part.parent.mkdir(parents=True, exist_ok=True)
    hasher = f.new_hasher()
    offset = part.stat().st_size if part.is_file() else 0
    if offset > f.size:
        part.unlink()
        offset = 0
    if offset:  # resume: the hash must cover the bytes already there
        with part.open("rb") as existing:
            while block := existing.read(1 << 20):
                _check_cancel(cancel, f)
                hasher.update(block)
    if progress is not None:
        progress(done_before + offset, total)
    url = _url(plan.endpoint, plan.repo_id, plan.revision, f.path)
    if offset < f.size:
        headers = _headers(token)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        connected = False
        try:
            with session.get(url, headers=headers, stream=True, timeout=_TIMEOUT) as r, _cancel_wakes(r, cancel):
                if r.status_code == 416:  # the server disagrees about the part: start again
                    part.unlink()
                    raise DownloadError(f"the partial download of {f.path} was not accepted by the server; "
                                        "start the download again")
                connected = True
                _raise_for_status(r, plan, f)
                if offset and r.status_code != 206:  # the server ignored the Range: start over
                    log.info("%s: the server sent the whole file; restarting it", f.path)
                    offset, hasher = 0, f.new_hasher()
                with part.open("ab" if offset else "wb") as out:
                    for chunk in r.iter_content(CHUNK):
                        out.write(chunk)
                        hasher.update(chunk)
                        offset += len(chunk)
                        if progress is not None:
                            progress(done_before + min(offset, f.size), total)
                        _check_cancel(cancel, f)
                        if offset > f.size:
                            break
                    out.flush()
                    os.fsync(out.fileno())
        except requests.RequestException as e:
            _check_cancel(cancel, f)  # the read that Cancel woke up
            if not connected:
                raise DownloadError(_no_network(plan.endpoint, e)) from e
            log.warning("download of %s interrupted: %s", f.path, e)
            raise DownloadError(f"the download of {f.path} was interrupted after {_fmt_of(offset, f.size)} "
                                "(connection lost); start it again to resume") from e
        except OSError as e:  # writing the .part
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            kept = part.stat().st_size if part.is_file() else 0
            need = total - done_before - kept
            raise NotEnoughSpace(f"the disk is full: the download of {f.path} stopped after {_fmt_of(kept, f.size)}; "
                                 f"{_fmt(need)} more are needed in {part.parent}. Free some space and start it "
                                 "again: it resumes where it stopped") from None
    _check_cancel(cancel, f)
    if offset < f.size:
        raise DownloadError(f"the download of {f.path} stopped after {_fmt_of(offset, f.size)}; "
                            "start it again to resume")
    digest = hasher.hexdigest()
    if offset != f.size or digest != f.expected_digest:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{f.path} from {plan.repo_id} was corrupted in transfer (size {offset} vs {f.size}, "
                            f"hash {digest[:12]} vs {f.expected_digest[:12]}); it was deleted and will be "
                            "downloaded again on retry")
    os.replace(part, final)
    log.info("downloaded and verified %s (%s)", final, _fmt(f.size))


def _raise_for_status(r: Any, plan: RepoPlan, f: RemoteFile) -> None:
    if r.status_code < 400:
        return
    if r.status_code in (401, 403):
        raise DownloadError(f"the hub refused {f.path} of {plan.repo_id} (HTTP {r.status_code}): accept the model's "
                            f"terms at {plan.endpoint}/{plan.repo_id} and log in with `huggingface-cli login`")
    if r.status_code == 404:
        raise DownloadError(f"{f.path} is no longer in {plan.repo_id}; plan the download again")
    raise DownloadError(f"the hub answered HTTP {r.status_code} for {f.path} of {plan.repo_id}; try again later")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def _safe_parts(relpath: str) -> tuple[str, ...]:
    parts = PurePosixPath(relpath).parts
    if not parts or relpath.startswith("/") or any(p in ("..", ".", "") or "\\" in p for p in parts):
        raise DownloadError(f"refusing the unsafe file name {relpath!r} from the hub")
    return parts


def _url(endpoint: str, repo_id: str, revision: str, filename: str) -> str:
    return f"{endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def _headers(token: str | bool | None) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    headers = dict(build_hf_headers(token=token, library_name="kame-desktop"))
    headers["Accept-Encoding"] = "identity"  # byte ranges and hashes are of the raw file
    return headers


def _check_online() -> None:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise DownloadError(f"offline mode is on (HF_HUB_OFFLINE): no download possible; {_OFFLINE_HINT}")


@contextlib.contextmanager
def _cancel_wakes(r: Any, cancel: threading.Event | None) -> Iterator[None]:
    """While the body streams, Cancel shuts the connection's socket down: a read waiting on a
    stalled server (up to the 60 s read timeout) returns at once, and _fetch reports the cancel."""
    if cancel is None:
        yield
        return
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(_CANCEL_POLL_S):
            if cancel.is_set():
                connection = getattr(r.raw, "connection", None) or getattr(r.raw, "_connection", None)
                sock = getattr(connection, "sock", None)
                with contextlib.suppress(OSError):
                    if sock is not None:
                        sock.shutdown(socket.SHUT_RDWR)
                return

    watcher = threading.Thread(target=watch, name="kame-download-cancel", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()
        watcher.join()


def _check_cancel(cancel: threading.Event | None, f: RemoteFile) -> None:
    if cancel is not None and cancel.is_set():
        raise DownloadCancelled(f"download of {f.path} cancelled; start it again to resume")


def _no_network(endpoint: str, e: BaseException) -> str:
    log.warning("cannot reach %s: %s", endpoint, e)
    return f"no network: cannot reach {endpoint}; check the connection and try again ({_OFFLINE_HINT})"


class _hub_errors:
    """Turn huggingface_hub/requests failures of the planning calls into DownloadError."""

    def __init__(self, repo_id: str, endpoint: str) -> None:
        self.repo_id, self.endpoint = repo_id, endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: type[BaseException] | None, e: BaseException | None, tb: Any) -> bool:
        if e is None or isinstance(e, KameError):
            return False
        import requests
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

        where = f"{self.endpoint}/{self.repo_id}"
        if isinstance(e, GatedRepoError):
            msg = f"{self.repo_id} is gated: accept its terms at {where} and log in with `huggingface-cli login`"
        elif isinstance(e, RepositoryNotFoundError):
            msg = f"{self.repo_id} not found on {self.endpoint} (or private: log in with `huggingface-cli login`)"
        elif isinstance(e, RevisionNotFoundError):
            msg = f"{self.repo_id} has no such revision; check the catalog or settings"
        elif isinstance(e, (requests.ConnectionError, requests.Timeout)):
            msg = _no_network(self.endpoint, e)
        elif isinstance(e, requests.RequestException):
            msg = f"the hub at {self.endpoint} failed for {self.repo_id} ({e}); try again later"
        else:
            return False
        raise DownloadError(msg) from e


def _fmt_of(part: int, whole: int) -> str:
    """"X of Y", in bytes where the rounding would show the two as equal."""
    if part != whole and _fmt(part) == _fmt(whole):
        return f"{part:,} of {whole:,} bytes"
    return f"{_fmt(part)} of {_fmt(whole)}"


def _fmt(n: int) -> str:
    if n >= 10**9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 10**6 else f"{n} bytes"
