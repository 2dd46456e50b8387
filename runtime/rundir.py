"""The run directory: its layout, its file names, and every reader and writer of it.

    <output-dir>/<config-name>/<profile>/seed<SEED>/   config.yaml  manifest.json  determinism.json
                                                       metrics.jsonl  tb/  checkpoints/
    <output-dir>/<config-name>/<profile>/benchmark/    the multi-seed report

Why one owner: train.py writes these files and verify, the benchmarks and the tests read them. If
each of them globbed `*/*/seed*/manifest.json` or parsed metrics.jsonl on its own, a change of
layout would break them silently; here it breaks nothing or fails in one place.

Why refuse an existing run: a second run into the same directory would interleave metrics,
overwrite the manifest and make the first run's results unreproducible. Continuing is explicit
(`--resume`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from foundation.errors import UserError
from foundation.process import next_commands
from runtime.atomic import WRITES, atomic_write_text
from runtime.plain_files import append_text

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
DETERMINISM = "determinism.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tb"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = (
    "last.pt"  # the newest complete checkpoint (runtime/checkpoint/owner.py writes it)
)
LAST_SHARDED = "last"  # the same, for sharded checkpoints: a link to the newest directory
DAMAGED_CHECKPOINTS = "damaged"  # checkpoints a resume skipped, moved aside (checkpoints.py)
LOCK_FILE = ".writer.lock"  # the one writer's lock (runtime/writer_lock.py)
BENCHMARK = "benchmark"
_RUN_MARKERS = (MANIFEST, CONFIG, METRICS, CHECKPOINTS)
_WRITTEN = (CONFIG, MANIFEST, DETERMINISM, METRICS, TENSORBOARD, CHECKPOINTS, LOCK_FILE)


def write_json(path: Path, value: Any) -> None:
    """Atomically: a reader sees the old file or the whole new one, never half of it."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def profile_directory(output_dir: str | Path, config_name: str, profile: str) -> Path:
    """Where every seed of one (config, profile) lives; TensorBoard's natural --logdir."""
    return Path(output_dir) / config_name / profile


def benchmark_directory(output_dir: str | Path, config_name: str, profile: str) -> Path:
    return profile_directory(output_dir, config_name, profile) / BENCHMARK


@dataclass(frozen=True)
class RunDirectory:
    path: Path

    @classmethod
    def of(cls, output_dir: str | Path, config_name: str, profile: str, seed: int) -> RunDirectory:
        return cls(profile_directory(output_dir, config_name, profile) / f"seed{seed}")

    # ----------------------------------------------------------------- layout
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST

    @property
    def determinism_file(self) -> Path:
        return self.path / DETERMINISM

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        """last.pt, or `last` (a link to a directory) where the run writes sharded checkpoints;
        a save of one kind removes the other's pointer."""
        sharded = self.checkpoint_dir / LAST_SHARDED
        return sharded if sharded.is_dir() else self.checkpoint_dir / LAST_CHECKPOINT

    def __str__(self) -> str:
        return str(self.path)

    # ----------------------------------------------------------------- state
    def holds_a_run(self) -> bool:
        return any((self.path / marker).exists() for marker in _RUN_MARKERS)

    def refuse_to_overwrite(self) -> None:
        if self.holds_a_run():
            commands = next_commands()
            raise UserError(
                f"{self.path} already holds a run; continue it with {commands.resume}, "
                f"or pick {commands.another_run}"
            )

    def refuse_links(self) -> None:
        """A run directory from someone else may hold symbolic links where the template writes
        (`metrics.jsonl -> ~/.bashrc`, `checkpoints -> /elsewhere`), or a directory or a FIFO
        where it writes a file: refused in one line before anything is written, rather than
        written through or tripped over. `checkpoints/last`, the template's
        own pointer, may only name a checkpoint beside it."""
        links = [self.path] if self.path.is_symlink() else []
        links += [self.path / name for name in _WRITTEN if (self.path / name).is_symlink()]
        for folder in (self.tensorboard_dir, self.checkpoint_dir):
            if folder.is_dir() and not folder.is_symlink():
                links += [
                    entry
                    for entry in folder.iterdir()
                    if entry.is_symlink() and not _is_last_pointer(entry)
                ]
        if links:
            raise UserError(
                f"{self.path}: {links[0]} is a symbolic link; the template writes a run "
                "directory's files where they are, never through a link (remove the link)"
            )
        for name in (CONFIG, MANIFEST, DETERMINISM, METRICS, LOCK_FILE):
            path = self.path / name
            if path.exists() and not path.is_file():
                raise UserError(
                    f"{self.path}: {path} is not a plain file; the template writes its {name} "
                    "there (move it away)"
                )

    def is_completed(self) -> bool:
        manifest = self.read_manifest()
        return manifest is not None and manifest.get("status") == "completed"

    # ----------------------------------------------------------------- writers
    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, text: str) -> None:
        atomic_write_text(self.config_file, text)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.manifest_file, manifest)

    def write_determinism(self, report: dict[str, Any]) -> None:
        write_json(self.determinism_file, report)

    def append_metrics(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        with WRITES:
            append_text(self.metrics_file, line)

    def drop_metrics_after(self, step: int) -> None:
        """On resume: the records past the checkpoint's step are redone, so they go."""
        if not self.metrics_file.exists():
            return
        kept = [
            line
            for line in self.metrics_file.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        atomic_write_text(self.metrics_file, "".join(f"{line}\n" for line in kept))

    # ----------------------------------------------------------------- readers
    def read_manifest(self) -> dict[str, Any] | None:
        return read_json(self.manifest_file) if self.manifest_file.is_file() else None

    def read_config(self) -> dict[str, Any] | None:
        """The resolved config the run was started with (config.yaml)."""
        if not self.config_file.is_file():
            return None
        return yaml.safe_load(self.config_file.read_text())

    def read_metrics(self, kind: str | None = None) -> list[dict[str, Any]]:
        """metrics.jsonl records, all or of one kind (`step` or `epoch`)."""
        if not self.metrics_file.is_file():
            return []
        records = [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]
        return [record for record in records if kind is None or record["kind"] == kind]


def _is_last_pointer(entry: Path) -> bool:
    """`checkpoints/last`, linking to a `step-N` directory beside it."""
    if entry.name != LAST_SHARDED:
        return False
    target = os.readlink(entry)
    return "/" not in target and target.startswith("step-")


def find_runs(output_dir: str | Path) -> list[RunDirectory]:
    """Every run directory under an --output-dir (those with a manifest), in path order."""
    manifests = sorted(Path(output_dir).glob(f"*/*/seed*/{MANIFEST}"))
    return [RunDirectory(manifest.parent) for manifest in manifests]


def find_one_run(output_dir: str | Path) -> RunDirectory:
    runs = find_runs(output_dir)
    if len(runs) != 1:
        raise UserError(f"expected one run under {output_dir}, found {len(runs)}")
    return runs[0]
