"""Optimizer, learning-rate schedule and the gradient clip: what turns gradients into a step.

Why the schedule horizon is stored, not recomputed: `trainer.epochs` and `trainer.max_steps` are
stopping criteria that may change on resume. If the cosine horizon followed them, a resumed run
would take a different learning rate at every later step. The horizon is fixed when the run starts
(`trainer.epochs` x optimizer steps per epoch) and travels in the checkpoint; past it the rate
stays at its final value.

Why the schedule is a pure function of the optimizer step (`LearningRateFactor`): a resumed run,
a run with gradient accumulation and a run on another world size all count optimizer steps, so
the same step gets the same rate; torchvision's reference chains LinearLR and a main scheduler,
which is the same curve (warmup from `warmup_start_factor`, then the decay over the rest).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from foundation.errors import UserError
from foundation.section import Section


class OptimConfig(Section):
    """The `optim` section."""

    name: Literal["sgd", "adamw"] = Field("sgd", description="`sgd` or `adamw`")
    lr: float = Field(0.05, gt=0.0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(
        5e-4, ge=0.0, description="weight decay (none on BatchNorm parameters and biases)"
    )
    nesterov: bool = Field(True, description="Nesterov momentum (SGD)")
    scheduler: Literal["none", "cosine", "step"] = Field(
        "cosine",
        description="after the warmup: `cosine` to 0 over the rest of trainer.epochs as set when "
        "the run starts, `step` (x step_gamma every step_epochs epochs), or `none`",
    )
    step_epochs: int = Field(30, ge=1, description="`step` schedule: epochs between decays")
    step_gamma: float = Field(0.1, gt=0.0, le=1.0, description="`step` schedule: the decay")
    warmup_steps: int = Field(
        0, ge=0, description="linear learning-rate warmup over this many optimizer steps"
    )
    warmup_epochs: int = Field(
        0, ge=0, description="the warmup in epochs instead (one of the two, not both)"
    )
    warmup_start_factor: float = Field(
        0.01, gt=0.0, le=1.0, description="the warmup starts at lr x this factor"
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="label smoothing of the training loss (0 = none)"
    )
    clip_grad_norm: float | None = Field(
        None,
        gt=0.0,
        description="clip the reduced gradient to this global L2 norm (null = no clipping); "
        "the norm before clipping is logged as grad_norm",
    )

    @model_validator(mode="after")
    def _one_warmup(self) -> OptimConfig:
        if self.warmup_steps and self.warmup_epochs:
            raise ValueError("set optim.warmup_steps or optim.warmup_epochs, not both")
        return self

    def warmup_in_steps(self, steps_per_epoch: int) -> int:
        return self.warmup_steps or self.warmup_epochs * steps_per_epoch


def build_optimizer(config: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm/bias parameters: the usual recipe for convnets.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
        )
    return torch.optim.AdamW(groups, lr=config.lr)


class LearningRateFactor:
    """The LR factor after `step` optimizer steps: a linear warmup from `start_factor` to 1 over
    `warmup` steps, then the decay over the rest of `horizon` (cosine to 0, or x gamma every
    `step_epochs` epochs), flat past the horizon."""

    def __init__(self, config: OptimConfig, horizon: int, steps_per_epoch: int) -> None:
        self.kind = config.scheduler
        self.warmup = config.warmup_in_steps(steps_per_epoch)
        self.start_factor = config.warmup_start_factor
        self.decay_every = config.step_epochs * max(1, steps_per_epoch)
        self.gamma = config.step_gamma
        self.horizon = max(1, horizon)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup
        after = min(step, self.horizon) - self.warmup
        if self.kind == "cosine":
            progress = after / max(1, self.horizon - self.warmup)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.gamma ** (after // self.decay_every)
        return 1.0


def check_schedule(config: OptimConfig, horizon: int, steps_per_epoch: int) -> None:
    """A warmup that does not end before the schedule does is a mistake, not a schedule:
    refused before anything is written."""
    warmup = config.warmup_in_steps(steps_per_epoch)
    if warmup and warmup >= horizon:
        key = "optim.warmup_steps" if config.warmup_steps else "optim.warmup_epochs"
        limit = horizon if config.warmup_steps else -(-horizon // steps_per_epoch)
        raise UserError(
            f"{key}: a warmup of {warmup} optimizer steps does not end before the schedule "
            f"does ({horizon} steps: trainer.epochs x {steps_per_epoch} steps per epoch); "
            f"set {key} below {limit} (0 for none), or train longer (trainer.epochs, "
            "data.subset)"
        )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, horizon: int, steps_per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LambdaLR, LearningRateFactor]:
    factor = LearningRateFactor(config, horizon, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), factor
