"""A small Vision Transformer for 32x32 images, and its tensor-parallel plan.

Patch embedding, learned position embedding, a few pre-norm blocks (attention, MLP), mean pooling
over the tokens, a linear head. It exists to train tensor parallelism for real
(`parallel.tensor`, docs/tensor-parallel.md), so its layers are laid out the way Megatron-LM and
torchtitan split a transformer:

- attention: `q`, `k`, `v` column-parallel (each tp rank computes its own heads; separate
  projections, because a fused qkv split by columns would hand rank 0 all of q and half of k),
  `out` row-parallel (its all-reduce makes the residual stream whole again);
- MLP: `up` column-parallel, `down` row-parallel.

Its dropout sites are of the two kinds seeding/regions.py explains: the attention probabilities
and the MLP's hidden activation are sharded (drawn inside `sharded_randomness()`, a mask per tp
rank); the attention and MLP outputs are replicated (the ordinary stream, one mask for the whole
tensor-parallel group). `forward` finds this rank's heads from the shape of `q`'s output, so the
same code runs sharded and whole.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from foundation.errors import UserError
from models.config import ModelConfig
from models.registry import register_model
from seeding import sharded_randomness


class ViTTinyConfig(ModelConfig):
    name: Literal["vit_tiny"] = "vit_tiny"
    patch_size: int = Field(4, ge=1, description="pixels per patch side (32x32 -> 8x8 tokens)")
    width: int = Field(64, ge=8, description="token width")
    depth: int = Field(2, ge=1, description="transformer blocks")
    heads: int = Field(4, ge=1, description="attention heads (a multiple of parallel.tensor)")
    mlp_ratio: int = Field(2, ge=1, description="MLP hidden width / token width")
    attention_dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="dropout of the attention probabilities (sharded site)"
    )
    hidden_dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="dropout of the MLP's hidden activation (sharded site)"
    )
    residual_dropout: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="dropout of each attention and MLP output, before the residual sum "
        "(replicated site)",
    )

    @model_validator(mode="after")
    def _heads_divide_the_width(self) -> ViTTinyConfig:
        if self.width % self.heads:
            raise ValueError(f"model.width={self.width} is not a multiple of heads={self.heads}")
        return self

    def check_tensor_parallel(self, degree: int) -> None:
        """The heads and the MLP's hidden width are split evenly over the tp ranks."""
        if self.heads % degree:
            raise ValueError(
                f"parallel.tensor={degree} does not divide model.heads={self.heads}: each tensor-"
                "parallel rank computes a whole number of heads"
            )


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, attention_dropout: float, residual: float) -> None:
        super().__init__()
        self.head_width = width // heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.output_dropout = nn.Dropout(residual)

    def _heads(self, projected: Tensor) -> Tensor:
        batch, tokens, _ = projected.shape  # this rank's heads only, when sharded
        return projected.view(batch, tokens, -1, self.head_width).transpose(1, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        q, k, v = (
            self._heads(self.q(tokens)),
            self._heads(self.k(tokens)),
            self._heads(self.v(tokens)),
        )
        probabilities = ((q @ k.transpose(-2, -1)) * self.head_width**-0.5).softmax(dim=-1)
        with sharded_randomness():
            probabilities = self.attention_dropout(probabilities)
        mixed = (probabilities @ v).transpose(1, 2).flatten(2)
        return self.output_dropout(self.out(mixed))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, hidden_dropout: float, residual: float) -> None:
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.output_dropout = nn.Dropout(residual)

    def forward(self, tokens: Tensor) -> Tensor:
        hidden = nn.functional.gelu(self.up(tokens))
        with sharded_randomness():
            hidden = self.hidden_dropout(hidden)
        return self.output_dropout(self.down(hidden))


class Block(nn.Module):
    def __init__(self, config: ViTTinyConfig) -> None:
        super().__init__()
        width = config.width
        self.attention_norm = nn.LayerNorm(width)
        self.attention = Attention(
            width, config.heads, config.attention_dropout, config.residual_dropout
        )
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = MLP(
            width, width * config.mlp_ratio, config.hidden_dropout, config.residual_dropout
        )

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = tokens + self.attention(self.attention_norm(tokens))
        return tokens + self.mlp(self.mlp_norm(tokens))


class ViTTiny(nn.Module):
    def __init__(self, config: ViTTinyConfig, num_classes: int, image_size: int) -> None:
        super().__init__()
        if image_size % config.patch_size:
            raise UserError(
                f"model.patch_size={config.patch_size} does not divide the {image_size}-pixel "
                "images"
            )
        patches = (image_size // config.patch_size) ** 2
        self.patch_embedding = nn.Conv2d(
            3, config.width, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.position_embedding = nn.Parameter(torch.zeros(1, patches, config.width))
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        tokens = self.patch_embedding(images).flatten(2).transpose(1, 2) + self.position_embedding
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens).mean(dim=1))

    def tensor_parallel_plan(self) -> dict[str, Any]:
        """{submodule: ParallelStyle} for `torch.distributed.tensor.parallel.parallelize_module`
        (the layout in the module docstring); everything else stays replicated."""
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

        plan: dict[str, Any] = {}
        for index in range(len(self.blocks)):
            block = f"blocks.{index}"
            for column in ("attention.q", "attention.k", "attention.v", "mlp.up"):
                plan[f"{block}.{column}"] = ColwiseParallel()
            for row in ("attention.out", "mlp.down"):
                plan[f"{block}.{row}"] = RowwiseParallel()
        return plan


@register_model("vit_tiny", ViTTinyConfig)
def build_vit_tiny(config: ViTTinyConfig, num_classes: int, image_size: int) -> nn.Module:
    return ViTTiny(config, num_classes, image_size)
