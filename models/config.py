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
