"""What a training step minimises: the loss of a (possibly mixed) batch, and what counts as correct.

Both step strategies (training/parallel/data_parallel.py, training/parallel/invariant.py) ask the objective for their
inputs and loss, so label smoothing and MixUp/CutMix mean the same thing in either mode.

Why a mixer is keyed by (step, slot) and not drawn from an RNG at hand: MixUp and CutMix draw
once per *batch* (a lambda, a box), not per sample. Drawn from torch's global RNG (as
torchvision's v2.MixUp does), the draw would depend on how many draws came before it: on the
DataLoader workers, on the rank and on where a resumed run started. A draw keyed by the
optimizer step and the slot of the micro-batch in it is a pure function of those two numbers.
A slot is the micro-batch's place in the step: in the world-size-invariant mode its index j in
the global batch (the same on every W); in the ordinary mode rank x accumulate_steps + the
micro-step, so every rank mixes its own batch with its own draw.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class BatchMixer(Protocol):
    """Mixes a micro-batch: (images, labels) -> (images, soft targets), from the draw at
    (step, slot); labels are class indices, targets probabilities over the classes."""

    def __call__(
        self, step: int, slot: int, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class Objective:
    """Cross-entropy with label smoothing, on MixUp/CutMix-mixed inputs when a mixer is given."""

    def __init__(self, label_smoothing: float = 0.0, mixer: BatchMixer | None = None) -> None:
        self.label_smoothing = label_smoothing
        self.mixer = mixer

    def inputs(
        self, step: int, slot: int, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch the model sees and its targets (class indices, or probabilities)."""
        if self.mixer is None:
            return images, labels
        return self.mixer(step, slot, images, labels)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    @staticmethod
    def correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Correct predictions; against a mixed target, its larger part (torchvision's
        reference counts the same)."""
        classes = targets.argmax(dim=1) if targets.ndim == 2 else targets
        return (logits.argmax(dim=1) == classes).sum()
