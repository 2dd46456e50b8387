"""The container's packages, from the same lock as the local venv: what to install, from where,
and the checks that the image and a wheelhouse match the lock.

    python scripts/docker/requirements.py install-list requirements-dev.lock
    python scripts/docker/requirements.py check-image requirements.lock          (in the build)
    python scripts/docker/requirements.py check-installed requirements-dev.lock  (in the build)
    python scripts/docker/requirements.py download-wheelhouse requirements-dev.lock wheelhouse
    python scripts/docker/requirements.py check-wheelhouse requirements-dev.lock wheelhouse
    python scripts/docker/requirements.py download-standin requirements.lock DIR

Why: the PyTorch image already ships torch, torchvision, triton and the CUDA libraries; installing
them again from the registry would double the image and could change the build. Everything else
is installed at exactly the locked versions (`--no-deps`, so nothing unpinned slips in), and the
build fails if the image's python/torch/torchvision are not the versions the lock pins.

Why a wheelhouse: a build container does not inherit the host's pip configuration (index, proxy,
CA bundle), so behind a TLS-inspecting proxy or on an air-gapped cluster `pip install` inside
`docker build` fails. `download-wheelhouse` fetches exactly the lock's wheels for the image's
platform (Linux x86_64, CPython 3.11) on the host, with the host's pip settings; the build then
installs them with `--no-index`. The stand-in base (`download-standin`) is the same idea for what
the official image would bring: torch, torchvision and everything they need, from the lock.

Standard library only (and pip): it runs on the host before any venv exists, and in the build.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PROVIDED_BY_BASE_IMAGE = re.compile(r"^(torch|torchvision|triton|nvidia-[a-z0-9-]+)$")
PYTHON = (3, 11)
# The image's platform, whatever the host's: pip picks wheels for these tags only.
PLATFORM_OPTIONS = [
    "--only-binary=:all:",
    "--implementation=cp",
    "--python-version=3.11",
    "--abi=cp311",
    "--abi=abi3",
    "--abi=none",
    "--platform=manylinux1_x86_64",
    "--platform=manylinux2010_x86_64",
    "--platform=manylinux2014_x86_64",
    *(f"--platform=manylinux_2_{minor}_x86_64" for minor in range(5, 36)),
    "--platform=any",
]


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path: Path) -> dict[str, str]:
    """name -> pinned version, following `-r` includes."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line.startswith("-r "):
            pins.update(locked(path.parent / line[3:].strip()))
        elif "==" in line:
            name, _, rest = line.partition("==")
            pins[normalized(name.strip())] = rest.split(";")[0].strip()
    return pins


def install_list(path: Path) -> list[str]:
    """What the image installs: the lock minus what the base image provides."""
    return [
        f"{name}=={pin}"
        for name, pin in locked(path).items()
        if not PROVIDED_BY_BASE_IMAGE.match(name)
    ]


def check_image(path: Path) -> list[str]:
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


def check_installed(path: Path) -> list[str]:
    """After the install: every package of the install list at exactly its pin."""
    problems = []
    for line in install_list(path):
        name, pin = line.split("==")
        try:
            installed = version(name)
        except PackageNotFoundError:
            problems.append(f"{name} is not installed")
            continue
        if installed != pin:
            problems.append(f"{name} {installed} installed, {pin} in {path.name}")
    return problems


def wheel_name_and_version(wheel: Path) -> tuple[str, str]:
    name, wheel_version = wheel.name.split("-")[:2]
    return normalized(name), wheel_version


def check_wheelhouse(path: Path, wheelhouse: Path) -> list[str]:
    """One line per wheel the lock needs that the wheelhouse lacks or holds in another version."""
    found: dict[str, list[str]] = {}
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name, wheel_version = wheel_name_and_version(wheel)
        found.setdefault(name, []).append(wheel_version)
    problems = []
    for line in install_list(path):
        name, pin = line.split("==")
        versions = found.get(name, [])
        if pin not in versions:
            other = f" (it holds {', '.join(versions)})" if versions else ""
            problems.append(f"no wheel for {name}=={pin}{other}")
    return problems


def pip_download(requirements: list[str], destination: Path) -> None:
    """The host's pip, with the host's configuration (index, proxy, CA), image platform wheels."""
    destination.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    command += [*PLATFORM_OPTIONS, "--dest", str(destination), *requirements]
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"error: pip could not download {len(requirements)} wheel(s) of the lock")


def requirements_of(wheel: Path) -> list[str]:
    """The distribution names a wheel requires on Linux x86_64 CPython 3.11 (no extras)."""
    from pip._vendor.packaging.requirements import Requirement  # pip is always there

    environment = {
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "sys_platform": "linux",
    }
    environment |= {"python_version": "3.11", "python_full_version": "3.11.2", "extra": ""}
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    names = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.partition(":")[2].strip())
            if requirement.marker is None or requirement.marker.evaluate(environment):
                names.append(normalized(requirement.name))
    return names


def download_standin(path: Path, destination: Path) -> None:
    """torch, torchvision and everything they require, at the lock's pins: what the official
    image brings, so that the image built on the stand-in installs what it would install there."""
    pins = locked(path)
    wanted, done = ["torch", "torchvision"], set()
    while wanted:
        batch = [name for name in dict.fromkeys(wanted) if name not in done]
        wanted = []
        pip_download([f"{name}=={pins[name]}" for name in batch], destination)
        done.update(batch)
        for wheel in destination.glob("*.whl"):
            name, _ = wheel_name_and_version(wheel)
            if name in batch:
                wanted += [r for r in requirements_of(wheel) if r in pins and r not in done]


def main(argv: list[str]) -> int:
    command, lock = argv[0], Path(argv[1])
    if command == "install-list":
        print("\n".join(install_list(lock)))
        return 0
    if command == "download-wheelhouse":
        pip_download(install_list(lock), Path(argv[2]))
        return 0
    if command == "download-standin":
        download_standin(lock, Path(argv[2]))
        return 0
    checks = {
        "check-image": lambda: check_image(lock),
        "check-installed": lambda: check_installed(lock),
        "check-wheelhouse": lambda: check_wheelhouse(lock, Path(argv[2])),
    }
    problems = checks[command]()
    if problems:
        where = f" {argv[2]}/ does not match {lock.name}:" if command == "check-wheelhouse" else ""
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        hint = "; run make wheelhouse" if command == "check-wheelhouse" else ""
        print(f"error:{where} {problems[0]}{more}{hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
