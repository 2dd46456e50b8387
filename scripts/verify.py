"""Certify a config: `make verify [CONFIG=..] [ARGS=..] [SEED=..] [PROFILE=debug] [QUICK=1]`.

Runs the job a few times under changed conditions and compares the runs bitwise: per-step losses
and every tensor of the final checkpoint (weights, buffers, optimizer state, every rank's RNG
state). The matrix, each row a guarantee the template makes and a fork's data or model can break:

| guarantee                    | runs compared                                                  |
|------------------------------|----------------------------------------------------------------|
| same seed twice              | 1 process, twice                                               |
| workers do not matter        | the first, against one loading with N DataLoader workers       |
| resume equals uninterrupted  | the first, against one stopped half-way and `--resume auto`    |
| 2 processes twice            | NPROC=2, twice                                                 |
| world-size invariant         | the first, against NPROC=2 (only when the config turns the mode on) |

It prints one table (guarantee, result, first divergence: step, tensor, rank) and exits 1 on
any difference. The job is cut to `--steps` optimizer steps (VERIFY_STEPS, default 30) to keep
it short; `--quick` (QUICK=1) runs only the first row, `--only WORD` (ONLY=resume) the rows
whose guarantee holds that word.

    python -m scripts.verify [--steps N] [--workers N] [--quick] [--only WORD] [--workdir DIR]
                           [--entry train.py] -- <train.py flags and key=value overrides>
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from configs import load_config, parse_args
from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from runtime.checkpoint.contents import load_last
from runtime.provenance import describe_machine
from runtime.rundir import RunDirectory, find_one_run
from tools.launch import train_command, train_subprocess


@dataclass(frozen=True)
class Run:
    """One training of the matrix: its name, processes and extra overrides."""

    name: str
    nproc: int = 1
    overrides: tuple[str, ...] = ()
    stop_half_way: bool = False


@dataclass(frozen=True)
class Row:
    guarantee: str
    first: Run
    second: Run
    usual_causes: str  # printed under the row when it diverges


# What usually breaks each guarantee in a fork, and what to use instead: printed under a
# DIVERGED row, so a user knows where to look first.
SAME_SEED = (
    "randomness outside the seed plan: os.urandom, time- or PID-based seeds, a library's own "
    "RNG (albumentations outside data.augment), an op without a deterministic kernel (the eval "
    "profile records them). Draw from the run's streams: torch's global RNG inside the model, "
    "seeding.SampleRandomness in a dataset"
)
WORKERS = (
    "a dataset that draws from the global random/numpy RNG or keeps state across samples (a "
    "cache, a counter) in __getitem__: each worker holds its own copy. Draw per sample "
    "(seeding.SampleRandomness), keep __getitem__ a function of the sample"
)
RESUME = (
    "state outside state_dict: a plain attribute (self.running_mean = ...) instead of "
    "register_buffer, a module global, a sampler or RNG of your own. Keep it in a buffer "
    "(register_buffer) or a parameter, and draw from the seed plan's streams, which the "
    "checkpoint restores"
)
TWO_PROCESSES = (
    "a per-rank value seeded from LOCAL_RANK, the PID or the clock, or one rank reading "
    "another's file: use the global rank (RANK) and the seed plan"
)
INVARIANT = (
    "something that sees the per-rank batch as a whole (a batch statistic other than "
    "BatchNorm's, a loss normalised per rank) or a random draw outside the micro-batch stream"
)


class Verifier:
    def __init__(self, flags: list[str], steps: int, entry: str, workdir: Path) -> None:
        self.flags = flags
        self.steps = steps
        self.entry = entry
        self.workdir = workdir
        self.done: dict[Run, RunDirectory] = {}

    def run(self, run: Run) -> RunDirectory:
        if run in self.done:
            return self.done[run]
        output = self.workdir / run.name.replace(" ", "-")
        base = [*self.flags, "trainer.log_every_steps=1", *run.overrides]
        if run.stop_half_way:
            self._train(run, output, [*base, f"trainer.max_steps={max(1, self.steps // 2)}"])
            self._train(run, output, [*base, f"trainer.max_steps={self.steps}", "--resume", "auto"])
        else:
            self._train(run, output, [*base, f"trainer.max_steps={self.steps}"])
        self.done[run] = find_one_run(output)
        return self.done[run]

    def _train(self, run: Run, output: Path, flags: list[str]) -> None:
        command = train_command([*flags, "--output-dir", str(output)], run.nproc, self.entry)
        print(f"verify: {run.name}: {' '.join(command[1:])}", flush=True)
        done = train_subprocess(flags, output, nproc=run.nproc, entry=self.entry)
        if done.returncode != 0:
            print(done.tail(), file=sys.stderr)
            raise UserError(f"{run.name} failed with exit code {done.returncode}")


def step_losses(run_dir: RunDirectory) -> dict[int, float]:
    return {record["step"]: record["loss"] for record in run_dir.read_metrics("step")}


def first_loss_difference(first: dict[int, float], second: dict[int, float]) -> str | None:
    for step in sorted(set(first) | set(second)):
        if first.get(step) != second.get(step):
            return f"step {step}: loss {first.get(step)!r} vs {second.get(step)!r}"
    return None


def tensors(state: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a checkpoint, named: model.<name>, optimizer.state.<i>.<key>,
    rng[rank 1].torch_cpu, ..."""
    if isinstance(state, dict):
        for key in sorted(state, key=str):
            yield from tensors(state[key], f"{path}.{key}" if path else str(key))
    elif isinstance(state, list | tuple) and path.split(".")[-1] in ("rng", "epoch_totals"):
        for rank, value in enumerate(state):
            yield from tensors(value, f"{path}[rank {rank}]")
    elif isinstance(state, list | tuple):
        for index, value in enumerate(state):
            yield from tensors(value, f"{path}[{index}]")
    else:
        yield path, state


