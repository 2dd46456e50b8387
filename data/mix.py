"""MixUp and CutMix (`data.mix`), with torchvision's semantics and the seed plan's draws.

What a mixed micro-batch is, as in torchvision.transforms.v2.MixUp / CutMix (which the
classification reference applies to whole batches): each image is paired with the one before it
(`roll(1, 0)`), lambda ~ Beta(alpha, alpha); MixUp blends the images, CutMix pastes a box of
the partner whose area is 1 - lambda (clipped at the border, lambda then set to the area kept);
the targets are the one-hot labels mixed by the same lambda. As in timm's Mixup (the recipe's
`mixup_alpha`, `cutmix_alpha`, `prob`, `switch_prob`): a batch is mixed with probability `prob`,
by CutMix with probability `switch_prob` when both alphas are on, else by the one that is.

Why not torchvision's transforms themselves: they draw lambda and the box from torch's global
RNG, so the draw would depend on the rank, the workers and the resume point. Here every draw of
micro-batch `slot` of optimizer step `step` comes from the plan's `mix` stream at (step, slot)
(training/objective.py says why that key), through a Philox generator made for that draw.
The image arithmetic is torchvision's, operation for operation (a unit test compares them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from foundation.section import Section
from seeding import SeedPlan


class MixConfig(Section):
    """The `data.mix` section: off unless an alpha is above 0."""

    mixup_alpha: float = Field(0.0, ge=0.0, description="MixUp's Beta(alpha, alpha); 0 = off")
    cutmix_alpha: float = Field(0.0, ge=0.0, description="CutMix's Beta(alpha, alpha); 0 = off")
    prob: float = Field(1.0, ge=0.0, le=1.0, description="probability that a batch is mixed")
    switch_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="with both on: probability of CutMix rather than MixUp"
    )

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


@dataclass(frozen=True)
class MixDraw:
    """What one micro-batch's draw decided: no mix (kind None), or MixUp / CutMix with lambda
    and, for CutMix, the box's centre as fractions of the width and height."""

    kind: str | None
    lam: float = 1.0
    box_center: tuple[float, float] = (0.0, 0.0)


class BatchMix:
    """The `training.objective.BatchMixer` of a run: draws at (step, slot) from `plan`."""

    def __init__(self, config: MixConfig, plan: SeedPlan, num_classes: int) -> None:
        self.config = config
        self.plan = plan
        self.num_classes = num_classes

    def draw(self, step: int, slot: int) -> MixDraw:
        """The decisions for one micro-batch, a pure function of (seed, step, slot)."""
        config = self.config
        rng = np.random.Generator(np.random.Philox(self.plan.seed("mix", step, slot)))
        if rng.random() >= config.prob:
            return MixDraw(None)
        if config.mixup_alpha > 0 and config.cutmix_alpha > 0:
            kind = "cutmix" if rng.random() < config.switch_prob else "mixup"
        else:
            kind = "mixup" if config.mixup_alpha > 0 else "cutmix"
        alpha = config.mixup_alpha if kind == "mixup" else config.cutmix_alpha
        lam = float(rng.beta(alpha, alpha))
        center = (float(rng.random()), float(rng.random())) if kind == "cutmix" else (0.0, 0.0)
        return MixDraw(kind, lam, center)

    def __call__(
        self, step: int, slot: int, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        draw = self.draw(step, slot)
        targets = F.one_hot(labels, self.num_classes).float()
        if draw.kind is None:
            return images, targets
        if draw.kind == "mixup":
            return mixup(images, targets, draw.lam)
        return cutmix(images, targets, draw.lam, draw.box_center)


def mixup(
    images: torch.Tensor, targets: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision v2.MixUp's arithmetic for a given lambda."""
    mixed = images.roll(1, 0).mul_(1.0 - lam).add_(images.mul(lam))
    return mixed, mix_targets(targets, lam)


def cutmix(
    images: torch.Tensor, targets: torch.Tensor, lam: float, center: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision v2.CutMix's box and arithmetic, for a given lambda and box centre (as
    fractions of the width and height; torchvision draws integer pixels, so does this)."""
    height, width = images.shape[-2:]
    x, y = int(center[0] * width), int(center[1] * height)
    r = 0.5 * math.sqrt(1.0 - lam)
    half_w, half_h = int(r * width), int(r * height)
    x1, y1 = max(x - half_w, 0), max(y - half_h, 0)
    x2, y2 = min(x + half_w, width), min(y + half_h, height)
    mixed = images.clone()
    mixed[..., y1:y2, x1:x2] = images.roll(1, 0)[..., y1:y2, x1:x2]
    kept = float(1.0 - (x2 - x1) * (y2 - y1) / (width * height))
    return mixed, mix_targets(targets, kept)


def mix_targets(targets: torch.Tensor, lam: float) -> torch.Tensor:
    return targets.roll(1, 0).mul_(1.0 - lam).add_(targets.mul(lam))
