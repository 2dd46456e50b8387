"""`make sweep` end to end on the tiny job: a real study, killed mid-trial and run again, held-out
confirmation, the report, and the dashboard in a real browser. One sweep (2 parameters × 6
trials × 2 tuning seeds) is shared by the tests of this file: it is the expensive part.

How it is killed: as a user or a scheduler stops it, SIGTERM to the sweep's process group (the
sweep process and the train.py run under way; the run checkpoints through the product's own
signal path). The test waits until the third trial's first run has logged a step: a trial under
way, before its first epoch report can prune it (PLANTED_SLEEP_PER_STEP slows each step by
30 ms so that this moment is easy to catch, and so that a pruned run is still under way when
the pruner's SIGTERM comes; the numbers are the same)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from runtime.rundir import RunDirectory, read_json
from tests.helpers.runs import REPO_ROOT, TINY, free_port, launch_env, run_command

SPACE = """\
metric: val_acc
params:
  optim.lr: {low: 0.005, high: 0.2, log: true}
  model.dropout: {choices: [0.1, 0.3]}
prune_from_epoch: 1  # the tiny job has 2 epochs: pruning after the first stops runs mid-way
"""
PLANTED = "tests/helpers/planted_train.py"
SLOW_STEPS = {"PLANTED_SLEEP_PER_STEP": "0.03"}


def sweep_command(output: Path, space: Path, *more: str) -> list[str]:
    return [
        sys.executable, "-m", "scripts.sweep", "--space", str(space), "--trials", "6",
        "--seeds", "0", "1", "--held-out-seeds", "100", "101", "102", "--sequential",
        "--output-dir", str(output), "--entry", PLANTED, *more, "--", *TINY,
    ]  # fmt: skip


def trials(folder: Path) -> list[dict[str, Any]]:
    """The study's trials as its SQLite file holds them (read by the test, not by optuna)."""
    with sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT trial_id, number, state FROM trials ORDER BY number").fetchall()
        params = db.execute("SELECT trial_id, param_name, param_value FROM trial_params").fetchall()
        values = dict(db.execute("SELECT trial_id, value FROM trial_values").fetchall())
    return [
        {
            "number": number,
            "state": state,
            "value": values.get(trial_id),
            "params": {name: value for tid, name, value in params if tid == trial_id},
        }
        for trial_id, number, state in rows
    ]


def steps_logged(folder: Path, number: int) -> int:
    """Step rows in the metrics of trial `number`'s first seed (0 before it started)."""
    with sqlite3.connect(f"file:{folder / 'study.db'}?mode=ro", uri=True) as db:
        found = db.execute(
            "SELECT a.value_json FROM trial_user_attributes a JOIN trials t USING (trial_id) "
            "WHERE t.number = ? AND a.key = 'runs'",
            (number,),
        ).fetchone()
    if found is None:
        return 0
    metrics = RunDirectory.of(json.loads(found[0]), "default", "eval", 0).metrics_file
    if not metrics.is_file():
        return 0
    return sum('"kind": "step"' in line for line in metrics.read_text().splitlines())


