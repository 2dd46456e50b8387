"""configs/recipe.yaml under `make verify`, a planted forgotten EMA caught by it, and the
recipe's mistakes that only the data reveals refused before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import TINY_DATA, TINY_MODEL, run_command, run_train, written_by_a_run

pytestmark = pytest.mark.slow

# The recipe cut to seconds: the tiny data and model, 16-sample batches (2 per step).
RECIPE = (
    "--config",
    "configs/recipe.yaml",
    *TINY_DATA,
    *TINY_MODEL,
    "data.batch_size=16",
    "optim.warmup_epochs=0",
    "optim.warmup_steps=3",
    "trainer.ema.warmup_steps=2",
)


# Per-source seeds keep every guarantee: the recipe's matrix runs with two of them set.
STREAM_SEEDS = "seed_streams.order=7 seed_streams.init=3"


def verify(*options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "scripts.verify", "--steps", "8", *options, "--", *RECIPE]
    return run_command(command, env=env)


def test_make_verify_on_the_recipe_prints_the_full_matrix_all_identical() -> None:
    """With per-source seeds for the data order and the initial weights (seed_streams)."""
    done = run_command(
        [
            "make",
            "verify",
            "CONFIG=configs/recipe.yaml",
            f"ARGS={' '.join(RECIPE[2:])} {STREAM_SEEDS}",
        ],
        env={"VERIFY_STEPS": "8"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if "IDENTICAL" in line or "DIVERGED" in line]
    assert [row.split("  ")[0] for row in rows] == [
        "same seed twice",
        "workers do not matter (0 vs 2)",
        "resume equals uninterrupted",
        "2 processes twice",
    ], done.stdout[-3000:]
    assert all("IDENTICAL" in row for row in rows) and "\nall identical\n" in done.stdout


def test_verify_catches_a_resume_that_forgets_the_ema() -> None:
    planted = verify(
        "--only",
        "resume",
        "--entry",
        "tests/helpers/planted_train.py",
        env={"PLANTED_FORGET_EMA": "1"},
    )
    assert planted.returncode == 1, planted.stdout + planted.stderr
    row = next(line for line in planted.stdout.splitlines() if line.startswith("resume equals"))
    assert "DIVERGED" in row and "final checkpoint: ema.module." in row, row
    assert "same seed twice" not in planted.stdout  # --only: that row alone
    refused = verify("--only", "nothing")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: --only 'nothing' names no row of the matrix: same seed twice, workers do not "
        "matter (0 vs 2), resume equals uninterrupted, 2 processes twice"
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ("optim.warmup_steps=0", "optim.warmup_epochs=2", "trainer.epochs=2"),
            "error: optim.warmup_epochs: a warmup of 24 optimizer steps does not end before the "
            "schedule does (24 steps: trainer.epochs x 12 steps per epoch); set "
            "optim.warmup_epochs below 2 (0 for none), or train longer (trainer.epochs, "
            "data.subset)",
        ),
        (
            ("trainer.accumulate_steps=25",),
            "error: trainer.accumulate_steps=25 is more than the 24 batches of an epoch on this rank",
        ),
    ],
)
def test_a_recipe_the_data_cannot_hold_is_one_line_and_writes_nothing(
    overrides: tuple[str, ...], expected: str, tmp_path: Path
) -> None:
    refused = run_train(tmp_path, *RECIPE, *overrides, tiny=False, check=False)
    assert refused.returncode == 2
    assert refused.process.stderr.strip().splitlines()[-1] == expected, refused.output
    assert "Traceback" not in refused.output
    assert not [path for path in tmp_path.rglob("*") if written_by_a_run(path)]
