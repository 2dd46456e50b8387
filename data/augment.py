"""Augmentation as configuration: `data.augment.train` and `data.augment.eval`.

Each is the name of a recipe below, a pipeline in albumentations' own serialized form written
inline in YAML (what `A.to_dict` returns, or just its `transform` part), or the path of a YAML or
JSON file holding one (what `A.save` writes). Why albumentations' format: it already exists, it
round-trips (`A.from_dict`), and a fork's pipeline stays readable and diffable next to its
config. Loading the config resolves all three into that serialized form, so config.yaml, the
manifest, resume's fingerprint and `make compare` all see the exact pipeline, not just a name.

What a declared pipeline holds: only the transforms the user cares about. The template appends
`Normalize(mean, std)` with the dataset's statistics and `ToTensorV2()`; a pipeline that lists
either itself is refused. It must turn the dataset's images into `data.image_size` squares:
checked at config load on an image of that size, and at the start of a run on the first sample
of each split (images of another size need a resize or a crop in the pipeline).

Randomness: whatever is declared draws from the per-sample stream (seeding/per_sample.py), like
the recipes, so it is reproducible for any number of workers, ranks or resumes.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import json
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import yaml
from albumentations.core.composition import BaseCompose
from albumentations.core.serialization import SERIALIZABLE_REGISTRY
from pydantic import Field, ValidationError

from foundation.errors import UserError
from foundation.section import Section

TEMPLATE_APPENDS = ("Normalize", "ToTensorV2")
Pipeline = dict[str, Any]  # albumentations' serialized form: {"__version__": ..., "transform": ...}


def _pad_crop_flip(size: int) -> list[A.BasicTransform]:
    """CIFAR-style: pad-and-crop translation, horizontal flip, mild photometric jitter."""
    pad = size // 8
    return [
        A.PadIfNeeded(size + 2 * pad, size + 2 * pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
        A.RandomCrop(size, size),
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
    ]


def _random_resized_crop(size: int) -> list[A.BasicTransform]:
    """ImageNet-style: a random crop of 35-100 % of the area, resized; flip; colour jitter."""
    return [
        A.RandomResizedCrop(size=(size, size), scale=(0.35, 1.0)),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0, p=0.5),
    ]


def _resize_center_crop(size: int) -> list[A.BasicTransform]:
    """ImageNet-style evaluation: shorter side to 8/7 of the size, then the central square."""
    return [A.SmallestMaxSize(max_size=round(size * 8 / 7)), A.CenterCrop(size, size)]


def _resize(size: int) -> list[A.BasicTransform]:
    """The whole image squeezed to the size: nothing cut off (digits, documents, icons)."""
    return [A.Resize(size, size)]


def _identity(size: int) -> list[A.BasicTransform]:
    """Images already of the size: nothing but the template's Normalize and ToTensorV2."""
    return []


RECIPES: dict[str, Callable[[int], list[A.BasicTransform]]] = {
    "pad_crop_flip": _pad_crop_flip,
    "random_resized_crop": _random_resized_crop,
    "resize_center_crop": _resize_center_crop,
    "resize": _resize,
    "normalize": _identity,
}


class AugmentConfig(Section):
    """The `data.augment` section; each dataset's section sets its own defaults."""

    train: str | dict[str, Any] = Field(
        "pad_crop_flip",
        description="training pipeline: a recipe name, albumentations' serialized form inline, "
        "or a .yaml/.json file of it",
    )
    eval: str | dict[str, Any] = Field(
        "normalize", description="evaluation pipeline, in the same forms as `train`"
    )


# ----------------------------------------------------------------------------- resolving
def resolve(declared: str | dict[str, Any], image_size: int, key: str) -> Pipeline:
    """The declared pipeline as albumentations' serialized form, checked; any problem is a
    one-line UserError naming `key` (e.g. data.augment.train), the transform and the problem."""
    try:
        resolved = A.to_dict(A.Compose(_transforms(declared, image_size)))
        _check_output(resolved["transform"], image_size)
    except _Refused as refused:
        raise UserError(f"{key}: {refused}") from None
    return resolved


class _Refused(Exception):
    pass


