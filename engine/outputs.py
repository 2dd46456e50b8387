"""Everything a run writes and prints: config.yaml, manifest.json, determinism.json, metrics,
TensorBoard, checkpoints and progress lines. Only rank 0 writes or prints; the collective parts
(gathering seeds, RNG states, op counts) involve every rank.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.atomic import atomic_write_text
from engine.checkpoint import remove_stale_temporaries, save_checkpoint
from engine.cli import Arguments
from engine.clock import seconds_since_process_start
from engine.config import Config, config_to_yaml
from engine.determinism import NondeterminismRecorder, determinism_report
from engine.distributed import DistContext, all_gather_objects
from engine.manifest import command_line, git_state, library_versions, now_iso, state_dict_sha256
from engine.metrics import MetricsLogger
from engine.rundir import write_json
from seeding import SeedPlan
from seeding.hashseed import hash_seed_warning

if TYPE_CHECKING:
    from engine.trainer import Trainer


def say(context: DistContext, message: str) -> None:
    if context.is_main:
        print(message, flush=True)


class RunOutputs:
    def __init__(
        self,
        run_dir: Path,
        config: Config,
        context: DistContext,
        plan: SeedPlan,
        arguments: Arguments,
        determinism_notes: list[str],
        resume_step: int | None,
        fingerprint: dict[str, Any],
    ) -> None:
        self.run_dir = run_dir
        self.fingerprint = fingerprint  # what a checkpoint must match to be resumed
        self.config = config
        self.context = context
        self.determinism_notes = list(determinism_notes)
        self.recorder = NondeterminismRecorder()
        self.started = now_iso()
        self.seeds = {
            "base": config.seed,
            "strategy": plan.strategy,
            "ranks": [
                {"rank": rank, "host": host, **description}
                for rank, (host, description) in enumerate(
                    all_gather_objects(context, (socket.gethostname(), plan.describe()))
                )
            ],
        }
        self.manifest: dict[str, Any] = {
            "status": "running",
            "command_line": command_line(),
            "arguments": list(arguments.argv),
            "config_name": config.name,
            "profile": config.profile,
            "seed": config.seed,
            "seeds": self.seeds,
            "world_size": context.world_size,
            "nodes": context.nodes,
            "device": str(context.device),
            "backend": context.backend,
            "versions": library_versions(),
            "git": git_state() if context.is_main else None,
            "start_time": self.started,
            "end_time": None,
            "resumed_from_step": resume_step,
            "final_metrics": None,
            "final_weights_sha256": None,
        }
        self.logger = MetricsLogger(run_dir, enabled=context.is_main, resume_step=resume_step)
        if context.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            for stale in remove_stale_temporaries(self.checkpoint_dir):
                print(f"removed an unfinished checkpoint write: {stale.name}")
            atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
            warning = hash_seed_warning()
            if warning:
                self.determinism_notes.append(warning)
                print(f"warning: {warning}", file=sys.stderr)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    # ----------------------------------------------------------------- start
    def start(self, trainer: Trainer) -> None:
        report = self._determinism(trainer, {})
        self.manifest["determinism"] = report
        if self.context.is_main:
            write_json(self.run_dir / "determinism.json", report)
            write_json(self.run_dir / "manifest.json", self.manifest)
        state = trainer.state
        where = (
            f", resuming at epoch {state.epoch} batch {state.batch_in_epoch} (step {state.step})"
            if state.step
            else ""
        )
        say(
            self.context,
            f"run {self.run_dir}  seed {self.config.seed}  profile {self.config.profile}  "
            f"{self.context.world_size} process(es) on {self.context.nodes} node(s), {self.context.device}"
            f"{where}\ndeterminism: {report['verdict']}",
        )

    @contextlib.contextmanager
    def recording_nondeterminism(self) -> Iterator[None]:
        self.recorder.install()
        try:
            yield
        finally:
            self.recorder.uninstall()

    # ----------------------------------------------------------------- during training
    def epoch_finished(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        epoch = trainer.state.epoch
        self.logger.log("epoch", trainer.state.step, metrics, epoch=epoch)
        say(
            self.context,
            f"epoch {epoch:>3}/{self.config.trainer.epochs}  step {trainer.state.step:>6}  "
            f"train_loss {metrics['train_loss']:.4f}  train_acc {metrics['train_acc']:.4f}  "
            f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_acc']:.4f}  "
            f"lr {metrics['lr']:.5f}  {metrics['samples_per_s']:,.0f} samples/s",
        )

    def step_logged(self, trainer: Trainer, loss: float) -> None:
        self.logger.log(
            "step",
            trainer.state.step,
            {"loss": loss, "lr": trainer.scheduler.get_last_lr()[0]},
            epoch=trainer.state.epoch,
        )

    def save_checkpoint(self, trainer: Trainer) -> None:
        payload = trainer.checkpoint_payload(self.fingerprint)
        if payload is not None:
            payload["seeds"] = self.seeds
            payload["config"] = self.config.model_dump(mode="json")
            payload["versions"] = self.manifest["versions"]
            save_checkpoint(
                self.checkpoint_dir,
                trainer.state.step,
                payload,
                self.config.trainer.keep_checkpoints,
            )
        trainer.last_checkpoint_step = trainer.state.step

    # ----------------------------------------------------------------- end
    def finish(self, trainer: Trainer, status: str = "completed", error: str | None = None) -> None:
        final = trainer.evaluate() if status == "completed" else None
        report = self._determinism(trainer, self._gathered_op_counts())
        if not self.context.is_main:
            return
        self.manifest.update(
            status=status,
            error=error,
            end_time=now_iso(),
            wall_time_s=round(seconds_since_process_start(), 3),
            time_to_first_step_s=trainer.first_step_at,
            final_step=trainer.state.step,
            final_epoch=trainer.state.epoch,
            final_metrics=final,
            final_weights_sha256=state_dict_sha256(trainer.model.state_dict()),
            determinism=report,
        )
        write_json(self.run_dir / "determinism.json", report)
        write_json(self.run_dir / "manifest.json", self.manifest)
        if final is not None:
            hyperparameters = {
                "seed": self.config.seed,
                "profile": self.config.profile,
                "model": self.config.model.name,
                "dataset": self.config.data.name,
                "batch_size": self.config.data.batch_size,
                "lr": self.config.optim.lr,
                "epochs": self.config.trainer.epochs,
                "world_size": self.context.world_size,
            }
            self.logger.log_hparams(hyperparameters, final)
            print(
                f"done: val_acc {final['val_acc']:.4f}  val_loss {final['val_loss']:.4f}  "
                f"step {trainer.state.step}  {self.manifest['wall_time_s']:.1f}s\n"
                f"determinism: {report['verdict']}\noutputs: {self.run_dir}",
                flush=True,
            )
        self.logger.close()

    def _gathered_op_counts(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for counts in all_gather_objects(self.context, dict(self.recorder.counts)):
            total.update(counts)
        return dict(total)

    def _determinism(self, trainer: Trainer, ops: dict[str, int]) -> dict[str, Any]:
        return determinism_report(
            self.config.profile,
            self.config.determinism,
            trainer.device,
            self.determinism_notes,
            ops,
            trainer.amp,
            trainer.channels_last,
        )
