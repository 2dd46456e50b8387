"""The config of a resumed run: the run's own config.yaml, plus what the command says again.

Why: a resumed run is the run that was started. Rebuilt from the config file and the command
line, `make train SEED=7 ARGS="trainer.epochs=10"`, stopped, then `make train SEED=7 RESUME=auto`
without the ARGS continued under the file's 30 epochs, the last 20 at lr 0, and ended with other
weights (Lightning keeps a checkpoint's hyperparameters for the same reason). So the resolved
config saved in the run directory is the base; an override given again may change a stopping
criterion or a runtime key (each change is said in a line), never what is computed.

And why a longer run is refused: the learning-rate schedule's horizon is part of the run (it
travels in the checkpoint); epochs past it would all train at lr 0.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from configs.keys import differing_keys, keys_in_role
from configs.loading import apply_override, read_saved_config, validated
from configs.schema import Config
from foundation.errors import UserError


def config_for_resume(
    saved: dict[str, Any] | None,
    as_loaded: Config,
    overrides: Sequence[str],
    checkpoint: dict[str, Any] | None,
) -> tuple[Config, list[str]]:
    """The run's config (`saved`: its config.yaml; `as_loaded` when it has none) with the
    command's `overrides` applied, and what to say of it when the run starts: what changed,
    and what the config file says otherwise now. A changed computation key, or more epochs
    than the `checkpoint`'s schedule was planned for, is refused in one line."""
    if saved is None:
        return as_loaded, []
    saved = read_saved_config(saved)  # moved keys, machine-local keys (configs/loading.py)
    config, changes = _resumed(saved, overrides)
    refuse_a_run_past_its_schedule(config, checkpoint)
    ignored = sorted(set(differing_keys(saved, as_loaded)) - set(differing_keys(saved, config)))
    notes = []
    if changes:
        notes.append(f"resuming with changes: {'; '.join(changes)}")
    if ignored:
        notes.append(
            f"resuming with the run's own config.yaml; the config file differs in "
            f"{', '.join(ignored)} (kept as the run started)"
        )
    return config, notes


def _resumed(saved: dict[str, Any], overrides: Sequence[str]) -> tuple[Config, list[str]]:
    tree = copy.deepcopy(saved)
    for assignment in overrides:
        tree = apply_override(tree, assignment)
    config = validated(tree)
    changed = differing_keys(saved, config)
    computation = keys_in_role(config, list(changed), "computation")
    if computation:
        key = computation[0]
        was, asked = changed[key]
        raise UserError(
            f"cannot resume: {key} differs (the run started with {was!r}, now {asked!r}); only "
            "stopping criteria and runtime settings may change: start a new run to change it"
        )
    notes = [
        f"{key}: {was!r} -> {asked!r}{_how_it_continues(key, config)}"
        for key, (was, asked) in changed.items()
    ]
    return config, notes


def world_size_may_change(config: Config, checkpoint: dict[str, Any] | None) -> bool:
    """A fixed global batch on plain data parallelism (DDP or sharded), now and in the
    checkpoint: a step trains on the same samples at any world size, so a checkpoint of another
    one continues (runtime/checkpoint/owner.py's `Checkpointer.expect` says it is not bit for bit)."""
    if checkpoint is None or config.data.global_batch_size is None:
        return False
    saved_tensor = checkpoint.get("config", {}).get("parallel", {}).get("tensor", 1)
    return config.parallel.tensor == 1 and saved_tensor == 1


def _how_it_continues(key: str, config: Config) -> str:
    if key == "parallel.shard" and config.trainer.world_size_invariant:
        return " (continues bit for bit: the invariant mode only splits its optimizer state)"
    return NOT_BIT_FOR_BIT.get(key, "")


# Runtime keys whose change continues the run, though not bit for bit.
NOT_BIT_FOR_BIT = {
    "parallel.tensor": " (continues, not bit for bit: a row-parallel layer adds its partial sums "
    "in another order, and the sharded dropout sites draw from new streams)",
    "parallel.shard": " (continues, not bit for bit: a reduce-scatter adds the gradients in "
    "another order than DDP's all-reduce)",
}


def planned_epochs(checkpoint: dict[str, Any], horizon: int) -> int:
    """The epochs the schedule's horizon covers: from the steps an epoch took, once one ended
    (a resume that lowered trainer.epochs did not move the horizon); before that, the epochs
    of the config that saved the checkpoint."""
    epoch, step, batch = (int(checkpoint[k]) for k in ("epoch", "step", "batch_in_epoch"))
    if epoch >= 1 and (step - batch) % epoch == 0 and step > batch:
        return horizon // ((step - batch) // epoch)
    return int(checkpoint["config"]["trainer"]["epochs"])


def refuse_a_run_past_its_schedule(config: Config, checkpoint: dict[str, Any] | None) -> None:
    """More epochs than the run was planned for would train at lr 0 after the old cosine's
    horizon (the step schedule and `none` keep a non-zero rate past it)."""
    if checkpoint is None or config.optim.scheduler != "cosine":
        return
    horizon = int(checkpoint["schedule_horizon"])
    planned = planned_epochs(checkpoint, horizon)
    max_steps = config.trainer.max_steps
    if config.trainer.epochs <= planned or (max_steps is not None and max_steps <= horizon):
        return
    raise UserError(
        f"--resume: trainer.epochs={config.trainer.epochs}, but this run's learning rate reaches "
        f"0 at the end of epoch {planned} (step {horizon}, optim.scheduler="
        f"{config.optim.scheduler}): every later epoch would train at lr 0; keep "
        f"trainer.epochs <= {planned}, or start a new run"
    )
