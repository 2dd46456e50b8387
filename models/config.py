"""The `model` section's one shared key: which registered model. Each model declares its own
section on top of it, beside its builder (models/smallcnn.py, models/resnet18.py); the config
loader picks the section by `model.name`, so a key the chosen model does not read is refused
like any unknown key (with the model that does read it named in the error).
"""

from __future__ import annotations

from pydantic import Field

from foundation.section import Section


class ModelConfig(Section):
    name: str = Field("smallcnn", description="registered model")

    def check_tensor_parallel(self, degree: int) -> None:
        """Refuse (ValueError, one line) a `parallel.tensor` degree this model cannot be split
        into. A model that can be split overrides this and has a `tensor_parallel_plan()`
        (models/vit_tiny.py)."""
        raise ValueError(
            f"parallel.tensor={degree} needs a model with a tensor-parallel plan; model "
            f"{self.name} has none (vit_tiny has one; docs/tensor-parallel.md shows how a model "
            "declares its own)"
        )
