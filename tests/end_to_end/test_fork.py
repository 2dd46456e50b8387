"""The fork guide's worked example, for real: its dataset and model (docs/fork.md, the two
code blocks) written into a copy of the repository, then the unit tests (where the dataset
and model contract tests live: `make test-fast TESTS=tests/unit`) and `make verify` there.
Nothing outside data/ and models/ is edited."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import REPO_ROOT, copy_of_repository, launch_env

pytestmark = pytest.mark.slow

EXAMPLE = re.compile(r"<!-- fork example: (?P<path>\S+) -->\n```python\n(?P<code>.*?)```", re.S)


def fork(destination: Path) -> Path:
    """A copy of the repository (what git tracks, and new files it does not ignore), with the
    guide's files added and the venv shared."""
    copy_of_repository(destination)
    (destination / ".venv").symlink_to(REPO_ROOT / ".venv")
    examples = EXAMPLE.findall((REPO_ROOT / "docs" / "fork.md").read_text())
    assert [path for path, _ in examples] == ["data/npz.py", "models/mlp.py"]
    for path, code in examples:
        (destination / path).write_text(code)
    return destination


def in_fork(repo: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = launch_env(env)
    environment.pop("PYTHONPATH")  # the fork's own modules, not the template's
    return subprocess.run(
        list(command), cwd=repo, env=environment, capture_output=True, text=True, timeout=900
    )


def test_the_guide_s_dataset_and_model_pass_the_template_s_tests_and_its_matrix(
    tmp_path: Path,
) -> None:
    repo = fork(tmp_path / "fork")
    fast = in_fork(
        repo, "make", "test-fast", "TESTS=tests/unit", "PYTEST_ARGS=-q -p no:cacheprovider -rA"
    )
    assert fast.returncode == 0, fast.stdout[-3000:] + fast.stderr[-2000:]
    for contract in (  # the template's contract tests picked the fork's dataset and model up
        "test_dataset_contract.py::test_a_dataset_gives_what_the_template_relies_on[npz]",
        "test_dataset_contract.py::test_a_dataset_that_is_not_there_is_one_line[npz]",
        "test_models.py::test_model_forward_backward_under_deterministic_algorithms[mlp]",
    ):
        assert f"PASSED tests/unit/{contract}" in fast.stdout, contract
    assert "docs/configuration.md does not list dataset 'npz' yet: run make docs" in fast.stdout
    written = in_fork(
        repo,
        sys.executable,
        "-c",
        "from pathlib import Path; from data.npz import write_example; "
        "print(write_example(Path('datasets').resolve()))",
    )
    assert written.returncode == 0, written.stderr
    wrong = in_fork(
        repo, sys.executable, "train.py", "data.name=npz", "model.name=mlp", "model.width=8"
    )
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        "error: unknown config key 'model.width' for model 'mlp' (did you mean 'model.hidden'?); "
        "models 'smallcnn', 'vit_tiny' read it"
    ]
    args = (
        "data.name=npz model.name=mlp data.global_batch_size=32 trainer.micro_batch_size=8 "
        "trainer.world_size_invariant=true trainer.epochs=2"
    )
    verify = in_fork(repo, "make", "verify", f"ARGS={args}", VERIFY_STEPS="8")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    rows = [line for line in verify.stdout.splitlines() if "IDENTICAL" in line]
    assert [row.split("  ")[0] for row in rows] == [
        "same seed twice",
        "workers do not matter (0 vs 2)",
        "resume equals uninterrupted",
        "2 processes twice",
        "world-size invariant (1 vs 2)",
    ], verify.stdout[-2000:]
    assert "all identical" in verify.stdout
