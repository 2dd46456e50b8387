"""Running one configuration over several seeds: the runner behind `make benchmark` and
`make compare`.

Each seed is a normal train.py run in its normal run directory. A seed whose run completed is
reused, not retrained; one that holds an interrupted run resumes from its checkpoint; one that
fails is reported with its error and does not stop the others. Two launchers run them: the local
pool (the default), where `jobs` runs go at once (on CPU the cores are divided between them, on
GPUs they are spread over the visible devices), and SLURM (`launcher="slurm"`), one job array
per command (tools/slurm_array.py).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from configs import Config, parse_seed
from configs.keys import differing_keys, keys_in_role
from foundation.errors import UserError
from runtime.rundir import RunDirectory
from tools.launch import launch_environment, train_command, train_subprocess
from tools.slurm_array import SlurmArrays, Task, abandoned, check_reachable, run_tasks
from training.determinism import PROFILES

METRICS = ("val_acc", "val_loss", "best_val_acc")


@dataclass(frozen=True)
class Launch:
    """How every run of a benchmark or a comparison is started."""

    profile: str
    jobs: int = 1
    nproc: int = 1
    entry: str = "train.py"
    launcher: str = "local"  # or "slurm"
    sbatch: str = ""  # options passed to sbatch, as one string
    wait: bool = True  # slurm: follow the array until every task ended


@dataclass(frozen=True)
class Variant:
    """One configuration: a config file plus overrides, its runs under `output_dir`."""

    label: str  # printed before each progress line ("" for a plain benchmark)
    config_path: str
    overrides: tuple[str, ...]
    output_dir: str
    config: Config  # resolved, with the first seed

    @property
    def config_name(self) -> str:
        return self.config.name

    def run_dir(self, profile: str, seed: int) -> RunDirectory:
        return RunDirectory.of(self.output_dir, self.config_name, profile, seed)


def refuse_other_configurations(variants: list[Variant], seeds: list[int], profile: str) -> None:
    """A run directory that holds a run of another configuration is refused, not reused or
    resumed: its results would be reported as this configuration's. Only keys whose role is
    `runtime` (foundation/section.py) may differ; a finished run with other stopping criteria
    is another result too."""
    for variant in variants:
        for seed in seeds:
            run = variant.run_dir(profile, seed)
            saved = run.read_config()
            if saved is None:
                continue
            differences = differing_keys(saved, variant.config)
            for key in keys_in_role(variant.config, list(differences), "computation", "stopping"):
                found, asked = differences[key]
                raise UserError(
                    f"{run} holds a run of another configuration ({key}: "
                    f"{found!r}, asked {asked!r}); use another --output-dir"
                )


def first_completed_manifest(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest of the first completed run (versions, determinism verdict), or {}."""
    first = next((r for r in results if r["status"] == "completed"), None)
    return (RunDirectory(Path(first["run_dir"])).read_manifest() or {}) if first else {}


@dataclass(frozen=True)
class SeedJob:
    variant: Variant
    seed: int
    run_dir: RunDirectory
    log: Path
    resume: bool
    env: dict[str, str]


def parse_seeds(texts: list[str]) -> list[int]:
    if not texts:
        raise UserError('no seeds given: use SEEDS="0 1 2" (or --seeds 0 1 2)')
    seeds = []
    for text in texts:
        try:
            seeds.append(parse_seed(text))
        except UserError:
            raise UserError(f"seed {text!r} is not an integer in [0, 2**64)") from None
    duplicates = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if duplicates:
        raise UserError(f"duplicate seed(s): {', '.join(map(str, duplicates))}")
    return seeds


def add_seed_run_arguments(parser: argparse.ArgumentParser, output_dir: str) -> None:
    """The options every multi-seed command takes (benchmark, compare)."""
    parser.add_argument("--seeds", nargs="*", default=[])
    parser.add_argument("--profile", choices=PROFILES, default="eval")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--output-dir", default=output_dir)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--entry", default="train.py", help=argparse.SUPPRESS)
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local")
    parser.add_argument("--sbatch", default="", help='options for sbatch, e.g. "--partition=gpu"')
    parser.add_argument(
        "--no-wait", dest="wait", action="store_false", help="slurm: submit and return at once"
    )
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="key=value for every run")


