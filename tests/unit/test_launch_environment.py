"""Every launcher starts runs with the same variables: tools/launch.py's
REPRODUCIBLE_ENVIRONMENT is the one source; the Makefile, the Dockerfile and the SLURM script,
which cannot import it, are held to it here."""

from __future__ import annotations

import re

import pytest

from tests.helpers.runs import REPO_ROOT
from tools.launch import REPRODUCIBLE_ENVIRONMENT
from tools.slurm_array import exports

# How each file sets a variable: `export NAME ?= value` (make), `NAME=value` in an ENV or export
# line (Docker, bash).
SETTINGS = {
    "Makefile": r"^export {name} \?= (\S+)$",
    "Dockerfile": r"^(?:ENV )?\s*{name}=(\S+?)\s*\\?$",
    "scripts/slurm/train.sbatch": r"^export .*\b{name}=(\S+)",
}


@pytest.mark.parametrize("path", sorted(SETTINGS))
@pytest.mark.parametrize("name", sorted(REPRODUCIBLE_ENVIRONMENT))
def test_each_launcher_sets_the_launch_environment(path: str, name: str) -> None:
    text = (REPO_ROOT / path).read_text()
    pattern = re.compile(SETTINGS[path].format(name=re.escape(name)), re.MULTILINE)
    found = [value.strip("\"'") for value in pattern.findall(text)]
    assert found == [REPRODUCIBLE_ENVIRONMENT[name]], f"{path}: {name} is set to {found}"


def test_the_slurm_array_exports_them_quoted() -> None:
    line = exports({"A": ":4096:8", "B": "two words"})
    assert line == "A=:4096:8 B='two words'"
