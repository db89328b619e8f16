#!/usr/bin/env python3
"""Print the Python requirements for a CPU install, one per line.

Usage: scripts/deps.py [EXTRA ...]     e.g. `scripts/deps.py kame test`
       scripts/deps.py --spec NAME      print pyproject's requirement for NAME (e.g. moshi)
       scripts/deps.py --no-deps        print [tool.kame-desktop] no-deps (installed with --no-deps)

No extra: the lite set (no torch). An extra that names `kame-desktop[other]` brings that
extra too. pyproject.toml stays right for GPU users (moshi pulls CUDA torch <2.10). For the CPU
install, scripts/setup pins torch itself and installs moshi with --no-deps, so here:
  * `moshi` is replaced by moshi's own Requires-Dist (read from the installed moshi),
  * `torch` is dropped (already pinned by constraints/cpu.txt),
  * `bitsandbytes` (CUDA-only int8 path) is dropped unless the `int8` extra is named.
"""

import re
import sys
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

try:
    import tomllib  # Python >= 3.11
except ImportError:  # Python 3.10: scripts/setup installs tomli into the venv
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def name_of(req: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9._-]+)", req).group(1)).lower()


def main(argv: list[str]) -> int:
    pyproject = tomllib.loads(PYPROJECT.read_text())
    project = pyproject["project"]
    if argv[:1] == ["--no-deps"]:
        print("\n".join(pyproject.get("tool", {}).get("kame-desktop", {}).get("no-deps", [])))
        return 0
    reqs = list(project.get("dependencies", []))
    extras = project.get("optional-dependencies", {})
    if argv[:1] == ["--spec"]:
        found = [r for r in reqs + [r for e in extras.values() for r in e] if name_of(r) == name_of(argv[1])]
        if not found:
            sys.exit(f"deps.py: {argv[1]} is not in pyproject's dependencies or extras")
        print(found[0])
        return 0

    wanted = list(argv)
    for extra in wanted:  # grows while extras name other extras
        if extra not in extras:
            sys.exit(f"deps.py: unknown extra {extra!r} (have: {', '.join(extras)})")
        for req in extras[extra]:
            if name_of(req) == name_of(project["name"]):
                wanted += [e for e in re.findall(r"[\w-]+", req.split("[", 1)[1]) if e not in wanted]
            else:
                reqs.append(req)

    drop = {"torch"} | (set() if "int8" in wanted else {"bitsandbytes"})
    out: list[str] = []
    for req in reqs:
        if name_of(req) == "moshi":
            try:
                moshi_reqs = requires("moshi") or []
            except PackageNotFoundError:
                sys.exit("deps.py: install moshi first (pip install --no-deps), then rerun")
            out += [r for r in moshi_reqs if not re.search(r"\bextra\s*==", r)]  # skip extras-only
        else:
            out.append(req)
    for req in dict.fromkeys(out):  # keep order, drop duplicates
        if name_of(req) not in drop:
            print(req)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
