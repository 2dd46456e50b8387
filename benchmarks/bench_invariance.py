"""Cost of the world-size-invariant mode against ordinary DDP: `make bench-invariance`.

    python -m benchmarks.bench_invariance [--worlds 2 4 8] [--timed-worlds 2 4] [--steps 30]
                                     [--repeats 3] [--per-rank-batch 32] [--width 16]

For each world size W (torchrun, gloo on CPU / NCCL on GPU, one intra-op thread per process),
on in-memory 32x32 batches of the default model with the same per-rank batch for every variant:
- `ddp`: DistributedDataParallel (its all_reduce: gloo's or NCCL's algorithm and order);
- `invariant sharded`: the mode's exchange (training/parallel/exchange.py): all_to_all of shards, the
  tree's upper levels, all_gather of the reduced shards;
- `invariant all_gather`: the mode's first exchange, every rank's whole partial sum to everyone.

Bytes received per rank per step, computed (ring all-reduce 2 (W - 1) / W x P x 4; the two
exchanges count what their collectives bring) and measured (the loopback interface's received
bytes over a few steps, divided by W and the steps: headers included, and any other traffic on
the machine at that moment). Then ms per step, best and median of interleaved repeats, at the
--timed-worlds (more processes than cores measure the scheduler, not the step). Checks that both
exchanges end with the same weights. Writes bench-invariance.json and bench-invariance.md to
--output-dir and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import seeding
from foundation.process import process_launch
from models import build_model
from models.smallcnn import SmallCNNConfig
from runtime.process_group import leave_process_group
from runtime.provenance import state_dict_sha256
from tools.launch import launch_environment, local_launcher
from tools.measure import timed
from tools.processes import run_process
from tools.report import bench_folder, write_report
from training.determinism import Precision
from training.objective import Objective
from training.parallel.exchange import GatherExchange
from training.parallel.invariant import InvariantMode, InvariantStep
from training.parallel.micro_batches import MicroBatchLayout
from training.parallel.protocol import StepParts
from training.topology import Topology

TRAFFIC_STEPS = 5
Step = Callable[[], None]


def loopback_received_bytes() -> int | None:
    """Bytes received so far by the loopback interface (Linux), or None where there is none."""
    try:
        lines = Path("/proc/net/dev").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            return int(counters.split()[0])
    return None


def measured_traffic(step: Step, world: int) -> float | None:
    """Loopback bytes per rank per step over TRAFFIC_STEPS steps (every rank runs them; the
    barriers around them are a few bytes). None on one process or without a loopback counter."""
    if world == 1:
        return None
    step()  # buffers and communicators set up outside the measurement
    dist.barrier()
    before = loopback_received_bytes()
    for _ in range(TRAFFIC_STEPS):
        step()
    dist.barrier()
    after = loopback_received_bytes()
    if before is None or after is None:
        return None
    return (after - before) / world / TRAFFIC_STEPS


def build(width: int, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model(SmallCNNConfig(width=width), 10, 32).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def invariant_variant(
    arguments: argparse.Namespace,
    device: torch.device,
    world: int,
    rank: int,
    data: tuple[torch.Tensor, torch.Tensor],
    gather: bool,
) -> tuple[Step, InvariantStep, nn.Module]:
    model, optimizer = build(arguments.width, device)
    per_rank = arguments.per_rank_batch
    layout = MicroBatchLayout.checked(per_rank * world, per_rank, world, rank)
    topology = Topology(rank, world, rank, 1, device, "gloo" if world > 1 else None)
    mode = InvariantMode(layout, seeding.data_parallel(0, 0))
    invariant = InvariantStep(
        mode, StepParts(model, topology, Precision(None, False, False), Objective())
    )
    if gather and world > 1:
        invariant.exchange = GatherExchange(layout.micro_batches, world, rank)
    steps = iter(range(1 << 62))

    def step() -> None:
        invariant.gradients(next(steps), [data], backward=_unused)
        optimizer.step()

    return step, invariant, model


def measure(world: int, rank: int, arguments: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")
    generator = torch.Generator().manual_seed(rank)
    per_rank = arguments.per_rank_batch
    images = torch.randn(per_rank, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, 10, (per_rank,), generator=generator).to(device)

    plain_model, plain_optimizer = build(arguments.width, device)
    plain: nn.Module = DistributedDataParallel(plain_model) if world > 1 else plain_model

    def plain_step() -> None:
        loss = F.cross_entropy(plain(images), labels)
        plain_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        plain_optimizer.step()

    sharded, sharded_step, sharded_model = invariant_variant(
        arguments, device, world, rank, (images, labels), gather=False
    )
    gathered, gathered_step, gathered_model = invariant_variant(
        arguments, device, world, rank, (images, labels), gather=True
    )
    variants = {"ddp" if world > 1 else "plain": plain_step, "invariant sharded": sharded}
    if world > 1:  # one process exchanges nothing: the two would be the same step
        variants["invariant all_gather"] = gathered
    parameters = sum(p.numel() for p in plain_model.parameters())
    measured = {name: measured_traffic(step, world) for name, step in variants.items()}
    counted = {
        name: invariant.exchange.received_bytes / (1 + TRAFFIC_STEPS)
        for name, invariant in (
            ("invariant sharded", sharded_step),
            ("invariant all_gather", gathered_step),
        )
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    if world in arguments.timed_worlds:
        for _ in range(arguments.repeats):
            for name, step in variants.items():
                times[name].append(timed(step, arguments.steps))
    else:  # the exchanges still take the same steps, for the weights check below
        for step in (sharded, gathered):
            for _ in range(arguments.steps):
                step()
    same_bits = world == 1 or state_dict_sha256(sharded_model.state_dict()) == state_dict_sha256(
        gathered_model.state_dict()
    )
    return {
        "world_size": world,
        "device": str(device),
        "parameters": parameters,
        "per_rank_batch": per_rank,
        "seconds_per_step": times,
        "bytes_received_per_step": {
            "computed": {
                "ring all_reduce": 2 * (world - 1) / world * parameters * 4,
                **counted,
            },
            "measured": measured,
        },
        "exchanges_same_weights": same_bits,
    }


def _unused(loss: torch.Tensor) -> None:
    raise AssertionError("the invariant step runs its own backward per micro-batch")


def worker(arguments: argparse.Namespace) -> None:
    """One process of a measurement at one world size (under torchrun, or alone for W = 1)."""
    torch.set_num_threads(1)
    world, rank = process_launch().world_size, process_launch().rank
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    result = measure(world, rank, arguments)
    if world > 1:
        leave_process_group(torch.device(result["device"]))
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def run_world(world: int, argv: list[str]) -> dict[str, Any]:
    command = [*local_launcher(world), "-m", "benchmarks.bench_invariance", "--worker", *argv]
    done = run_process(command, launch_environment())
    if done.returncode != 0:
        sys.exit(f"benchmark at W={world} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def traffic_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| W | ring all_reduce, computed | ddp, measured | sharded, computed | sharded, measured "
        "| sharded / ring | all_gather, computed | all_gather, measured | all_gather / ring |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if result["world_size"] == 1:
            continue
        computed = result["bytes_received_per_step"]["computed"]
        measured = result["bytes_received_per_step"]["measured"]
        ring = computed["ring all_reduce"]
        lines.append(
            f"| {result['world_size']} | {_bytes(ring)} | {_bytes(measured['ddp'])} "
            f"| {_bytes(computed['invariant sharded'])} "
            f"| {_bytes(measured['invariant sharded'])} "
            f"| {computed['invariant sharded'] / ring:.3f}x "
            f"| {_bytes(computed['invariant all_gather'])} "
            f"| {_bytes(measured['invariant all_gather'])} "
            f"| {computed['invariant all_gather'] / ring:.3f}x |"
        )
    return lines


def time_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| W | variant | ms/step (best) | ms/step (median) | spread (max/min) "
        "| vs first row (best) | vs first row (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        times = result["seconds_per_step"]
        reference = next(iter(times))
        if not times[reference]:
            continue
        best_ref, median_ref = min(times[reference]), statistics.median(times[reference])
        for name, values in times.items():
            best, median = min(values), statistics.median(values)
            lines.append(
                f"| {result['world_size']} | {name} | {1000 * best:.2f} | {1000 * median:.2f} "
                f"| {max(values) / best:.2f} | {best / best_ref:.3f}x "
                f"| {median / median_ref:.3f}x |"
            )
    return lines


def _bytes(value: float | None) -> str:
    return "—" if value is None else f"{value / 1024:,.1f} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--timed-worlds", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per-rank-batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--output-dir", default=bench_folder("invariance"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if any(world < 1 or world & (world - 1) for world in arguments.worlds):
        parser.error("--worlds: powers of two (each rank's block must be a node of the tree)")
    if arguments.worker:
        worker(arguments)
        return
    argv = [
        f"--steps={arguments.steps}",
        f"--repeats={arguments.repeats}",
        f"--per-rank-batch={arguments.per_rank_batch}",
        f"--width={arguments.width}",
        "--timed-worlds",
        *map(str, arguments.timed_worlds),
    ]
    worlds = sorted(set(arguments.worlds) | set(arguments.timed_worlds))
    results = []
    for world in worlds:
        print(f"W={world} ...", flush=True)
        results.append(run_world(world, argv))
    first = results[0]
    lines = [
        f"smallcnn width {arguments.width} ({first['parameters']:,} parameters), "
        f"{arguments.per_rank_batch} samples per rank per step, {first['device']}, one thread "
        f"per process; traffic: bytes received per rank per step (measured: loopback over "
        f"{TRAFFIC_STEPS} steps); time: {arguments.repeats} interleaved repeats of "
        f"{arguments.steps} steps",
        "",
        *traffic_table(results),
        "",
        *time_table(results),
        "",
        "both exchanges end with the same weights: "
        + ("yes" if all(r["exchanges_same_weights"] for r in results) else "NO"),
    ]
    write_report(arguments.output_dir, "bench-invariance", results, lines)


if __name__ == "__main__":
    main()
