"""The default model: a small VGG-style CNN with BatchNorm and dropout, fast on a CPU.

Safe under `torch.use_deterministic_algorithms(True)` on CUDA: global average pooling to 1x1
dispatches to `mean` (AdaptiveAvgPool2d to larger outputs has no deterministic backward), and
max pooling is 2D.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from models.config import ModelConfig
from models.registry import register_model


class SmallCNNConfig(ModelConfig):
    name: Literal["smallcnn"] = "smallcnn"
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout before the classifier")
    width: int = Field(16, ge=4, description="channels of the first block (x2, x4 after)")


def _conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, width: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(3, width),
            _conv_block(width, 2 * width),
            _conv_block(2 * width, 4 * width),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


@register_model("smallcnn", SmallCNNConfig)
def build_smallcnn(config: SmallCNNConfig, num_classes: int, image_size: int) -> nn.Module:
    return SmallCNN(num_classes, config.width, config.dropout)
