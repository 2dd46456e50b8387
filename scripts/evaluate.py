"""Evaluate a checkpoint on the validation split: `make evaluate CHECKPOINT=…`.

    python -m scripts.evaluate --checkpoint PATH [--output-dir runs] [key=value ...]
    torchrun --nproc_per_node=N -m scripts.evaluate --checkpoint PATH ...

The run is rebuilt from the checkpoint's own resolved config exactly as train.py builds it
(runtime/assembly.py), the checkpoint's model weights are loaded, and the trainer's own
evaluation runs: for the last checkpoint of a run, on the run's number of processes, the
metrics equal the manifest's `final_metrics` bit for bit. `key=value` overrides change the
config first (a moved dataset: `data.root=…`; another validation set), and are said in a line.
Prints every metric in one line (the EMA's too, `ema_val_*`) and writes them to
<output-dir>/evaluations/<run>-step<N>-<W>proc.json (W processes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configs.loading import apply_override, read_saved_config, validated
from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from runtime.assembly import build_run, plan_run
from runtime.checkpoint.contents import load_checkpoint, reading
from runtime.process_group import join_process_group
from runtime.rundir import write_json


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint: a file (…/last.pt) or a sharded directory (…/last)",
    )
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    arguments = parser.parse_args()
    if not arguments.checkpoint:
        raise UserError("no checkpoint given: make evaluate CHECKPOINT=runs/<…>/last.pt")
    path = Path(arguments.checkpoint)
    checkpoint = load_checkpoint(path, whole_tensors=False)  # read into the run's layout
    tree = read_saved_config(checkpoint["config"])
    for assignment in arguments.overrides:
        tree = apply_override(tree, assignment)
    config = validated(tree)

    group = join_process_group(config.trainer.device, config.distributed.collective_timeout_s)
    planned = plan_run(config, group.topology)
    built = build_run(config, group.topology, planned, guard=group.guard, resuming=True)
    with reading(path):
        built.trainer.load_weights(checkpoint)  # and the saved EMA's, for ema_val_*
    metrics = built.trainer.evaluate()
    built.trainer.close()
    group.leave()
    if not group.is_main:
        return
    # The process count is in the name: evaluations on 1 and 2 processes may differ in the last
    # bits (the reduction order), and each is kept.
    name = (
        f"{config.name}-{config.profile}-seed{config.seed}-step{checkpoint['step']}"
        f"-{group.world_size}proc"
    )
    output = Path(arguments.output_dir) / "evaluations" / f"{name}.json"
    report = {
        "checkpoint": str(path),
        "step": checkpoint["step"],
        "world_size": group.world_size,
        "overrides": arguments.overrides,
        "metrics": metrics,
    }
    write_json(output, report)  # atomic: replaces a link at that name, never writes through
    if arguments.overrides:
        print(f"note: evaluated with {' '.join(arguments.overrides)}", file=sys.stderr)
    print(
        f"{path} (step {checkpoint['step']}, {group.world_size} process(es)): "
        + "  ".join(f"{key} {value:.4f}" for key, value in metrics.items())
        + f"\nwritten: {output}"
    )


if __name__ == "__main__":
    run_reporting_user_errors(main)
