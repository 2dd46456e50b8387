"""The state of one run directory, for scripts: `python -m scripts.run_state [train.py flags]`.

    python -m scripts.run_state --config C --seed S --profile P --output-dir O [key=value ...]

Prints `none` (no run there yet), `running`, `stale` (the manifest says running but no process
holds the run directory: killed without a word), `completed`, `failed` or `interrupted` (stopped by
SIGTERM/SIGINT/SIGHUP after a checkpoint: continue it with --resume auto). The SLURM script asks it
whether to requeue the job; the run directory is found exactly as train.py finds it.
"""

from __future__ import annotations

import sys

from configs import load_config, parse_args
from foundation.exit import run_reporting_user_errors
from runtime.rundir import RunDirectory
from runtime.writer_lock import is_stale


def main() -> int:
    arguments = parse_args(sys.argv[1:])
    config = load_config(arguments.config, arguments.profile, arguments.seed, arguments.overrides)
    run_dir = RunDirectory.of(arguments.output_dir, config.name, config.profile, config.seed)
    manifest = run_dir.read_manifest()
    if manifest is None:
        print("none")
    else:
        print("stale" if is_stale(run_dir) else manifest.get("status", "running"))
    return 0


if __name__ == "__main__":
    run_reporting_user_errors(main)
