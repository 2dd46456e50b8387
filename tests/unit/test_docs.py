"""The docs say what the code does: the generated tables of docs/configuration.md match the code
(`make docs`), every config key has a description to show there, and every test the README or a
docs page cites exists."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from pydantic import BaseModel

from configs.schema import Config
from data import DATASETS
from data.config import DataConfig
from models import MODELS
from models.config import ModelConfig
from scripts.docs import PAGE, PAGE_NAME, render, unlisted
from tests.helpers.runs import REPO_ROOT

README = REPO_ROOT / "README.md"


def pages() -> list[Path]:
    """The README and every page of docs/."""
    return [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


def test_the_generated_tables_match_the_code() -> None:
    """Every row the tables have says what the code says. A dataset or model a fork adds is not
    a failure (the fork guide promises a green `make test` without an edit outside data/ and
    models/): it is a warning until `make docs` adds its row."""
    current = PAGE.read_text()
    assert render(current, listed_only=True) == current, (
        f"{PAGE_NAME}'s tables are stale: make docs"
    )
    for component in unlisted(current):
        warnings.warn(f"{PAGE_NAME} does not list {component} yet: run make docs", stacklevel=1)


def undescribed(
    section: type[BaseModel], prefix: str = "", described: type[BaseModel] | None = None
) -> list[str]:
    """Keys without a description (`described`: a base whose keys the section inherits)."""
    missing = []
    for name, field in section.model_fields.items():
        if described is not None and name in described.model_fields:
            continue  # described by the base section (data.name, model.name, ...)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            missing += undescribed(annotation, f"{prefix}{name}.")
        elif not field.description:
            missing.append(f"{prefix}{name}")
    return missing


def test_every_key_of_every_section_has_a_description() -> None:
    missing = undescribed(Config)
    for name in DATASETS:
        missing += undescribed(DATASETS.config(name), "data.", described=DataConfig)
    for name in MODELS:
        missing += undescribed(MODELS.config(name), "model.", described=ModelConfig)
    assert not missing, f"give these keys a Field(description=...): {missing}"


def test_every_test_the_docs_cite_exists() -> None:
    cited = [
        (page, path, name)
        for page in pages()
        for path, name in re.findall(
            r"`((?:end_to_end|unit|packaging)/[\w/]+\.py)(?:::([\w*\[\]-]+))?`", page.read_text()
        )
    ]
    assert cited
    for page, path, name in cited:
        where = page.relative_to(REPO_ROOT)
        source = REPO_ROOT / "tests" / path
        assert source.is_file(), f"{where}: {path}"
        if name:
            assert re.search(rf"def {name.replace('*', '.*')}\(", source.read_text()), (
                f"{where}: {path}::{name}"
            )