# What differs between runs that computed the same thing, and is not a result.
NOT_COMPARED = ("fingerprint", "seeds", "config", "versions", "world_size", "replicas")


# The weights first, then what produced them: the state a user looks at first.
_ORDER = ("model", "ema", "optimizer", "rng", "epoch_totals", "scheduler", "scaler")


def _reading_order(name: str) -> tuple[int, str]:
    head = name.split(".")[0].split("[")[0]
    return (_ORDER.index(head) if head in _ORDER else len(_ORDER), name)


def first_tensor_difference(first: dict[str, Any], second: dict[str, Any]) -> str | None:
    a = {k: v for k, v in tensors(first) if not k.startswith(NOT_COMPARED)}
    b = {k: v for k, v in tensors(second) if not k.startswith(NOT_COMPARED)}
    for name in sorted(set(a) | set(b), key=_reading_order):
        x, y = a.get(name), b.get(name)
        if torch.is_tensor(x) and torch.is_tensor(y):
            if x.shape != y.shape or x.dtype != y.dtype:
                return f"{name} (shape or dtype differs)"
            if not torch.equal(x, y):
                if x.is_floating_point():
                    gap = (x.double() - y.double()).abs().max().item()
                    return f"{name} (max abs difference {gap:.3e})"
                differing = int((x != y).sum())
                return f"{name} ({differing} of {x.numel()} values differ)"
        elif x != y:
            return f"{name} ({x!r} vs {y!r})"
    return None


def compare(first: RunDirectory, second: RunDirectory, same_world: bool) -> str | None:
    """The first divergence of two runs (None: identical). Across world sizes (the invariant
    mode) the ranks' RNG states are not results: each rank reseeds its micro-batches' dropout
    and ends where its own last micro-batch left the stream; the running sums are the same on
    every rank, so rank 0's are compared."""
    loss = first_loss_difference(step_losses(first), step_losses(second))
    states = [load_last(run) for run in (first, second)]
    if not same_world:
        for state in states:
            state["rng"], state["epoch_totals"] = [], state["epoch_totals"][:1]
    tensor = first_tensor_difference(*states)
    found = [loss, f"final checkpoint: {tensor}" if tensor else None]
    return "; ".join(part for part in found if part) or None


