"""The base of every config section, wherever it lives (engine/, data/, models/).

Why one base with `extra="forbid"` and strict types: a misspelt key or a string where a number
belongs must stop the run before anything is written, with the key's dotted name. Each component
declares the section it reads next to its own code, as torchtitan nests a component's `Config`;
`configs/schema.py` only assembles them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)
