"""Convert a checkpoint between the two formats: `make convert-checkpoint CHECKPOINT=… TO=…`.

    python -m scripts.convert_checkpoint CHECKPOINT DESTINATION

A single file (`step-N.pt`, what DDP and tensor-parallel runs write) becomes a sharded checkpoint
directory (what `parallel.shard=true` runs write, runtime/checkpoint/directory.py), and a directory
becomes a single file. The tensors are read whole in this one process and written unchanged, bit
for bit, with the same checksum rules; nothing is unpickled. Either format already resumes any
run (`--resume PATH`) and loads into evaluate and predict: converting is for a tool that reads
one format only, or for a sharded model's weights in one file to ship.

The destination must not exist: nothing already written is replaced.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from runtime.checkpoint.contents import load_checkpoint, reading
from runtime.checkpoint.files import write_checkpoint_directory, write_checkpoint_file


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.convert_checkpoint", description=__doc__.split("\n")[0]
    )
    parser.add_argument("checkpoint", help="a checkpoint file (step-N.pt) or directory (step-N)")
    parser.add_argument("destination", help="where the other format goes (must not exist)")
    arguments = parser.parse_args()
    source, destination = Path(arguments.checkpoint), Path(arguments.destination)
    if destination.exists() or destination.is_symlink():
        raise UserError(f"{destination} already exists; the conversion writes a new path only")
    payload = load_checkpoint(source)
    with reading(source):
        tensors = len(payload["model"]) + sum(map(len, payload["optimizer"]["state"].values()))
        if source.is_dir():
            write_checkpoint_file(destination, payload)
            kind = "a single file"
        else:
            write_checkpoint_directory(destination, payload)
            kind = "a sharded checkpoint directory"
    print(
        f"wrote {destination}: {kind} of step {payload['step']} ({tensors} tensors), "
        f"from {source}; resume with --resume {destination}"
    )


if __name__ == "__main__":
    run_reporting_user_errors(main)
