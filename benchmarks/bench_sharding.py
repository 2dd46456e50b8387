"""What sharding saves and costs on this machine: `make bench-sharding`.

    python -m benchmarks.bench_sharding [--model resnet18] [--steps 8] [--batch 32]

For W = 1, 2, 4 processes, DDP, `parallel.shard=true` (FSDP2), the world-size-invariant mode and
that mode with `parallel.shard=true` (its optimizer state split over the ranks, ZeRO-1; a global
batch of W x batch in micro-batches of batch) build the trainer train.py builds (runtime/assembly.py) for the chosen model with SGD and momentum, on in-memory batches,
and measure on each rank: the bytes of its parameters, gradients and optimizer state (the local
shards: what the rank holds between steps), and the median ms per optimizer step after two
warm-up steps. W = 1 is one process, unsharded (there is nothing to shard). Activations and the
layer-by-layer gathers during a pass are not counted: they depend on the model's FSDP units (here
one: the whole model), and on a CPU they are freed by the allocator's own rules.
Writes bench-sharding.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import torch

from configs import load_config
from runtime.assembly import build_run, plan_run
from runtime.process_group import join_process_group
from tools.launch import launch_environment, local_launcher
from tools.processes import run_process
from tools.report import bench_folder, write_report
from training.topology import local_tensor

# layout name -> its config keys (B: the per-rank batch, W: the processes)
KEYS = {
    "DDP": lambda batch, world: [f"data.batch_size={batch}"],
    "FSDP2": lambda batch, world: [f"data.batch_size={batch}", "parallel.shard=true"],
    "invariant": lambda batch, world: [
        f"data.global_batch_size={batch * world}",
        f"trainer.micro_batch_size={batch}",
        "trainer.world_size_invariant=true",
    ],
}
KEYS["invariant + shard (ZeRO-1)"] = lambda batch, world: [
    *KEYS["invariant"](batch, world),
    "parallel.shard=true",
]
LAYOUTS = [
    (1, "DDP"),
    *((world, layout) for world in (2, 4) for layout in KEYS),
]


def _bytes(tensors: list[torch.Tensor]) -> int:
    return sum(local_tensor(t).numel() * local_tensor(t).element_size() for t in tensors)


def measure(arguments: argparse.Namespace) -> None:
    """Under torchrun (or alone): one JSON line from rank 0 with every rank's numbers."""
    config = load_config(
        "configs/default.yaml",
        overrides=[
            f"model.name={arguments.model}",
            *KEYS[arguments.layout](arguments.batch, int(os.environ.get("WORLD_SIZE", "1"))),
            "data.synthetic.train_size=512",
            "data.synthetic.val_size=64",
        ],
    )
    group = join_process_group("cpu")
    topology = group.topology
    trainer = build_run(config, topology, plan_run(config, topology)).trainer
    generator = torch.Generator().manual_seed(topology.rank)
    images = torch.randn(arguments.batch, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (arguments.batch,), generator=generator)
    times = []
    for step in range(arguments.steps + 2):
        start = time.perf_counter()
        trainer.train_step([(images, labels)])
        if step >= 2:
            times.append(time.perf_counter() - start)
    parameters = list(trainer.model.parameters())
    optimizer_state = [
        value
        for state in trainer.optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value)
    ]
    mine = {
        "parameters": _bytes(parameters),
        "gradients": _bytes([p.grad for p in parameters if p.grad is not None]),
        "optimizer": _bytes(optimizer_state),
        "ms_per_step": 1e3 * statistics.median(times),
    }
    everyone: list[Any] = [mine]
    if topology.distributed:
        everyone = [None] * topology.world_size
        torch.distributed.all_gather_object(everyone, mine)
    if group.is_main:
        print(json.dumps(everyone))
    trainer.close()
    group.leave()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_sharding", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--output-dir", default=bench_folder("sharding"))
    parser.add_argument("--layout", default="DDP", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.measure:
        measure(arguments)
        return 0
    rows = []
    for processes, layout in LAYOUTS:
        print(f"measuring: {processes} process(es), {layout} ...", flush=True)
        command = [
            *local_launcher(processes),
            "-m",
            "benchmarks.bench_sharding",
            "--measure",
            f"--model={arguments.model}",
            f"--steps={arguments.steps}",
            f"--batch={arguments.batch}",
            f"--layout={layout}",
        ]
        done = run_process(command, launch_environment(), None)
        if done.returncode != 0:
            sys.exit(f"the measurement at W={processes} failed:\n{done.stderr[-3000:]}")
        ranks = json.loads(done.stdout.strip().splitlines()[-1])
        mib = 1024 * 1024
        worst = {key: max(rank[key] for rank in ranks) for key in ranks[0]}
        rows.append(
            {
                "processes": processes,
                "layout": "one process" if processes == 1 else layout,
                "parameters_mib": round(worst["parameters"] / mib, 2),
                "gradients_mib": round(worst["gradients"] / mib, 2),
                "optimizer_mib": round(worst["optimizer"] / mib, 2),
                "total_mib": round(
                    (worst["parameters"] + worst["gradients"] + worst["optimizer"]) / mib, 2
                ),
                "ms_per_step": round(statistics.median(r["ms_per_step"] for r in ranks), 1),
            }
        )
    lines = [
        f"# Sharding on this machine ({arguments.model}, SGD with momentum, batch "
        f"{arguments.batch} per rank; MiB per rank, the largest rank)",
        "",
        "| W | layout | parameters | gradients | optimizer state | total | ms/step |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['processes']} | {r['layout']} | {r['parameters_mib']} | {r['gradients_mib']} | "
        f"{r['optimizer_mib']} | {r['total_mib']} | {r['ms_per_step']} |"
        for r in rows
    ]
    write_report(arguments.output_dir, "bench-sharding", rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
