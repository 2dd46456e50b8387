"""The config-key, dataset and model tables of docs/configuration.md, written from the code:
`make docs`.

    python -m scripts.docs            rewrite the tables in docs/configuration.md
    python -m scripts.docs --check    exit 1 (one line) if docs/configuration.md and the code disagree

Why generated: hand-written tables went stale with a fork's first new key. Each table sits
between `<!-- generated: NAME -->` and `<!-- end: NAME -->` in docs/configuration.md; everything
else in the docs is prose. A key's line comes from its declaration: the default, the description and the
role (foundation/section.py), plus the profiles that change it; a dataset's and a model's from
their registered section and the first line of the builder's docstring.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from configs import PROFILE_DIR
from configs.schema import Config
from data import DATASETS
from data.config import DataConfig
from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from foundation.section import field_role, flatten
from models import MODELS
from models.config import ModelConfig
from runtime.provenance import REPO_ROOT, describe_machine

PAGE = REPO_ROOT / "docs" / "configuration.md"
PAGE_NAME = "docs/configuration.md"
README = REPO_ROOT / "README.md"
SHARED = ("trainer", "optim", "determinism", "checkpoint", "distributed")


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _rows(section: type[BaseModel], prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    rows = []
    profiles = _profile_values()
    for name, field in section.model_fields.items():
        if name in skip:
            continue
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _rows(annotation, f"{dotted}.")
            continue
        default = _shown(field.default)
        overridden = [f"{p}: {_shown(v)}" for p, v in profiles.get(dotted, {}).items()]
        if overridden:
            default += f" ({', '.join(overridden)})"
        role = field_role(section, name)
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{dotted}` | {default} | {role} | {description} |")
    return rows


def _profile_values() -> dict[str, dict[str, Any]]:
    """key -> {profile: value} where a profile file sets a value other than the default."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        tree = yaml.safe_load(path.read_text()) or {}
        for key, value in flatten(tree).items():
            found.setdefault(key, {})[path.stem] = value
    defaults = flatten(Config().model_dump(mode="json"))
    return {
        key: {p: v for p, v in values.items() if v != defaults.get(key)}
        for key, values in found.items()
        if any(v != defaults.get(key) for v in values.values())
    }


def config_keys() -> str:
    """Every key that does not depend on the chosen dataset or model."""
    header = ["| key | default | role | meaning |", "|---|---|---|---|"]
    rows = _rows(Config, "", skip=(*SHARED, "data", "model"))
    for section in SHARED:
        rows += _rows(Config.model_fields[section].annotation, f"{section}.")  # type: ignore[arg-type]
    rows += _rows(DataConfig, "data.", skip=("augment",))
    rows.append(
        "| `data.augment.train`, `data.augment.eval` | per dataset (below) | computation | "
        "the pipelines: a recipe, albumentations' serialized form inline, or a .yaml/.json "
        'file (docs/fork.md "Augmentation") |'
    )
    rows += _rows(ModelConfig, "model.")
    return "\n".join(header + rows)


def datasets(only: set[str] | None = None) -> str:
    rows = [
        "| `data.name` | its own keys (default) | augmentation (train / eval) | what it reads |"
    ]
    rows.append("|---|---|---|---|")
    for name in DATASETS:
        if only is not None and name not in only:
            continue
        section = DATASETS.config(name)
        own = _own_keys(section, DataConfig, "data.")
        augment = section.model_fields["augment"].default
        about = _first_line(sys.modules[DATASETS[name].__module__].__doc__)
        rows.append(f"| `{name}` | {own} | `{augment.train}` / `{augment.eval}` | {about} |")
    return "\n".join(rows)


def models(only: set[str] | None = None) -> str:
    rows = ["| `model.name` | its own keys (default) | what it is |", "|---|---|---|"]
    for name in MODELS:
        if only is not None and name not in only:
            continue
        section = MODELS.config(name)
        own = _own_keys(section, ModelConfig, "model.")
        about = _first_line(MODELS[name].__doc__ or sys.modules[MODELS[name].__module__].__doc__)
        rows.append(f"| `{name}` | {own} | {about} |")
    return "\n".join(rows)


