"""Cost of the world-size-invariant mode against ordinary DDP: `make bench-invariance`.

    python -m tools.bench_invariance [--steps 40] [--repeats 3] [--global-batch 64] [--width 16]

Times optimizer steps (forward, backward, gradient exchange, update) on in-memory 32x32 batches
of the default model, one intra-op thread per process, interleaving the variants and keeping the
best and the median of the repeats:
- W = 2 (torchrun, gloo on CPU / NCCL on GPU): DDP with B / 2 per rank, against the invariant
  mode with the same per-rank shape (one micro-batch of B / 2 per rank) and with two micro-batches
  of B / 4 per rank;
- W = 1: one batch of B, against the invariant mode with one micro-batch of B and with two of B / 2.
It also reports the bytes each rank receives per step: all_gather's (W - 1) x (parameters + the
step's statistics) against a ring all-reduce's 2 (W - 1) / W x parameters.
Writes bench-invariance.json and bench-invariance.md to --output-dir and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from foundation.process import process_launch
from models import build_model
from models.smallcnn import SmallCNNConfig
from runtime.process_group import leave_process_group
from runtime.provenance import REPO_ROOT
from tools.launch import launch_environment, local_launcher
from training.invariance import InvariantMode, InvariantStep, MicroBatchLayout
from training.topology import Topology


def timed(step: Any, steps: int) -> float:
    """Seconds per step, after 3 warm-up steps."""
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def build(width: int, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model(SmallCNNConfig(width=width), 10, 32).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def measure(world: int, rank: int, arguments: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")
    B = arguments.global_batch
    per_rank = B // world
    generator = torch.Generator().manual_seed(rank)
    images = torch.randn(per_rank, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, 10, (per_rank,), generator=generator).to(device)

    plain_model, plain_optimizer = build(arguments.width, device)
    plain: nn.Module = DistributedDataParallel(plain_model) if world > 1 else plain_model

    def plain_step() -> None:
        loss = F.cross_entropy(plain(images), labels)
        plain_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        plain_optimizer.step()

    variants = {"ddp" if world > 1 else "plain": plain_step}
    parameters = sum(p.numel() for p in plain_model.parameters())
    received: dict[str, InvariantStep] = {}
    for micro_batches_per_rank in (1, 2):
        model, optimizer = build(arguments.width, device)
        layout = MicroBatchLayout.checked(B, per_rank // micro_batches_per_rank, world, rank)
        topology = Topology(rank, world, rank, 1, device, "gloo" if world > 1 else None)
        mode = InvariantMode(layout, lambda k, j: k * 1000 + j)
        invariant = InvariantStep(model, mode, topology)
        name = f"invariant {micro_batches_per_rank} x {layout.micro_batch}"
        variants[name] = stepper(invariant, optimizer, images, labels)
        received[name] = invariant
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(arguments.repeats):
        for name, step in variants.items():
            times[name].append(timed(step, arguments.steps))
    ring = int(2 * (world - 1) / world * parameters * 4)
    return {
        "world_size": world,
        "device": str(device),
        "parameters": parameters,
        "per_rank_batch": per_rank,
        "seconds_per_step": times,
        "bytes_received_per_step": {
            "all_reduce (ring)": ring,
            **{name: step.bytes_per_step for name, step in received.items()},
        },
    }


def stepper(
    invariant: InvariantStep,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> Any:
    """One invariant optimizer step per call, at increasing step numbers."""
    steps = iter(range(1 << 62))

    def step() -> None:
        invariant.gradients(next(steps), images, labels, backward=_unused)
        optimizer.step()

    return step


def _unused(loss: torch.Tensor) -> None:
    raise AssertionError("the invariant step runs its own backward per micro-batch")


def worker(arguments: argparse.Namespace) -> None:
    """One process of the W = 2 measurement (under torchrun), or the W = 1 one."""
    torch.set_num_threads(1)
    world, rank = process_launch().world_size, process_launch().rank
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    result = measure(world, rank, arguments)
    if world > 1:
        leave_process_group(torch.device(result["device"]))
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def run_world(world: int, argv: list[str]) -> dict[str, Any]:
    command = [*local_launcher(world), "-m", "tools.bench_invariance", "--worker", *argv]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=launch_environment(), capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"benchmark at W={world} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| W | variant | ms/step (best) | ms/step (median) | vs reference (best) | vs reference (median) | bytes received/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        times = result["seconds_per_step"]
        reference = next(iter(times))
        best_ref, median_ref = min(times[reference]), statistics.median(times[reference])
        for name, values in times.items():
            best, median = min(values), statistics.median(values)
            sent = result["bytes_received_per_step"].get(name)
            if name == reference:
                sent = (
                    result["bytes_received_per_step"]["all_reduce (ring)"]
                    if result["world_size"] > 1
                    else 0
                )
            lines.append(
                f"| {result['world_size']} | {name} | {1000 * best:.2f} | {1000 * median:.2f} "
                f"| {best / best_ref:.3f}x | {median / median_ref:.3f}x | {sent:,} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--output-dir", default="runs/bench-invariance")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.global_batch % 4:
        parser.error("--global-batch must be a multiple of 4")
    if arguments.worker:
        worker(arguments)
        return
    argv = [
        f"--steps={arguments.steps}",
        f"--repeats={arguments.repeats}",
        f"--global-batch={arguments.global_batch}",
        f"--width={arguments.width}",
    ]
    results = [run_world(2, argv), run_world(1, argv)]
    lines = [
        f"global batch {arguments.global_batch}, model smallcnn width {arguments.width} "
        f"({results[0]['parameters']:,} parameters), {results[0]['device']}, one thread per "
        f"process, {arguments.repeats} interleaved repeats of {arguments.steps} steps; "
        "reference = the first row of each W",
        "",
        *table(results),
    ]
    output = Path(arguments.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "bench-invariance.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / "bench-invariance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {output}/bench-invariance.json, bench-invariance.md")


if __name__ == "__main__":
    main()
