"""Cost of tensor parallelism on this machine: `make bench-tensor-parallel`.

    python -m benchmarks.bench_tensor_parallel [--epochs 3] [--train-size 3072] [--width 64]

Whole runs of configs/vit_tiny.yaml, launched as `make train` launches them, in four layouts:
dp 2, dp 1 x tp 2, dp 4, dp 2 x tp 2. Each replica takes batches of 64, so a layout's global
batch is 64 x dp. Reported per layout: training samples/s (median over the epochs after the first,
which pays start-up), ms per optimizer step, and the model's parameters held per rank (what tp
saves). On a CPU the tp layouts are slower: each block adds two all-reduces of activations per
forward and two per backward, which gloo carries through the host; the point of tp here is the
guarantees, and only a GPU with NCCL shows its speed. Writes bench-tensor-parallel.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from models import build_model
from models.vit_tiny import ViTTinyConfig
from tools.launch import train_subprocess
from tools.report import bench_folder, write_report

LAYOUTS = [(2, 1), (2, 2), (4, 1), (4, 2)]  # (processes, tp)
BATCH = 64


def parameters_per_rank(width: int, tp: int) -> int:
    """Parameters one rank holds: the split layers' share, and every replicated one whole."""
    model = build_model(ViTTinyConfig(width=width), num_classes=10, image_size=32)
    split = set(model.tensor_parallel_plan())  # type: ignore[operator]
    total = 0
    for name, parameter in model.named_parameters():
        layer = name.rsplit(".", 1)[0]
        is_rowwise_bias = name.endswith("bias") and layer.endswith(("attention.out", "mlp.down"))
        shared = layer not in split or is_rowwise_bias
        total += parameter.numel() if shared else parameter.numel() // tp
    return total


def one_layout(processes: int, tp: int, arguments: argparse.Namespace, root: Path) -> dict:
    flags = [
        "--config",
        "configs/vit_tiny.yaml",
        f"parallel.tensor={tp}",
        f"trainer.epochs={arguments.epochs}",
        f"data.batch_size={BATCH}",
        f"data.synthetic.train_size={arguments.train_size}",
        "data.synthetic.val_size=256",
        f"model.width={arguments.width}",
        "optim.warmup_steps=2",
    ]
    done = train_subprocess(flags, root / f"w{processes}-tp{tp}", nproc=processes)
    if done.returncode != 0:
        raise SystemExit(f"the run at {processes} processes, tp {tp} failed:\n{done.tail()}")
    epochs = done.run.read_metrics("epoch")
    rates = [float(row["samples_per_s"]) for row in epochs[1:]] or [0.0]
    rate = statistics.median(rates)
    dp = processes // tp
    return {
        "processes": processes,
        "dp": dp,
        "tp": tp,
        "global_batch": BATCH * dp,
        "samples_per_s": round(rate, 1),
        "ms_per_step": round(1000 * BATCH * dp / rate, 1) if rate else None,
        "parameters_per_rank": parameters_per_rank(arguments.width, tp),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_tensor_parallel", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=3072)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--output-dir", default=bench_folder("tensor-parallel"))
    arguments = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as runs:
        for processes, tp in LAYOUTS:
            print(f"training: {processes} processes, tp {tp} ...", flush=True)
            rows.append(one_layout(processes, tp, arguments, Path(runs)))
    lines = [
        f"# Tensor parallelism on this machine (vit_tiny width {arguments.width}, batch {BATCH} "
        "per replica)",
        "",
        "| processes | dp x tp | global batch | samples/s | ms/step | parameters per rank |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['processes']} | {r['dp']} x {r['tp']} | {r['global_batch']} | "
        f"{r['samples_per_s']} | {r['ms_per_step']} | {r['parameters_per_rank']:,} |"
        for r in rows
    ]
    write_report(arguments.output_dir, "bench-tensor-parallel", rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
