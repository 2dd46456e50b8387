"""manifest.json and determinism.json: what a run was, how it ended, and where to continue.

One owner of both files, apart from the console (runtime/console.py): the manifest is written
at the start (`status: running`), after a fault (`failed` or `interrupted`, with `resume_from`)
and at the end (`completed`, with the final metrics and the weights' digest). Only the rank
that writes calls the write methods; the content is kept on every rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from foundation.faults import Interrupted, TrainingFault
from runtime.clock import seconds_since_process_start
from runtime.provenance import command_line, library_versions, now_iso, slurm_job
from runtime.rundir import RunDirectory
from training.events import Position


class RunManifest:
    def __init__(self, run_dir: RunDirectory, content: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.content = content

    @classmethod
    def started(
        cls,
        run_dir: RunDirectory,
        identity: Any,
        seeds: dict[str, Any],
        topology: dict[str, Any],
        resume_step: int | None,
    ) -> RunManifest:
        """The manifest of a run that is starting (`identity`: runtime.recorder.RunIdentity)."""
        return cls(
            run_dir,
            {
                "status": "running",
                "command_line": command_line(),
                "arguments": list(identity.argv),
                "config_name": identity.config_name,
                "profile": identity.profile,
                "seed": identity.seed,
                "seeds": seeds,
                **topology,
                "versions": library_versions(),
                "git": identity.git,
                "slurm": slurm_job(),
                "start_time": now_iso(),
                "end_time": None,
                "resumed_from_step": resume_step,
                "world_size_invariance": identity.world_size_invariance,
                "augmentation": identity.augmentation,
                "data_subset": identity.data_subset,
                "init_from": identity.init_from,
                "resume_notes": list(identity.resume_notes),
                "final_metrics": None,
                "final_weights_sha256": None,
                "final_ema_weights_sha256": None,
            },
        )

    @property
    def versions(self) -> dict[str, Any]:
        return self.content["versions"]

    def note(self, **values: Any) -> None:
        """Values written with the next write (e.g. the augmentation preview's time)."""
        self.content.update(values)

    def write_start(self, determinism: dict[str, Any]) -> None:
        self.content["determinism"] = determinism
        self.run_dir.write_determinism(determinism)
        self.run_dir.write_manifest(self.content)

    def write_fault(
        self, position: Position, fault: TrainingFault, resume_from: Path | None
    ) -> None:
        """What happened, and where to continue from; whatever another writer put in the file
        since the start is kept. Raises OSError if the file cannot be written."""
        self.content.update(self.run_dir.read_manifest() or {})
        self.content.update(
            status="interrupted" if isinstance(fault, Interrupted) else "failed",
            fault=fault.kind,
            error=str(fault),
            end_time=now_iso(),
            wall_time_s=round(seconds_since_process_start(), 3),
            final_step=position.step,
            final_epoch=position.epoch,
            final_batch_in_epoch=position.batch_in_epoch,
            resume_from=None if resume_from is None else str(resume_from),
        )
        self.run_dir.write_manifest(self.content)

    def write_completed(
        self,
        position: Position,
        final_metrics: dict[str, float],
        weights_sha256: str,
        ema_weights_sha256: str | None,
        determinism: dict[str, Any],
        timings: dict[str, float | None],
    ) -> None:
        """`timings`: time_to_first_step_s, and compile_s (seconds spent compiling, None for an
        eager run), apart from the steps'."""
        self.content.update(
            status="completed",
            error=None,
            end_time=now_iso(),
            wall_time_s=round(seconds_since_process_start(), 3),
            **timings,
            final_step=position.step,
            final_epoch=position.epoch,
            final_batch_in_epoch=position.batch_in_epoch,
            final_metrics=final_metrics,
            final_weights_sha256=weights_sha256,
            final_ema_weights_sha256=ema_weights_sha256,
            determinism=determinism,
        )
        self.run_dir.write_determinism(determinism)
        self.run_dir.write_manifest(self.content)
