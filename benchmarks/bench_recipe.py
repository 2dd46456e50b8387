"""What each feature of the reference recipe costs per optimizer step: `make bench-recipe`.

    python -m benchmarks.bench_recipe [--steps 30] [--repeats 5] [--batch 128] [--width 16]

One process, one thread, times optimizer steps of the default model (the small CNN) on
in-memory 32x32 batches of 128 samples, the base recipe against each feature alone and all of
them together, the variants interleaved, best and median of the repeats (as bench-health does):
- accumulation: two batches of 64 per step (the same 128 samples per optimizer step);
- EMA: the update after every step; its other cost, evaluating the EMA weights beside the raw
  ones, is timed apart: one pass over 1,000 validation samples, with and without the EMA.
Why in-process and not whole runs: on a shared 2-core machine whole runs drift by ±15 % from
minute to minute, more than any of these features costs; a step timed best-of-N does not.
Writes bench-recipe.json and bench-recipe.md to --output-dir (runs/bench/recipe).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch

import seeding
from data.mix import BatchMix, MixConfig
from models import build_model
from models.smallcnn import SmallCNNConfig
from tools.measure import timed
from tools.report import bench_folder, write_report
from training.determinism import Precision
from training.ema import EmaConfig
from training.events import Position
from training.objective import Objective
from training.optim import OptimConfig
from training.parallel.data_parallel import DataParallelMode
from training.topology import Topology
from training.trainer import Trainer, TrainerConfig

# Each variant: (trainer keys, optim keys, mix keys) on top of the defaults.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "base": ({}, {}, {}),
    "label smoothing 0.1": ({}, {"label_smoothing": 0.1}, {}),
    "mixup 0.2 / cutmix 1.0": ({}, {}, {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}),
    "EMA every step": ({"ema": EmaConfig(enabled=True, decay=0.99)}, {}, {}),
    "accumulation 2 x 64": ({"accumulate_steps": 2}, {}, {}),
    "clip grad norm 5": ({}, {"clip_grad_norm": 5.0}, {}),
    "warmup 100 steps": ({}, {"warmup_steps": 100}, {}),
}
VARIANTS["all together"] = tuple(  # type: ignore[assignment]
    {k: v for keys in VARIANTS.values() for k, v in keys[part].items()} for part in range(3)
)


class _Batches:
    """An in-memory loader: the same batches every epoch (the step is what is timed)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], per_epoch: int) -> None:
        self.batches, self.per_epoch = batches, per_epoch

    def epoch(self, epoch: int, start_batch: int = 0) -> Any:
        return iter(self.batches)

    def batches_per_epoch(self) -> int:
        return self.per_epoch


def _trainer(name: str, width: int, val: _Batches) -> Trainer:
    trainer_keys, optim_keys, mix_keys = VARIANTS[name]
    torch.manual_seed(0)
    model = build_model(SmallCNNConfig(width=width), num_classes=10, image_size=32)
    mix = MixConfig(**mix_keys)
    objective = Objective(
        optim_keys.get("label_smoothing", 0.0),
        BatchMix(mix, seeding.data_parallel(0, 0), 10) if mix.enabled else None,
    )
    return Trainer(
        TrainerConfig(**trainer_keys),
        model,
        optim=OptimConfig(**optim_keys),
        objective=objective,
        precision=Precision(amp=None, channels_last=False, pin_memory=False),
        topology=Topology.single(),
        mode=DataParallelMode(),
        train_loader=_Batches([], per_epoch=1000),
        val_loader=val,
    )


def _stepper(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    parts = trainer.config.accumulate_steps
    size = images.shape[0] // parts
    batches = [
        (images[i * size : (i + 1) * size], labels[i * size : (i + 1) * size]) for i in range(parts)
    ]

    def step() -> None:
        trainer.train_step(batches)
        trainer.position = Position(0, 0, trainer.position.step + 1)

    return step


def _evaluator(trainer: Trainer) -> Callable[[], None]:
    def evaluate() -> None:
        trainer._evaluated = None
        trainer.evaluate()

    return evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--output-dir", default=bench_folder("recipe"))
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(arguments.batch, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (arguments.batch,), generator=generator)
    val = _Batches(
        [
            (
                torch.randn(125, 3, 32, 32, generator=generator),
                torch.randint(0, 10, (125,), generator=generator),
            )
            for _ in range(8)
        ],
        per_epoch=8,
    )
    trainers = {name: _trainer(name, arguments.width, val) for name in VARIANTS}
    steppers = {name: _stepper(trainer, images, labels) for name, trainer in trainers.items()}
    evaluators = {
        "raw weights": _evaluator(trainers["base"]),
        "raw + EMA weights": _evaluator(trainers["EMA every step"]),
    }
    times: dict[str, list[float]] = {name: [] for name in [*steppers, *evaluators]}
    for _ in range(arguments.repeats):
        for name, step in steppers.items():
            times[name].append(timed(step, arguments.steps))
        for name, evaluate in evaluators.items():
            times[name].append(timed(evaluate, 3))
    costs = {
        name: {"best_ms": 1e3 * min(t), "median_ms": 1e3 * statistics.median(t)}
        for name, t in times.items()
    }
    base, raw = costs["base"]["best_ms"], costs["raw weights"]["best_ms"]
    lines = [
        f"ms per optimizer step of {arguments.batch} samples, small CNN (width {arguments.width}), "
        f"CPU, 1 thread; best / median of {arguments.repeats} x {arguments.steps} steps, interleaved",
        "",
        "| variant | best ms | median ms | vs base (best) |",
        "|---|---|---|---|",
        *(
            f"| {name} | {costs[name]['best_ms']:.2f} | {costs[name]['median_ms']:.2f} "
            f"| {costs[name]['best_ms'] / base - 1:+.1%} |"
            for name in steppers
        ),
        "",
        "| evaluation of 1,000 samples | best ms | median ms | vs raw (best) |",
        "|---|---|---|---|",
        *(
            f"| {name} | {costs[name]['best_ms']:.1f} | {costs[name]['median_ms']:.1f} "
            f"| {costs[name]['best_ms'] / raw - 1:+.1%} |"
            for name in evaluators
        ),
    ]
    report = {
        "costs": costs,
        "batch": arguments.batch,
        "width": arguments.width,
        "variants": list(VARIANTS),
    }
    write_report(arguments.output_dir, "bench-recipe", report, lines)


if __name__ == "__main__":
    main()
