"""Measure the default job as a newcomer runs it and keep the numbers the README quotes.

    make measure-default      # = python -m scripts.measure_default; then make docs

Runs `make train SEED=42`'s job (train.py, one process, every core, the config file as it is)
into a temporary folder and writes docs/measured/default-job.json: the whole command's seconds,
the training's, the final validation accuracy, the weights' digest, and the machine that computed
them (CPU model, instruction set, threads, GPU; digests are per hardware and software). `make docs`
writes README.md's sentence from that file, and the docs test holds them together: the README's
numbers are measured, not typed.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time

from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from runtime.provenance import REPO_ROOT, now_iso
from tools.launch import train_subprocess

MEASURED = REPO_ROOT / "docs" / "measured" / "default-job.json"


def main() -> None:
    with tempfile.TemporaryDirectory() as output:
        started = time.perf_counter()
        done = train_subprocess(["--seed", "42"], output)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise UserError(f"the default job failed:\n{done.tail()}")
        manifest = done.run.read_manifest() or {}
    measured = {
        "command": "make train SEED=42",
        "seconds": round(seconds, 1),
        "training_seconds": manifest["wall_time_s"],
        "val_acc": manifest["final_metrics"]["val_acc"],
        "epochs": manifest["final_epoch"],
        "final_weights_sha256": manifest["final_weights_sha256"],
        "cpu_cores": os.cpu_count(),
        "machine": platform.machine(),
        # What the digest and the last digits of val_acc depend on (runtime/provenance.py).
        "computed_on": manifest.get("machine"),
        "torch": manifest.get("versions", {}).get("torch"),
        "date": now_iso()[:10],
    }
    MEASURED.parent.mkdir(parents=True, exist_ok=True)
    MEASURED.write_text(json.dumps(measured, indent=2) + "\n")
    print(json.dumps(measured, indent=2))
    print(f"written: {MEASURED}; now make docs")


if __name__ == "__main__":
    run_reporting_user_errors(main)
