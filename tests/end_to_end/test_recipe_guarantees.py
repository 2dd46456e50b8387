"""Every feature of the reference recipe under the guarantees, all switched on in one job.

One process, uninterrupted, against two processes whose last rank is SIGKILLed mid-epoch,
continued by `--resume auto` on one process, and the same job on four. All run in the
world-size-invariant mode, so equal runs prove at once that each feature is reproducible (the
resumed run recomputes every step the first did), survives a mid-epoch kill and resume (its
state is in the checkpoint: the EMA, the accumulation position, the schedule), and does not
depend on the number of processes (its draws are keyed by step and micro-batch, its norm is
taken from the fixed-order sum). Compared: every metrics row, the weights, the EMA weights and
the optimizer state (scripts/verify.py's `compare`, which `make verify` uses).

Why together rather than one at a time: a feature whose state or draws break any of the three
breaks this comparison just as well (a resume that forgets the EMA fails it at the first
metrics row after the resume), and each case costs a 1-, 2- and 4-process run; the check that
each feature really trained is kept per feature (`_every_feature_took_effect`). To find which
feature broke, run the test with FEATURES cut down to the suspect.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.verify import compare
from tests.helpers.runs import RunResult, run_train

pytestmark = pytest.mark.slow

INVARIANT = (
    "data.global_batch_size=32",
    "trainer.micro_batch_size=4",
    "trainer.world_size_invariant=true",
    "checkpoint.every_steps=2",
)
FEATURES = {
    "label smoothing": ("optim.label_smoothing=0.1",),
    "mixup and cutmix": ("data.mix.mixup_alpha=0.2", "data.mix.cutmix_alpha=1.0"),
    "ema": ("trainer.ema.enabled=true", "trainer.ema.decay=0.9", "trainer.ema.warmup_steps=3"),
    "accumulation": ("trainer.accumulate_steps=2",),
    "clipping": ("optim.clip_grad_norm=0.5",),
    "warmup": ("optim.warmup_steps=5", "optim.scheduler=step", "optim.step_epochs=1"),
}
ALL = tuple(override for overrides in FEATURES.values() for override in overrides)
KILLED_AFTER = 5  # the last checkpoint is step 4: mid-epoch (12 steps, 6 with accumulation)


def recipe_run(
    output: Path, nproc: int, overrides: tuple[str, ...], **options: object
) -> RunResult:
    return run_train(output, *INVARIANT, *overrides, nproc=nproc, **options)  # type: ignore[arg-type]


def killed_and_resumed(output: Path, overrides: tuple[str, ...], resume_on: int) -> RunResult:
    killed = recipe_run(
        output,
        2,
        overrides,
        entry="tests/helpers/planted_train.py",
        env={"PLANTED_SIGKILL_AT_STEP": str(KILLED_AFTER)},
        check=False,
    )
    assert killed.returncode != 0, killed.output[-2000:]
    resumed = recipe_run(output, resume_on, (*overrides, "--resume", "auto"))
    assert resumed.manifest()["resumed_from_step"] == KILLED_AFTER - 1
    return resumed


def test_the_recipe_is_reproducible_resumable_and_world_size_invariant(tmp_path: Path) -> None:
    alone = recipe_run(tmp_path / "w1", 1, ALL)
    _every_feature_took_effect(alone)
    resumed = killed_and_resumed(tmp_path / "w2", ALL, resume_on=1)
    assert resumed.logged() == alone.logged()
    assert compare(alone.run, resumed.run, same_world=False) is None
    manifest = alone.manifest()
    assert resumed.manifest()["final_weights_sha256"] == manifest["final_weights_sha256"]
    assert resumed.manifest()["final_ema_weights_sha256"] == manifest["final_ema_weights_sha256"]
    four = recipe_run(tmp_path / "w4", 4, ALL)
    assert four.logged() == alone.logged()
    assert compare(alone.run, four.run, same_world=False) is None


def _every_feature_took_effect(run: RunResult) -> None:
    """The run really trained with each feature (a guarantee of a switched-off feature proves
    nothing)."""
    steps, epochs = run.metrics("step"), run.metrics("epoch")
    checkpoint, manifest = run.checkpoint(), run.manifest()
    config = run.run.read_config()
    assert config is not None
    assert config["optim"]["label_smoothing"] == 0.1
    assert (
        config["data"]["mix"]["mixup_alpha"] == 0.2 and config["data"]["mix"]["cutmix_alpha"] == 1.0
    )
    assert checkpoint["ema"] is not None and manifest["final_ema_weights_sha256"]
    assert "ema_val_acc" in epochs[-1] and "ema_val_acc" in manifest["final_metrics"]
    assert manifest["final_ema_weights_sha256"] != manifest["final_weights_sha256"]
    assert any(row["grad_norm"] > 0.5 for row in steps)  # clipping clipped
    assert steps[-1]["step"] == 12  # 2 epochs of 12 batches, 2 per optimizer step
    assert steps[0]["lr"] < steps[3]["lr"]  # the warmup
