"""BatchNorm running statistics in the world-size-invariant step, as one process would have them.

Why: each micro-batch normalises with its own statistics, but the running buffers would see the
micro-batches in a rank-dependent order (or only this rank's). So the buffers are snapshotted
before the step, each micro-batch's mean and variance are captured (momentum 1 turns the running
buffers into exactly that micro-batch's statistics) and gathered, then every rank replays the
updates for micro-batches 0 ... M-1 in global order.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class BatchNormReplay:
    """Running statistics as if one process had seen the micro-batches in global order."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [
            module
            for module in model.modules()
            if isinstance(module, _BatchNorm) and module.track_running_stats
        ]
        self._device = next(model.parameters()).device
        self._snapshot: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._momentum: list[float | None] = []

    @property
    def stats_size(self) -> int:
        """Values captured per micro-batch: mean and variance of every layer."""
        return sum(2 * layer.num_features for layer in self.layers)

    def begin_step(self) -> None:
        self._snapshot = [
            (
                layer.running_mean.clone(),
                layer.running_var.clone(),
                layer.num_batches_tracked.clone(),
            )  # type: ignore[union-attr]
            for layer in self.layers
        ]
        self._momentum = [layer.momentum for layer in self.layers]
        for layer in self.layers:
            layer.momentum = 1.0  # the buffers become exactly this micro-batch's statistics

    def capture(self) -> torch.Tensor:
        """After a micro-batch's forward: its mean and (unbiased) variance of every layer."""
        parts = [
            torch.cat([layer.running_mean, layer.running_var])  # type: ignore[list-item]
            for layer in self.layers
        ]
        if not parts:  # a model without BatchNorm: nothing to capture, on the model's device
            return torch.zeros(0, device=self._device)
        return torch.cat(parts).float()

    def finish_step(self, stats: list[torch.Tensor]) -> None:
        """Restore the snapshot, then apply each micro-batch's update in global order."""
        for layer, (mean, var, tracked), momentum in zip(
            self.layers, self._snapshot, self._momentum, strict=True
        ):
            layer.momentum = momentum
            layer.running_mean.copy_(mean)  # type: ignore[union-attr]
            layer.running_var.copy_(var)  # type: ignore[union-attr]
            layer.num_batches_tracked.copy_(tracked)  # type: ignore[union-attr]
        for captured in stats:
            offset = 0
            for layer in self.layers:
                width = layer.num_features
                batch_mean = captured[offset : offset + width]
                batch_var = captured[offset + width : offset + 2 * width]
                offset += 2 * width
                layer.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                factor = (
                    layer.momentum
                    if layer.momentum is not None
                    else 1.0 / float(layer.num_batches_tracked)  # type: ignore[arg-type]
                )
                running_mean, running_var = layer.running_mean, layer.running_var
                running_mean.mul_(1 - factor).add_(batch_mean.to(running_mean), alpha=factor)  # type: ignore[union-attr]
                running_var.mul_(1 - factor).add_(batch_var.to(running_var), alpha=factor)  # type: ignore[union-attr]
