"""The checkpoint owner: when to save, what goes in, the atomic write, keep-last-k, finding and
loading the one to resume from, the computation fingerprint, and the refusal to save a broken
state.

Why one owner: these decisions used to be spread over the trainer, the recorder, train.py and
three helper modules; a change of policy (say, saving every N minutes) now touches one class,
which knows the trainer only through the `state_dict` protocol (training/events.py).

Why this file format:
- A killed writer must never leave a `last.pt` that cannot be loaded: each checkpoint is written
  to a temporary file in the same directory, flushed, fsynced and renamed into place; only then is
  its checksum file written and `last.pt` re-pointed (a hard link, renamed over the old one).
- A checkpoint without a matching `.sha256` file is incomplete (the writer died between the two
  renames) or damaged, and `--resume auto` falls back to the newest complete one.
- `weights_only=True` refuses arbitrary pickles, so the payload holds only tensors and plain values.

A sharded run (`parallel.shard`) writes a directory per checkpoint instead, every rank its own
shards, under the same rules (runtime/sharded_checkpoint.py); both kinds are found, pruned,
resumed from and loaded here, and each loads into either kind of run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as dist
from pydantic import BaseModel, Field, ValidationError

from foundation.errors import UserError, first_line
from foundation.faults import NonFiniteState
from foundation.process import process_launch
from foundation.section import RUNTIME, Section, keys_with_role
from runtime.atomic import WRITES, atomic_write, atomic_write_text, fsync_directory
from runtime.plain_files import NotAPlainFile, is_regular_file, open_for_reading
from runtime.rundir import (
    CHECKPOINTS,
    DAMAGED_CHECKPOINTS,
    LAST_CHECKPOINT,
    LAST_SHARDED,
    RunDirectory,
)
from runtime.sharded_checkpoint import (
    SUMS,
    ShardedTensors,
    StoredShards,
    damage,
    file_sha256,
    join_state,
    read_state,
    split_state,
    write_sharded,
)
from training.events import Position
from training.health import first_non_finite
from training.parallel.layout import StateLayout
from training.topology import local_tensor

FORMAT = "reproducible-ddp-template/checkpoint/v1"
LAST = LAST_CHECKPOINT
_STEP = re.compile(r"^step-(\d+)(\.pt)?$")  # a file, or a sharded checkpoint's directory


def checkpoint_digest(path: Path) -> str:
    """Which checkpoint this is, in one sha256: the file's, or a sharded checkpoint's
    SHA256SUMS (which holds every file's)."""
    return file_sha256(path / SUMS if path.is_dir() else path)


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete what a killed writer left: temporary files, and the staging directories of
    sharded checkpoints (called before the first save, when no writer is live)."""
    stale = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    for path in stale:
        _remove(path)
    return stale


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class _KeepsWriteErrors:
    """A stream that remembers the OSError of a failed write.

    Why: torch.save's zip writer turns a failed write (a full disk, a file size limit) into
    "RuntimeError: [enforce fail at inline_container.cc] unexpected pos"; the cause, which the
    user must read, is only known here."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.stream.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.stream.flush()


def _save_payload(stream: IO[bytes], payload: dict[str, Any]) -> None:
    keeping = _KeepsWriteErrors(stream)
    try:
        torch.save({"format": FORMAT, **payload}, keeping)
    except RuntimeError:
        if keeping.error is not None:
            raise keeping.error from None
        raise


def save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write `step-<step>.pt` atomically, point `last.pt` at it, keep the newest `keep`. The
    whole save holds `WRITES`: a process ended from another thread (runtime/launcher_watch.py)
    never leaves `last.pt` renamed without its checksum."""
    with WRITES:
        return _save_checkpoint(directory, step, payload, keep)


def write_checkpoint_file(final: Path, payload: dict[str, Any]) -> str:
    """One checkpoint file and its `.sha256`, each written atomically; returns the checksum."""
    atomic_write(final, lambda stream: _save_payload(stream, payload), binary=True)
    checksum = file_sha256(final)
    atomic_write_text(_checksum_path(final), f"{checksum}  {final.name}\n")
    return checksum


def write_checkpoint_directory(final: Path, payload: dict[str, Any], is_main: bool = True) -> None:
    """Collective: a sharded checkpoint, each rank writing its shards of `payload` (alone, as a
    conversion does: one shard file)."""
    tensors, rest = split_state(payload)
    with WRITES:
        write_sharded(final, tensors, {"format": FORMAT, **rest}, is_main=is_main)


def _save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    final = directory / f"step-{step:08d}.pt"
    checksum = write_checkpoint_file(final, payload)
    link = directory / f".{LAST}.{step}.tmp"
    link.unlink(missing_ok=True)
    try:
        os.link(final, link)
    except OSError:  # filesystems without hard links: a copy, still renamed atomically
        link.write_bytes(final.read_bytes())
    os.replace(link, directory / LAST)
    atomic_write_text(_checksum_path(directory / LAST), f"{checksum}  {LAST}\n")
    (directory / LAST_SHARDED).unlink(missing_ok=True)  # a sharded run's, continued here
    fsync_directory(directory)
    _prune(directory, keep, step)
    return final


def save_sharded_checkpoint(
    directory: Path,
    step: int,
    state: dict[str, Any],
    keep: int,
    *,
    is_main: bool,
) -> Path:
    """Collective: the directory `step-<step>` (runtime/sharded_checkpoint.py), each rank
    writing its shards of `state`; rank 0 then points `last` at it and keeps the newest
    `keep`."""
    final = directory / f"step-{step:08d}"
    with WRITES:
        write_checkpoint_directory(final, state, is_main)
        if is_main:
            link = directory / f".{LAST_SHARDED}.tmp"
            link.unlink(missing_ok=True)
            os.symlink(final.name, link)
            os.replace(link, directory / LAST_SHARDED)
            for pointer in (directory / LAST, _checksum_path(directory / LAST)):
                pointer.unlink(missing_ok=True)  # a single-file run's, continued sharded
            fsync_directory(directory)
            _prune(directory, keep, step)
    return final


def _numbered_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Every `step-N` entry (a file, a directory, or a link, which is never complete)."""
    found = []
    for path in directory.glob("step-*"):
        match = _STEP.match(path.name)
        if match and (path.is_symlink() or path.is_dir() != bool(match.group(2))):
            found.append((int(match.group(1)), path))
    return sorted(found)


def _prune(directory: Path, keep: int, saved_step: int) -> None:
    """Keep the newest `keep` checkpoints at or below `saved_step`, the one just written among
    them. A checkpoint above it (a resume from an earlier one) is not counted and not removed:
    pruning by step number alone would keep a damaged newer checkpoint and delete the only good
    one. Counted: whole checkpoints (a file with its .sha256, a directory with its SHA256SUMS);
    a damaged one was moved aside when the resume skipped it (`set_aside`)."""
    below = [
        path
        for step, path in _numbered_checkpoints(directory)
        if step <= saved_step and _looks_whole(path)
    ]
    for path in below[:-keep]:
        _remove(path)
        _checksum_path(path).unlink(missing_ok=True)


def _looks_whole(path: Path) -> bool:
    """Whole as written, without reading it again: its checksums are next to it."""
    if path.is_symlink():
        return False
    if path.is_dir():
        return is_regular_file(path / SUMS)
    return is_regular_file(path) and is_regular_file(_checksum_path(path))


def set_aside(directory: Path, damaged: list[Path]) -> list[Path]:
    """Move checkpoints that a resume skipped into `checkpoints/damaged/`: kept for a look, out
    of the way of `--resume auto` and of pruning, never deleted by the template."""
    moved = []
    aside = directory / DAMAGED_CHECKPOINTS
    for path in damaged:
        if not (path.exists() or path.is_symlink()):
            continue
        aside.mkdir(exist_ok=True)
        if aside.is_symlink() or not aside.is_dir():
            raise UserError(f"{aside} is not a plain directory; move it away and resume again")
        for part in (path, _checksum_path(path)):
            if part.exists() or part.is_symlink():
                target = aside / part.name
                if target.exists() or target.is_symlink():
                    target = aside / f"{part.name}.{os.getpid()}"
                os.rename(part, target)
        moved.append(aside / path.name)
    if moved:
        fsync_directory(directory)
    return moved


def _recorded_checksum(path: Path) -> str | None:
    """The sha256 a `.sha256` file records (None: no such regular file)."""
    checksum_file = _checksum_path(path)
    if not is_regular_file(checksum_file):
        return None
    with open_for_reading(checksum_file) as stream:
        words = stream.read(4096).decode("ascii", errors="replace").split()
    return words[0] if words else ""


def is_complete(path: Path) -> bool:
    if path.is_symlink():
        return False
    if path.is_dir():
        return damage(path) is None
    recorded = _recorded_checksum(path)
    return is_regular_file(path) and recorded is not None and recorded == file_sha256(path)


def newest_complete(directory: Path) -> tuple[Path | None, list[Path]]:
    """The newest checkpoint whose checksum matches, and the newer ones that were skipped."""
    skipped = []
    for _, path in reversed(_numbered_checkpoints(directory)):
        if is_complete(path):
            return path, skipped
        skipped.append(path)
    return None, skipped


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
            return _load_sharded(path, whole_tensors, checksums_checked)
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
    if not _STEP.match(target):
        raise UserError(
            f"cannot load checkpoint {path}: it is a symbolic link to {target[:80]!r}, not to a "
            "step-N checkpoint beside it; give the checkpoint's own path"
        )
    return path.with_name(target)


def _load_file(path: Path, checksums_checked: bool) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if not checksums_checked:
        recorded = _recorded_checksum(path)
        if recorded is None and _checksum_path(path).is_symlink():
            raise UserError(f"cannot load checkpoint {path}: its .sha256 is a symbolic link")
        if recorded is not None and recorded != file_sha256(path):
            raise UserError(
                f"checkpoint {path} is corrupt or truncated (sha256 does not match "
                f"{_checksum_path(path).name})"
            )
    try:
        with open_for_reading(path) as stream:
            payload = torch.load(stream, map_location="cpu", weights_only=True)
    except NotAPlainFile:
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


def _load_sharded(path: Path, whole_tensors: bool, checksums_checked: bool) -> dict[str, Any]:
    problem = None if checksums_checked else damage(path)
    if problem is not None:
        raise UserError(f"checkpoint {path} is incomplete or damaged: {problem}")
    try:
        rest = read_state(path)
    except NotAPlainFile:
        raise
    except Exception as error:  # as in load_checkpoint
        raise UserError(f"cannot load checkpoint {path}: {first_line(error)[:200]}") from None
    if not isinstance(rest, dict) or rest.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint of this template (format {FORMAT!r} expected)")
    check_fields(path, rest)
    if whole_tensors:
        return join_state(rest, StoredShards(path).read_whole())
    return {**rest, "stored": ShardedTensors(path, rest)}


# What every checkpoint of this format holds beside the tensors, and what each value must be:
# the contract a reader relies on, checked before any field is used (a step becomes a file
# name in evaluate and predict; an epoch, a loop bound).
_COUNT = "a whole number >= 0"
_POSITIVE = "a whole number >= 1"
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
            fits = type(value) is int and value >= (1 if kind is _POSITIVE else 0)
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
def reading(path: Path | str) -> Iterator[None]:
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


@dataclass(frozen=True)
class ResumePoint:
    """What a run continues from: a loaded checkpoint (None: start fresh), whether the run
    directory's logs continue (`--resume auto`, a torchrun restart, or a path into it), and the
    newer checkpoints `--resume auto` skipped as incomplete or damaged."""

    checkpoint: dict[str, Any] | None
    continuing: bool
    path: Path | None = None
    skipped: list[Path] = field(default_factory=list)

    @property
    def step(self) -> int | None:
        """The step the logs continue after (None: a fresh run directory)."""
        if not self.continuing:
            return None
        return self.checkpoint["step"] if self.checkpoint else 0


def resume_point(run_dir: RunDirectory, request: str | None) -> ResumePoint:
    """`--resume auto`, `--resume PATH`, or a fresh run (refusing a directory that already
    holds one). Under `torchrun --max-restarts` a restarted worker group is started with the
    same command line; TORCHELASTIC_RESTART_COUNT > 0 makes it `auto`. Any problem with the
    file is a one-line error, before anything is written."""
    if request is None and process_launch().restart_attempt > 0:
        request = "auto"
    if request is None:
        run_dir.refuse_to_overwrite()
        return ResumePoint(None, continuing=False)
    skipped: list[Path] = []
    if request == "auto":
        run_dir.refuse_links()
        path, skipped = newest_complete(run_dir.checkpoint_dir)
        if skipped and process_launch().rank == 0:
            names = ", ".join(path.name for path in skipped)
            print(
                f"warning: skipped incomplete or damaged checkpoint(s): {names} (moved to "
                f"{CHECKPOINTS}/{DAMAGED_CHECKPOINTS}/ once this run starts writing)",
                file=sys.stderr,
            )
    else:
        path = Path(request)
        if not (path.exists() or path.is_symlink()):
            raise UserError(f"--resume: checkpoint not found: {path}")
    checked = request == "auto"  # newest_complete read every checksum
    checkpoint = None if path is None else load_checkpoint(path, False, checked)
    return ResumePoint(checkpoint, run_dir.holds_a_run(), path, skipped)


class CheckpointConfig(Section):
    """The `checkpoint` section: when checkpoints are written and how many are kept."""

    every_steps: int | None = Field(
        None,
        ge=1,
        description="also checkpoint every N steps (null = at epoch ends and at the stop only)",
        json_schema_extra=RUNTIME,
    )
    keep: int = Field(3, ge=1, description="numbered checkpoints kept", json_schema_extra=RUNTIME)


class Checkpointer:
    """Checkpoints of one run directory. Every rank holds one; only the writer (rank 0) writes,
    but where the mode's state layout writes per rank (`per_rank_files`: a checkpoint
    directory), every rank writes its own part."""

    def __init__(
        self, run_dir: RunDirectory, config: CheckpointConfig, layout: StateLayout | None = None
    ) -> None:
        layout = layout or StateLayout()
        self.run_dir = run_dir
        self.layout = layout
        self.per_rank = layout.per_rank_files
        self.directory = run_dir.checkpoint_dir
        self.every_steps = config.every_steps
        self.keep = config.keep
        self.fingerprint: dict[str, Any] = {}
        self.provenance: dict[str, Any] = {}
        self.saved_step = -1
        self.skipped: list[Path] = []

    # ----------------------------------------------------------------- before the run
    def expect(
        self,
        fingerprint: dict[str, Any],
        resume: ResumePoint,
        defaults: dict[str, Any] | None = None,
        world_size_may_change: bool = False,
    ) -> list[str]:
        """What every checkpoint of this run must match; a resumed checkpoint of another
        computation is refused here, before anything is written (`defaults`: see
        `first_difference`). Returns the notes of what continues differently.

        `world_size_may_change`: the global batch is fixed (`data.global_batch_size`), so a
        step trains on the same samples at any world size: a checkpoint of another world size
        continues, not bit for bit (per-rank BatchNorm batches, dropout streams and the order
        of the gradient sums change; the world-size-invariant mode continues bit for bit)."""
        self.fingerprint = fingerprint
        self.skipped = resume.skipped
        if resume.checkpoint is None:
            return []
        saved = resume.checkpoint["fingerprint"]
        notes = []
        if world_size_may_change and saved.get("world_size") != fingerprint["world_size"]:
            notes.append(
                f"world size: {saved.get('world_size')} -> {fingerprint['world_size']} "
                "(continues with the same global batch, not bit for bit: each rank's "
                "BatchNorm batch and dropout stream change, and the gradients are added in "
                "another order)"
            )
            saved = {**saved, "world_size": fingerprint["world_size"]}
        difference = first_difference(saved, fingerprint, defaults)
        if difference is not None:
            hint = ""
            if difference.startswith("world_size"):
                hint = (
                    " (a run with data.global_batch_size continues on another world size; "
                    "trainer.world_size_invariant=true continues bit for bit)"
                )
            raise UserError(
                f"cannot resume: {difference}{hint}; only stopping criteria and loader settings "
                "may change"
            )
        self.saved_step = resume.checkpoint["step"]
        return notes

    # ----------------------------------------------------------------- policy
    def due(self, position: Position, epoch_ends: bool) -> bool:
        """Inside an epoch, every `checkpoint.every_steps` (epoch ends save anyway)."""
        every = self.every_steps
        return bool(every) and position.step % every == 0 and not epoch_ends

    def saved_at(self, step: int) -> bool:
        return self.saved_step == step

    # ----------------------------------------------------------------- writing (rank 0)
    def path_of(self, step: int) -> Path:
        return self.directory / (f"step-{step:08d}" if self.per_rank else f"step-{step:08d}.pt")

    def save(self, position: Position, state: dict[str, Any], write: bool) -> None:
        """Every rank records the save; the writer (rank 0) writes the state of `position`
        atomically, points last.pt at it and keeps the newest k.

        Refused, with nothing written, when the model or the optimizer state holds a NaN or an
        inf: the non-finite watch should have stopped the run before, and a broken checkpoint
        would be what `--resume auto` picks up."""
        self.saved_step = position.step
        if self.per_rank:  # every rank checks and writes its own part
            broken = _first_anywhere(first_non_finite(_named_state(state)))
        elif not write:
            return
        else:
            broken = first_non_finite(_named_state(state))
        if broken is not None:
            raise NonFiniteState(
                f"refusing to save the checkpoint of step {position.step}: {broken} is not "
                f"finite; nothing from step {position.step} on was saved"
            )
        payload = {**state, "fingerprint": self.fingerprint, **self.provenance}
        if self.per_rank:
            save_sharded_checkpoint(
                self.directory, position.step, payload, self.keep, is_main=write
            )
        else:
            save_checkpoint(self.directory, position.step, payload, self.keep)

    def newest(self) -> Path | None:
        """The newest complete checkpoint on disk, for the line that says where to resume."""
        return newest_complete(self.directory)[0]

    def open_for_writing(self, provenance: dict[str, Any]) -> None:
        """On the writer, before the first save: what every checkpoint records beside the state
        (seeds, resolved config, versions), and the temporary files a killed writer left."""
        self.provenance = provenance
        for stale in remove_stale_temporaries(self.directory):
            print(f"removed an unfinished checkpoint write: {stale.name}")
        for moved in set_aside(self.directory, self.skipped):
            print(f"moved a damaged checkpoint aside: {moved}")


def load_last(run_dir: RunDirectory) -> dict[str, Any]:
    """The newest complete checkpoint of a run (verify, tests)."""
    return load_checkpoint(run_dir.last_checkpoint)


def _named_state(state: dict[str, Any]) -> list[tuple[str, Any]]:
    """The model and optimizer tensors by name; of a split tensor, this rank's shard."""
    named = [(f"model.{name}", tensor) for name, tensor in state["model"].items()]
    for index, values in state["optimizer"]["state"].items():
        named += [(f"optimizer.state.{index}.{key}", value) for key, value in values.items()]
    return [
        (name, local_tensor(value) if torch.is_tensor(value) else value) for name, value in named
    ]


def _first_anywhere(broken: str | None) -> str | None:
    """The first rank's finding, on every rank: they refuse the save together or write it."""
    if not dist.is_initialized():
        return broken
    found: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(found, broken)
    return next((name for name in found if name is not None), None)
