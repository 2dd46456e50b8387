"""Exact resume: killed-and-resumed equals never-interrupted, bitwise; bad checkpoints are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.checkpoint import newest_complete
from engine.rundir import RunDirectory
from tests.conftest import (
    REPO_ROOT,
    TINY,
    RunResult,
    assert_same_weights,
    launch_env,
    run_command,
    run_train,
    torchrun,
)

pytestmark = pytest.mark.slow

# 384 samples, batch 32: 12 steps per epoch alone, 6 per epoch with 2 processes; 2 epochs.
STEPS_PER_EPOCH = {1: 12, 2: 6}


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, str], RunResult]:
    """Uninterrupted runs (0 workers; worker count does not change the result, see test_training)."""
    root = tmp_path_factory.mktemp("reference")
    return {
        (nproc, profile): run_train(root / f"{nproc}-{profile}", "--profile", profile, nproc=nproc)
        for nproc in (1, 2)
        for profile in ("debug", "eval")
    }


def step_losses(run: RunResult) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in run.metrics() if r["kind"] == "step"}


CASES = [
    # (processes, profile, workers, where the first attempt stops)
    (1, "debug", 0, "mid"),
    (1, "debug", 2, "boundary"),
    (1, "eval", 2, "mid"),
    (2, "debug", 2, "mid"),
    (2, "debug", 0, "boundary"),
    (2, "eval", 0, "mid"),
]


@pytest.mark.parametrize(("nproc", "profile", "workers", "where"), CASES)
def test_resume_equals_uninterrupted(
    references, tmp_path: Path, nproc: int, profile: str, workers: int, where: str
) -> None:
    stop_at = STEPS_PER_EPOCH[nproc] + (STEPS_PER_EPOCH[nproc] // 2 + 1 if where == "mid" else 0)
    common = ("--profile", profile, f"data.num_workers={workers}")
    first = run_train(tmp_path, *common, f"trainer.max_steps={stop_at}", nproc=nproc)
    checkpoint = first.checkpoint()
    assert checkpoint["step"] == stop_at
    assert (checkpoint["batch_in_epoch"] == 0) == (where == "boundary")
    assert len(checkpoint["rng"]) == nproc  # every rank's RNG state is saved
    resumed = run_train(tmp_path, *common, "--resume", "auto", nproc=nproc)
    reference = references[(nproc, profile)]
    assert_same_weights(reference.weights(), resumed.weights())
    assert step_losses(resumed) == step_losses(reference)
    assert resumed.manifest()["resumed_from_step"] == stop_at


def test_sigkill_at_any_moment_then_resume_auto(references, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "train.py",
        "--output-dir",
        str(tmp_path),
        *TINY,
        "trainer.checkpoint_every_steps=2",
        "data.num_workers=2",
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=launch_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = RunDirectory.of(tmp_path, "default", "debug", 42).checkpoint_dir
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("step-*.pt.sha256")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(
        0.3
    )  # somewhere in the middle of training: between steps, or inside a checkpoint write
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    newest, _ = newest_complete(checkpoints)
    assert newest is not None
    # What a writer killed inside save_checkpoint can leave behind, on top of the real kill:
    # a half-written temporary file, and a newer checkpoint renamed before its checksum was written.
    (checkpoints / ".step-00000099.pt.abc.tmp").write_bytes(b"PK\x03\x04 half a zip")
    (checkpoints / "step-00000098.pt").write_bytes(newest.read_bytes()[:1000])
    resumed = run_train(
        tmp_path, "trainer.checkpoint_every_steps=2", "data.num_workers=2", "--resume", "auto"
    )
    assert "skipped incomplete or damaged checkpoint(s): step-00000098.pt" in resumed.process.stderr
    assert not list(checkpoints.glob(".*.tmp"))
    assert_same_weights(references[(1, "debug")].weights(), resumed.weights())


def test_max_restarts_recovers_a_rank_that_dies(references, tmp_path: Path) -> None:
    # torchrun --max-restarts=3, as `make train MAX_RESTARTS=3` runs it (tests/packaging checks
    # the make side); the last rank SIGKILLs itself after step 7, on the first attempt only.
    done = run_command(
        [
            *torchrun(2, "--max-restarts=3", "tests/helpers/planted_train.py"),
            "--output-dir",
            str(tmp_path),
            *TINY,
            "trainer.checkpoint_every_steps=2",
        ],
        env={"PLANTED_SIGKILL_AT_STEP": "7"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = RunResult(done, tmp_path)
    assert (
        run.manifest()["resumed_from_step"] == 6
    )  # the restart continued from the last checkpoint
    assert_same_weights(references[(2, "debug")].weights(), run.weights())


def test_changing_the_computation_on_resume_is_refused(tmp_path: Path) -> None:
    first = run_train(tmp_path, "trainer.max_steps=3")
    before = {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file()}
    for change, named in (
        ("data.batch_size=16", "data.batch_size"),
        ("model.dropout=0.3", "model.dropout"),
        ("optim.lr=0.1", "optim.lr"),
    ):
        refused = run_train(tmp_path, "--resume", "auto", change, check=False)
        assert refused.returncode == 2
        assert refused.process.stderr.strip().splitlines() == [
            refused.process.stderr.strip().splitlines()[0]
        ] and refused.process.stderr.startswith(f"error: cannot resume: {named} differs")
    other_world = run_train(tmp_path, "--resume", "auto", nproc=2, check=False)
    assert (
        other_world.returncode != 0
        and "cannot resume: world_size differs (checkpoint 1, now 2)" in other_world.output
    )
    assert {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file()} == before
    # A different seed is a different run directory; pointing at the old checkpoint is refused.
    other_seed = run_train(
        tmp_path,
        "--seed",
        "7",
        "--resume",
        str(first.run.last_checkpoint),
        check=False,
    )
    assert (
        other_seed.returncode == 2
        and "seed differs (checkpoint 42, now 7)" in other_seed.process.stderr
    )
    # Stopping criteria may change.
    longer = run_train(tmp_path, "--resume", "auto", "trainer.max_steps=5")
    assert longer.manifest()["final_step"] == 5


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = run_train(tmp_path_factory.mktemp("source"), "trainer.max_steps=2")
    return source.run.last_checkpoint


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "cannot load checkpoint"),
        (b"not a checkpoint at all", "cannot load checkpoint"),
        ("truncated", "cannot load checkpoint"),
        ("foreign", "is not a checkpoint of this template"),
        ("bad checksum", "corrupt or truncated"),
    ],
)
def test_bad_checkpoint_files_are_refused_in_one_line(
    tmp_path: Path, content: object, expected: str
) -> None:
    source = run_train(tmp_path / "source", "trainer.max_steps=2")
    good = source.run.last_checkpoint
    bad = tmp_path / "bad.pt"
    if content == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif content == "foreign":
        torch.save({"weights": torch.zeros(3)}, bad)
    elif content == "bad checksum":
        bad.write_bytes(good.read_bytes())
        (tmp_path / "bad.pt.sha256").write_text("0" * 64 + "  bad.pt\n")
    else:
        bad.write_bytes(content)  # type: ignore[arg-type]
    output_dir = tmp_path / "target"
    refused = run_train(output_dir, "--resume", str(bad), check=False)
    assert refused.returncode == 2
    lines = refused.process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (
        refused.process.stderr
    )
    assert not output_dir.exists()


def test_keeps_only_the_last_k_checkpoints(tmp_path: Path) -> None:
    run = run_train(tmp_path, "trainer.checkpoint_every_steps=2", "trainer.keep_checkpoints=2")
    numbered = sorted(path.name for path in run.run.checkpoint_dir.glob("step-*.pt"))
    assert numbered == ["step-00000022.pt", "step-00000024.pt"]
    assert run.checkpoint()["step"] == 24


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    run = run_train(tmp_path, "--resume", "auto", "trainer.max_steps=2")
    assert run.manifest()["resumed_from_step"] is None and run.manifest()["final_step"] == 2
