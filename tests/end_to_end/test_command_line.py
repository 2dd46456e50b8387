"""Config validation and bad input: one-line error, exit code != 0, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, launch_env

DEFAULT = REPO_ROOT / "configs" / "default.yaml"


BAD_ARGUMENTS = {
    "missing config": (["--config", "no/such.yaml"], "config file not found"),
    "unknown key with suggestion": (["optim.lrr=0.1"], "did you mean 'optim.lr'"),
    "unknown section": (["trainr.epochs=2"], "unknown config key 'trainr'"),
    "wrong type": (["trainer.epochs=abc"], "trainer.epochs"),
    "epochs 0": (["trainer.epochs=0"], "trainer.epochs"),
    "batch size 0": (["data.batch_size=0"], "data.batch_size"),
    "negative lr": (["optim.lr=-0.1"], "optim.lr"),
    "seed -1": (["--seed", "-1"], "--seed"),
    "seed 1.5": (["--seed", "1.5"], "--seed"),
    "seed 2**64": (["--seed", str(2**64)], "--seed"),
    "seed abc": (["--seed", "abc"], "--seed"),
    "unknown profile": (["--profile", "fast"], "invalid choice"),
    "unknown dataset": (["data.name=imagenet"], "unknown dataset 'imagenet'"),
    "unknown model": (["model.name=smallcnnn"], "did you mean 'smallcnn'"),
    "malformed override": (["trainer.epochs"], "malformed override"),
    "malformed override key": (["=3"], "malformed override"),
    "float for int": (["trainer.epochs=1.5"], "trainer.epochs"),
    "seed in override out of range": ([f"seed={2**64}"], "seed"),
    "debug with amp": (["determinism.amp=true"], "profile 'debug' cannot use determinism.amp=true"),
    "eval with benchmark": (
        ["--profile", "eval", "determinism.cudnn_benchmark=true"],
        "cudnn_benchmark",
    ),
}


def test_real_process_bad_seed_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "train.py", "--seed", "-1", "--output-dir", str(tmp_path / "runs")],
        cwd=REPO_ROOT,
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --seed must be an integer in [0, 2**64), got '-1'"
    ]
    assert not (tmp_path / "runs").exists()


def test_make_help_lists_every_target(repo_root: Path) -> None:
    done = subprocess.run(
        ["make", "help"], cwd=repo_root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for target in ("setup", "train", "test", "verify", "diagnose", "lint"):
        assert f"  {target} " in done.stdout