def seeds_and_launch(arguments: argparse.Namespace) -> tuple[list[int], Launch, tuple[str, ...]]:
    """Checked before anything runs: the seeds, how runs start, the common overrides."""
    seeds = parse_seeds(" ".join(arguments.seeds).split())
    if arguments.jobs < 1 or arguments.nproc < 1:
        raise UserError("--jobs and --nproc must be at least 1")
    launch = Launch(
        arguments.profile,
        arguments.jobs,
        arguments.nproc,
        arguments.entry,
        arguments.launcher,
        arguments.sbatch,
        arguments.wait,
    )
    if launch.launcher == "slurm":
        check_reachable()
    return seeds, launch, tuple(item for item in arguments.overrides if item != "--")


def job_environment(slot: int, jobs: int, nproc: int) -> dict[str, str]:
    """Divide the CPU threads between concurrent runs; spread runs over the visible GPUs."""
    env = launch_environment()
    if jobs > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // (jobs * nproc)))
        gpus = torch.cuda.device_count()
        if gpus:
            first = (slot * nproc) % gpus
            env["CUDA_VISIBLE_DEVICES"] = ",".join(
                str((first + i) % gpus) for i in range(min(nproc, gpus))
            )
    return env


def flags_for(job: SeedJob, launch: Launch) -> list[str]:
    """train.py's flags for one seed, without its output folder."""
    variant = job.variant
    flags = [
        "--config",
        variant.config_path,
        "--profile",
        launch.profile,
        "--seed",
        str(job.seed),
        *variant.overrides,
    ]
    return flags + (["--resume", "auto"] if job.resume else [])


def command_for(job: SeedJob, launch: Launch) -> list[str]:
    """The whole command line (what a SLURM task runs)."""
    flags = [*flags_for(job, launch), "--output-dir", job.variant.output_dir]
    return train_command(flags, launch.nproc, launch.entry)


def epoch_curves(run_dir: RunDirectory) -> list[dict[str, Any]]:
    return [
        {"epoch": r["epoch"], "val_acc": r["val_acc"], "val_loss": r["val_loss"]}
        for r in run_dir.read_metrics("epoch")
    ]


def best_epoch(run_dir: RunDirectory) -> tuple[float | None, int | None]:
    curve = epoch_curves(run_dir)
    if not curve:
        return None, None
    best = max(curve, key=lambda point: point["val_acc"])
    return best["val_acc"], best["epoch"]


def collect(
    seed: int, run_dir: RunDirectory, log: Path, returncode: int | None, reused: bool
) -> dict[str, Any]:
    manifest = run_dir.read_manifest() or {}
    best, best_at = best_epoch(run_dir)
    completed = returncode in (0, None) and manifest.get("status") == "completed"
    result: dict[str, Any] = {
        "seed": seed,
        "status": "completed" if completed else "failed",
        "reused": reused,
        "final_metrics": manifest.get("final_metrics"),
        "best_val_acc": best,
        "best_epoch": best_at,
        "wall_time_s": manifest.get("wall_time_s"),
        "weights_sha256": manifest.get("final_weights_sha256"),
        "run_dir": str(run_dir),
        "log": str(log),
    }
    if completed:
        result["metrics"] = {**manifest["final_metrics"], "best_val_acc": best}
    else:
        lines = log.read_text().strip().splitlines() if log.is_file() else []
        errors = [line for line in lines if line.startswith(("error:", "stopped by "))]
        result["error"] = (errors or lines or [f"exit code {returncode}"])[-1][:300]
    return result


class Progress:
    """Progress lines, and what a watcher of the runs needs: which runs are under way now
    (`running`: (label, seed) pairs) and a way to start no more (`cancel`), as a sweep's
    pruner does (tools/sweep/objective.py)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.started = time.perf_counter()
        self.lock = threading.Lock()
        self.running: set[tuple[str, int]] = set()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Start no further run; those under way go on (their caller stops them)."""
        self.cancelled.set()

    def say(self, message: str) -> None:
        with self.lock:
            print(message, flush=True)

    def finish(self, label: str, result: dict[str, Any]) -> None:
        with self.lock:
            self.running.discard((label.strip(), result["seed"]))
            self.done += 1
            self.failed += result["status"] == "failed"
            elapsed = time.perf_counter() - self.started
            prefix = f"[{label}seed {result['seed']}]"
            if result["status"] == "completed":
                line = f"{prefix} completed: val_acc {result['metrics']['val_acc']:.4f}"
                line += " (reused)" if result["reused"] else f" in {result['wall_time_s']:.1f}s"
            else:
                line = f"{prefix} FAILED: {result['error']} (log: {result['log']})"
            print(line, flush=True)
            print(
                f"progress: {self.done}/{self.total} runs done, {self.failed} failed, "
                f"{elapsed:.0f}s elapsed",
                flush=True,
            )