def matrix(invariant: bool, workers: int, quick: bool) -> list[Row]:
    alone = Run("1 process")
    rows = [Row("same seed twice", alone, Run("1 process, again"), SAME_SEED)]
    if quick:
        return rows
    rows += [
        Row(
            f"workers do not matter (0 vs {workers})",
            alone,
            Run(f"{workers} workers", overrides=(f"data.num_workers={workers}",)),
            WORKERS,
        ),
        Row(
            "resume equals uninterrupted",
            alone,
            Run("stopped and resumed", stop_half_way=True),
            RESUME,
        ),
        Row(
            "2 processes twice",
            Run("2 processes", nproc=2),
            Run("2 processes, again", nproc=2),
            TWO_PROCESSES,
        ),
    ]
    if invariant:
        rows.append(
            Row("world-size invariant (1 vs 2)", alone, Run("2 processes", nproc=2), INVARIANT)
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.verify", description=__doc__.split("\n")[0]
    )
    # argparse passes a string default through `type`, so a bad VERIFY_STEPS is a one-line error.
    parser.add_argument("--steps", type=int, default=os.environ.get("VERIFY_STEPS", "30"))
    parser.add_argument("--workers", type=int, default=2, help="the workers row's N")
    parser.add_argument("--quick", action="store_true", help="only: same seed twice")
    parser.add_argument("--only", default=None, help="only the rows whose guarantee holds WORD")
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--entry", default="train.py", help=argparse.SUPPRESS)
    parser.add_argument("train_flags", nargs=argparse.REMAINDER)
    arguments = parser.parse_args()
    if arguments.steps < 2:
        raise UserError("--steps (VERIFY_STEPS) must be at least 2: a resume needs a half-way")
    flags = [flag for flag in arguments.train_flags if flag != "--"]
    parsed = parse_args(flags)  # the same checks as train.py, before anything runs
    if arguments.entry == "train.py":
        config = load_config(parsed.config, parsed.profile, parsed.seed, parsed.overrides)
        name, profile, invariant = config.name, config.profile, config.trainer.world_size_invariant
    else:  # another entry may register its own datasets and models: its runs check the config
        name, profile = Path(parsed.config).stem, parsed.profile or "debug"
        invariant = "trainer.world_size_invariant=true" in parsed.overrides
    rows = matrix(invariant, arguments.workers, arguments.quick)
    if arguments.only:
        rows = [row for row in rows if arguments.only in row.guarantee]
        if not rows:
            names = ", ".join(row.guarantee for row in matrix(invariant, arguments.workers, False))
            raise UserError(f"--only {arguments.only!r} names no row of the matrix: {names}")
    workdir = Path(arguments.workdir or tempfile.mkdtemp(prefix="verify-"))
    verifier = Verifier(flags, arguments.steps, arguments.entry, workdir)
    started = time.perf_counter()
    results: list[tuple[Row, str | None]] = []
    try:
        for row in rows:
            first, second = verifier.run(row.first), verifier.run(row.second)
            same_world = row.first.nproc == row.second.nproc
            results.append((row, compare(first, second, same_world)))
        manifest = next(iter(verifier.done.values())).read_manifest() or {}
    finally:
        if arguments.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, name, profile, arguments.steps, time.perf_counter() - started)
    if any(difference for _, difference in results):
        return 1
    print(
        f"identical on this hardware and software ({describe_machine(manifest.get('machine'))}; "
        f"torch {manifest.get('versions', {}).get('torch')}): another CPU instruction set, thread "
        "count, GPU or library version computes other bits, each as reproducible there"
    )
    return 0


def print_table(
    results: list[tuple[Row, str | None]], name: str, profile: str, steps: int, seconds: float
) -> None:
    width = max(len(row.guarantee) for row, _ in results)
    print(f"\nverify: config {name}, profile {profile}, {steps} steps per run, {seconds:.0f} s")
    print(f"{'guarantee':<{width}}  result     first divergence")
    for row, difference in results:
        verdict = "IDENTICAL" if difference is None else "DIVERGED"
        print(f"{row.guarantee:<{width}}  {verdict:<9}  {difference or '-'}")
        if difference is not None:
            print(f"{'':<{width}}  usually: {row.usual_causes}")
    failed = sum(difference is not None for _, difference in results)
    print("all identical" if not failed else f"{failed} guarantee(s) broken")


if __name__ == "__main__":
    run_reporting_user_errors(main)
