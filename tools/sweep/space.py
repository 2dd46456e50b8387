"""A sweep's search space: a YAML file beside the configs (configs/sweeps/NAME.yaml).

    metric: val_acc            # what a trial scores: a metric every run reports
    params:                    # any config key, each a range or a list of choices
      optim.lr: {low: 0.005, high: 0.2, log: true}
      model.width: {low: 8, high: 32, step: 8}        # integers when low, high, step are
      model.dropout: {choices: [0.1, 0.3]}
    overrides: [trainer.epochs=2]   # fixed for every run of the sweep (optional)
    prune_from_epoch: 2        # the first epoch whose report may prune (null: no pruning)

Why checked this hard: the file is input that may come from someone else. It is read with
`yaml.safe_load` (no object construction), every field is checked before anything is written,
and every key is resolved against the real config (an unknown key, a value of the wrong type)
so that a typo costs one line, not a sweep of runs that all ignore it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from configs import load_config
from foundation.errors import UserError
from tools.seed_runs import METRICS

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_PATTERN = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+")
_RANGE_FIELDS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Space:
    """A checked search space."""

    name: str  # the file's stem: the sweep's folder name by default
    metric: str
    params: dict[str, optuna.distributions.BaseDistribution]
    overrides: tuple[str, ...]
    prune_from_epoch: int | None = 2  # why 2: the first epoch's score is the noisiest (a
    # high learning rate that ends best can start worst); measured in docs/sweep.md

    def overrides_for(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The key=value overrides of one point of the space, in the space's key order."""
        return tuple(f"{key}={_text(params[key])}" for key in self.params)


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def load_space(path: str | Path, config_path: str, profile: str) -> Space:
    """Read and check a space file; any problem is one UserError naming it."""
    path = Path(path)
    if not NAME_PATTERN.fullmatch(path.stem):
        raise UserError(f"space {path}: its name must be letters, digits and . _ - only")
    try:
        tree = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"space file not found: {path}") from None
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"space {path}: cannot read it ({type(error).__name__})") from None
    if not isinstance(tree, dict):
        raise UserError(f"space {path}: expected a mapping with 'metric' and 'params'")
    unknown = sorted(set(map(str, tree)) - {"metric", "params", "overrides", "prune_from_epoch"})
    if unknown:
        raise UserError(f"space {path}: unknown field(s) {', '.join(unknown)}")
    metric = tree.get("metric", "val_acc")
    if metric not in METRICS:
        raise UserError(
            f"space {path}: metric {metric!r} is not reported by the runs; "
            f"choose from {', '.join(METRICS)}"
        )
    overrides = tree.get("overrides") or []
    if not isinstance(overrides, list) or not all(
        isinstance(item, str) and "=" in item for item in overrides
    ):
        raise UserError(f"space {path}: overrides must be a list of 'key=value' strings")
    prune_from = tree.get("prune_from_epoch", 2)
    if prune_from is not None and (
        not isinstance(prune_from, int) or isinstance(prune_from, bool) or prune_from < 1
    ):
        raise UserError(f"space {path}: prune_from_epoch must be an epoch (1, 2, ...) or null")
    params = tree.get("params")
    if not isinstance(params, dict) or not params:
        raise UserError(f"space {path}: 'params' must map config keys to ranges or choices")
    distributions = {str(key): _distribution(path, str(key), spec) for key, spec in params.items()}
    space = Space(path.stem, metric, distributions, tuple(overrides), prune_from)
    _check_against_the_config(path, space, config_path, profile)
    return space


def _distribution(path: Path, key: str, spec: Any) -> optuna.distributions.BaseDistribution:
    where = f"space {path}: {key}"
    if not _KEY_PATTERN.fullmatch(key):
        raise UserError(f"{where}: not a dotted config key")
    if isinstance(spec, dict) and set(spec) == {"choices"}:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: empty choices")
        if not all(isinstance(c, bool | int | float | str) for c in choices):
            raise UserError(f"{where}: choices must be numbers, strings or booleans")
        if len(set(map(repr, choices))) != len(choices):
            raise UserError(f"{where}: a choice is repeated")
        return optuna.distributions.CategoricalDistribution(choices)
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) <= _RANGE_FIELDS:
        raise UserError(f"{where}: expected {{low, high[, log][, step]}} or {{choices: [...]}}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
        raise UserError(f"{where}: low, high and step must be numbers")
    if not all(math.isfinite(v) for v in numbers) or not isinstance(log, bool):
        raise UserError(f"{where}: low, high and step must be finite, log true or false")
    if not low < high:
        raise UserError(f"{where}: empty range (low {low} is not below high {high})")
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0")
    if step is not None and (step <= 0 or log):
        raise UserError(f"{where}: step must be positive, and not with log")
    if all(isinstance(v, int) for v in numbers):
        return optuna.distributions.IntDistribution(low, high, log=log, step=step or 1)
    return optuna.distributions.FloatDistribution(low, high, log=log, step=step)


def _check_against_the_config(path: Path, space: Space, config_path: str, profile: str) -> None:
    """Resolve the config at the space's corners: an unknown key or a value its schema refuses
    is named now, not after a sweep of failed runs."""
    for key, distribution in space.params.items():
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            values = list(distribution.choices)
        else:
            values = [distribution.low, distribution.high]  # type: ignore[attr-defined]
        for value in values:
            try:
                load_config(config_path, profile, 0, (*space.overrides, f"{key}={_text(value)}"))
            except UserError as error:
                raise UserError(f"space {path}: {key}={_text(value)}: {error}") from None