def _transforms(declared: str | dict[str, Any], image_size: int) -> list[A.BasicTransform]:
    if isinstance(declared, str):
        if declared in RECIPES:
            return RECIPES[declared](image_size)
        if declared.endswith((".yaml", ".yml", ".json")):
            declared = _read(Path(declared))
        else:
            close = difflib.get_close_matches(declared, RECIPES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _Refused(
                f"unknown recipe {declared!r}{hint}; recipes: {', '.join(RECIPES)}, or a "
                "pipeline in albumentations' serialized form (inline, or a .yaml/.json file)"
            )
    transform = declared.get("transform", declared)
    if not isinstance(transform, dict) or "__class_fullname__" not in transform:
        raise _Refused(
            "not albumentations' serialized form: expected {transform: {__class_fullname__: "
            "Compose, transforms: [...]}} (what A.to_dict writes)"
        )
    built = _build(transform)
    children = built.transforms if isinstance(built, A.Compose) else [built]
    for child in _walk(children):
        name = type(child).__name__
        if name in TEMPLATE_APPENDS:
            raise _Refused(
                f"leave out {name}: the template appends Normalize (with the dataset's mean and "
                "std) and ToTensorV2 to every pipeline"
            )
    return list(children)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise _Refused(f"cannot read {path}: {error.strerror}") from None
    try:
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise _Refused(f"{path} is not valid {path.suffix[1:].upper()}: {error}") from None
    if not isinstance(loaded, dict):
        raise _Refused(f"{path} does not hold a pipeline (a mapping)")
    return loaded


def _build(transform: dict[str, Any]) -> A.BasicTransform:
    """Every transform name known, every argument accepted and in range, or a _Refused.

    A transform written without `p` gets its class's own default (A.Resize: always), not the
    0.5 that `A.from_dict` would give it."""
    _check_names(transform)
    transform = copy.deepcopy(transform)
    for node in _nodes(transform):
        default = inspect.signature(SERIALIZABLE_REGISTRY[node["__class_fullname__"]]).parameters
        if "p" not in node and "p" in default:
            node["p"] = default["p"].default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no 'p' ... defaulting", its own 'padding', ...
        try:
            built = A.from_dict({"transform": transform})
        except (ValidationError, ValueError, TypeError) as error:
            raise _Refused(_first_problem(transform, error)) from None
    _check_arguments(transform, built)
    return built


def _check_names(transform: dict[str, Any]) -> None:
    for node in _nodes(transform):
        name = node.get("__class_fullname__")
        if not isinstance(name, str) or name not in SERIALIZABLE_REGISTRY:
            close = difflib.get_close_matches(str(name), SERIALIZABLE_REGISTRY, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _Refused(f"unknown transform {name!r}{hint}")


def _check_arguments(source: dict[str, Any], built: A.BasicTransform) -> None:
    """albumentations warns about an unknown argument and drops it; here it is an error."""
    pairs: Iterator[tuple[dict[str, Any], Any]] = zip(_nodes(source), _walk([built]), strict=True)
    for node, transform in pairs:
        cls = type(transform)
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        schema = getattr(cls, "InitSchema", None)
        if schema is not None:
            accepted |= set(schema.model_fields)
        if hasattr(transform, "get_transform_init_args_names"):
            accepted |= set(transform.get_transform_init_args_names())
        unknown = sorted(set(node) - accepted - {"__class_fullname__", "transforms"})
        if unknown:
            close = difflib.get_close_matches(unknown[0], accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _Refused(f"{cls.__name__}: unknown argument {unknown[0]!r}{hint}")


_SCHEMA_LINE = re.compile(
    r"^\s*(?P<message>.*?)\s*\[type=[^,\]]*(?:, input_value=(?P<input>.*?), input_type=\w+)?\]"
)


def _first_problem(transform: dict[str, Any], error: Exception) -> str:
    """albumentations validates a transform's arguments with a pydantic InitSchema and raises
    its text as a ValueError: "N validation errors for InitSchema / <field> / <message> [...]".
    One line: the transform (the node holding the field), the field, the message, the value."""
    lines = str(error).strip().splitlines()
    if len(lines) < 3 or "validation error" not in lines[0]:
        return _first_line(error)
    field = lines[1].strip().split(".")[0]
    found = _SCHEMA_LINE.match(lines[2])
    message = found.group("message") if found else lines[2].strip()
    value = f" (got {found.group('input')})" if found and found.group("input") else ""
    holders = [node for node in _nodes(transform) if field in node]
    given = found.group("input") if found else None
    exact = [node for node in holders if given is not None and repr(node[field]) == given]
    name = (exact or holders or [{"__class_fullname__": "a transform"}])[-1]["__class_fullname__"]
    return f"{name}: {field}: {message}{value}"


def _nodes(transform: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield transform
    for child in transform.get("transforms", []) or []:
        if isinstance(child, dict):
            yield from _nodes(child)


def _walk(transforms: list[Any]) -> Iterator[Any]:
    for transform in transforms:
        yield transform
        if isinstance(transform, BaseCompose):
            yield from _walk(list(transform.transforms))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_output(transform: dict[str, Any], image_size: int) -> None:
    """On a random image of the size, a 3 x size x size float tensor must come out, whether
    each transform fires or not (every `p` set to 1, then to 0): a size that depends on a coin
    toss would break a batch later, at random."""
    probe = np.random.default_rng(0).integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
    for chance in (1.0, 0.0):
        forced = copy.deepcopy(transform)
        for node in _nodes(forced):
            if node.get("__class_fullname__") not in ("Compose", "Sequential"):
                node["p"] = chance
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = A.from_dict({"transform": forced})
            runnable = compose(list(built.transforms), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
            try:
                output = runnable(image=probe)["image"]
            except Exception as error:  # a transform that cannot run on an image at all
                raise _Refused(
                    f"the pipeline fails on a {image_size}x{image_size} image: {_first_line(error)}"
                ) from None
        problem = sample_problem(output, image_size, f"a {image_size}x{image_size} image")
        if problem:
            raise _Refused(problem)


def sample_problem(output: Any, image_size: int, what: str) -> str | None:
    """Why `output` is not what the model takes (a 3 x size x size float tensor), or None."""
    shape = tuple(getattr(output, "shape", ()))
    floating = bool(getattr(output, "is_floating_point", lambda: False)())
    if shape == (3, image_size, image_size) and floating:
        return None
    return (
        f"turns {what} into a {type(output).__name__} of shape {shape}, not a 3x{image_size}x"
        f"{image_size} float tensor (data.image_size): add a resize or a crop to the size"
    )


# ----------------------------------------------------------------------------- building
def compose(
    transforms: list[A.BasicTransform], mean: tuple[float, ...], std: tuple[float, ...]
) -> A.Compose:
    """The pipeline a dataset's samples go through: the declared transforms, then the template's
    Normalize and ToTensorV2, in one Compose (so that one random state reaches all of them)."""
    return A.Compose([*transforms, A.Normalize(mean=mean, std=std), A.ToTensorV2()])


def pipeline(
    declared: str | dict[str, Any],
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    key: str = "data.augment",
) -> A.Compose:
    """The runnable pipeline of a declared (or already resolved) one."""
    resolved = declared if "__version__" in declared else resolve(declared, image_size, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        user = A.from_dict(resolved)
    return compose(list(user.transforms), mean, std)
