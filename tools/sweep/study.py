"""The sweep's Optuna study: where it lives, how it samples and prunes, how it resumes.

The study is a file in the sweep's folder: SQLite (`study.db`) for one sweep process, or
Optuna's journal file (`study.journal`) where several SLURM workers share one study over a
shared filesystem (the journal appends under a file lock; SQLite over NFS does not lock
reliably). Either way it is the record of every trial, so the same command run again goes on
where it stopped:
- a COMPLETE, PRUNED or FAIL trial is never run again; it counts toward TRIALS;
- a trial left RUNNING by a killed sweep (this process holds the folder's lock, so nobody else
  runs it) is marked FAIL with the user attribute `interrupted` (not counted) and enqueued
  again with the same parameters; its seed runs live in a folder named after those
  parameters, so the runner resumes them from their checkpoints.

The sampler (TPE) is re-seeded before each trial from the number of trials counted so far:
the same sweep at JOBS=1 (whose runs are bitwise reproducible) proposes the same trials, also
across a kill and a rerun, where a sampler seeded once per process would draw anew.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from foundation.errors import UserError

STUDY_NAME = "sweep"
SAMPLER_SEED = 0
STARTUP_TRIALS = 3  # random proposals before TPE models the results
INTERRUPTED = "interrupted"
SIGNATURE = "sweep"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def storage_path(folder: Path, journal: bool) -> Path:
    return folder / ("study.journal" if journal else "study.db")


def open_study(
    folder: Path, direction: str, journal: bool, prune_from_epoch: int | None = 2
) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = storage_path(folder, journal)
    storage: optuna.storages.BaseStorage
    if journal:
        storage = JournalStorage(JournalFileBackend(str(path)))
    else:
        storage = RDBStorage(f"sqlite:///{path.resolve()}")
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        direction=direction,
        load_if_exists=True,
        sampler=sampler_for(0),
        pruner=pruner(prune_from_epoch),
    )


def pruner(prune_from_epoch: int | None) -> optuna.pruners.BasePruner:
    """A trial is pruned when its epoch's seed mean is worse than the median of the earlier
    trials at that epoch, once two trials finished, from epoch `prune_from_epoch` on (the
    reports are steps 1, 2, ...; Optuna skips steps below n_warmup_steps)."""
    if prune_from_epoch is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=prune_from_epoch)


def sampler_for(counted: int, worker: int | None = None) -> optuna.samplers.BaseSampler:
    """The sampler for the next trial. Workers asking at the same count would propose the same
    point and collide on its run folders, so each draws from its own stream (`worker`: its
    SLURM task, or its PID); a worker's proposals are therefore not reproducible."""
    seed = SAMPLER_SEED + counted + (0 if worker is None else 1_000_003 * (worker + 1))
    return optuna.samplers.TPESampler(seed=seed % 2**32, n_startup_trials=STARTUP_TRIALS)


def worker_number() -> int:
    """This worker's number: its SLURM array task or process id, else its PID."""
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return os.getpid()


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count toward TRIALS: finished, and not failed by an interruption."""
    return [
        trial
        for trial in study.get_trials(deepcopy=False, states=FINISHED)
        if not trial.user_attrs.get(INTERRUPTED)
    ]


def hold_to(study: optuna.Study, signature: dict[str, Any], where: Path) -> None:
    """A new study records what its trials score; an existing one must be continued with the
    same (another space, metric, config or set of tuning seeds would mix incomparable scores
    in one study): refused in one line naming the first difference, nothing written."""
    recorded = study.user_attrs.get(SIGNATURE)
    if recorded is None:
        study.set_user_attr(SIGNATURE, signature)
        return
    for key, value in signature.items():
        if recorded.get(key) != value:
            raise UserError(
                f"{where} holds a sweep with another {key.replace('_', ' ')} "
                f"({recorded.get(key)!r}, asked {value!r}); use another NAME or OUTPUT_DIR"
            )


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Trials a killed sweep left RUNNING: marked failed-by-interruption and enqueued again
    with their parameters (the caller holds the folder, so none is really running). Their
    numbers."""
    left = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in left:
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if set(trial.params) == set(trial.distributions) and trial.params:
            study.enqueue_trial(trial.params, user_attrs={"resumes_trial": trial.number})
        # else: killed between the trial's creation and its parameters: nothing ran yet,
        # and the next proposal is drawn as it would have been (the sampler's seed counts
        # finished trials only)
    return [trial.number for trial in left]
