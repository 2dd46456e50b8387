"""Tuning that respects seeds: `make sweep SPACE=configs/sweeps/NAME.yaml TRIALS=N
TUNE_SEEDS="0 1 2" [HOLDOUT_SEEDS="100 101 102"] [JOBS=k] [SLURM=1] [SEQUENTIAL=1]`.

    python -m scripts.sweep --space configs/sweeps/tiny.yaml --trials 6 --seeds 0 1
                            [--held-out-seeds 100 101 102] [--profile eval] [--config PATH]
                            [--output-dir runs/sweeps] [--jobs N] [--launcher slurm]
                            [--journal] [--sequential] [-- key=value ...]

A trial is the mean over the tuning seeds of the space's metric, each seed a train.py run
through the multi-seed runner (tools/seed_runs.py); Optuna (TPE, seeded) proposes the points
and its median pruner stops a trial whose per-epoch seed mean falls behind (tools/sweep/). The
study is `<output-dir>/<space name>/study.db` (SQLite; `--journal`, implied by SLURM, uses
Optuna's journal file for workers on a shared filesystem): the same command again goes on
where a killed sweep stopped, runs no finished trial again and resumes an interrupted one from
its checkpoints. Then the best point and the base config run on the held-out seeds through
`make compare` (tools/sweep/confirm.py), and `sweep.md` puts the tuning score and the held-out
score side by side, with `history.png`, `params.png` and `heldout.png`.

A sweep folder has one writer: a second sweep on it is refused in one line, except a declared
worker (`--worker`, one per SLURM task) that shares the journal with the others.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import optuna

from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from runtime.rundir import RunDirectory
from runtime.writer_lock import claim_run_directory
from tools.seed_runs import (
    add_seed_run_arguments,
    first_completed_manifest,
    parse_seeds,
    run_variants,
    seeds_and_launch,
)
from tools.sweep import report
from tools.sweep.confirm import confirm
from tools.sweep.objective import Sweep, direction, run_trial
from tools.sweep.space import NAME_PATTERN, load_space
from tools.sweep.study import (
    counted,
    hold_to,
    open_study,
    requeue_interrupted,
    sampler_for,
    storage_path,
    worker_number,
)

DEFAULT_HELD_OUT = ["1000", "1001", "1002", "1003", "1004"]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.sweep", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--space", required=True, help="configs/sweeps/NAME.yaml")
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--held-out-seeds", nargs="*", default=DEFAULT_HELD_OUT)
    parser.add_argument("--name", default="", help="the sweep's folder (default: the space's name)")
    parser.add_argument("--journal", action="store_true", help="the study in a journal file")
    parser.add_argument("--worker", action="store_true", help="a SLURM worker sharing the journal")
    parser.add_argument("--sequential", action="store_true", help="held-out: SEQUENTIAL=1")
    parser.add_argument("--no-confirm", dest="confirm", action="store_false")
    add_seed_run_arguments(parser, output_dir="runs/sweeps")  # --seeds: the tuning seeds
    return parser.parse_args(argv)


def checked(arguments: argparse.Namespace) -> tuple[Sweep, list[int]]:
    """Everything checked before anything is written: the space against the config, the seeds,
    the folder's name."""
    if not arguments.space:
        raise UserError("no space given: use SPACE=configs/sweeps/NAME.yaml (or --space)")
    if arguments.trials < 1:
        raise UserError("TRIALS must be at least 1")
    seeds, launch, common = seeds_and_launch(arguments)
    held_out = parse_seeds(" ".join(arguments.held_out_seeds).split())
    overlap = sorted(set(seeds) & set(held_out))
    if overlap:
        raise UserError(
            f"held-out seed(s) {', '.join(map(str, overlap))} are also tuning seeds: "
            "the confirmation needs seeds the sweep never saw"
        )
    if arguments.sequential and len(held_out) < 3:
        raise UserError("SEQUENTIAL=1 needs at least 3 held-out seeds")
    if arguments.worker and not arguments.journal:
        raise UserError("--worker shares a journal study: give --journal (SLURM=1) as well")
    name = arguments.name or Path(arguments.space).stem
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(f"sweep name {name!r}: use letters, digits and . _ - only")
    space = load_space(arguments.space, arguments.config, arguments.profile)
    folder = Path(arguments.output_dir) / name
    sweep = Sweep(space, arguments.config, seeds, launch, folder, common)
    try:
        sweep.base()  # the space's overrides with the common ones, resolved once
    except UserError as error:
        raise UserError(f"space {arguments.space}: {error}") from None
    return sweep, held_out


def claim(sweep: Sweep, arguments: argparse.Namespace) -> None:
    """One writer per sweep folder (the run directories' lock, runtime/writer_lock.py); a
    declared worker shares the journal instead. An existing study of the other kind is
    refused: one study per folder."""
    other = storage_path(sweep.folder, not arguments.journal)
    if other.exists():
        raise UserError(
            f"{sweep.folder} holds a study in {other.name}; "
            + ("drop --journal / SLURM=1" if arguments.journal else "give --journal / SLURM=1")
            + " to continue it"
        )
    if not arguments.worker:
        try:
            claim_run_directory(RunDirectory(sweep.folder))
        except UserError as error:
            raise UserError(str(error).replace("another training", "another sweep")) from None
    sweep.folder.mkdir(parents=True, exist_ok=True)


