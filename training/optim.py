"""Optimizer and learning-rate schedule.

Why the schedule horizon is stored, not recomputed: `trainer.epochs` and `trainer.max_steps` are
stopping criteria that may change on resume. If the cosine horizon followed them, a resumed run
would take a different learning rate at every later step. The horizon is fixed when the run starts
(`trainer.epochs` x batches per epoch) and travels in the checkpoint; past it the rate stays at its
final value.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

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
    scheduler: Literal["none", "cosine"] = Field(
        "cosine", description="`cosine` over trainer.epochs as set when the run starts, or `none`"
    )


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
    """The LR factor at a step: cosine from 1 to 0 over `horizon` steps, then flat."""

    def __init__(self, kind: str, horizon: int) -> None:
        self.kind = kind
        self.horizon = max(1, horizon)

    def __call__(self, step: int) -> float:
        if self.kind == "none":
            return 1.0
        progress = min(step, self.horizon) / self.horizon
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, horizon: int
) -> tuple[torch.optim.lr_scheduler.LambdaLR, LearningRateFactor]:
    factor = LearningRateFactor(config.scheduler, horizon)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), factor
