"""Exact resume: killed-and-resumed equals never-interrupted, bitwise; bad checkpoints are refused."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from runtime.checkpoint.files import newest_complete
from runtime.rundir import RunDirectory
from tests.helpers.runs import (
    TINY,
    ReferenceRuns,
    RunResult,
    assert_same_weights,
    run_command,
    run_train,
    start_train_to_kill,
    torchrun,
    written_by_a_run,
)

pytestmark = pytest.mark.slow

# 384 samples, batch 32: 12 steps per epoch alone, 6 per epoch with 2 processes; 2 epochs.
STEPS_PER_EPOCH = {1: 12, 2: 6}


def step_losses(run: RunResult) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in run.metrics() if r["kind"] == "step"}


CASES = [
    # (processes, profile, workers, where the first attempt stops): each of 1 and 2 processes,
    # debug and eval, 0 and 2 workers, mid-epoch and epoch boundary at least once (the SIGTERM,
    # NaN and write-error tests in test_faults.py resume 2 processes too).
    (1, "debug", 2, "mid"),
    (2, "debug", 0, "boundary"),
    (2, "eval", 2, "mid"),
]


@pytest.mark.parametrize(("nproc", "profile", "workers", "where"), CASES)
def test_resume_equals_uninterrupted(
    references: ReferenceRuns,
    tmp_path: Path,
    nproc: int,
    profile: str,
    workers: int,
    where: str,
) -> None:
    stop_at = STEPS_PER_EPOCH[nproc] + (STEPS_PER_EPOCH[nproc] // 2 + 1 if where == "mid" else 0)
    common = ("--profile", profile, f"data.num_workers={workers}")
    first = run_train(tmp_path, *common, f"trainer.max_steps={stop_at}", nproc=nproc)
    checkpoint = first.checkpoint()
    assert checkpoint["step"] == stop_at
    assert (checkpoint["batch_in_epoch"] == 0) == (where == "boundary")
    assert len(checkpoint["rng"]) == nproc  # every rank's RNG state is saved
    # The run remembers its stopping criterion: going on past it is said again.
    resumed = run_train(
        tmp_path, *common, "trainer.max_steps=null", "--resume", "auto", nproc=nproc
    )
    reference = references.tiny(nproc, profile)
    assert_same_weights(reference.weights(), resumed.weights())
    assert step_losses(resumed) == step_losses(reference)
    assert resumed.manifest()["resumed_from_step"] == stop_at


def test_sigkill_at_any_moment_then_resume_auto(references: ReferenceRuns, tmp_path: Path) -> None:
    process = start_train_to_kill(tmp_path, *TINY, "checkpoint.every_steps=2", "data.num_workers=2")
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
        tmp_path, "checkpoint.every_steps=2", "data.num_workers=2", "--resume", "auto"
    )
    assert "skipped incomplete or damaged checkpoint(s): step-00000098.pt" in resumed.process.stderr
    assert not list(checkpoints.glob(".*.tmp"))
    assert (checkpoints / "damaged" / "step-00000098.pt").is_file()  # moved aside, not deleted
    assert_same_weights(references.tiny(1).weights(), resumed.weights())


def test_max_restarts_recovers_a_rank_that_dies(references: ReferenceRuns, tmp_path: Path) -> None:
    # torchrun --max-restarts=3, as `make train MAX_RESTARTS=3` runs it (tests/packaging checks
    # the make side); the last rank SIGKILLs itself after step 7, on the first attempt only.
    done = run_command(
        [
            *torchrun(2, "--max-restarts=3", "tests/helpers/planted_train.py"),
            "--output-dir",
            str(tmp_path),
            *TINY,
            "checkpoint.every_steps=2",
        ],
        env={"PLANTED_SIGKILL_AT_STEP": "7"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = RunResult(done, tmp_path)
    assert (
        run.manifest()["resumed_from_step"] == 6
    )  # the restart continued from the last checkpoint
    assert_same_weights(references.tiny(2).weights(), run.weights())


def test_changing_the_computation_on_resume_is_refused_stopping_criteria_may_change(
    tmp_path: Path,
) -> None:
    """One refusal end to end (every key's refusal is a unit test: test_checkpoints.py)."""
    first = run_train(tmp_path, "trainer.max_steps=3")
    before = {p: p.read_bytes() for p in first.run_dir.rglob("*") if written_by_a_run(p)}
    refused = run_train(tmp_path, "--resume", "auto", "model.dropout=0.3", check=False)
    assert refused.returncode == 2
    assert refused.process.stderr.strip().splitlines() == [
        "error: cannot resume: model.dropout differs (the run started with 0.2, now 0.3); only "
        "stopping criteria and runtime settings may change: start a new run to change it"
    ]
    assert {p: p.read_bytes() for p in first.run_dir.rglob("*") if written_by_a_run(p)} == before
    longer = run_train(tmp_path, "--resume", "auto", "trainer.max_steps=5")
    assert longer.manifest()["final_step"] == 5 and longer.manifest()["resumed_from_step"] == 3
    assert "note: resuming with changes: trainer.max_steps: 3 -> 5" in longer.process.stderr


def test_a_resume_without_the_first_command_s_overrides_is_the_run_that_was_started(
    tmp_path: Path,
) -> None:
    """`make train ARGS="trainer.epochs=3 ..."`, Ctrl-C, then `make train RESUME=auto` without
    ARGS: the run continues under its own config.yaml, not the config file's, and ends with the
    weights of the original command left alone."""
    started = ("trainer.epochs=3", "checkpoint.every_steps=2")
    alone = run_train(tmp_path / "alone", *started)
    stopped = run_train(
        tmp_path / "run",
        *started,
        entry="tests/helpers/planted_train.py",
        env={"PLANTED_SIGNAL_AT_STEP": "5", "PLANTED_SIGNAL": "INT"},
        check=False,
    )
    assert stopped.returncode == 128 + signal.SIGINT, stopped.output[-2000:]
    resumed = run_train(tmp_path / "run", "--resume", "auto", tiny=False)  # no ARGS at all
    assert "kept as the run started" in resumed.process.stderr
    assert resumed.manifest()["final_epoch"] == alone.manifest()["final_epoch"]
    assert_same_weights(alone.weights(), resumed.weights())
    assert resumed.logged() == alone.logged()
    # More epochs than the run was planned for would train at lr 0 after its schedule's end.
    longer = run_train(tmp_path / "run", "--resume", "auto", "trainer.epochs=4", check=False)
    assert longer.returncode == 2
    assert longer.process.stderr.strip().splitlines() == [
        "error: --resume: trainer.epochs=4, but this run's learning rate reaches 0 at the end of "
        "epoch 3 (step 36, optim.scheduler=cosine): every later epoch would train at lr 0; keep "
        "trainer.epochs <= 3, or start a new run"
    ]


def test_a_bad_checkpoint_file_is_refused_in_one_line(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    """One bad file end to end (the kinds of bad files are unit tests: test_checkpoints.py)."""
    good = references.tiny(1).run.last_checkpoint
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    output_dir = tmp_path / "target"
    refused = run_train(output_dir, "--resume", str(bad), check=False)
    assert refused.returncode == 2
    lines = refused.process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load checkpoint {bad}: ")
    assert not output_dir.exists()
