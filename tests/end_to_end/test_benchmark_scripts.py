"""The speed benchmarks run and write their numbers (no timing is asserted: speed is measured, not tested)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import run_command

pytestmark = pytest.mark.slow


def bench(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`make bench-<name>`: `python -m benchmarks.bench_<name> ARGS` in the launch environment."""
    return run_command([sys.executable, "-m", f"benchmarks.bench_{name}", *args], timeout=timeout)


def test_per_sample_seeding_benchmark_reports_its_numbers(tmp_path: Path) -> None:
    done = bench("seeding", "--samples", "300", "--repeats", "1", "--output-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "bench-seeding.json").read_text())
    assert {
        "seeding_us",
        "seeding_share_of_loading",
        "naive_seeding_us",
        "load_unseeded_us",
    } <= set(result)
    assert "per-sample seeding costs" in done.stdout


def test_speed_benchmark_compares_profiles_with_the_plain_loop(tmp_path: Path) -> None:
    small = ["--repeats", "1", "--epochs", "1", "--output-dir", str(tmp_path)]
    small += ["data.synthetic.train_size=128", "data.synthetic.val_size=64", "model.width=8"]
    done = bench("speed", *small, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "bench-speed.json").read_text())
    assert set(result["runs"]) == {"plain", "production", "eval", "debug"}
    assert result["runs"]["plain"]["vs_plain_best"] == 1.0
    assert all(row["time_to_first_step_s"] > 0 for row in result["runs"].values())
    assert "vs plain" in (tmp_path / "bench-speed.md").read_text()


def test_compile_benchmark_compares_compiled_eager_and_the_plain_loop(tmp_path: Path) -> None:
    small = ["--repeats", "1", "--epochs", "1", "--models", "smallcnn", "--layouts", "1 process"]
    small += ["--output-dir", str(tmp_path), "data.synthetic.train_size=128"]
    small += ["data.synthetic.val_size=64", "model.width=8"]
    done = bench("compile", *small, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads((tmp_path / "bench-compile.json").read_text())["runs"]
    assert set(rows) == {
        f"smallcnn | 1 process | {run}" for run in ("plain loop", "eager", "compiled")
    }
    assert rows["smallcnn | 1 process | compiled"]["compile_cold_s"] > 0
    assert rows["smallcnn | 1 process | eager"]["compile_cold_s"] is None
    assert "| compile cold (s) |" in (tmp_path / "bench-compile.md").read_text()


def test_fault_check_benchmark_reports_its_numbers(tmp_path: Path) -> None:
    small = ["--steps", "2", "--repeats", "1", "--batch", "8", "--width", "4"]
    done = bench("health", *small, "--output-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "bench-health.json").read_text())
    assert set(report["steps"]) == {"none", "log_steps", "every_step"}
    assert report["vote"]["world_size"] == 2 and report["vote"]["vote_us"] > 0
    assert "vote at W=2" in done.stdout
    assert "| every_step |" in (tmp_path / "bench-health.md").read_text()


def test_recipe_benchmark_times_every_feature_and_the_ema_evaluation(tmp_path: Path) -> None:
    small = ["--steps", "2", "--repeats", "1", "--batch", "8", "--width", "4"]
    done = bench("recipe", *small, "--output-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "bench-recipe.json").read_text())
    assert set(report["costs"]) == {*report["variants"], "raw weights", "raw + EMA weights"}
    assert len(report["variants"]) == 8 and "all together" in report["variants"]
    assert all(cost["best_ms"] > 0 for cost in report["costs"].values())
    assert "| accumulation 2 x 64 |" in (tmp_path / "bench-recipe.md").read_text()


def test_invariance_benchmark_reports_traffic_and_time(tmp_path: Path) -> None:
    small = ["--worlds", "2", "--timed-worlds", "2", "--steps", "2", "--repeats", "1"]
    small += ["--width", "4", "--per-rank-batch", "8", "--output-dir", str(tmp_path)]
    done = bench("invariance", *small)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads((tmp_path / "bench-invariance.json").read_text())
    assert set(result["seconds_per_step"]) == {"ddp", "invariant sharded", "invariant all_gather"}
    computed = result["bytes_received_per_step"]["computed"]
    assert computed["invariant sharded"] <= 1.1 * computed["ring all_reduce"]
    assert result["exchanges_same_weights"] is True
    assert "both exchanges end with the same weights: yes" in done.stdout
