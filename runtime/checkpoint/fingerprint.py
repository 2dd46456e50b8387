"""What a checkpoint's computation was: the keys whose role is `computation`, the world size as
the mode counts it and the device type; and the first key a resume would change."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from foundation.section import keys_with_role


# ----------------------------------------------------------------------------- the owner
def computation_fingerprint(
    config: BaseModel, world_size: int | str, device_type: str
) -> dict[str, Any]:
    """Every setting that changes what is computed: the config's keys whose role is
    `computation` (foundation/section.py), the world size as the parallel mode counts it
    ("any" in the world-size-invariant mode) and the device type."""
    return {
        **keys_with_role(config, "computation"),
        "world_size": world_size,
        "device_type": device_type,
    }


def computation_defaults(config: BaseModel) -> dict[str, Any]:
    """The computation keys of `config`'s schema at their defaults: what a key added to the
    template after a checkpoint was written computed before it existed."""
    try:
        return keys_with_role(type(config)(), "computation")
    except ValidationError:  # a section without defaults: no key counts as added
        return {}


def first_difference(
    saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any] | None = None
) -> str | None:
    """The first key whose value differs. A key the checkpoint does not know (a newer template
    added it) is no difference while it stays at its default, which computes what the run
    computed without it (a run started before `optim.label_smoothing` existed resumes)."""
    for key in sorted(set(saved) | set(current)):
        added = key not in saved and defaults is not None and key in defaults
        if added and current.get(key) == defaults[key]:  # type: ignore[index]
            continue
        if saved.get(key) != current.get(key):
            return f"{key} differs (checkpoint {saved.get(key)!r}, now {current.get(key)!r})"
    return None
