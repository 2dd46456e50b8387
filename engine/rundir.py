"""The run directory `<output-dir>/<config-name>/<profile>/seed<SEED>/` and what may be written there.

Why refuse an existing run: a second run into the same directory would interleave metrics,
overwrite the manifest and make the first run's results unreproducible. Continuing is explicit
(`--resume`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.atomic import atomic_write_text
from engine.config import Config
from engine.errors import UserError

RUN_MARKERS = ("manifest.json", "config.yaml", "metrics.jsonl", "checkpoints")


def run_directory(output_dir: str | Path, config: Config) -> Path:
    return Path(output_dir) / config.name / config.profile / f"seed{config.seed}"


def holds_a_run(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS)


def refuse_to_overwrite(path: Path) -> None:
    if holds_a_run(path):
        raise UserError(
            f"{path} already holds a run; continue it with --resume auto, "
            "or pick another --seed / --output-dir"
        )


def write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")