def _own_keys(section: type[BaseModel], base: type[BaseModel], prefix: str) -> str:
    keys = []
    for name, field in section.model_fields.items():
        if name in base.model_fields or name == "augment":
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += [
                f"`{prefix}{name}.{sub}` ({_shown(inner.default)})"
                for sub, inner in annotation.model_fields.items()
            ]
        else:
            keys.append(f"`{prefix}{name}` ({_shown(field.default)})")
    return ", ".join(keys) or "none"


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n\n")[0].replace("\n", " ").replace("|", "\\|")


TABLES = {"config-keys": config_keys, "datasets": datasets, "models": models}
MEASURED = REPO_ROOT / "docs" / "measured" / "default-job.json"


def default_job() -> str:
    """README's sentence on the default job, from its last measurement (make measure-default)."""
    m = json.loads(MEASURED.read_text())
    if m.get("computed_on"):
        machine = f"{describe_machine(m['computed_on'])}, torch {m['torch']}"
    else:
        machine = f"{m['machine']}; its CPU model and instruction set were not recorded"
    return (
        f"Measured ({m['date']}, `{m['command']}`, {m['cpu_cores']} CPU cores): val_acc "
        f"{m['val_acc']:.4f} after {m['epochs']} epochs, {m['seconds']:.0f} s for the whole "
        f"command ({m['training_seconds']:.0f} s inside train.py), `final_weights_sha256` "
        f"{m['final_weights_sha256'][:8]}… on {machine}."
    )


def render_readme(page: str) -> str:
    """README.md with its measured sentence written anew."""
    pattern = re.compile(
        r"(<!-- generated: default-job -->\n)(?:.*?\n)?(<!-- end: default-job -->)", re.DOTALL
    )
    if not pattern.search(page):
        raise UserError(
            "README.md has no <!-- generated: default-job --> ... <!-- end: default-job -->"
        )
    text = default_job()
    return pattern.sub(lambda match: match.group(1) + text + "\n" + match.group(2), page)


def listed(page: str, name: str) -> set[str]:
    """The components a generated table of the page lists (its rows' first cells)."""
    found = re.search(rf"<!-- generated: {name} -->\n(.*?)<!-- end: {name} -->", page, re.DOTALL)
    return set(re.findall(r"^\| `([^`]+)` \|", found.group(1), re.MULTILINE)) if found else set()


def unlisted(page: str) -> list[str]:
    """Registered datasets and models the page's tables do not list yet (a fork's, before
    `make docs`)."""
    return [
        f"{kind} {name!r}"
        for kind, registry, table in (
            ("dataset", DATASETS, "datasets"),
            ("model", MODELS, "models"),
        )
        for name in registry
        if name not in listed(page, table)
    ]


def render(page: str, listed_only: bool = False) -> str:
    """The page with every generated table written anew (`listed_only`: the dataset and model
    tables keep only the rows they have, so a fork's new component is not a difference)."""
    tables = dict(TABLES)
    if listed_only:
        tables["datasets"] = lambda: datasets(listed(page, "datasets"))
        tables["models"] = lambda: models(listed(page, "models"))
    for name, table in tables.items():
        pattern = re.compile(
            rf"(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.DOTALL
        )
        if not pattern.search(page):
            raise UserError(
                f"{PAGE_NAME} has no <!-- generated: {name} --> ... <!-- end: {name} -->"
            )
        text = table()
        page = pattern.sub(
            lambda match, text=text: match.group(1) + text + "\n" + match.group(2), page
        )
    return page


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.docs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    arguments = parser.parse_args()
    pages = [(PAGE, render), (README, render_readme)]
    for page, renderer in pages:
        current = page.read_text()
        rendered = renderer(current)
        name = page.relative_to(REPO_ROOT)
        if arguments.check:
            if rendered != current:
                raise UserError(f"{name}'s generated parts are stale: run make docs")
            print(f"{name}: generated parts match the code and the measurements")
        elif rendered != current:
            page.write_text(rendered)
            print(f"{name}: generated parts rewritten")
        else:
            print(f"{name}: generated parts already match")
    return 0


if __name__ == "__main__":
    run_reporting_user_errors(main)
