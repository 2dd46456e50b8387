"""The docs say what the code does: the generated tables of docs/configuration.md match the code
(`make docs`), every config key has a description to show there, every test the README or a
docs page cites exists, every relative link between them resolves (file and heading), and the
README stays a front page (at most 200 lines)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from pydantic import BaseModel

from configs.schema import Config
from data import DATASETS
from data.config import DataConfig
from models import MODELS
from models.config import ModelConfig
from scripts.docs import MEASURED, PAGE, PAGE_NAME, render, render_readme, unlisted
from tests.helpers.runs import REPO_ROOT

README = REPO_ROOT / "README.md"
README_MAX_LINES = 200


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


def test_the_readme_quotes_the_default_job_s_last_measurement() -> None:
    """The README's numbers come from docs/measured/default-job.json (make measure-default),
    written there by make docs, never typed."""
    readme = README.read_text()
    assert render_readme(readme) == readme, "README.md's measured sentence is stale: make docs"
    measured = json.loads(MEASURED.read_text())
    assert f"val_acc {measured['val_acc']:.4f}" in readme


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


def test_the_readme_is_a_front_page() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail into docs/"
    )


# ------------------------------------------------------------------------------------ links
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+).*?\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> list[str]:
    """The lines of a markdown text outside fenced code blocks."""
    lines, fence = [], ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            continue
        opening = re.match(r"(`{3,}|~{3,})", stripped)
        if opening:
            fence = opening.group(1)
            continue
        lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped (hyphens, underscores and
    spaces kept), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor, a repeated one numbered as GitHub does (`x`, `x-1`, ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(page.read_text()):
        heading = HEADING.match(line)
        if not heading:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of a page whose file (or, with `#anchor`, heading) is not there."""
    broken = []
    for line in prose(page.read_text()):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if SCHEME.match(target):
                continue  # https:, mailto: ...: not ours to check here
            path, _, anchor = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            if not destination.exists():
                broken.append(f"{target}: no such file")
            elif anchor and (destination.suffix != ".md" or anchor not in anchors(destination)):
                broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    return broken


def test_every_relative_link_resolves() -> None:
    broken = {
        str(page.relative_to(REPO_ROOT)): found for page in pages() if (found := broken_links(page))
    }
    assert not broken, broken


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text(
        "# Other page\n\n## Is B better than A?\n\n## Twice\n\n## Twice\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#is-b-better-than-a) [also](other.md#twice-1) [here](#page)\n"
        "[gone](missing.md) [no heading](other.md#nowhere) [away](https://example.org/x#y)\n"
        "```\n[in code](missing-too.md)\n```\n"
        "`[in a code span](missing-three.md)`\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading #nowhere in other.md",
    ]
