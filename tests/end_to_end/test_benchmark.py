"""Multi-seed benchmark: aggregation, end-to-end report, reuse, resume and an isolated failure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from runtime.rundir import RunDirectory, find_runs
from tests.helpers.runs import benchmark_command, run_command, run_train


def benchmark(
    output_dir: Path,
    *seeds: str,
    env: dict[str, str] | None = None,
    entry: str = "train.py",
    jobs: int = 1,
    more: tuple[str, ...] = (),
    vary: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    options = ("--jobs", str(jobs), "--entry", entry, *(("--vary", *vary) if vary else ()))
    command = benchmark_command(output_dir, *seeds, options=options, overrides=more)
    return run_command(command, env=env, timeout=600)


def test_a_bad_seed_list_is_refused(tmp_path: Path) -> None:
    """One refusal end to end (every kind is a unit test: unit/test_compare_runs.py)."""
    done = benchmark(tmp_path, "1", "2", "1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: duplicate seed(s): 1"]
    assert not tmp_path.joinpath("default").exists()


@pytest.mark.slow
def test_three_seeds_end_to_end_then_reuse(local_benchmark: Path) -> None:
    tmp_path = local_benchmark
    bench = tmp_path / "default" / "eval" / "benchmark"
    log = (bench / "logs" / "seed0.log").read_text()
    assert "epoch   2/2" in log
    report = json.loads((bench / "report.json").read_text())
    assert [entry["seed"] for entry in report["seeds"]] == [0, 1, 2]
    for entry in report["seeds"]:
        manifest = RunDirectory(Path(entry["run_dir"])).read_manifest()
        assert entry["status"] == "completed"
        assert entry["final_metrics"] == manifest["final_metrics"]
        assert entry["weights_sha256"] == manifest["final_weights_sha256"]
        assert Path(entry["run_dir"]) == tmp_path / "default" / "eval" / f"seed{entry['seed']}"
        assert entry["best_epoch"] in (1, 2)
    accuracies = [entry["final_metrics"]["val_acc"] for entry in report["seeds"]]
    assert report["aggregate"]["val_acc"]["mean"] == pytest.approx(np.mean(accuracies))
    assert report["aggregate"]["val_acc"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    markdown = (bench / "report.md").read_text()
    assert "±" in markdown and "95 %" in markdown and "bitwise reproducible" in markdown
    assert (bench / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    manifests = {p: p.stat().st_mtime_ns for p in (r.manifest_file for r in find_runs(tmp_path))}
    again = benchmark(tmp_path, "0", "1", "2")
    assert again.returncode == 0
    assert again.stdout.count("(reused)") == 3
    assert "progress: 3/3 runs done, 0 failed" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in manifests} == manifests

    # Other overrides into the same folder: refused, not reported as the old runs' numbers.
    other = benchmark(tmp_path, "0", more=("optim.lr=0.1",))
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [
        f"error: {tmp_path}/default/eval/seed0 holds a run of another configuration "
        "(optim.lr: 0.05, asked 0.1); use another --output-dir"
    ]
    assert {p: p.stat().st_mtime_ns for p in manifests} == manifests


@pytest.mark.slow
def test_a_failing_seed_does_not_lose_the_others_and_a_killed_seed_resumes(tmp_path: Path) -> None:
    # Seed 1 was killed mid-run earlier (SIGKILL at step 5, after the checkpoint at step 4).
    killed = run_train(
        tmp_path,
        "--seed",
        "1",
        "--profile",
        "eval",
        "checkpoint.every_steps=4",
        entry="tests/helpers/planted_train.py",
        env={"PLANTED_SIGKILL_AT_STEP": "5"},
        check=False,
    )
    assert killed.returncode == -9
    done = benchmark(
        tmp_path,
        "1",
        "2",
        env={"PLANTED_FAIL_SEED": "2"},
        entry="tests/helpers/planted_train.py",
    )
    assert done.returncode == 1
    report = json.loads((tmp_path / "default" / "eval" / "benchmark" / "report.json").read_text())
    status = {entry["seed"]: entry["status"] for entry in report["seeds"]}
    assert status == {1: "completed", 2: "failed"}
    assert report["failed_seeds"] == [2]
    assert "planted failure for seed 2" in report["seeds"][1]["error"]
    assert report["aggregate"]["val_acc"]["n"] == 1
    resumed = RunDirectory.of(tmp_path, "default", "eval", 1).read_manifest()
    assert resumed["resumed_from_step"] == 4
    assert (
        "failed and are not in the aggregate"
        in (tmp_path / "default" / "eval" / "benchmark" / "report.md").read_text()
    )


@pytest.mark.slow
def test_varying_one_source_at_a_time_reports_its_spread_and_all_is_the_plain_benchmark(
    local_benchmark: Path, tmp_path: Path
) -> None:
    """VARY="init all": the init runs differ in their initial weights only (every other stream
    pinned to the config's seed, 42); the `all` runs are the plain benchmark's, bit for bit."""
    done = benchmark(tmp_path, "0", "1", "2", jobs=2, vary=("init", "all"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bench = tmp_path / "default" / "eval" / "benchmark"
    report = json.loads((bench / "variance.json").read_text())
    spread = report["spread"]["val_acc"]
    assert set(spread) == {"init", "all"} and spread["all"]["share"] == pytest.approx(1.0)
    for row in spread.values():
        assert row["n"] == 3 and row["std"] > 0 and row["std_ci95"][0] <= row["std"]
    plain = json.loads((local_benchmark / "default/eval/benchmark/report.json").read_text())
    plain_digests = {entry["seed"]: entry["weights_sha256"] for entry in plain["seeds"]}
    by_source = {source: runs for source, runs in report["runs"].items()}
    assert {r["seed"]: r["weights_sha256"] for r in by_source["all"]} == plain_digests
    streams = [
        RunDirectory(Path(r["run_dir"])).read_manifest()["seeds"]["ranks"][0]["streams"]
        for r in by_source["init"]
    ]
    assert len({s["init"]["seed"] for s in streams}) == 3  # the initial weights vary ...
    for stream in ("sampler", "dropout", "host"):  # ... and nothing else does
        assert len({json.dumps(s[stream]) for s in streams}) == 1, stream
    assert "| init | 3 |" in (bench / "variance.md").read_text()
    assert (bench / "variance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
