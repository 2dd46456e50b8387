"""Multi-seed benchmark: `make benchmark SEEDS="0 1 2 3 4" [PROFILE=eval] [JOBS=2] [NPROC=..]`.

    python -m tools.benchmark --seeds 0 1 2 [--profile eval] [--config PATH] [--output-dir DIR]
                               [--jobs N] [--nproc N] [--entry train.py] [-- key=value ...]

Each seed is a normal run in its normal run directory; finished seeds are reused, interrupted ones
resume from their checkpoint, a failing seed is reported without losing the others. The report
(`report.json`, `report.md`, `curves.png`) lands in `<output-dir>/<config-name>/<profile>/benchmark/`;
`tensorboard --logdir <output-dir>/<config-name>/<profile>` shows every seed as its own run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from configs import Config, load_config, parse_seed
from engine.determinism import PROFILES
from engine.errors import UserError, run_reporting_user_errors
from engine.provenance import REPO_ROOT
from engine.rundir import RunDirectory, benchmark_directory, write_json
from tools.aggregate import aggregate, format_summary
from tools.launch import launch_environment, local_launcher

METRICS = ("val_acc", "val_loss", "best_val_acc")


@dataclass(frozen=True)
class SeedJob:
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


def command_for(job: SeedJob, arguments: argparse.Namespace, overrides: list[str]) -> list[str]:
    launcher = local_launcher(arguments.nproc)
    command = [
        *launcher,
        arguments.entry,
        "--config",
        arguments.config,
        "--profile",
        arguments.profile,
        "--seed",
        str(job.seed),
        "--output-dir",
        arguments.output_dir,
        *overrides,
    ]
    return command + (["--resume", "auto"] if job.resume else [])


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
        errors = [line for line in lines if line.startswith("error:")]
        result["error"] = (errors or lines or [f"exit code {returncode}"])[-1][:300]
    return result


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.started = time.perf_counter()
        self.lock = threading.Lock()

    def say(self, message: str) -> None:
        with self.lock:
            print(message, flush=True)

    def finish(self, result: dict[str, Any]) -> None:
        with self.lock:
            self.done += 1
            self.failed += result["status"] == "failed"
            elapsed = time.perf_counter() - self.started
            if result["status"] == "completed":
                line = (
                    f"[seed {result['seed']}] completed: val_acc {result['metrics']['val_acc']:.4f}"
                )
                line += " (reused)" if result["reused"] else f" in {result['wall_time_s']:.1f}s"
            else:
                line = f"[seed {result['seed']}] FAILED: {result['error']} (log: {result['log']})"
            print(line, flush=True)
            print(
                f"progress: {self.done}/{self.total} seeds done, {self.failed} failed, {elapsed:.0f}s elapsed",
                flush=True,
            )


def run_all(
    jobs: list[SeedJob], arguments: argparse.Namespace, overrides: list[str], progress: Progress
) -> list[dict[str, Any]]:
    def run_one(job: SeedJob) -> dict[str, Any]:
        progress.say(
            f"[seed {job.seed}] {'resuming' if job.resume else 'starting'} -> {job.run_dir} (log: {job.log})"
        )
        with job.log.open("w") as log:
            done = subprocess.run(
                command_for(job, arguments, overrides),
                cwd=REPO_ROOT,
                env=job.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        result = collect(job.seed, job.run_dir, job.log, done.returncode, reused=False)
        progress.finish(result)
        return result

    with ThreadPoolExecutor(max_workers=arguments.jobs) as pool:
        return list(pool.map(run_one, jobs))


def write_markdown(
    path: Path,
    config: Config,
    results: list[dict[str, Any]],
    summary: dict[str, Any],
    context: dict[str, Any],
) -> None:
    failed = [r for r in results if r["status"] == "failed"]
    lines = [
        f"# Benchmark: {config.name}, profile {config.profile}, {len(results)} seed(s)",
        "",
        f"- config: `{context['config_path']}` (resolved in each run's config.yaml); overrides: `{' '.join(context['overrides']) or 'none'}`",
        f"- determinism: {context['verdict']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in context['versions'].items())}",
        f"- processes per run: {context['nproc']}; TensorBoard: `tensorboard --logdir {context['tb_root']}`",
        "- aggregate: mean ± sample std (ddof=1) [95 % Student-t confidence interval]",
        "",
        "| seed | status | val_acc | val_loss | best val_acc (epoch) | wall time (s) | weights sha256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["status"] == "completed":
            m = r["metrics"]
            lines.append(
                f"| {r['seed']} | completed | {m['val_acc']:.4f} | {m['val_loss']:.4f} | "
                f"{r['best_val_acc']:.4f} ({r['best_epoch']}) | {r['wall_time_s']:.1f} | `{r['weights_sha256'][:12]}` |"
            )
        else:
            lines.append(f"| {r['seed']} | **failed**: {r['error']} | | | | | |")
    lines += ["", "| metric | n | mean ± std [95 % CI] |", "|---|---|---|"]
    lines += [f"| {metric} | {s['n']} | {format_summary(s)} |" for metric, s in summary.items()]
    if failed:
        lines += [
            "",
            f"**{len(failed)} seed(s) failed and are not in the aggregate:** {', '.join(str(r['seed']) for r in failed)}.",
        ]
    path.write_text("\n".join(lines) + "\n")


def plot_curves(path: Path, results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    curves = {
        r["seed"]: epoch_curves(RunDirectory(Path(r["run_dir"])))
        for r in results
        if r["status"] == "completed"
    }
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for axis, metric, title in (
        (axes[0], "val_acc", "validation accuracy"),
        (axes[1], "val_loss", "validation loss"),
    ):
        lengths = [len(c) for c in curves.values() if c]
        for seed, curve in curves.items():
            axis.plot(
                [p["epoch"] for p in curve],
                [p[metric] for p in curve],
                linewidth=0.8,
                alpha=0.6,
                label=f"seed {seed}",
            )
        if lengths:
            common = min(lengths)
            values = np.array([[p[metric] for p in c[:common]] for c in curves.values() if c])
            epochs = [p["epoch"] for p in next(iter(curves.values()))[:common]]
            mean, std = (
                values.mean(axis=0),
                values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(common),
            )
            axis.plot(epochs, mean, color="black", linewidth=2, label="mean")
            axis.fill_between(
                epochs, mean - std, mean + std, color="gray", alpha=0.3, label="± std"
            )
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.benchmark", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", nargs="*", default=[])
    parser.add_argument("--profile", choices=PROFILES, default="eval")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--entry", default="train.py", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs=argparse.REMAINDER)
    arguments = parser.parse_args()
    seeds = parse_seeds(" ".join(arguments.seeds).split())
    if arguments.jobs < 1 or arguments.nproc < 1:
        raise UserError("--jobs and --nproc must be at least 1")
    overrides = [item for item in arguments.overrides if item != "--"]
    config = load_config(arguments.config, arguments.profile, seeds[0], overrides)  # validates once
    bench_dir = benchmark_directory(arguments.output_dir, config.name, config.profile)
    (bench_dir / "logs").mkdir(parents=True, exist_ok=True)

    progress = Progress(len(seeds))
    reused, pending = [], []
    for seed in seeds:
        run_dir = RunDirectory.of(arguments.output_dir, config.name, config.profile, seed)
        log = bench_dir / "logs" / f"seed{seed}.log"
        if run_dir.is_completed():
            result = collect(seed, run_dir, log, None, reused=True)
            progress.finish(result)
            reused.append(result)
        else:
            env = job_environment(len(pending), arguments.jobs, arguments.nproc)
            pending.append(SeedJob(seed, run_dir, log, resume=run_dir.holds_a_run(), env=env))
    fresh = run_all(pending, arguments, overrides, progress)
    by_seed = {r["seed"]: r for r in [*reused, *fresh]}
    results = [by_seed[seed] for seed in seeds]

    summary = aggregate(results, METRICS)
    first = next((r for r in results if r["status"] == "completed"), None)
    manifest = (RunDirectory(Path(first["run_dir"])).read_manifest() or {}) if first else {}
    context = {
        "config_path": arguments.config,
        "overrides": overrides,
        "nproc": arguments.nproc,
        "verdict": manifest.get("determinism", {}).get("verdict", "n/a"),
        "versions": manifest.get("versions", {}),
        "tb_root": str(bench_dir.parent),
    }
    report = {
        "config": config.name,
        "profile": config.profile,
        "seeds": results,
        "aggregate": summary,
        "aggregate_method": "sample std (ddof=1); 95 % CI = mean ± t(0.975, n-1)·std/√n over completed seeds",
        "failed_seeds": [r["seed"] for r in results if r["status"] == "failed"],
        **context,
    }
    write_json(bench_dir / "report.json", report)
    write_markdown(bench_dir / "report.md", config, results, summary, context)
    plot_curves(bench_dir / "curves.png", results)
    print((bench_dir / "report.md").read_text())
    print(f"report: {bench_dir}/report.md, report.json, curves.png")
    return 1 if report["failed_seeds"] else 0


if __name__ == "__main__":
    run_reporting_user_errors(main)
