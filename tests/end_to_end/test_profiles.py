"""Determinism profiles: effective flags read back from torch, planted nondeterminism, make verify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    REPO_ROOT,
    TINY,
    ReferenceRuns,
    assert_same_weights,
    launch_env,
    run_command,
    run_train,
)


@pytest.mark.slow
def test_eval_records_a_planted_nondeterministic_op_and_debug_raises(tmp_path: Path) -> None:
    evaluated = run_train(
        tmp_path / "eval",
        "--profile",
        "eval",
        "model.name=planted_put",
        entry="tests/helpers/planted_train.py",
    )
    report = json.loads((evaluated.run_dir / "determinism.json").read_text())
    # 24 training steps + 2 epoch-end evaluations of 4 batches (the final evaluation reuses the last).
    assert report["nondeterministic_ops"] == {"put_": 24 + 2 * 4}
    assert report["verdict"].startswith("not bitwise reproducible") and "put_" in report["verdict"]
    assert (
        evaluated.manifest()["determinism"]["nondeterministic_ops"]
        == report["nondeterministic_ops"]
    )
    assert "put_" in evaluated.process.stdout  # rank 0 prints the verdict at the end

    debugged = run_train(
        tmp_path / "debug",
        "--profile",
        "debug",
        "model.name=planted_put",
        entry="tests/helpers/planted_train.py",
        check=False,
    )
    assert debugged.returncode == 2
    last = debugged.process.stderr.strip().splitlines()[-1]
    assert last.startswith("error: profile 'debug': put_ has no deterministic implementation")
    assert "Traceback" not in debugged.process.stderr


@pytest.mark.slow
def test_production_on_cpu_reports_data_stream_reproducibility_and_hash_seed(
    tmp_path: Path,
) -> None:
    env = launch_env()
    env.pop("PYTHONHASHSEED")
    done = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--output-dir",
            str(tmp_path),
            "--profile",
            "production",
            *TINY,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(next(tmp_path.glob("*/production/seed*/determinism.json")).read_text())
    assert report["verdict"].startswith("reproducible data stream only")
    assert (
        report["effective"]["cudnn_benchmark"] is True
        and report["effective"]["deterministic_algorithms"] is False
    )
    assert report["effective"]["amp_dtype"] is None  # AMP applies on CUDA only
    assert report["environment"]["hash_seed"]["ok"] is False
    assert any("PYTHONHASHSEED" in note for note in report["notes"])
    assert "warning: PYTHONHASHSEED is unset" in done.stderr


@pytest.mark.slow
def test_eval_two_processes_bitwise_identical(references: ReferenceRuns, tmp_path: Path) -> None:
    again = run_train(tmp_path / "b", "--profile", "eval", "data.num_workers=2", nproc=2)
    assert_same_weights(references.tiny(2, "eval").weights(), again.weights())


def _verify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_command([sys.executable, "-m", "tools.verify", "--steps", "8", *args], env=env)


@pytest.mark.slow
def test_verify_reports_identical_for_a_correct_run() -> None:
    done = run_command(
        ["make", "verify", "SEED=3", f"ARGS={' '.join(TINY)}"], env={"VERIFY_STEPS": "8"}
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "IDENTICAL" in done.stdout


@pytest.mark.slow
def test_verify_finds_the_first_divergence_of_a_planted_one() -> None:
    done = _verify(
        "--entry",
        "tests/helpers/planted_train.py",
        "--",
        *TINY,
        "model.name=planted_divergence",
        env={"PLANTED_DIVERGE_AT": "5"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DIVERGED" in done.stdout
    assert "first differing loss at step 5:" in done.stdout
    assert "first differing tensor: " in done.stdout and "max abs difference" in done.stdout
