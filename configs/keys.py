"""Two resolved configs, key by key: which keys differ, and whether a difference matters.

The role of every key (computation, stopping criterion, runtime) is declared on its field
(foundation/section.py); resume, the multi-seed runner and compare all ask it here or there,
never a hand-written list.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from foundation.section import Role, flatten, role_of


def resolved_keys(config: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """A resolved config (or its config.yaml), flattened to dotted keys, the seed left out:
    the keys that say which experiment a run belongs to."""
    tree = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    flat = flatten(tree)
    flat.pop("seed", None)
    return flat


def differing_keys(
    first: BaseModel | dict[str, Any], second: BaseModel | dict[str, Any]
) -> dict[str, list[Any]]:
    a, b = resolved_keys(first), resolved_keys(second)
    return {
        key: [a.get(key), b.get(key)] for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)
    }


def keys_in_role(config: BaseModel, keys: list[str], *roles: Role) -> list[str]:
    """The `keys` (dotted) whose role in `config` is one of `roles`."""
    return [key for key in keys if role_of(config, key) in roles]
