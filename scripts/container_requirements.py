"""The container's install list, from the same lock as the local venv, and the build-time check.

    python scripts/container_requirements.py requirements-dev.lock > reqs.txt   # what to pip install
    python scripts/container_requirements.py --check requirements.lock         # fail on drift

Why: the PyTorch image already ships torch, torchvision, triton and the CUDA libraries; installing
them again from the registry would double the image and could change the build. Everything else
is installed at exactly the locked versions (`--no-deps`, so nothing unpinned slips in), and the
build fails if the image's python/torch/torchvision are not the versions the lock pins.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PROVIDED_BY_BASE_IMAGE = re.compile(r"^(torch|torchvision|triton|nvidia-[a-z0-9-]+)$")
PYTHON = (3, 11)


def locked(path: Path) -> dict[str, str]:
    """name -> pinned version, following `-r` includes."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line.startswith("-r "):
            pins.update(locked(path.parent / line[3:].strip()))
        elif "==" in line:
            name, _, rest = line.partition("==")
            pins[name.strip().lower()] = rest.split(";")[0].strip()
    return pins


def install_list(path: Path) -> list[str]:
    return [
        f"{name}=={pin}"
        for name, pin in locked(path).items()
        if not PROVIDED_BY_BASE_IMAGE.match(name)
    ]


def check(path: Path) -> list[str]:
    problems = []
    if sys.version_info[:2] != PYTHON:
        problems.append(
            f"python {sys.version_info[0]}.{sys.version_info[1]}, the lock was made for 3.11"
        )
    pins = locked(path)
    for name in ("torch", "torchvision"):
        try:
            installed = version(name)
        except PackageNotFoundError:
            problems.append(f"{name} is not installed in the base image")
            continue
        if installed.split("+")[0] != pins[name]:
            problems.append(f"{name} {installed} in the image, {pins[name]} in {path.name}")
    return problems


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        problems = check(Path(argv[1]))
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0
    print("\n".join(install_list(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
