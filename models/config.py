"""The `model` section of the config: what the model builders read.

A fork that adds a model option adds it here; the root config picks this section up.
"""

from __future__ import annotations

from pydantic import Field

from foundation.section import Section


class ModelConfig(Section):
    name: str = "smallcnn"
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    width: int = Field(16, ge=4)