def tune(sweep: Sweep, study: optuna.Study, trials: int, worker: bool = False) -> None:
    """Trials until TRIALS count (finished ones are never run again). A worker leaves RUNNING
    trials alone: they may be another worker's, live; the sweep without WORKER, started when
    no worker runs, holds the folder and requeues what a killed worker left."""
    hold_to(study, sweep.signature(), sweep.folder)
    again = [] if worker else requeue_interrupted(study)
    if again:
        print(f"sweep: trial(s) {', '.join(map(str, again))} were interrupted: run again, resuming")
    while len(counted(study)) < trials:
        study.sampler = sampler_for(len(counted(study)), worker_number() if worker else None)
        trial = study.ask(sweep.space.params)
        params = trial.params
        print(
            f"sweep: trial {trial.number} ({len(counted(study)) + 1}/{trials}): "
            + " ".join(sweep.space.overrides_for(params)),
            flush=True,
        )
        outcome = run_trial(sweep, trial, params)
        trial.set_user_attr("runs_stopped", outcome.runs_stopped)
        trial.set_user_attr("runs_not_started", outcome.runs_not_started)
        if outcome.error:
            trial.set_user_attr("error", outcome.error)
        study.tell(trial, outcome.value, state=outcome.state)
        said = f"{outcome.value:.4f}" if outcome.value is not None else outcome.error
        print(
            f"sweep: trial {trial.number} {outcome.state.name.lower()}"
            + (
                f" after {outcome.epochs_reported} epoch report(s)"
                if outcome.state.name == "PRUNED"
                else ""
            )
            + (f": {said}" if said else ""),
            flush=True,
        )


def pruning_totals(study: optuna.Study, seeds: int) -> dict[str, int]:
    """Over every counted trial, also those of earlier invocations of the same sweep."""
    trials = counted(study)
    return {
        "runs_planned": len(trials) * seeds,
        "runs_stopped": sum(int(t.user_attrs.get("runs_stopped", 0)) for t in trials),
        "runs_not_started": sum(int(t.user_attrs.get("runs_not_started", 0)) for t in trials),
    }


def main() -> int:
    arguments = parse()
    sweep, held_out = checked(arguments)
    claim(sweep, arguments)
    started = time.perf_counter()
    study = open_study(
        sweep.folder, direction(sweep.space.metric), arguments.journal, sweep.space.prune_from_epoch
    )
    tune(sweep, study, arguments.trials, arguments.worker)
    tuning_s = time.perf_counter() - started
    if arguments.worker:
        print(f"sweep worker: {len(counted(study))} trials counted; the coordinator reports")
        return 0
    complete = [t for t in counted(study) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise UserError(f"{sweep.folder}: no trial completed; see {sweep.folder}/logs")
    best = study.best_trial
    base = run_variants([sweep.base()], sweep.seeds, sweep.launch, sweep.folder / "logs")["base"]
    base_done = [r for r in base if r["status"] == "completed"]
    base_tuning = (
        sum(float(r["metrics"][sweep.space.metric]) for r in base_done) / len(base_done)
        if len(base_done) == len(base)
        else None
    )
    confirm_code, confirmation = (0, None)
    if arguments.confirm:
        confirm_code, confirmation = confirm(
            sweep, best.user_attrs["overrides"], held_out, arguments.sequential
        )
    best_row = {
        "number": best.number,
        "value": best.value,
        "overrides": best.user_attrs["overrides"],
    }
    trials = report.trial_rows(study)
    summary: dict[str, Any] = {
        "name": sweep.folder.name,
        "folder": str(sweep.folder),
        "space": arguments.space,
        "config": arguments.config,
        "profile": arguments.profile,
        "metric": sweep.space.metric,
        "direction": direction(sweep.space.metric),
        "params": list(sweep.space.params),
        "space_kinds": {k: repr(d) for k, d in sweep.space.params.items()},
        "storage": str(storage_path(sweep.folder, arguments.journal)),
        "tuning_seeds": sweep.seeds,
        "held_out_seeds": held_out,
        "counts": {
            "counted": len(counted(study)),
            **{
                state: sum(t["state"] == state and not t["interrupted"] for t in trials)
                for state in ("COMPLETE", "PRUNED", "FAIL")
            },
            "interrupted": sum(t["interrupted"] for t in trials),
        },
        "pruning": pruning_totals(study, len(sweep.seeds)),
        "best": best_row,
        "side_by_side": report.side_by_side(
            sweep.space.metric, best_row, base_tuning, confirmation
        ),
        "trials": trials,
        "versions": first_completed_manifest(base).get("versions", {}),
        "this_invocation_s": {
            "trials": round(tuning_s, 1),
            "all": round(time.perf_counter() - started, 1),
        },
    }
    report.write(sweep.folder, summary, study)
    print((sweep.folder / "sweep.md").read_text())
    print(f"report: {sweep.folder}/sweep.md, sweep.json, history.png, params.png, heldout.png")
    return 0 if confirm_code == 0 else 1


if __name__ == "__main__":
    run_reporting_user_errors(main)
