"""Tensor parallelism (parallel.tensor) keeps the guarantees, and its seed rules are checked.

- A dp = 2 x tp = 2 job whose last rank is SIGKILLed mid-epoch and resumed with `--resume auto`
  equals the uninterrupted job bit for bit: every metrics row, the weights, the optimizer state.
  The resumed job recomputes every step after its checkpoint, so this is also "the same seed
  twice gives the same weights" on the mesh.
- `scripts.diagnose` on the mesh passes: each stream per (dp, tp) coordinate, the split model's
  initial weights (gathered = unsplit, bitwise) and forward (= unsplit within 1e-5), and three
  training steps with a hook on every dropout site (replicated sites: one mask for the group and
  logits identical bit for bit; sharded sites: a mask per shard). Seed document 000's rule for
  the sharded sites, and per-rank seeding of the replicated ones, are planted and caught.
- A checkpoint of tp = 2 resumes at tp = 1, and one of tp = 1 at tp = 2: it loads and trains to
  the end (not bit for bit, and the run says so).
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from scripts.verify import compare
from tests.helpers.runs import REPO_ROOT, RunResult, launch_env, run_train, torchrun

pytestmark = pytest.mark.slow

VIT = (
    "--config",
    "configs/vit_tiny.yaml",
    "model.width=16",
    "optim.warmup_steps=2",
    "checkpoint.every_steps=2",
)
KILLED_AFTER = 5  # the last checkpoint is step 4, mid-epoch (6 steps an epoch at dp = 2)


def vit_run(output: Path, nproc: int, *overrides: str, **options: object) -> RunResult:
    return run_train(output, *VIT, *overrides, nproc=nproc, **options)  # type: ignore[arg-type]


def killed(output: Path, nproc: int, *overrides: str) -> None:
    done = vit_run(
        output,
        nproc,
        *overrides,
        entry="tests/helpers/planted_train.py",
        env={"PLANTED_SIGKILL_AT_STEP": str(KILLED_AFTER)},
        check=False,
    )
    assert done.returncode != 0, done.output[-2000:]


def test_a_2x2_mesh_killed_mid_epoch_and_resumed_equals_the_uninterrupted_job(
    tmp_path: Path,
) -> None:
    alone = vit_run(tmp_path / "alone", 4, "parallel.tensor=2")
    killed(tmp_path / "killed", 4, "parallel.tensor=2")
    resumed = vit_run(tmp_path / "killed", 4, "parallel.tensor=2", "--resume", "auto")
    assert resumed.manifest()["resumed_from_step"] == KILLED_AFTER - 1
    assert resumed.logged() == alone.logged()
    assert compare(alone.run, resumed.run, same_world=True) is None
    manifest = alone.manifest()
    assert resumed.manifest()["final_weights_sha256"] == manifest["final_weights_sha256"]
    ranks = manifest["seeds"]["ranks"]
    assert [rank["coordinates"] for rank in ranks] == [
        {"dp": dp, "tp": tp, "pp": 0} for dp in range(2) for tp in range(2)
    ]
    assert alone.weights()["blocks.0.attention.q.weight"].shape == (16, 16)  # gathered whole


def diagnose(*more: str) -> subprocess.CompletedProcess[str]:
    command = torchrun(
        4, "-m", "scripts.diagnose", *VIT, "data.synthetic.train_size=384", "parallel.tensor=2"
    )
    return subprocess.run(
        [*command, *more],
        cwd=REPO_ROOT,
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )


def verdict_lines(output: str) -> dict[str, bool]:
    return {
        line.split(": ", 1)[1]: line.startswith("ok")
        for line in output.splitlines()
        if line.startswith(("ok: ", "MISMATCH: "))
    }


def test_diagnose_checks_every_rule_of_the_mesh_and_catches_both_planted_mistakes() -> None:
    good = diagnose()
    assert good.returncode == 0, good.stdout + good.stderr
    lines = verdict_lines(good.stdout)
    assert len(lines) >= 15 and all(lines.values()), good.stdout
    assert "verdict: every rule of the mesh holds" in good.stdout

    document_000 = diagnose("--plant-mistake", "all-identical")
    assert document_000.returncode == 1, document_000.stdout + document_000.stderr
    failed = {line for line, ok in verdict_lines(document_000.stdout).items() if not ok}
    assert any(line.startswith("steps 1-3: sharded dropout sites") for line in failed), failed
    assert "stream sharded_dropout: distinct across tp, distinct across dp" in failed

    per_rank = diagnose("--plant-mistake", "per-rank-dropout")
    assert per_rank.returncode == 1, per_rank.stdout + per_rank.stderr
    failed = {line for line, ok in verdict_lines(per_rank.stdout).items() if not ok}
    assert any(line.startswith("steps 1-3: replicated dropout sites") for line in failed), failed
    assert any(line.startswith("steps 1-3: logits identical") for line in failed), failed


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_on_another_tensor_parallel_degree(
    before: int, after: int, tmp_path: Path
) -> None:
    """dp = 2 throughout (4 processes at tp = 2, 2 at tp = 1): each replica continues its own
    streams, and stays distinct from the other; the ranks of a tp group share theirs."""
    killed(tmp_path, 2 * before, f"parallel.tensor={before}")
    resumed = vit_run(tmp_path, 2 * after, f"parallel.tensor={after}", "--resume", "auto")
    manifest = resumed.manifest()
    assert manifest["resumed_from_step"] == KILLED_AFTER - 1
    assert f"parallel.tensor: {before} -> {after} (continues, not bit for bit" in resumed.output
    final = resumed.logged()[-1]
    assert final["step"] == 12 and math.isfinite(final["val_loss"]), final
    dropout = [str(rank["torch_cpu"].tolist()) for rank in resumed.checkpoint()["rng"]]
    replicas = [dropout[r] for r in range(0, len(dropout), after)]  # each replica's first shard
    assert len(set(replicas)) == 2, "the two replicas drew the same dropout after the resume"
    assert all(dropout[r] == dropout[r - r % after] for r in range(len(dropout)))


def test_a_model_without_a_plan_and_a_world_size_tp_cannot_divide_are_refused(
    tmp_path: Path,
) -> None:
    no_plan = run_train(tmp_path / "a", "parallel.tensor=2", check=False)  # refused at load
    assert no_plan.returncode == 2
    assert no_plan.output.strip().splitlines() == [
        "error: invalid config: parallel.tensor=2 needs a model with a tensor-parallel plan; "
        "model smallcnn has "
        "none (vit_tiny has one; docs/tensor-parallel.md shows how a model declares its own)"
    ]
    odd = vit_run(tmp_path / "b", 3, "parallel.tensor=2", check=False)
    assert odd.returncode != 0
    assert "parallel.tensor=2 does not divide the world size 3" in odd.output
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("*.pt"))


def test_a_split_model_clips_by_the_whole_model_s_norm(tmp_path: Path) -> None:
    """torch 2.7.1's clip_grad_norm_ refuses a model mixing DTensors and tensors; ours sums the
    shards' squares over the group. Without dropout, tp = 2 follows tp = 1 up to float error."""
    same = (
        "model.attention_dropout=0.0",
        "model.hidden_dropout=0.0",
        "model.residual_dropout=0.0",
        "optim.clip_grad_norm=0.05",
        "trainer.max_steps=3",
    )
    whole = vit_run(tmp_path / "tp1", 1, *same).metrics("step")
    split = vit_run(tmp_path / "tp2", 2, *same, "parallel.tensor=2").metrics("step")
    assert [row["step"] for row in split] == [1, 2, 3]
    for a, b in zip(whole, split, strict=True):
        assert a["grad_norm"] > 0.05  # the clip acted
        assert math.isclose(a["grad_norm"], b["grad_norm"], rel_tol=1e-5), (a, b)
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5), (a, b)