@dataclass
class KilledAndRerun:
    folder: Path
    before: list[dict[str, Any]]  # the study when the sweep was killed
    manifests: dict[Path, int]  # the completed runs' manifests then, with their mtimes
    second_sweep: subprocess.CompletedProcess[str]  # a concurrent sweep on the same folder
    rerun: subprocess.CompletedProcess[str]
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory: pytest.TempPathFactory) -> KilledAndRerun:
    root = tmp_path_factory.mktemp("sweep")
    space = root / "tiny2.yaml"
    space.write_text(SPACE)
    output = root / "sweeps"
    folder = output / "tiny2"
    started = time.perf_counter()
    sweep = subprocess.Popen(
        sweep_command(output, space),
        cwd=REPO_ROOT,
        env=launch_env(SLOW_STEPS),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as make gives a command
    )
    second = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sweep.poll() is None:
        if second is None and (folder / "study.db").exists():
            second = run_command(sweep_command(output, space))
        if (folder / "study.db").exists() and steps_logged(folder, 2) >= 2:
            os.killpg(sweep.pid, signal.SIGTERM)
            break
        time.sleep(0.05)
    output_text, _ = sweep.communicate(timeout=60)
    assert sweep.returncode == -signal.SIGTERM, output_text[-3000:]
    assert second is not None
    before = trials(folder)
    finished = [t for t in before if t["state"] in ("COMPLETE", "PRUNED")]
    manifests = {
        path: path.stat().st_mtime_ns
        for path in folder.glob("points/*/*/*/seed*/manifest.json")
        if RunDirectory(path.parent).is_completed()
    }
    killed_at = time.perf_counter() - started
    rerun = run_command(sweep_command(output, space), env=SLOW_STEPS, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert len(finished) == 2, before
    seconds = {"until_killed": killed_at, "rerun": time.perf_counter() - started - killed_at}
    return KilledAndRerun(folder, before, manifests, second, rerun, seconds)


@pytest.mark.slow
def test_a_killed_sweep_run_again_repeats_no_finished_trial_and_resumes_the_interrupted_one(
    killed_and_rerun: KilledAndRerun,
) -> None:
    result = killed_and_rerun
    after = trials(result.folder)
    print(f"sweep wall time: {result.seconds}")
    finished_before = [t for t in result.before if t["state"] in ("COMPLETE", "PRUNED")]
    assert after[: len(finished_before)] == finished_before  # kept as they were, not run again
    interrupted = after[2]
    assert interrupted["state"] == "FAIL"  # marked interrupted, not counted
    again = [t for t in after[3:] if t["params"] == interrupted["params"]]
    assert again and again[0]["number"] == 3  # the same point, first of the rerun
    counted = [t for t in after if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(counted) == 6 and not [t for t in after if t["state"] in ("RUNNING", "WAITING")]
    summary = read_json(result.folder / "sweep.json")
    assert summary["counts"]["interrupted"] == 1 and summary["counts"]["counted"] == 6
    assert "trial(s) 2 were interrupted: run again, resuming" in result.rerun.stdout
    # the finished trials' runs were neither retrained nor rewritten
    assert result.manifests
    for manifest, mtime in result.manifests.items():
        assert manifest.stat().st_mtime_ns == mtime, manifest
    # the interrupted trial's first run resumed from the checkpoint the SIGTERM wrote
    point = Path(summary["trials"][3]["runs"])
    resumed = RunDirectory.of(point, "default", "eval", 0).read_manifest() or {}
    assert (resumed.get("resumed_from_step") or 0) >= 2, resumed


@pytest.mark.slow
def test_a_second_sweep_on_a_live_folder_is_refused_in_one_line(
    killed_and_rerun: KilledAndRerun,
) -> None:
    second = killed_and_rerun.second_sweep
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "is being written by another sweep" in lines[0], lines


@pytest.mark.slow
def test_the_report_sets_the_tuning_score_beside_the_held_out_score(
    killed_and_rerun: KilledAndRerun,
) -> None:
    folder = killed_and_rerun.folder
    summary = read_json(folder / "sweep.json")
    side = summary["side_by_side"]
    assert None not in (side["best"]["tuning"], side["best"]["held_out"], side["base"]["held_out"])
    confirm = read_json(folder / "confirm" / "compare.json")
    assert confirm["seeds"] == [100, 101, 102]  # SEQUENTIAL=1: one look at 3 pairs
    assert confirm["sequential"]["planned_looks"] == [3]
    assert side["sequential"]["decision"] == confirm["sequential"]["decision"]
    assert side["best"]["held_out"] == confirm["metrics"]["val_acc"]["b_mean"]
    assert confirm["b"]["overrides"][-2:] == summary["best"]["overrides"]
    markdown = (folder / "sweep.md").read_text()
    assert "## Tuning score and held-out score (the winner's curse, measured)" in markdown
    best = side["best"]
    assert f"| best point | {best['tuning']:.4f} | {best['held_out']:.4f} |" in markdown
    pruning = summary["pruning"]
    assert pruning["runs_planned"] == 12
    for name in ("history.png", "params.png", "heldout.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_a_pruned_trial_s_stopped_run_is_left_resumable(killed_and_rerun: KilledAndRerun) -> None:
    """SIGTERM from the pruner goes through the run's own stop path: a checkpoint, and a
    manifest that says `interrupted` with where to resume; the seed after it never started."""
    summary = read_json(killed_and_rerun.folder / "sweep.json")
    assert summary["pruning"]["runs_stopped"] >= 1, summary["pruning"]
    stopped = []
    for trial in summary["trials"]:
        if trial["state"] != "PRUNED":
            continue
        for seed in (0, 1):
            run = RunDirectory.of(trial["runs"], "default", "eval", seed)
            manifest = run.read_manifest() or {}
            if manifest.get("status") == "interrupted":
                stopped.append(run)
                assert manifest.get("resume_from") and run.last_checkpoint.exists(), manifest
    assert len(stopped) == summary["pruning"]["runs_stopped"]


def dom_text(url: str, chromium: str) -> str:
    """The page as headless Chromium renders it after its scripts ran, as plain text."""
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         "--virtual-time-budget=10000", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", done.stdout, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", text)))


@pytest.mark.slow
def test_the_dashboard_serves_the_study_on_localhost_to_a_real_browser(
    killed_and_rerun: KilledAndRerun,
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed here (.ci/run installs Debian's package)")
    port = free_port()
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "scripts.sweep_dashboard", "--sweep", str(killed_and_rerun.folder),
         "--port", str(port)],
        cwd=REPO_ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        page = dom_text(f"http://127.0.0.1:{port}/dashboard/studies/1/trials", chromium)
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
    study = trials(killed_and_rerun.folder)
    assert f"{len(study)} Trials" in page, page[:2000]
    best = read_json(killed_and_rerun.folder / "sweep.json")["best"]["number"]
    for trial in study:  # the list: each trial with its state, the best one marked
        state = trial["state"].capitalize() + (" Best Trial" if trial["number"] == best else "")
        assert f"Trial {trial['number']} {state} " in page, (trial, page[:2000])


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    """One refusal end to end (each kind is a unit test: unit/test_sweep_space.py)."""
    space = tmp_path / "bad.yaml"
    space.write_text(SPACE.replace("optim.lr", "optim.lrr"))
    done = run_command(sweep_command(tmp_path / "out", space))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: space {space}: optim.lrr=0.005: unknown config key 'optim.lrr' "
        "(did you mean 'optim.lr'?)"
    ]
    assert not (tmp_path / "out").exists()