def run_variants(
    variants: list[Variant],
    seeds: list[int],
    launch: Launch,
    log_dir: Path,
    progress: Progress | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every (variant, seed) that is not already complete; results per variant label, in seed
    order. Logs go to `log_dir/<label>seed<k>.log`. A caller that runs several rounds (the
    sequential comparison, a sweep) passes one `progress` for all of them: its count grows by
    this round's runs."""
    refuse_other_configurations(variants, seeds, launch.profile)
    log_dir.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = Progress(0)
    progress.total += len(variants) * len(seeds)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    pending: list[SeedJob] = []
    for variant in variants:
        for seed in seeds:
            run_dir = variant.run_dir(launch.profile, seed)
            log = log_dir / f"{variant.label}seed{seed}.log"
            if run_dir.is_completed():
                result = collect(seed, run_dir, log, None, reused=True)
                progress.finish(_prefix(variant), result)
                results[(variant.label, seed)] = result
            else:
                env = job_environment(len(pending), launch.jobs, launch.nproc)
                resume = run_dir.holds_a_run()
                pending.append(SeedJob(variant, seed, run_dir, log, resume, env))

    if launch.launcher == "slurm":
        results.update(_run_on_slurm(pending, launch, log_dir, progress))
    else:
        results.update(_run_locally(pending, launch, progress))
    return {
        variant.label: [results[(variant.label, seed)] for seed in seeds] for variant in variants
    }


def _run_locally(
    pending: list[SeedJob], launch: Launch, progress: Progress
) -> dict[tuple[str, int], dict[str, Any]]:
    def run_one(job: SeedJob) -> dict[str, Any]:
        if progress.cancelled.is_set():
            return {**_not_run(job), "status": "cancelled", "error": "not started (cancelled)"}
        action = "resuming" if job.resume else "starting"
        with progress.lock:
            progress.running.add((job.variant.label, job.seed))
        progress.say(
            f"[{_prefix(job.variant)}seed {job.seed}] {action} -> {job.run_dir} (log: {job.log})"
        )
        done = train_subprocess(
            flags_for(job, launch),
            job.variant.output_dir,
            nproc=launch.nproc,
            entry=launch.entry,
            env=job.env,
            log=job.log,
        )
        result = collect(job.seed, job.run_dir, job.log, done.returncode, reused=False)
        progress.finish(_prefix(job.variant), result)
        return result

    with ThreadPoolExecutor(max_workers=launch.jobs) as pool:
        return {
            (job.variant.label, job.seed): result
            for job, result in zip(pending, pool.map(run_one, pending), strict=True)
        }


def _run_on_slurm(
    pending: list[SeedJob], launch: Launch, log_dir: Path, progress: Progress
) -> dict[tuple[str, int], dict[str, Any]]:
    """The same commands as the local pool, as one job array; the results read the same way."""
    if not pending:
        return {}
    jobs = {(job.variant.label, job.seed): job for job in pending}
    name = f"{pending[0].variant.config_name}-seeds"
    arrays = SlurmArrays(log_dir, launch.sbatch, launch.nproc, name)
    tasks = [Task(key, job.run_dir, job.log, command_for(job, launch)) for key, job in jobs.items()]
    results: dict[tuple[str, int], dict[str, Any]] = {}

    def finished(task: Task, task_id: str, state: str | None) -> None:
        job = jobs[task.key]
        result = collect(job.seed, job.run_dir, job.log, None, reused=False)
        if result["status"] != "completed":
            result["error"] = f"{abandoned(job.run_dir, state, task_id)}: {result['error']}"
        progress.finish(_prefix(job.variant), result)
        results[task.key] = result

    for task in run_tasks(arrays, tasks, launch.wait, progress.say, finished):
        job = jobs[task.key]
        results[task.key] = {**_not_run(job), "error": "still queued or running on SLURM"}
    return results


def _not_run(job: SeedJob) -> dict[str, Any]:
    return {
        "seed": job.seed,
        "status": "pending",
        "reused": False,
        "run_dir": str(job.run_dir),
        "log": str(job.log),
    }


def _prefix(variant: Variant) -> str:
    return f"{variant.label} " if variant.label else ""
