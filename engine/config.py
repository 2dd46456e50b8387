"""The typed configuration: YAML file, then the profile, then `key=value` overrides, validated once.

Why pydantic with `extra="forbid"` and strict types: a misspelt key or a string where a number
belongs must stop the run before anything is written, with the key's dotted name and, for a typo,
the closest valid key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import UserError
from seeding.derive import SEED_LIMIT

PROFILES = ("debug", "eval", "production")
PROFILE_DIR = Path(__file__).resolve().parent.parent / "configs" / "profiles"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class TrainerConfig(_Section):
    epochs: int = Field(8, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every_steps: int | None = Field(None, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    log_every_steps: int = Field(50, ge=1)
    limit_train_batches: int | None = Field(
        None, ge=1, description="batches per epoch (small runs)"
    )
    fault_at_step: int | None = Field(None, ge=1, description="test only: rank 1 dies once here")


class SyntheticConfig(_Section):
    train_size: int = Field(6000, ge=1)
    val_size: int = Field(1000, ge=1)
    seed: int = Field(20240607, ge=0, lt=SEED_LIMIT, description="data seed, not the training seed")


class DataConfig(_Section):
    name: str = "synthetic"
    root: str = "datasets"
    subset: int | None = Field(None, ge=1)
    batch_size: int = Field(128, ge=1)
    num_workers: int = Field(0, ge=0)
    persistent_workers: bool = False
    download: bool = False
    image_size: int = Field(32, ge=8)
    skip_bad_files: bool = False
    synthetic: SyntheticConfig = SyntheticConfig()


class ModelConfig(_Section):
    name: str = "smallcnn"
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    width: int = Field(16, ge=4)


class OptimConfig(_Section):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = True
    scheduler: Literal["none", "cosine"] = "cosine"


class DeterminismConfig(_Section):
    algorithms: Literal["strict", "warn", "disabled"] = "strict"
    cudnn_benchmark: bool = False
    tf32: bool = False
    amp: bool = False
    channels_last: bool = False
    pin_memory: bool = False
    anomaly_detection: bool = False


# What debug and eval promise (bitwise reproducibility on the same hardware) and the settings that
# would silently break it. Asking for them in those profiles is refused, not applied with a warning.
_EXACT_PROFILE_FORBIDS = {
    "cudnn_benchmark": "picks convolution algorithms by timing, which varies between runs",
    "tf32": "rounds float32 matmuls to 10-bit mantissas",
    "amp": "changes numerics (and fp16 loss scaling depends on overflow history)",
}


class Config(_Section):
    name: str = "default"
    seed: int = Field(42, ge=0, lt=SEED_LIMIT)
    profile: Literal["debug", "eval", "production"] = "debug"
    trainer: TrainerConfig = TrainerConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    determinism: DeterminismConfig = DeterminismConfig()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError("must be a plain directory name")
        return value

    @model_validator(mode="after")
    def _profile_is_consistent(self) -> Config:
        if self.profile == "production":
            return self
        wanted = "strict" if self.profile == "debug" else "warn"
        if self.determinism.algorithms != wanted:
            raise ValueError(
                f"profile {self.profile!r} needs determinism.algorithms={wanted}, "
                f"got {self.determinism.algorithms} (use --profile production for speed)"
            )
        for key, reason in _EXACT_PROFILE_FORBIDS.items():
            if getattr(self.determinism, key):
                raise ValueError(
                    f"profile {self.profile!r} cannot use determinism.{key}=true: it {reason}; "
                    "use --profile production"
                )
        return self


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as error:
        raise UserError(f"cannot read {what} {path}: {error.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise UserError(f"malformed YAML in {path}{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path} must hold a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override_value(text: str) -> Any:
    """YAML scalars (`true`, `null`, `3`, `[1, 2]`), plus `1e-3`, which YAML 1.1 leaves a string."""
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_override(tree: dict[str, Any], assignment: str) -> dict[str, Any]:
    key, sep, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(part.strip() for part in parts):
        raise UserError(f"malformed override {assignment!r}: expected dotted.key=value")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"malformed override {assignment!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = parse_override_value(raw)
    return tree


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_known_keys(annotation, f"{dotted}."))
    return keys


def _describe_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    dotted = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(dotted, _known_keys(Config), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown config key {dotted!r}{hint}"
    message = first["msg"].removeprefix("Value error, ")
    if not dotted:
        return f"invalid config: {message}"
    shown = first.get("input")
    got = "" if isinstance(shown, dict) else f", got {shown!r}"
    return f"invalid config value for {dotted!r}: {message}{got}"


def load_config(
    path: str | Path,
    profile: str | None = None,
    seed: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """Resolve file → profile → overrides → CLI seed into one validated Config."""
    path = Path(path)
    tree = _read_yaml(path, "config file")
    tree.setdefault("name", path.stem)
    chosen_profile = profile or tree.get("profile") or Config.model_fields["profile"].default
    if chosen_profile not in PROFILES:
        raise UserError(f"unknown profile {chosen_profile!r}; choose one of {', '.join(PROFILES)}")
    tree = deep_merge(tree, _read_yaml(PROFILE_DIR / f"{chosen_profile}.yaml", "profile file"))
    tree["profile"] = chosen_profile
    for assignment in overrides:
        tree = apply_override(tree, assignment)
    if seed is not None:
        tree["seed"] = seed
    try:
        config = Config.model_validate(tree)
    except ValidationError as error:
        raise UserError(_describe_validation_error(error)) from None
    _check_registered_names(config)
    return config


def _check_registered_names(config: Config) -> None:
    # Imported here: the registries import torch models and datasets, config parsing does not need them.
    from data import DATASETS
    from models import MODELS

    for kind, name, registry in (
        ("dataset", config.data.name, DATASETS),
        ("model", config.model.name, MODELS),
    ):
        if name not in registry:
            close = difflib.get_close_matches(name, registry, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(
                f"unknown {kind} {name!r}{hint}; registered: {', '.join(sorted(registry))}"
            )


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
