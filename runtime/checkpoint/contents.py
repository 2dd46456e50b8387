"""Reading a checkpoint back, as untrusted input: no link followed out of it, nothing unpickled
beyond tensors and plain values, every field a reader uses checked before use, and a malformed
value deeper inside said in one line where it is put to use (`reading`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from foundation.errors import UserError, first_line
from runtime.checkpoint.directory import (
    DirectoryTensors,
    StoredShards,
    damage,
    file_sha256,
    join_state,
    read_state,
)
from runtime.checkpoint.files import recorded_checksum
from runtime.checkpoint.names import FORMAT, STEP_NAME, checksum_path
from runtime.checkpoint.pickle_depth import torch_file_problem
from runtime.plain_files import NotAPlainFile, open_for_reading
from runtime.rundir import RunDirectory


def load_checkpoint(
    path: Path, whole_tensors: bool = True, checksums_checked: bool = False
) -> dict[str, Any]:
    """Load and check a checkpoint; any problem is a one-line UserError.

    A sharded checkpoint's tensors are read whole into this process, or, with
    `whole_tensors=False`, left on disk under "stored" (training/events.py's `StoredTensors`)
    for the trainer to read into its own layout. `checksums_checked`: the caller has just
    checked them (`newest_complete`), so the checkpoint is not read twice for them.

    A checkpoint is untrusted input: no link is followed but the `last` pointer to a sibling
    `step-N`, nothing is unpickled beyond tensors and plain values, and every field the
    template reads is checked before use (`check_fields`)."""
    path = _through_last_pointer(path)
    try:
        if path.is_dir():
            return _load_directory(path, whole_tensors, checksums_checked)
        payload = _load_file(path, checksums_checked)
    except NotAPlainFile as error:
        raise UserError(f"cannot load checkpoint {path}: {error}") from None
    check_fields(path, payload)
    return payload


def _through_last_pointer(path: Path) -> Path:
    """`checkpoints/last` names the newest sharded checkpoint by a link to a sibling; any other
    link in a checkpoint's path is refused rather than followed out of its directory."""
    if not path.is_symlink():
        return path
    target = os.readlink(path)
    if not STEP_NAME.match(target):
        raise UserError(
            f"cannot load checkpoint {path}: it is a symbolic link to {target[:80]!r}, not to a "
            "step-N checkpoint beside it; give the checkpoint's own path"
        )
    return path.with_name(target)


def _load_file(path: Path, checksums_checked: bool) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if not checksums_checked:
        recorded = recorded_checksum(path)
        if recorded is None and checksum_path(path).is_symlink():
            raise UserError(f"cannot load checkpoint {path}: its .sha256 is a symbolic link")
        if recorded is not None and recorded != file_sha256(path):
            raise UserError(
                f"checkpoint {path} is corrupt or truncated (sha256 does not match "
                f"{checksum_path(path).name})"
            )
    try:
        with open_for_reading(path) as stream:
            problem = torch_file_problem(stream)
            if problem is not None:
                raise UserError(f"cannot load checkpoint {path}: {problem}")
            payload = torch.load(stream, map_location="cpu", weights_only=True)
    except (NotAPlainFile, UserError):
        raise
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise UserError(f"cannot load checkpoint {path}: {_load_failure(error)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint of this template (format {FORMAT!r} expected)")
    return payload


def _load_failure(error: Exception) -> str:
    """torch's refusal of a pickle that is more than tensors and plain values, said without its
    advice to load the file with `weights_only=False` (which would run what it names)."""
    text = str(error)
    if "Weights only load failed" not in text:
        return first_line(error)[:200]
    reason = (
        next(
            (
                line
                for line in text.splitlines()
                if "WeightsUnpickler error: " in line or "GLOBAL" in line
            ),
            "",
        )
        .split("WeightsUnpickler error: ", 1)[-1]
        .strip()
    )
    detail = f" ({reason[:160]})" if reason else ""
    return f"it holds more than tensors and plain values, refused unrun{detail}"


def _load_directory(path: Path, whole_tensors: bool, checksums_checked: bool) -> dict[str, Any]:
    problem = None if checksums_checked else damage(path)
    if problem is not None:
        raise UserError(f"checkpoint {path} is incomplete or damaged: {problem}")
    try:
        rest = read_state(path)
    except (NotAPlainFile, UserError):
        raise
    except Exception as error:  # as in load_checkpoint
        raise UserError(f"cannot load checkpoint {path}: {first_line(error)[:200]}") from None
    if not isinstance(rest, dict) or rest.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint of this template (format {FORMAT!r} expected)")
    check_fields(path, rest)
    if whole_tensors:
        return join_state(rest, StoredShards(path).read_whole())
    return {**rest, "stored": DirectoryTensors(path, rest)}


# What every checkpoint of this format holds beside the tensors, and what each value must be:
# the contract a reader relies on, checked before any field is used (a step becomes a file
# name in evaluate and predict; an epoch, a loop bound).
_COUNT = "a whole number from 0 to 2**63 - 1"

_POSITIVE = "a whole number from 1 to 2**63 - 1"
_COUNT_LIMIT = 2**63  # what torch counts steps in (int64); a larger one is no run's

_REQUIRED_FIELDS: dict[str, Any] = {
    "config": dict,
    "fingerprint": dict,
    "optimizer": dict,
    "scheduler": dict,
    "epoch_totals": list,
    "rng": list,
    "step": _COUNT,
    "epoch": _COUNT,
    "batch_in_epoch": _COUNT,
    "schedule_horizon": _COUNT,
}

_OPTIONAL_FIELDS: dict[str, Any] = {
    "world_size": _POSITIVE,
    "replicas": _POSITIVE,
    "scaler": dict,
    "ema": dict,
}


def check_fields(path: Path, payload: dict[str, Any]) -> None:
    """Every field of the contract above present and of its kind; the model's tensors named by
    strings. One line naming the first field that is not."""
    for name, kind in (*_REQUIRED_FIELDS.items(), *_OPTIONAL_FIELDS.items()):
        if name not in payload:
            if name in _REQUIRED_FIELDS:
                raise UserError(f"cannot load checkpoint {path}: it has no {name!r}")
            continue
        value = payload[name]
        if name in _OPTIONAL_FIELDS and value is None:
            continue
        if isinstance(kind, type):
            fits = isinstance(value, kind)
        else:
            low = 1 if kind is _POSITIVE else 0
            fits = type(value) is int and low <= value < _COUNT_LIMIT
        if not fits:
            wanted = kind.__name__ if isinstance(kind, type) else kind
            raise UserError(
                f"cannot load checkpoint {path}: its {name!r} is {_shown(value)}, not {wanted}"
            )
    optimizer = payload["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(
        optimizer.get("param_groups"), list
    ):
        raise UserError(f"cannot load checkpoint {path}: its optimizer state is malformed")
    model = payload.get("model", {})
    named_tensors = isinstance(model, dict) and all(
        type(key) is str and torch.is_tensor(value) for key, value in model.items()
    )
    if not named_tensors:
        raise UserError(f"cannot load checkpoint {path}: its model is not named tensors")


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {str(value)[:40]!r}"


@contextlib.contextmanager
def reading(path: Path | str | None) -> Iterator[None]:
    """Around code that puts a checkpoint's contents to use (loading a state dict, restoring RNG
    states): a value of the wrong shape or kind deep inside it is one line naming the checkpoint,
    not a traceback."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as error:
        raise UserError(
            f"cannot use checkpoint {path}: {type(error).__name__}: "
            f"{first_line(str(error) or repr(error))[:200]}"
        ) from None


def load_last(run_dir: RunDirectory) -> dict[str, Any]:
    """The newest complete checkpoint of a run (verify, tests)."""
    return load_checkpoint(run_dir.last_checkpoint)
