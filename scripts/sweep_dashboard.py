"""`make sweep-dashboard SWEEP=runs/sweeps/NAME [PORT=8080]`: optuna-dashboard on a sweep's
study, bound to 127.0.0.1 (the study is not published beyond this machine; reach it from
elsewhere through an SSH tunnel, `ssh -L 8080:127.0.0.1:8080 host`).

It opens the study file read as the sweep wrote it (`study.db`, or `study.journal` for a
SLURM sweep); a folder without one is refused in one line. Nothing in the study runs code:
Optuna's storages keep parameters and values as JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors

HOST = "127.0.0.1"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.sweep_dashboard")
    parser.add_argument("--sweep", required=True, help="the sweep's folder")
    parser.add_argument("--port", type=int, default=8080)
    arguments = parser.parse_args()
    if not arguments.sweep:
        raise UserError("no sweep given: use SWEEP=runs/sweeps/NAME (or --sweep)")
    folder = Path(arguments.sweep)
    if not 0 < arguments.port < 65536:
        raise UserError(f"PORT {arguments.port}: not a TCP port")
    database, journal = folder / "study.db", folder / "study.journal"
    if not database.is_file() and not journal.is_file():
        raise UserError(f"{folder}: no study.db or study.journal here; run `make sweep` first")
    import optuna_dashboard
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = (
        f"sqlite:///{database.resolve()}"
        if database.is_file()
        else JournalStorage(JournalFileBackend(str(journal)))
    )
    print(
        f"optuna-dashboard: http://{HOST}:{arguments.port}/dashboard/ (Ctrl-C stops it)", flush=True
    )
    optuna_dashboard.run_server(storage, host=HOST, port=arguments.port)
    return 0


if __name__ == "__main__":
    run_reporting_user_errors(main)
