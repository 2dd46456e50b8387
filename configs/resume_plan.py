"""The resume plan: what a run continues from, made once before anything is written and checked
once the computation is known.

Why one object: deciding a resume took six names in two packages across train.py's first three
phases (the resume point, the run's own config, the finished-run check, the fingerprint and its
defaults, whether the world size may change), with a list of notes built in one phase and
extended in the next. Here phase 1 makes the plan (`plan_resume`), phase 2 checks it against the
computation (`check`), phase 3 restores the trainer from it (`restore`). Each phase's notes are
its own field, read together as `notes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from configs.cli import Arguments
from configs.finished import finished_run_asked_again, nothing_left
from configs.resume import config_for_resume, world_size_may_change
from configs.schema import Config
from foundation.process import process_launch
from runtime.checkpoint.contents import reading
from runtime.checkpoint.fingerprint import computation_defaults, computation_fingerprint
from runtime.checkpoint.owner import Checkpointer
from runtime.checkpoint.resume import ResumePoint, resume_point
from runtime.rundir import RunDirectory
from training.parallel.protocol import ParallelMode
from training.topology import Topology
from training.trainer import Trainer


@dataclass
class ResumePlan:
    config: Config  # the run's: its own config.yaml when it continues
    point: ResumePoint = field(default_factory=lambda: ResumePoint(None, continuing=False))
    config_notes: tuple[str, ...] = ()  # the run's config against the command (phase 1)
    done: str | None = None  # the run has nothing left to train: the line that says so
    layout_notes: tuple[str, ...] = ()  # the checkpoint against the computation (phase 2)

    @property
    def notes(self) -> tuple[str, ...]:
        """What continues differently, said at the start and kept in the manifest."""
        return self.config_notes + self.layout_notes

    @property
    def checkpoint(self) -> dict[str, Any] | None:
        return self.point.checkpoint

    @property
    def loads(self) -> bool:
        """The run continues from a checkpoint's weights (not `init_from`'s)."""
        return self.checkpoint is not None

    @property
    def step(self) -> int | None:
        """The step the logs continue after (None: a fresh run directory)."""
        return self.point.step

    def check(self, checkpoints: Checkpointer, mode: ParallelMode, topology: Topology) -> None:
        """Tell the checkpoint owner what every checkpoint of this run computes; a resumed
        checkpoint of another computation is refused in one line (before anything is written)."""
        world_size = mode.fingerprint_world_size(topology.world_size)
        fingerprint = computation_fingerprint(self.config, world_size, topology.device.type)
        self.layout_notes = tuple(
            checkpoints.expect(
                fingerprint,
                self.point,
                defaults=computation_defaults(self.config),
                world_size_may_change=world_size_may_change(self.config, self.checkpoint),
            )
        )

    def restore(self, trainer: Trainer) -> None:
        if self.checkpoint is not None:
            with reading(self.point.path):
                trainer.load_state_dict(self.checkpoint)


def plan_resume(run_dir: RunDirectory, arguments: Arguments, config: Config) -> ResumePlan:
    """`--resume auto`, `--resume PATH`, a torchrun restart, or a fresh run; the run's own
    config when it continues; `done` when the command leaves nothing to train. Any problem
    with the checkpoint or the config is one line, before anything is written."""
    fresh = arguments.resume is None and process_launch().restart_attempt == 0
    if fresh and (done := finished_run_asked_again(run_dir, config, arguments.overrides)):
        return ResumePlan(config, done=done)  # the same command again: nothing to train
    point = resume_point(run_dir, arguments.resume)
    if not point.continuing:
        return ResumePlan(config, point)
    with reading(point.path):  # the run that was started: its own config.yaml
        config, notes = config_for_resume(
            run_dir.read_config(), config, arguments.overrides, point.checkpoint
        )
    done = None
    if point.checkpoint is not None:  # completed at its stop: the manifest's end stays as it was
        done = nothing_left(run_dir, config, run_dir.read_manifest(), int(point.checkpoint["step"]))
    return ResumePlan(config, point, tuple(notes), done)
