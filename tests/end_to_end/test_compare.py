"""`make compare`: seed-paired comparison of two configurations, end to end on tiny runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runtime.rundir import RunDirectory, find_runs, read_json
from scripts.compare import comparison_name
from tests.helpers.runs import TINY, run_command, run_train

LOW_LR = "optim.lr=0.0005"  # 100x too small: a planted large difference


def compare(
    output: Path,
    a: str,
    b: str,
    *seeds: str,
    more: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    entry: str = "train.py",
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "scripts.compare",
        "--a",
        a,
        "--b",
        b,
        "--seeds",
        *seeds,
        "--output-dir",
        str(output),
        "--entry",
        entry,
        *more,
        "--",
        *TINY,
    ]
    return run_command(command, env=env)


def report(output: Path) -> dict[str, Any]:
    return read_json(output / "compare.json")


def folder(output: Path, a: str, b: str) -> Path:
    """Where a comparison of A and B writes, under the --output-dir every comparison shares."""
    return output / comparison_name(a, b)


@pytest.mark.slow
def test_a_planted_difference_is_found_with_its_sign_then_a_rerun_trains_nothing(
    tmp_path: Path,
) -> None:
    done = compare(tmp_path, "optim.lr=0.05", LOW_LR, "0", "1", "2", more=("--jobs", "2"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    first = folder(tmp_path, "optim.lr=0.05", LOW_LR)
    result = report(first)
    assert result["differing_keys"] == {"optim.lr": [0.05, 0.0005]}
    assert result["pairing"]["shares_data_order_and_augmentation"] is True
    accuracy, loss = result["metrics"]["val_acc"], result["metrics"]["val_loss"]
    assert accuracy["verdict"].startswith("B lower (worse)") and accuracy["paired_ci95"][1] < 0
    assert loss["verdict"].startswith("B higher (worse)") and loss["paired_ci95"][0] > 0
    assert accuracy["p_improvement"] == 0.0 and loss["higher_is_better"] is False
    for stats in (accuracy, loss):
        paired, unpaired = stats["paired_ci95"], stats["unpaired_ci95"]
        assert paired[1] - paired[0] < unpaired[1] - unpaired[0]
    assert "progress: 6/6 runs done, 0 failed" in done.stdout
    assert (
        "- keys that differ (computed from the resolved configs): `optim.lr`: 0.05 → 0.0005"
        in (first / "compare.md").read_text()
    )
    assert (first / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    manifests = {run.manifest_file: run.manifest_file.stat().st_mtime_ns for run in runs(first)}
    again = compare(tmp_path, "optim.lr=0.05", LOW_LR, "0", "1", "2")
    assert again.returncode == 0 and again.stdout.count("(reused)") == 6
    assert {path: path.stat().st_mtime_ns for path in manifests} == manifests
    assert report(first)["metrics"]["val_acc"] == accuracy

    # A second comparison in the same --output-dir has its own folder; an empty A is the
    # config as it is (lr 0.05); A against A-like pairs raise no library warning.
    other = compare(tmp_path, "", "optim.lr=0.001", "0", "1")
    assert other.returncode == 0, other.stdout[-2000:] + other.stderr[-2000:]
    second = report(folder(tmp_path, "", "optim.lr=0.001"))
    assert second["differing_keys"] == {"optim.lr": [0.05, 0.001]}
    assert "Warning" not in other.stderr, other.stderr[-2000:]
    assert {path: path.stat().st_mtime_ns for path in manifests} == manifests

    # SEQUENTIAL=1 MAX_SEEDS=5 on the same A and B: its first look is seeds 0, 1, 2 (reused)
    # and the planted difference is decided before the fifth pair, with the same verdict.
    sequential = compare(
        tmp_path, "optim.lr=0.05", LOW_LR, more=("--sequential", "--max-seeds", "5")
    )
    assert sequential.returncode == 0, sequential.stdout[-2000:] + sequential.stderr[-2000:]
    assert sequential.stdout.count("(reused)") == 6  # each reused run said once
    plan = report(first)["sequential"]
    assert plan["planned_looks"] == [3, 5] and plan["looks"][-1]["decided"], plan
    assert plan["decision"] == f"different after {plan['seeds_used']} pairs"
    assert report(first)["metrics"]["val_acc"]["verdict"].startswith("B lower (worse)")
    assert 0 < report(first)["metrics"]["val_acc"]["sign_flip_p"] <= 0.25
    assert "sequential (val_acc): different after" in (first / "compare.md").read_text()


def runs(output: Path) -> list[RunDirectory]:
    return find_runs(output / "A") + find_runs(output / "B")


@pytest.mark.slow
def test_a_killed_run_resumes_and_a_seed_failing_in_one_variant_is_left_out(
    tmp_path: Path,
) -> None:
    """Seed 1 of B was killed mid-run earlier and resumes; seed 2 fails in B only."""
    here = folder(tmp_path, "optim.lr=0.05", LOW_LR)
    killed = run_train(
        here / "B",
        "--seed",
        "1",
        "--profile",
        "eval",
        LOW_LR,
        "checkpoint.every_steps=4",
        entry="tests/helpers/planted_train.py",
        env={"PLANTED_SIGKILL_AT_STEP": "5"},
        check=False,
    )
    assert killed.returncode == -9
    done = compare(
        tmp_path,
        "optim.lr=0.05",
        LOW_LR,
        "1",
        "2",
        entry="tests/helpers/planted_train.py",
        env={"PLANTED_FAIL_SEED": "2", "PLANTED_FAIL_ARG": LOW_LR},
    )
    assert done.returncode == 1
    result = report(here)
    assert list(result["excluded_seeds"]) == ["2"]
    assert "failed in B: error: planted failure for seed 2" in result["excluded_seeds"]["2"]
    assert list(result["metrics"]["val_acc"]["per_seed"]) == ["1"]
    assert result["metrics"]["val_acc"]["n_pairs"] == 1
    resumed = RunDirectory.of(here / "B", "default", "eval", 1).read_manifest()
    assert resumed is not None and resumed["resumed_from_step"] == 4
    assert "left out of the pairs" in (here / "compare.md").read_text()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """One refusal end to end (every kind is a unit test: unit/test_compare_runs.py)."""
    done = compare(tmp_path / "out", "optim.lrr=0.1", "optim.lr=0.1", "0", "1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: A: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"
    ]
    assert not (tmp_path / "out").exists()
