"""Every feature of the reference recipe under the guarantees, one at a time and all together.

For each: one process, uninterrupted, against two processes whose last rank is SIGKILLed
mid-epoch, continued by `--resume auto` on two processes (all together: on one, then the same
job on four). Both run in the world-size-invariant mode, so
equal runs prove at once that the feature is reproducible (the second run recomputes every step
the first did), survives a mid-epoch kill and resume (its state is in the checkpoint: the EMA,
the accumulation position, the schedule), and does not depend on the number of processes (its
draws are keyed by step and micro-batch, its norm is taken from the fixed-order sum). The
recipe with everything on is run at 4 processes too. Compared: every metrics row, the weights,
the EMA weights and the optimizer state (scripts/verify.py's `compare`, which `make verify` uses).
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


@pytest.mark.parametrize("feature", [*FEATURES, "all together"])
def test_a_feature_is_reproducible_resumable_and_world_size_invariant(
    feature: str, tmp_path: Path
) -> None:
    overrides = ALL if feature == "all together" else FEATURES[feature]
    alone = recipe_run(tmp_path / "w1", 1, overrides)
    resumed = killed_and_resumed(tmp_path / "w2", overrides, 1 if feature == "all together" else 2)
    assert resumed.logged() == alone.logged()
    assert compare(alone.run, resumed.run, same_world=False) is None
    manifest = alone.manifest()
    assert resumed.manifest()["final_weights_sha256"] == manifest["final_weights_sha256"]
    assert resumed.manifest()["final_ema_weights_sha256"] == manifest["final_ema_weights_sha256"]
    _feature_took_effect(feature, alone)
    if feature == "all together":
        four = recipe_run(tmp_path / "w4", 4, overrides)
        assert four.logged() == alone.logged()
        assert compare(alone.run, four.run, same_world=False) is None


def _feature_took_effect(feature: str, run: RunResult) -> None:
    """The run really trained with the feature (a guarantee of a switched-off feature proves
    nothing)."""
    steps, epochs = run.metrics("step"), run.metrics("epoch")
    checkpoint, manifest = run.checkpoint(), run.manifest()
    if feature in ("ema", "all together"):
        assert checkpoint["ema"] is not None and manifest["final_ema_weights_sha256"]
        assert "ema_val_acc" in epochs[-1] and "ema_val_acc" in manifest["final_metrics"]
        assert manifest["final_ema_weights_sha256"] != manifest["final_weights_sha256"]
    else:
        assert checkpoint["ema"] is None and manifest["final_ema_weights_sha256"] is None
    if feature in ("clipping", "all together"):
        assert any(row["grad_norm"] > 0.5 for row in steps)  # it clipped
    if feature in ("accumulation", "all together"):
        assert steps[-1]["step"] == 12  # 2 epochs of 12 batches, 2 per optimizer step
    else:
        assert steps[-1]["step"] == 24
    if feature in ("warmup", "all together"):
        assert steps[0]["lr"] < steps[3]["lr"]
