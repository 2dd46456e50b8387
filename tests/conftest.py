"""Fixtures only; the helpers they use live in tests/helpers/ (runs.py: launching train.py and
reading its outputs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from seeding import regions
from tests.helpers.runs import (
    REPO_ROOT,
    SHORT_LAST_BATCH,
    ReferenceRuns,
    RunResult,
    benchmark_command,
    built_once,
    run_command,
    run_train,
    shared_directory,
)


def pytest_configure(config: pytest.Config) -> None:
    # The tests import albumentations in this process too: no update check against PyPI.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(scope="session")
def references(tmp_path_factory: pytest.TempPathFactory) -> ReferenceRuns:
    """Uninterrupted runs of the tiny job, shared by every xdist worker (tests/helpers/runs.py)."""
    return ReferenceRuns(shared_directory(tmp_path_factory, "references"))


@pytest.fixture(scope="session")
def local_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeds 0, 1, 2 of the tiny job through the local pool (2 at once): the output folder.
    The SLURM launcher's report must aggregate to the same numbers (packaging/test_slurm.py)."""

    def run(output: Path) -> None:
        done = run_command(
            benchmark_command(output, "0", "1", "2", options=("--jobs", "2")), timeout=600
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    return built_once(shared_directory(tmp_path_factory, "local-benchmark"), run)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def no_sharded_stream_left_by_another_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without a tensor-parallel sharded stream (seeding/regions.py): one that
    an earlier test in the same worker entered would make `torch.manual_seed` alone no longer
    fix a model's dropout (vit_tiny's sharded sites draw from it)."""
    monkeypatch.setattr(regions, "_stream", None)


@pytest.fixture(scope="session")
def compiling(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """The overrides of a compiled run, with the session's Inductor cache."""
    cache = shared_directory(tmp_path_factory, "inductor-cache")
    return ("trainer.compile.enabled=true", f"trainer.compile.cache_dir={cache}")


@pytest.fixture(scope="session")
def compiled_run(tmp_path_factory: pytest.TempPathFactory, compiling: tuple[str, ...]) -> RunResult:
    """The tiny job compiled, uninterrupted: what test_compile.py and the container's compiled
    run are held to."""

    def train(folder: Path) -> None:
        run = run_train(folder / "run", *SHORT_LAST_BATCH, *compiling)
        (folder / "stdout.txt").write_text(run.process.stdout)

    folder = built_once(shared_directory(tmp_path_factory, "compiled-reference"), train)
    process = subprocess.CompletedProcess([], 0, (folder / "stdout.txt").read_text(), "")
    return RunResult(process, folder / "run")
