"""Write requirements.lock and requirements-dev.lock from the packages installed in this venv.

Why a script and not `pip freeze`: the runtime lock must hold only what the runtime needs (the
container installs it on top of the PyTorch image), and the CUDA wheels need platform markers so
that the same lock also installs on machines without them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LINUX_X86_ONLY = '; platform_system == "Linux" and platform_machine == "x86_64"'


def direct_requirements(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line).name for line in lines if line]


def closure(roots: list[str]) -> dict[str, str]:
    """Every installed distribution reachable from `roots`, with its installed version."""
    pinned: dict[str, str] = {}
    pending = list(roots)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in pinned:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        pinned[name] = dist.version
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return pinned


def pin_line(name: str, version: str) -> str:
    marker = LINUX_X86_ONLY if name.startswith("nvidia-") or name == "triton" else ""
    return f"{name}=={version}{marker}"


def main() -> None:
    runtime = closure(direct_requirements(ROOT / "requirements.in"))
    dev = closure(direct_requirements(ROOT / "requirements-dev.in"))
    header = (ROOT / "requirements.lock").read_text().split("\n")
    comment = [line for line in header if line.startswith("#")]
    runtime_lines = [pin_line(n, v) for n, v in sorted(runtime.items())]
    (ROOT / "requirements.lock").write_text("\n".join(comment + runtime_lines) + "\n")
    dev_lines = [pin_line(n, v) for n, v in sorted(dev.items()) if n not in runtime]
    dev_header = "# Development tools on top of the runtime lock (tests, lint, Dockerfile lint).\n"
    (ROOT / "requirements-dev.lock").write_text(
        dev_header + "-r requirements.lock\n" + "\n".join(dev_lines) + "\n"
    )


if __name__ == "__main__":
    main()
