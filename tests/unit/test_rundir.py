"""The run directory's one owner: layout, writers and readers (no training here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from foundation.errors import UserError
from runtime.rundir import RunDirectory, benchmark_directory, find_one_run, find_runs


def test_layout(tmp_path: Path) -> None:
    run = RunDirectory.of(tmp_path, "default", "eval", 7)
    assert run.path == tmp_path / "default" / "eval" / "seed7"
    assert run.manifest_file.name == "manifest.json" and run.metrics_file.name == "metrics.jsonl"
    assert run.last_checkpoint == run.path / "checkpoints" / "last.pt"
    assert benchmark_directory(tmp_path, "default", "eval") == tmp_path / "default/eval/benchmark"


def test_writers_and_readers_round_trip(tmp_path: Path) -> None:
    run = RunDirectory.of(tmp_path, "default", "debug", 0)
    assert not run.holds_a_run() and run.read_manifest() is None and run.read_metrics() == []
    run.create()
    run.write_manifest({"status": "completed"})
    for step in (1, 2, 3):
        run.append_metrics({"kind": "step", "step": step, "loss": 1.0 / step})
    run.append_metrics({"kind": "epoch", "step": 3, "epoch": 1})
    assert run.is_completed()
    assert [r["step"] for r in run.read_metrics("step")] == [1, 2, 3]
    assert [r["epoch"] for r in run.read_metrics("epoch")] == [1]
    run.drop_metrics_after(2)
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    assert find_runs(tmp_path) == [run] and find_one_run(tmp_path) == run


def test_an_existing_run_is_refused(tmp_path: Path) -> None:
    run = RunDirectory.of(tmp_path, "default", "debug", 0)
    run.create()
    run.write_config("seed: 0\n")
    with pytest.raises(UserError, match="already holds a run; continue it with --resume auto"):
        run.refuse_to_overwrite()


def test_find_one_run_names_what_it_found(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"expected one run under .*, found 0"):
        find_one_run(tmp_path)


@pytest.mark.parametrize("name", ["metrics.jsonl", ".writer.lock", "manifest.json"])
@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_run_directory_with_no_plain_file_where_the_template_writes_one_is_refused(
    tmp_path: Path, name: str, kind: str
) -> None:
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.create()
    in_the_way = run_dir.path / name
    if kind == "directory":
        in_the_way.mkdir()
    else:
        os.mkfifo(in_the_way)
    with pytest.raises(UserError, match=f"{name} is not a plain file"):
        run_dir.refuse_links()
