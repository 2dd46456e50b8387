"""A finished run asked to train again: one line naming the stop it reached and what trains on.

Why: after `make train SEED=7 ARGS="trainer.epochs=2 trainer.max_steps=20"`, both
`make train SEED=7 RESUME=auto` and the first command typed again looked like work: the resume
loaded the checkpoint, trained nothing, evaluated again, rewrote the manifest's end and said
`done: … step 20`; the command typed again was refused with a hint to resume, that same no-op.
Nothing said that the run had reached its stop or how to go on. A run whose manifest says it
completed at the step a command would continue from has nothing to do under that command's
stopping keys: it says so, with the command that goes on, and exits 0 with every file as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from configs.resume import config_for_resume
from configs.schema import Config
from foundation.errors import UserError
from foundation.process import next_commands
from runtime.rundir import RunDirectory
from training.events import Position


def nothing_left(
    run_dir: RunDirectory, config: Config, manifest: dict[str, Any] | None, from_step: int
) -> str | None:
    """The `done:` line of a run that completed at `from_step` and whose stopping keys
    (`config`, the resumed run's) leave nothing to train; None when there is work to do."""
    if manifest is None or manifest.get("status") != "completed":
        return None
    step, epoch = manifest.get("final_step"), manifest.get("final_epoch")
    if not isinstance(step, int) or not isinstance(epoch, int) or step != from_step:
        return None
    epochs, max_steps = config.trainer.epochs, config.trainer.max_steps
    epochs_done = epoch >= epochs
    if not epochs_done and (max_steps is None or step < max_steps):
        return None
    batch = manifest.get("final_batch_in_epoch", 0 if epochs_done else 1)
    where = f"step {step} (epoch {Position(epoch, int(batch), step).epoch_number}/{epochs})"
    commands = next_commands()
    if not epochs_done:
        stop = f"trainer.max_steps={max_steps}"
        then = f"to train on: {commands.resume_with('trainer.max_steps=null')}"
    elif config.optim.scheduler == "cosine":
        stop = f"trainer.epochs={epochs}"
        then = (
            "its cosine schedule ended there at lr 0; to train more, start a new run from its "
            f"weights ({commands.init_from(run_dir.last_checkpoint)}, {commands.another_run})"
        )
    else:
        stop = f"trainer.epochs={epochs}"
        then = f"to train on: {commands.resume_with(f'trainer.epochs={2 * epochs}')}"
    return f"done: nothing left to train: {run_dir} reached {stop} at {where}; {then}"


def finished_run_asked_again(
    run_dir: RunDirectory, as_loaded: Config, overrides: Sequence[str]
) -> str | None:
    """A fresh command (no --resume) on a directory that holds a completed run: the `done:`
    line if resuming it with this command would train nothing; None otherwise (the command is
    then refused as for any run directory in use, with the command that continues it)."""
    manifest = run_dir.read_manifest()
    if manifest is None or manifest.get("status") != "completed":
        return None
    try:
        config, _ = config_for_resume(run_dir.read_config(), as_loaded, overrides, None)
    except UserError:  # another computation under the same folder: the refusal says what to do
        return None
    step = manifest.get("final_step")
    return nothing_left(run_dir, config, manifest, step) if isinstance(step, int) else None
