"""Which checkpoint a run continues from: `--resume auto`, `--resume PATH`, or a torchrun restart.

Why a restart implies `auto`: under `torchrun --max-restarts`, a failed worker group is started
again with the same command line; TORCHELASTIC_RESTART_COUNT > 0 tells the new processes that
they are a restart, so they continue from the newest complete checkpoint instead of refusing the
existing run directory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.checkpoint import newest_complete
from engine.distributed import restart_attempt, topology_from_env
from engine.errors import UserError
from engine.rundir import RunDirectory


@dataclass(frozen=True)
class ResumeDecision:
    checkpoint: Path | None
    continuing: bool  # True: the run directory's logs continue (auto / restart)

    @property
    def fresh(self) -> bool:
        return self.checkpoint is None


def decide_resume(request: str | None, run_dir: RunDirectory) -> ResumeDecision:
    if request is None and restart_attempt() > 0:
        request = "auto"
    if request is None:
        run_dir.refuse_to_overwrite()
        return ResumeDecision(None, continuing=False)
    if request == "auto":
        newest, skipped = newest_complete(run_dir.checkpoint_dir)
        rank = topology_from_env()[0]
        if skipped and rank == 0:
            names = ", ".join(path.name for path in skipped)
            print(f"warning: skipped incomplete or damaged checkpoint(s): {names}", file=sys.stderr)
        return ResumeDecision(newest, continuing=run_dir.holds_a_run())
    path = Path(request)
    if not path.is_file():
        raise UserError(f"--resume: checkpoint not found: {path}")
    return ResumeDecision(path, continuing=run_dir.holds_a_run())


# Settings that may differ between a checkpoint and the run resuming it: stopping criteria and
# how the work is scheduled, none of which changes a single number computed.
RESUMABLE_CHANGES = (
    "trainer.epochs",
    "trainer.max_steps",
    "trainer.checkpoint_every_steps",
    "trainer.keep_checkpoints",
    "trainer.log_every_steps",
    "trainer.finite_check",
    "trainer.collective_timeout_s",
    "data.root",
    "data.download",
    "data.num_workers",
    "data.persistent_workers",
    "determinism.anomaly_detection",
)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: configs compared key by key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def computation_fingerprint(
    settings: dict[str, Any], world_size: int, device_type: str
) -> dict[str, Any]:
    """Every setting that changes what is computed (seed, model, data, batch size, world size, ...).

    `settings` is the resolved config as plain values (`Config.model_dump(mode="json")`).
    """
    flat = flatten(settings)
    for key in (*RESUMABLE_CHANGES, "name"):
        flat.pop(key, None)
    # In the world-size-invariant mode the world size changes nothing that is computed.
    invariant = flat.get("trainer.world_size_invariant", False)
    flat["world_size"] = "any" if invariant else world_size
    flat["device_type"] = device_type
    return flat


def first_difference(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            return f"{key} differs (checkpoint {saved.get(key)!r}, now {current.get(key)!r})"
    return None


def check_same_computation(checkpoint: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse, before anything is written, to continue a checkpoint under a different computation."""
    difference = first_difference(checkpoint["fingerprint"], current)
    if difference is not None:
        raise UserError(
            f"cannot resume: {difference}; only stopping criteria and loader settings may change"
        )
