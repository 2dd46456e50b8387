"""One trial: the mean over the tuning seeds of the chosen metric, each seed a real train.py
run through the runner `make benchmark` and `make compare` use (tools/seed_runs.py: reuse,
resume, JOBS, SLURM arrays), reported to Optuna epoch by epoch so its pruner can stop it.

What is reported at epoch e: the mean of the metric at epoch e over the seeds that reached it,
once every seed under way has reached it (seeds not started yet do not hold it back: at JOBS=1
the first seed alone decides the first reports, and a pruned trial never starts the others).
A pruned trial's runs are stopped the way a user stops one, SIGTERM to the run's writer
(runtime/writer_lock.py names its PID): every rank checkpoints, the manifest says
`interrupted`, and the same point asked again resumes them. The run folder belongs to the
point (a digest of its overrides), not to the trial number, so a trial enqueued again after a
kill finds its runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from configs import load_config
from runtime.rundir import RunDirectory
from runtime.writer_lock import current_writer
from tools.paired import higher_is_better
from tools.seed_runs import Launch, Progress, Variant, run_variants
from tools.sweep.space import Space

POLL_S = 0.2  # how often the runs' metrics are read: the pruner's latency


@dataclass(frozen=True)
class Sweep:
    """Everything a trial needs, checked before the first run."""

    space: Space
    config_path: str
    seeds: list[int]
    launch: Launch
    folder: Path
    common: tuple[str, ...]  # overrides for every run, after the space's own

    @property
    def fixed(self) -> tuple[str, ...]:
        return (*self.space.overrides, *self.common)

    def variant(self, label: str, overrides: tuple[str, ...], output_dir: Path) -> Variant:
        config = load_config(self.config_path, self.launch.profile, self.seeds[0], overrides)
        return Variant(label, self.config_path, overrides, str(output_dir), config)

    def point(self, label: str, params: dict[str, Any]) -> Variant:
        """The runs of one point of the space, in a folder named after its overrides."""
        own = self.space.overrides_for(params)
        digest = hashlib.sha256("\0".join(own).encode()).hexdigest()[:12]
        return self.variant(label, (*self.fixed, *own), self.folder / "points" / digest)

    def signature(self) -> dict[str, Any]:
        """What makes two trials' scores comparable: a study holds trials of one of these."""
        return {
            "metric": self.space.metric,
            "params": {key: repr(value) for key, value in self.space.params.items()},
            "fixed_overrides": list(self.fixed),
            "config": self.config_path,
            "profile": self.launch.profile,
            "tuning_seeds": self.seeds,
        }

    def base(self) -> Variant:
        """The config as it is (the space's fixed overrides only), on the tuning seeds."""
        return self.variant("base", self.fixed, self.folder / "base")


@dataclass
class TrialOutcome:
    state: optuna.trial.TrialState
    value: float | None
    epochs_reported: int
    runs_completed: int
    runs_stopped: int  # stopped by the pruner mid-run
    runs_not_started: int  # never started: the pruner came first
    error: str = ""


def epoch_value(run_dir: RunDirectory, metric: str) -> list[float]:
    """The metric after each epoch of one run (best_val_acc: the best val_acc so far)."""
    rows = run_dir.read_metrics("epoch")
    if metric == "best_val_acc":
        values, best = [], -math.inf
        for row in rows:
            best = max(best, float(row["val_acc"]))
            values.append(best)
        return values
    return [float(row[metric]) for row in rows]


def run_trial(sweep: Sweep, trial: optuna.Trial, params: dict[str, Any]) -> TrialOutcome:
    variant = sweep.point(f"trial{trial.number}", params)
    trial.set_user_attr("overrides", list(sweep.space.overrides_for(params)))
    trial.set_user_attr("runs", variant.output_dir)
    progress = Progress(0)
    box: dict[str, Any] = {}

    def work() -> None:
        box["results"] = run_variants(
            [variant], sweep.seeds, sweep.launch, sweep.folder / "logs", progress
        )

    worker = threading.Thread(target=work, name=f"trial{trial.number}", daemon=True)
    worker.start()
    reported = 0
    pruned = False
    signaled: set[int] = set()
    try:
        while worker.is_alive():
            worker.join(POLL_S)
            if pruned:  # a run that was starting when the trial was pruned: stop it too
                _stop_runs(sweep, variant, progress, signaled)
                continue
            for epoch, value in _new_reports(sweep, variant, progress, reported):
                trial.report(value, epoch)
                reported = epoch
                if trial.should_prune():
                    pruned = True
                    progress.cancel()
                    _stop_runs(sweep, variant, progress, signaled)
                    break
    except BaseException:
        # Ctrl-C reached the runs too (one process group): they checkpoint and end; no seed
        # may start after them while the sweep exits
        progress.cancel()
        raise
    results = box.get("results", {}).get(variant.label, [])
    completed = [r for r in results if r["status"] == "completed"]
    not_started = sum(r["status"] == "cancelled" for r in results)
    # counted from how the runs ended: a SIGTERM that came as a run finished saved nothing
    stopped = sum(_interrupted(r) for r in results) if pruned else 0
    outcome = TrialOutcome(
        optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE,
        None,
        reported,
        len(completed),
        stopped,
        not_started,
    )
    if pruned:
        return outcome
    if len(completed) < len(sweep.seeds):
        failed = next((r for r in results if r["status"] != "completed"), {})
        outcome.state = optuna.trial.TrialState.FAIL
        outcome.error = f"seed {failed.get('seed')}: {failed.get('error', 'not completed')}"
        return outcome
    values = [float(r["metrics"][sweep.space.metric]) for r in completed]
    outcome.value = sum(values) / len(values)
    return outcome


def _interrupted(result: dict[str, Any]) -> bool:
    manifest = RunDirectory(Path(result["run_dir"])).read_manifest() or {}
    return manifest.get("status") == "interrupted"


def _new_reports(
    sweep: Sweep, variant: Variant, progress: Progress, reported: int
) -> list[tuple[int, float]]:
    """(epoch, seed mean) for each epoch after `reported` that every run under way reached."""
    with progress.lock:
        running = {seed for label, seed in progress.running if label == variant.label}
    curves = {
        seed: epoch_value(variant.run_dir(sweep.launch.profile, seed), sweep.space.metric)
        for seed in sweep.seeds
    }
    reports = []
    epoch = reported + 1
    while True:
        reached = [curve[epoch - 1] for curve in curves.values() if len(curve) >= epoch]
        if not reached or any(len(curves[seed]) < epoch for seed in running):
            return reports
        reports.append((epoch, sum(reached) / len(reached)))
        epoch += 1


def _stop_runs(sweep: Sweep, variant: Variant, progress: Progress, signaled: set[int]) -> None:
    """SIGTERM each run under way that has not had it (it checkpoints: resumable). A run that
    is still starting holds no writer lock yet: it is found at a later call."""
    with progress.lock:
        running = [seed for label, seed in progress.running if label == variant.label]
    for seed in running:
        if seed in signaled:
            continue
        writer = current_writer(variant.run_dir(sweep.launch.profile, seed)) or {}
        pid = int(writer.get("pid", "0") or 0) if str(writer.get("pid", "")).isdigit() else 0
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            signaled.add(seed)


def direction(metric: str) -> str:
    return "maximize" if higher_is_better(metric) else "minimize"
