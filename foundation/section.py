"""The base of every config section, wherever it lives, and the role each key plays in a run.

Why one base with `extra="forbid"` and strict types: a misspelt key or a string where a number
belongs must stop the run before anything is written, with the key's dotted name. Each component
declares the section it reads next to its own code, as torchtitan nests a component's `Config`;
`configs/schema.py` only assembles them.

Why a role per key, declared on the field: resume, the multi-seed runner and compare all need to
know whether two configs compute the same thing. A key is one of
- `computation` (the default): it changes what is computed. A checkpoint is resumed only under
  the same value; two runs differing in it are different experiments.
- `stopping`: a stopping criterion (epochs, max_steps). A checkpoint may be continued with
  another value (the schedule's horizon travels in the checkpoint), but a finished run with
  another value is not the same result.
- `runtime`: where files are, how often logs and checkpoints are written, worker counts,
  timeouts: nothing computed depends on it.
A new key says its role where it is declared: `Field(..., json_schema_extra=RUNTIME)`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Role = Literal["computation", "stopping", "runtime"]
STOPPING: dict[str, Any] = {"role": "stopping"}
RUNTIME: dict[str, Any] = {"role": "runtime"}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


def field_role(section: type[BaseModel], name: str) -> Role:
    extra = section.model_fields[name].json_schema_extra
    role = extra.get("role", "computation") if isinstance(extra, dict) else "computation"
    return role  # type: ignore[return-value]


def role_of(section: BaseModel, dotted: str) -> Role:
    """The role of a dotted key of `section` (an instance, so that the chosen dataset's or
    model's own section is asked). A key inside a plain mapping value (an augmentation pipeline)
    has the role of the field holding it; an unknown key counts as computation."""
    node: Any = section
    role: Role = "computation"
    for part in dotted.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            return role
        role = field_role(type(node), part)
        if role != "computation":
            return role
        node = getattr(node, part)
    return role


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: configs compared key by key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def keys_with_role(section: BaseModel, *roles: Role) -> dict[str, Any]:
    """The section's resolved keys (dotted, plain values) whose role is one of `roles`."""
    flat = flatten(section.model_dump(mode="json"))
    return {key: value for key, value in flat.items() if role_of(section, key) in roles}
