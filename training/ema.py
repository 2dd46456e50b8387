"""An exponential moving average of the weights (`trainer.ema`), kept under the guarantees.

torch's `AveragedModel` with the EMA update does the averaging, with the buffers (BatchNorm's
running statistics) averaged too, as torchvision's classification reference does. What this
module adds is what that reference leaves to the loop and where reproducibility breaks:

- The EMA is state: it travels in every checkpoint (`ema`), so a resumed run continues the same
  average; a resume that dropped it would restart the average from the current weights.
- When it updates is a function of the optimizer step (every `every_steps` steps; during the
  first `warmup_steps` steps it copies the weights instead, torchvision's reset during the
  learning-rate warmup), never of wall time or of how often the loop was entered.
- In ordinary data parallelism every rank's BatchNorm buffers differ (each saw its own batch);
  the EMA of rank 0 is the one saved and evaluated, and evaluation first gives every rank rank
  0's EMA buffers, as it does for the model.

`decay` is per update, not adjusted to the batch size and epochs as the reference's
`--model-ema-decay` is; a recipe file states the value it means.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from foundation.section import Section


class EmaConfig(Section):
    """The `trainer.ema` section."""

    enabled: bool = Field(False, description="keep an EMA of the weights, evaluated beside them")
    decay: float = Field(0.999, gt=0.0, lt=1.0, description="EMA <- decay x EMA + (1 - decay) x w")
    every_steps: int = Field(1, ge=1, description="update the EMA every N optimizer steps")
    warmup_steps: int = Field(
        0, ge=0, description="until this optimizer step the EMA copies the weights"
    )


class WeightAverage:
    """The EMA of one model, updated after optimizer steps."""

    def __init__(self, config: EmaConfig, model: nn.Module) -> None:
        self.config = config
        self.averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(config.decay), use_buffers=True
        )
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    def after_step(self, step: int, model: nn.Module) -> None:
        """After optimizer step `step` (counted from 1)."""
        if step % self.config.every_steps:
            return
        if step <= self.config.warmup_steps:
            self.averaged.n_averaged.zero_()  # the next update copies the weights
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()
