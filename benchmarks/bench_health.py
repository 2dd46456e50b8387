"""Cost of the fault checks in the training step: `make bench-health`.

    python -m benchmarks.bench_health [--steps 40] [--repeats 5] [--batch 128] [--width 16]

One process times optimizer steps of the default model on in-memory 32x32 batches, the variants
interleaved, best and median of the repeats:
- `none`: the step without the non-finite watch or the vote (the trainer before they existed);
- `log_steps` (production): the watch checks the loss, the gradients and the whole state
  (parameters, buffers, optimizer state) on the device; the vote carries no device read;
- `every_step` (debug, eval): the same, and the host reads the watch and votes every step.
Then two processes (torchrun, gloo) time the vote alone: one all_gather of four integers, which
a multi-process run adds to every step. Writes bench-health.json to --output-dir.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import torch

from models import build_model
from models.smallcnn import SmallCNNConfig
from runtime.process_group import join_process_group, leave_process_group
from runtime.signals import StopSignals
from runtime.vote import HealthVote, RankHealth, Verdict
from runtime.writes import WriteFailures
from tools.launch import launch_environment, local_launcher
from tools.measure import timed
from tools.processes import run_process
from tools.report import bench_folder, write_report
from training.determinism import Precision
from training.events import NoBoundary, Position
from training.health import NonFiniteWatch
from training.optim import OptimConfig
from training.parallel.data_parallel import DataParallelMode
from training.topology import Topology
from training.trainer import Trainer, TrainerConfig

VARIANTS = ("none", "log_steps", "every_step")


class _NoLoader:
    def epoch(self, epoch: int, start_batch: int = 0) -> Any:
        return iter(())

    def batches_per_epoch(self) -> int:
        return 1


class _VoteOnly(NoBoundary):
    """The session's vote after each step, without checkpoints or files."""

    def __init__(self, watch: NonFiniteWatch, every_step: bool) -> None:
        group = join_process_group("cpu")
        self.vote = HealthVote(group, watch, StopSignals(announce=False), WriteFailures())
        self.read_every_step = every_step

    def check_step(self, position: Position, *, reports: bool, epoch_ends: bool) -> None:
        self.vote(position, read_finite=self.read_every_step)


def _trainer(variant: str, width: int) -> Trainer:
    torch.manual_seed(0)
    model = build_model(SmallCNNConfig(width=width), num_classes=10, image_size=32)
    watch = None if variant == "none" else NonFiniteWatch(torch.device("cpu"))
    return Trainer(
        TrainerConfig(finite_check="log_steps" if variant == "log_steps" else "every_step"),
        model,
        optim=OptimConfig(),
        precision=Precision(amp=None, channels_last=False, pin_memory=False),
        topology=Topology.single(),
        mode=DataParallelMode(),
        train_loader=_NoLoader(),
        val_loader=_NoLoader(),
        boundary=None if watch is None else _VoteOnly(watch, variant == "every_step"),
        watch=watch,
    )


def _step(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor) -> Any:
    def step() -> None:
        trainer.train_step([(images, labels)])
        trainer.position = Position(0, 0, trainer.position.step + 1)
        trainer.boundary.check_step(trainer.position, reports=False, epoch_ends=False)

    return step


def step_costs(steps: int, repeats: int, batch: int, width: int) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    steppers = {v: _step(_trainer(v, width), images, labels) for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            times[variant].append(timed(steppers[variant], steps))
    return {
        v: {"best_ms": 1e3 * min(t), "median_ms": 1e3 * statistics.median(t)}
        for v, t in times.items()
    }


def vote_cost(calls: int) -> None:
    """Under torchrun: microseconds per vote; rank 0 prints one JSON line."""
    group = join_process_group("cpu")

    def vote() -> None:
        Verdict.gather(group, RankHealth())

    per_call = min(timed(vote, calls) for _ in range(5))
    if group.is_main:
        print(json.dumps({"vote_us": 1e6 * per_call, "world_size": group.world_size}))
    leave_process_group(group.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--output-dir", default=bench_folder("health"))
    parser.add_argument("--votes", type=int, default=0, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.votes:
        vote_cost(arguments.votes)
        return
    costs = step_costs(arguments.steps, arguments.repeats, arguments.batch, arguments.width)
    launched = run_process(
        [*local_launcher(2), "-m", "benchmarks.bench_health", "--votes", "1000"],
        launch_environment({"OMP_NUM_THREADS": "1"}),
    )
    if launched.returncode != 0:
        sys.exit(f"the vote measurement at W=2 failed:\n{launched.stderr[-3000:]}")
    votes = json.loads(launched.stdout.strip().splitlines()[-1])
    none = costs["none"]["best_ms"]
    lines = [
        f"ms per optimizer step, batch {arguments.batch}, 1 thread (best / median of "
        f"{arguments.repeats} x {arguments.steps} steps)",
        "",
        "| fault check | best ms | median ms | vs none (best) |",
        "|---|---|---|---|",
        *(
            f"| {variant} | {cost['best_ms']:.2f} | {cost['median_ms']:.2f} "
            f"| {cost['best_ms'] / none - 1:+.1%} |"
            for variant, cost in costs.items()
        ),
        "",
        f"vote at W=2 (gloo all_gather of 4 integers): {votes['vote_us']:.0f} us per step",
    ]
    report = {"steps": costs, "vote": votes, "batch": arguments.batch, "width": arguments.width}
    write_report(arguments.output_dir, "bench-health", report, lines)


if __name__ == "__main__":
    sys.exit(main())
