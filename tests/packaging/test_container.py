"""The container and cluster files, read and dry-run (the real engine and scheduler: test_docker.py
and test_slurm.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.docker.requirements import PROVIDED_BY_BASE_IMAGE, install_list, locked
from tests.helpers.runs import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return [(line.split()[0].upper(), line.partition(" ")[2]) for line in lines]


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_image_is_the_pytorch_cuda_2_7_image_and_selectable() -> None:
    steps = instructions()
    assert steps[0] == ("ARG", "BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime")
    assert steps[1] == ("FROM", "${BASE_IMAGE}")
    pins = locked(REPO_ROOT / "requirements.lock")
    assert pins["torch"] == "2.7.1" and pins["torchvision"] == "0.22.1"  # what that image ships


def test_installs_the_lock_minus_the_base_image_with_no_drift() -> None:
    dev_pins = locked(REPO_ROOT / "requirements-dev.lock")
    installed = dict(line.split("==") for line in install_list(REPO_ROOT / "requirements-dev.lock"))
    left_to_the_image = {name for name in dev_pins if name not in installed}
    assert left_to_the_image == {name for name in dev_pins if PROVIDED_BY_BASE_IMAGE.match(name)}
    assert left_to_the_image >= {"torch", "torchvision", "triton"}
    assert all(
        installed[name] == dev_pins[name] for name in installed
    )  # exactly the lock's versions
    run = " ".join(argument for kind, argument in instructions() if kind == "RUN")
    assert "check-image /tmp/lock/requirements.lock" in run  # fails the build on python/torch drift
    assert "check-installed /tmp/lock/requirements-dev.lock" in run  # and on any other drift
    assert "pip install --no-cache-dir --no-deps $offline -r /tmp/lock/install.txt" in run
    assert 'offline="--no-index --find-links /tmp/wheelhouse"' in run


def test_layer_order_user_and_environment() -> None:
    steps = instructions()
    kinds = [kind for kind, _ in steps]
    copies = [argument for kind, argument in steps if kind == "COPY"]
    assert "requirements.lock" in copies[0] and copies[-1].endswith(". /workspace")
    assert kinds.index("RUN") < max(i for i, kind in enumerate(kinds) if kind == "COPY")
    users = [argument for kind, argument in steps if kind == "USER"]
    assert users and users[-1] == "${USER_UID}:${USER_GID}" and "root" not in users[-1]
    assert ("WORKDIR", "/workspace") in steps
    environment = " ".join(argument for kind, argument in steps if kind == "ENV")
    for setting in (
        "PYTHONHASHSEED=0",
        "PYTHONUNBUFFERED=1",
        "CUBLAS_WORKSPACE_CONFIG=:4096:8",
        "PIP_NO_CACHE_DIR=1",
    ):
        assert setting in environment
    assert "OMP_NUM_THREADS" not in environment  # the launcher sets it, as on the host


def test_dockerignore_keeps_results_envs_data_and_caches_out() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {"runs", ".venv", "datasets", ".git", "**/__pycache__", ".pytest_cache"} <= ignored


def make_dry_run(*arguments: str) -> str:
    done = subprocess.run(
        ["make", "-n", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return "\n".join(
        " ".join(line.split()) for line in re.sub(r"\\\n\s*", " ", done.stdout).splitlines()
    )


def test_make_docker_train_shows_the_exact_command() -> None:
    shown = make_dry_run("docker-train", "SEED=42", "NPROC=8", "PROFILE=eval", "GPUS=all")
    command = next(line for line in shown.splitlines() if "docker run" in line)
    runs, data = REPO_ROOT / "runs", REPO_ROOT / "datasets"
    assert re.search(
        rf"docker run --rm --gpus 'all' --ipc=host --user \d+:\d+ (-e OMP_NUM_THREADS=\d+ )?"
        r"-e TORCHINDUCTOR_CACHE_DIR=/workspace/runs/.inductor-cache "
        rf"-v {runs}:/workspace/runs -v {data}:/workspace/datasets "
        r"reproducible-ddp-template:latest python tools/torchrun_agent.py --standalone "
        r"--nproc_per_node=8 --max-restarts=0 train.py "
        r"--config configs/default.yaml --seed 42 --profile eval --output-dir runs",
        command,
    ), command
    assert "--user 0:" not in command  # never root in the container
    assert (
        "docker build --build-arg BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime"
        in make_dry_run("docker-build")
    )


@pytest.mark.parametrize("target", ["docker-test", "docker-shell"])
def test_other_docker_targets_exist(target: str) -> None:
    assert "docker run --rm --ipc=host" in make_dry_run(target, "GPUS=none")


@pytest.mark.parametrize(
    ("gpus", "flag"),
    [("none", ""), ("all", "--gpus 'all' "), ('"device=0,1"', """--gpus '"device=0,1"' """)],
)
def test_gpus_are_asked_for_only_when_wanted(gpus: str, flag: str) -> None:
    shown = make_dry_run("docker-train", f"GPUS={gpus}")
    assert f"docker run --rm {flag}--ipc=host" in shown, shown


def test_gpus_auto_asks_for_none_without_the_nvidia_runtime() -> None:
    """This machine has no NVIDIA container runtime: `auto` (the default) passes no --gpus."""
    shown = make_dry_run("docker-train")
    assert "docker run --rm --ipc=host" in shown and "--gpus" not in shown


def test_one_process_in_the_container_is_launched_as_make_train_launches_it() -> None:
    """The same launcher as on the host (a plain interpreter for one process): the same bits."""
    shown = make_dry_run("docker-train", "GPUS=none")
    assert "reproducible-ddp-template:latest python train.py --config" in shown


def test_no_docker_is_one_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "bash", "sh", "id", "sha256sum", "cut", "git", "mkdir", "dirname"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    done = subprocess.run(
        ["make", "docker-train"],
        cwd=REPO_ROOT,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and errors == [
        "error: docker not found: install Docker Engine, or train without a container (make train)"
    ], done.stderr


def test_make_train_multi_node_static_and_c10d() -> None:
    static = make_dry_run(
        "train",
        "NNODES=2",
        "NODE_RANK=1",
        "MASTER_ADDR=node0",
        "MASTER_PORT=29400",
        "NPROC=8",
        "SEED=3",
    )
    assert (
        "tools/torchrun_agent.py --nnodes=2 --node-rank=1 --nproc_per_node=8 "
        "--master-addr=node0 --master-port=29400" in static
    )
    assert "train.py --config configs/default.yaml --seed 3" in static
    elastic = make_dry_run("train", "NNODES=2", "RDZV=c10d", "MASTER_ADDR=node0", "NPROC=8")
    assert "--rdzv-backend=c10d --rdzv-endpoint=node0:29500" in elastic


def test_make_train_supervises_restarts_with_torchrun() -> None:
    alone = make_dry_run("train", "MAX_RESTARTS=3")
    assert "tools/torchrun_agent.py --standalone --nproc_per_node=1 --max-restarts=3 train.py" in (
        alone
    )
    assert "--max-restarts=3 train.py" in make_dry_run("train", "NPROC=2", "MAX_RESTARTS=3")


def test_slurm_script_runs_one_torchrun_per_node_with_rendezvous_on_the_first_host() -> None:
    script = REPO_ROOT / "scripts" / "slurm" / "train.sbatch"
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    text = script.read_text()
    assert "#SBATCH --ntasks-per-node=1" in text
    assert 'MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)"' in text
    assert "srun --kill-on-bad-exit=1 .venv/bin/torchrun" in text
    assert '--rdzv-endpoint="${MASTER_ADDR}:${MASTER_PORT}"' in text
    assert '--seed "${SEED}" --profile "${PROFILE}"' in text
    assert "export PYTHONHASHSEED=0 CUBLAS_WORKSPACE_CONFIG=:4096:8" in text
    assert "#SBATCH --signal=TERM@120" in text  # checkpoint before the time limit
    assert "#SBATCH --requeue" in text and 'scontrol requeue "${SLURM_JOB_ID}"' in text
