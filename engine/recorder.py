"""The run recorder: everything a run writes and prints, driven by the trainer's events.

It writes config.yaml, manifest.json, determinism.json, metrics (metrics.jsonl, TensorBoard),
checkpoints and the progress and epoch lines, all through `engine.rundir`. Only rank 0 writes or
prints; the collective parts (gathering the seed plans, the op counts) involve every rank. It
knows the run only as plain values (`RunIdentity`) and the trainer only through its events.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.checkpoint import newest_complete, remove_stale_temporaries, save_checkpoint
from engine.clock import seconds_since_process_start
from engine.determinism import (
    DeterminismConfig,
    NondeterminismRecorder,
    Precision,
    determinism_report,
)
from engine.distributed import DistContext, all_gather_objects, collective
from engine.events import Position
from engine.faults import Interrupted, OutputWriteFailed, TrainingFault
from engine.metrics import MetricsLogger
from engine.progress import ProgressLine
from engine.provenance import command_line, library_versions, now_iso, state_dict_sha256
from engine.rundir import RunDirectory
from seeding import SeedPlan
from seeding.hashseed import hash_seed_warning


@dataclass(frozen=True)
class RunIdentity:
    """What the recorder writes about a run, resolved by train.py from the config and the CLI."""

    config_name: str
    profile: str
    seed: int
    argv: tuple[str, ...]
    settings: dict[str, Any]  # the resolved config, as saved in config.yaml and checkpoints
    config_yaml: str
    determinism: DeterminismConfig
    hyperparameters: dict[str, Any]  # for TensorBoard's HParams tab
    epochs: int
    keep_checkpoints: int
    git: dict[str, Any] | None
    world_size_invariance: dict[str, Any] | None = None  # the mode's layout, when it is on


class RunRecorder:
    def __init__(
        self,
        run_dir: RunDirectory,
        identity: RunIdentity,
        context: DistContext,
        plan: SeedPlan,
        precision: Precision,
        determinism_notes: list[str],
        fingerprint: dict[str, Any],
        resume_step: int | None,
    ) -> None:
        self.run_dir = run_dir
        self.identity = identity
        self.context = context
        self.precision = precision
        self.fingerprint = fingerprint  # what a checkpoint must match to be resumed
        self.determinism_notes = list(determinism_notes)
        self.nondeterminism = NondeterminismRecorder()
        self.first_step_at: float | None = None  # seconds since process start
        self.seeds = {
            "base": identity.seed,
            "strategy": plan.strategy,
            "ranks": [
                {"rank": rank, "host": host, **description}
                for rank, (host, description) in enumerate(self._gather_plans(context, plan))
            ],
        }
        self.manifest: dict[str, Any] = {
            "status": "running",
            "command_line": command_line(),
            "arguments": list(identity.argv),
            "config_name": identity.config_name,
            "profile": identity.profile,
            "seed": identity.seed,
            "seeds": self.seeds,
            "world_size": context.world_size,
            "nodes": context.nodes,
            "device": str(context.device),
            "backend": context.backend,
            "versions": library_versions(),
            "git": identity.git if context.is_main else None,
            "start_time": now_iso(),
            "end_time": None,
            "resumed_from_step": resume_step,
            "world_size_invariance": identity.world_size_invariance,
            "final_metrics": None,
            "final_weights_sha256": None,
        }
        self.logger = MetricsLogger(run_dir, enabled=context.is_main, resume_step=resume_step)
        self.progress = ProgressLine(sys.stdout, identity.epochs) if context.is_main else None
        if context.is_main:
            run_dir.create()
            for stale in remove_stale_temporaries(run_dir.checkpoint_dir):
                print(f"removed an unfinished checkpoint write: {stale.name}")
            run_dir.write_config(identity.config_yaml)
            warning = hash_seed_warning()
            if warning:
                self.determinism_notes.append(warning)
                print(f"warning: {warning}", file=sys.stderr)

    @staticmethod
    def _gather_plans(context: DistContext, plan: SeedPlan) -> list[Any]:
        with collective(context, "gathering the seed plans"):
            return all_gather_objects(context, (socket.gethostname(), plan.describe()))

    def say(self, message: str) -> None:
        if self.context.is_main:
            if self.progress is not None:
                self.progress.clear()
            print(message, flush=True)

    # ----------------------------------------------------------------- start
    def start(self, position: Position) -> None:
        report = self._determinism({})
        self.manifest["determinism"] = report
        if self.context.is_main:
            self.run_dir.write_determinism(report)
            self.run_dir.write_manifest(self.manifest)
        where = (
            f", resuming at epoch {position.epoch} batch {position.batch_in_epoch} "
            f"(step {position.step})"
            if position.step
            else ""
        )
        self.say(
            f"run {self.run_dir}  seed {self.identity.seed}  profile {self.identity.profile}  "
            f"{self.context.world_size} process(es) on {self.context.nodes} node(s), "
            f"{self.context.device}{where}\ndeterminism: {report['verdict']}"
        )

    @contextlib.contextmanager
    def recording_nondeterminism(self) -> Iterator[None]:
        self.nondeterminism.install()
        try:
            yield
        finally:
            self.nondeterminism.uninstall()

    # ----------------------------------------------------------------- events (TrainingEvents)
    def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        if self.first_step_at is None:
            self.first_step_at = round(seconds_since_process_start(), 3)
        if self.progress is not None:
            self.progress.update(position, batches_per_epoch, samples)

    def step_logged(self, position: Position, values: dict[str, float]) -> None:
        with self._writing(self.run_dir.metrics_file):
            self.logger.log("step", position.step, values, epoch=position.epoch)

    def epoch_finished(self, position: Position, metrics: dict[str, float]) -> None:
        epoch = position.epoch
        with self._writing(self.run_dir.metrics_file):
            self.logger.log("epoch", position.step, metrics, epoch=epoch)
        self.say(
            f"epoch {epoch:>3}/{self.identity.epochs}  step {position.step:>6}  "
            f"train_loss {metrics['train_loss']:.4f}  train_acc {metrics['train_acc']:.4f}  "
            f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_acc']:.4f}  "
            f"lr {metrics['lr']:.5f}  {metrics['samples_per_s']:,.0f} samples/s",
        )

    def checkpoint_due(self, position: Position, state: dict[str, Any]) -> None:
        if not self.context.is_main:
            return
        payload = {
            **state,
            "fingerprint": self.fingerprint,
            "seeds": self.seeds,
            "config": self.identity.settings,
            "versions": self.manifest["versions"],
        }
        directory = self.run_dir.checkpoint_dir
        with self._writing(directory / f"step-{position.step:08d}.pt"):
            save_checkpoint(directory, position.step, payload, self.identity.keep_checkpoints)

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """A full disk, a quota or a file size limit: one line naming the file and the cause.
        Checkpoints are written to a temporary file and renamed (engine/atomic.py), so the
        previous one and its checksum are untouched."""
        try:
            yield
        except OSError as error:
            raise OutputWriteFailed(
                f"cannot write {path}: {error.strerror or error}".rstrip()
            ) from None

    # ----------------------------------------------------------------- a fault
    def record_fault(self, position: Position, fault: TrainingFault) -> None:
        """Complete the fault's line with where to continue from; the rank that reports it
        writes the manifest. Nothing else is written: no checkpoint, no final metrics."""
        if self.context.rank != fault.reporting_rank:
            return
        newest = self._newest_checkpoint()
        fault.add_hint(
            "no checkpoint was written yet, so the run starts over"
            if newest is None
            else f"last complete checkpoint {newest}; continue with --resume auto"
        )
        self.manifest.update(self.run_dir.read_manifest() or {})
        self.manifest.update(
            status="interrupted" if isinstance(fault, Interrupted) else "failed",
            fault=fault.kind,
            error=str(fault),
            end_time=now_iso(),
            wall_time_s=round(seconds_since_process_start(), 3),
            final_step=position.step,
            final_epoch=position.epoch,
            resume_from=None if newest is None else str(newest),
        )
        try:
            self.run_dir.write_manifest(self.manifest)
        except OSError as error:
            fault.add_hint(f"the manifest could not be updated either ({error.strerror})")
        with contextlib.suppress(OSError):
            self.logger.close()

    def _newest_checkpoint(self) -> Path | None:
        return newest_complete(self.run_dir.checkpoint_dir)[0]

    # ----------------------------------------------------------------- end
    def finish(
        self,
        position: Position,
        weights: dict[str, torch.Tensor],
        final_metrics: dict[str, float] | None,
        status: str = "completed",
        error: str | None = None,
    ) -> None:
        """Collective (op counts are gathered); rank 0 writes the manifest and prints the end."""
        report = self._determinism(self._gathered_op_counts())
        if not self.context.is_main:
            return
        self.manifest.update(
            status=status,
            error=error,
            end_time=now_iso(),
            wall_time_s=round(seconds_since_process_start(), 3),
            time_to_first_step_s=self.first_step_at,
            final_step=position.step,
            final_epoch=position.epoch,
            final_metrics=final_metrics,
            final_weights_sha256=state_dict_sha256(weights),
            determinism=report,
        )
        self.run_dir.write_determinism(report)
        self.run_dir.write_manifest(self.manifest)
        if final_metrics is not None:
            hyperparameters = {
                **self.identity.hyperparameters,
                "world_size": self.context.world_size,
            }
            self.logger.log_hparams(hyperparameters, final_metrics)
            self.say(
                f"done: val_acc {final_metrics['val_acc']:.4f}  "
                f"val_loss {final_metrics['val_loss']:.4f}  step {position.step}  "
                f"{self.manifest['wall_time_s']:.1f}s\n"
                f"determinism: {report['verdict']}\noutputs: {self.run_dir}"
            )
        self.logger.close()

    def _gathered_op_counts(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        with collective(self.context, "gathering the nondeterministic-op counts"):
            gathered = all_gather_objects(self.context, dict(self.nondeterminism.counts))
        for counts in gathered:
            total.update(counts)
        return dict(total)

    def _determinism(self, ops: dict[str, int]) -> dict[str, Any]:
        return determinism_report(
            self.identity.profile,
            self.identity.determinism,
            self.context.device,
            self.determinism_notes,
            ops,
            self.precision,
        )
