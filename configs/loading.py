"""Loading the config: YAML file, then the profile, then `key=value` overrides, validated once.

Why validate once, here: a misspelt key or a string where a number belongs must stop the run
before anything is written, with the key's dotted name and, for a typo, the closest valid key;
an unknown dataset or model name likewise.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from configs.schema import DEFAULT_DATASET, DEFAULT_MODEL, MOVED_KEYS, Config, schema_for
from data import DATASETS
from data.augment import AugmentConfig, resolve
from foundation.errors import UserError
from foundation.registry import Registry
from models import MODELS
from training.determinism import PROFILES

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


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
    """Every settable (leaf) key of a schema, dotted."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_known_keys(annotation, f"{dotted}."))
        else:
            keys.append(dotted)
    return keys


def _describe_validation_error(error: ValidationError, schema: type[Config]) -> str:
    first = error.errors()[0]
    dotted = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(dotted, _known_keys(schema), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown config key {dotted!r}{_chosen(schema, dotted)}{hint}{_read_by(dotted)}"
    message = first["msg"].removeprefix("Value error, ")
    if not dotted:
        return f"invalid config: {message}"
    shown = first.get("input")
    got = "" if isinstance(shown, dict) else f", got {shown!r}"
    return f"invalid config value for {dotted!r}: {message}{got}"


def _chosen(schema: type[Config], dotted: str) -> str:
    """ " for model 'smallcnn'" when the key sits in a component's own section."""
    section = dotted.split(".")[0]
    if section not in ("data", "model"):
        return ""
    kind = "dataset" if section == "data" else "model"
    return f" for {kind} {schema.model_fields[section].default.name!r}"


def _read_by(dotted: str) -> str:
    """ "; model 'resnet18' reads it" when another registered component has the key."""
    section, _, key = dotted.partition(".")
    registry: Registry[Any] | None = {"data": DATASETS, "model": MODELS}.get(section)
    top = key.split(".")[0]
    if registry is None or not top:
        return ""
    readers = registry.readers_of(top)
    if not readers:
        return ""
    kind = "dataset" if section == "data" else "model"
    if len(readers) == 1:
        return f"; {kind} {readers[0]!r} reads it"
    return f"; {kind}s {', '.join(map(repr, readers))} read it"


def _component(tree: dict[str, Any], section: str, default: str) -> str:
    node = tree.get(section) or {}
    name = node.get("name", default) if isinstance(node, dict) else default
    return str(name)


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
    return validated(tree)


def validated(tree: dict[str, Any]) -> Config:
    """A config tree (file, profile and overrides merged) checked against the schema of its
    dataset and model, with its augmentation resolved."""
    refuse_moved_keys(tree)
    dataset = _component(tree, "data", DEFAULT_DATASET)
    model = _component(tree, "model", DEFAULT_MODEL)
    DATASETS.check(dataset)
    MODELS.check(model)
    schema = schema_for(dataset, model)
    try:
        config = schema.model_validate(tree)
    except ValidationError as error:
        raise UserError(_describe_validation_error(error, schema)) from None
    return resolve_augmentation(config)


# Keys a saved config never sets: only this machine's command line or config file does. A
# compile cache holds code that Inductor loads and runs (Python modules, shared objects), so a
# run directory or checkpoint from someone else naming one (inside the folder they shipped, or
# on a shared filesystem they write) would run their code here.
MACHINE_LOCAL_KEYS = ("trainer.compile.cache_dir",)


def read_saved_config(tree: dict[str, Any]) -> dict[str, Any]:
    """A config saved elsewhere (a run's config.yaml, a checkpoint's config), as this version
    reads it: moved keys put where they live now (a user cannot edit a checkpoint), and the
    machine-local keys left out (they take their defaults unless the command sets them)."""
    tree = copy.deepcopy(tree)
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        node = tree.get(section)
        if isinstance(node, dict) and key in node:
            new_section, new_key = new.split(".")
            tree.setdefault(new_section, {}).setdefault(new_key, node.pop(key))
    for dotted in MACHINE_LOCAL_KEYS:
        *sections, key = dotted.split(".")
        node: Any = tree
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return tree


def refuse_moved_keys(tree: dict[str, Any]) -> None:
    """A key that moved to its owner's section, in the file or an override: its new name."""
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        node = tree.get(section)
        if isinstance(node, dict) and key in node:
            raise UserError(f"config key {old!r} moved: use {new!r}")


def resolve_augmentation(config: Config) -> Config:
    """`data.augment.train` / `eval` (recipe names, files or inline) as albumentations'
    serialized form: config.yaml, resume and compare then see the exact pipelines."""
    augment, size = config.data.augment, config.data.image_size
    config.data.augment = AugmentConfig(
        train=resolve(augment.train, size, "data.augment.train"),
        eval=resolve(augment.eval, size, "data.augment.eval"),
    )
    return config


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
