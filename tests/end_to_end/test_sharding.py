"""Sharded training (parallel.shard, FSDP2) keeps the guarantees, and gloo's AVG defect stays
corrected.

- Two processes whose last rank is SIGKILLed mid-epoch, resumed with `--resume auto`, equal the
  uninterrupted sharded run bit for bit (metrics rows, weights, optimizer state). So do two
  processes whose rank 0 is SIGKILLed inside a checkpoint write (every rank's shards on disk,
  DCP's index not yet): the resume takes the checkpoint before.
- Checkpoints are directories, one shard file per rank, read back whole in one process;
  `make evaluate NPROC=2` reads the shards into a sharded model and gives the manifest's final
  metrics bit for bit.
- The sharded run's first steps follow DDP's: the same loss and the same gradient norm (to float
  error). FSDP2 asks gloo for ReduceOp.AVG, which gloo computes as a sum: uncorrected, the norm
  would be twice DDP's at W = 2.
- A DDP checkpoint continues sharded (and says it is not bit for bit): each format loads into
  either kind of run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from runtime.checkpoint.files import newest_complete
from scripts.verify import compare
from tests.helpers.runs import RunResult, run_command, run_train

pytestmark = pytest.mark.slow

SHARD = ("parallel.shard=true", "checkpoint.every_steps=2")
KILLED_AFTER = 5  # the last checkpoint is step 4, mid-epoch (6 steps an epoch at W = 2)


def killed(output: Path, *overrides: str, fault: tuple[str, int] | None = None) -> None:
    name, step = fault or ("PLANTED_SIGKILL_AT_STEP", KILLED_AFTER)
    done = run_train(
        output,
        *overrides,
        nproc=2,
        entry="tests/helpers/planted_train.py",
        env={name: str(step)},
        check=False,
    )
    assert done.returncode != 0, done.output[-2000:]


def test_a_sharded_run_killed_mid_epoch_and_resumed_equals_the_uninterrupted_one(
    tmp_path: Path,
) -> None:
    alone = run_train(tmp_path / "alone", *SHARD, nproc=2)
    killed(tmp_path / "killed", *SHARD)
    resumed = run_train(tmp_path / "killed", *SHARD, "--resume", "auto", nproc=2)
    assert resumed.manifest()["resumed_from_step"] == KILLED_AFTER - 1
    assert resumed.logged() == alone.logged()
    assert compare(alone.run, resumed.run, same_world=True) is None
    manifest = alone.manifest()
    assert resumed.manifest()["final_weights_sha256"] == manifest["final_weights_sha256"]
    report = alone.run.determinism_file.read_text()
    assert "sharded (FSDP2)" in report and "returned 2 x the average gradient" in report
    # one directory per checkpoint, a shard file per rank, read back whole in one process
    last = alone.run.last_checkpoint
    assert last.is_symlink() and last.resolve().name == "step-00000012"
    assert sorted(p.name for p in last.glob("__*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert alone.weights()["features.0.0.weight"].shape == (8, 3, 3, 3)
    evaluated = run_command(
        ["make", "evaluate", "NPROC=2", f"CHECKPOINT={last}", f"OUTPUT_DIR={tmp_path / 'e'}"]
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (report,) = (tmp_path / "e" / "evaluations").glob("*.json")
    assert json.loads(report.read_text())["metrics"] == manifest["final_metrics"]

    # rank 0 killed inside the save of step 6 (an epoch end): the shards written, the index not
    killed(tmp_path / "in-save", *SHARD, fault=("PLANTED_SIGKILL_IN_SAVE", 6))
    checkpoints = (tmp_path / "in-save").glob("*/*/seed*/checkpoints")
    staging = next(checkpoints) / ".step-00000006.tmp"
    assert len(list(staging.glob("__*.distcp"))) == 2 and not (staging / ".metadata").exists()
    newest, _ = newest_complete(staging.parent)
    assert newest is not None and newest.name == "step-00000004"
    again = run_train(tmp_path / "in-save", *SHARD, "--resume", "auto", nproc=2)
    assert "removed an unfinished checkpoint write: .step-00000006.tmp" in again.output
    assert again.manifest()["resumed_from_step"] == 4
    assert again.logged() == alone.logged()
    assert compare(alone.run, again.run, same_world=True) is None


def first_steps(output: Path, *overrides: str) -> RunResult:
    return run_train(
        output, "optim.clip_grad_norm=1000", "trainer.max_steps=3", *overrides, nproc=2
    )


def test_sharded_gradients_are_ddp_s_on_gloo(tmp_path: Path) -> None:
    ddp = first_steps(tmp_path / "ddp").metrics("step")
    sharded = first_steps(tmp_path / "sharded", "parallel.shard=true").metrics("step")
    assert [row["step"] for row in sharded] == [1, 2, 3]
    for a, b in zip(ddp, sharded, strict=True):
        assert math.isclose(a["grad_norm"], b["grad_norm"], rel_tol=1e-5), (a, b)
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5), (a, b)


def test_a_ddp_checkpoint_continues_sharded(tmp_path: Path) -> None:
    killed(tmp_path, "checkpoint.every_steps=2")
    resumed = run_train(tmp_path, *SHARD, "--resume", "auto", nproc=2)
    assert resumed.manifest()["resumed_from_step"] == KILLED_AFTER - 1
    assert "parallel.shard: False -> True (continues, not bit for bit" in resumed.output
    assert resumed.run.last_checkpoint.name == "last"  # sharded from there on
    assert not (resumed.run.checkpoint_dir / "last.pt").exists()
    assert math.isfinite(resumed.logged()[-1]["val_loss"])


def test_a_fixed_global_batch_resumes_on_2_then_1_then_4_processes(tmp_path: Path) -> None:
    """With data.global_batch_size a step trains on the same samples at any W: the sharded
    checkpoint is read into 1 process, then resharded over 4, and the run ends as the
    uninterrupted one does up to what W changes (each rank's BatchNorm batch and dropout
    stream, the order of the sums)."""
    fixed = ("parallel.shard=true", "checkpoint.every_steps=2", "data.global_batch_size=64")
    alone = run_train(tmp_path / "alone", *fixed, nproc=2)
    killed(tmp_path / "run", *fixed)  # after step 5; checkpoint 4
    one = run_train(tmp_path / "run", *fixed, "trainer.max_steps=8", "--resume", "auto")
    assert one.manifest()["resumed_from_step"] == 4
    assert "world size: 2 -> 1 (continues with the same global batch, not bit for bit" in (
        one.output
    )
    four = run_train(tmp_path / "run", *fixed, "trainer.max_steps=12", "--resume", "auto", nproc=4)
    assert four.manifest()["resumed_from_step"] == 8
    assert "world size: 1 -> 4" in four.output
    shards = sorted(p.name for p in four.run.last_checkpoint.glob("__*.distcp"))
    assert shards == [f"__{rank}_0.distcp" for rank in range(4)]
    epochs = [row for row in four.logged() if row["kind"] == "epoch"]
    expected = [row for row in alone.logged() if row["kind"] == "epoch"]
    assert [row["step"] for row in epochs] == [row["step"] for row in expected] == [6, 12]
    for mine, theirs in zip(epochs, expected, strict=True):
        for key in ("train_loss", "val_loss"):
            assert math.isclose(mine[key], theirs[key], rel_tol=2e-2), (key, mine, theirs)


def test_another_world_size_without_a_fixed_global_batch_is_refused(tmp_path: Path) -> None:
    killed(tmp_path, *SHARD)
    refused = run_train(tmp_path, *SHARD, "--resume", "auto", check=False)
    assert refused.returncode == 2
    assert "cannot resume: world_size differs (checkpoint 2, now 1) (a run with " in (
        refused.output
    )
