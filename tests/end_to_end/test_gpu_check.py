"""`make gpu-check`: its CPU rehearsal end to end (CI has no GPU), so the script a GPU session
runs in its one call keeps working; and its refusal to pretend where there is no CUDA."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.runs import TINY, ReferenceRuns, run_command

pytestmark = pytest.mark.slow


def test_the_check_trains_exactly_what_train_py_trains(references: ReferenceRuns) -> None:
    """gpu-check's in-process trainer (runtime/assembly.py, as train.py builds it) ends with
    train.py's weights: a check that built its trainer another way would check another run."""
    done = run_command([sys.executable, "tests/helpers/in_process_run.py", *TINY])
    assert done.returncode == 0, done.stderr[-3000:]
    digest = done.stdout.strip().splitlines()[-1]
    assert digest == references.tiny(1, "debug").manifest()["final_weights_sha256"]


def test_the_cpu_rehearsal_runs_every_line_and_writes_the_report(tmp_path: Path) -> None:
    rehearsal = ["make", "gpu-check", "DEVICE=cpu", "QUICK=1", f"ARGS=--output-dir {tmp_path}"]
    done = run_command(rehearsal)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    results = {line["name"]: line["result"] for line in report["lines"]}
    assert results == {
        "versions": "info",
        "debug twice": "pass",
        "eval twice": "pass",
        "speed": "info",
        "no host sync": "skipped",  # CUDA only; the epoch itself ran
        "invariant W=1": "pass",
        "compiled twice": "pass",
        "fp16 GradScaler": "pass",
    }
    lines = {line["name"]: line for line in report["lines"]}
    speed = lines["speed"]["numbers"]
    assert speed["figures"] == "CPU" and speed["bare_step_samples_per_s"] > 0
    assert set(speed["samples_per_s"]) == {"plain", "production", "eval", "debug"}
    debug = lines["debug twice"]["numbers"]
    assert debug["weights_sha256"][0] == debug["weights_sha256"][1]
    assert debug["effective"]["deterministic_algorithms"] is True
    assert 0 < lines["fp16 GradScaler"]["numbers"]["skipped_steps"] < 16
    compiled = lines["compiled twice"]["numbers"]
    assert compiled["same_as_eager"] is False and all(s > 0 for s in compiled["compile_s"])
    assert "| fp16 GradScaler | pass |" in done.stdout
    assert "Traceback" not in done.stderr and "lr_scheduler.step()" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine has a device to check")
def test_without_cuda_the_gpu_check_refuses_in_one_line(tmp_path: Path) -> None:
    done = run_command([sys.executable, "-m", "scripts.gpu_check", "--output-dir", str(tmp_path)])
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: --device cuda: no CUDA device here; rehearse with make gpu-check DEVICE=cpu QUICK=1"
    ]
    assert not any(tmp_path.iterdir())
