"""The model catalog that ships with the app (`models/catalog.toml`): the models it offers for
download (repo ids, files, sizes, licences), never weights. `downloads.py` fetches them."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from kame_desktop.errors import DownloadError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    kind: str  # "kame" (a checkpoint: files from its config.json) or "gguf" (one file for the local LLM)
    repo: str
    name: str
    license: str  # as the catalog states it; the hub's metadata (RepoPlan.license) is authoritative
    approx_bytes: int
    files: tuple[str, ...] = ()  # empty: the files named by the repo's config.json
    revision: str = "main"
    description: str = ""


def catalog_path() -> Path:
    """models/catalog.toml: beside this module when the wheel or the bundle ships it (as
    kame_desktop/models/), else the source tree's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "catalog.toml", here.parents[1] / "models" / "catalog.toml"):
        if candidate.is_file():
            return candidate
    raise DownloadError("the model catalog (models/catalog.toml) is missing; reinstall kame-desktop", kind="bad_model")


def load_catalog(path: str | os.PathLike[str] | None = None) -> list[CatalogEntry]:
    """The models the app offers for download, in catalog order."""
    file = Path(path) if path is not None else catalog_path()
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
        return [
            CatalogEntry(
                id=m["id"], kind=m["kind"], repo=m["repo"], name=m["name"], license=m["license"],
                approx_bytes=int(float(m["approx_gb"]) * 1e9), files=tuple(m.get("files", ())),
                revision=m.get("revision", "main"), description=m.get("description", ""),
            )
            for m in raw.get("model", [])
        ]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DownloadError(f"the model catalog {file} is unreadable ({e}); reinstall kame-desktop", kind="bad_model") from e
