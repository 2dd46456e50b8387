"""torchvision's ResNet-18, with a CIFAR-style stem for small inputs.

For images of 64 pixels or less, the 7x7 stride-2 stem and the max-pool would shrink a 32x32 input
to 8x8 before the first block; a 3x3 stride-1 stem without max-pool is the usual recipe. Weights
start random (no download). Safe under deterministic mode on CUDA: the final AdaptiveAvgPool2d has
output size 1, which dispatches to `mean`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from models.config import ModelConfig
from models.registry import register_model


class ResNet18Config(ModelConfig):
    name: Literal["resnet18"] = "resnet18"
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout before the classifier")


SMALL_IMAGE = 64


@register_model("resnet18", ResNet18Config)
def build_resnet18(config: ResNet18Config, num_classes: int, image_size: int) -> nn.Module:
    from torchvision.models import resnet18  # imported on use: it costs ~0.9 s of every start

    model = resnet18(weights=None, num_classes=num_classes)
    if image_size <= SMALL_IMAGE:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if config.dropout > 0:
        model.fc = nn.Sequential(nn.Dropout(config.dropout), model.fc)
    return model
