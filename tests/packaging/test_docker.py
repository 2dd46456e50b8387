"""The image for real, on a real Docker engine: built through the project's own targets on the
CPU stand-in base (no registry is reachable here), then trained in, tested in, rebuilt.

Skipped, with the reason, where no engine answers (.ci/run starts dockerd). The stand-in base is
built once per lock (`make docker-base-standin`, a few minutes; .ci/run builds it before the
tests) and the image once per session."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from runtime.rundir import find_one_run
from tests.helpers.runs import (
    REPO_ROOT,
    SHORT_LAST_BATCH,
    TINY,
    ReferenceRuns,
    RunResult,
    copy_of_repository,
)

IMAGE = "reproducible-ddp-template:test"


def engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client here"
    done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return "no Docker engine answers here (.ci/run starts dockerd)"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.docker,
    pytest.mark.skipif(engine_problem() is not None, reason=str(engine_problem())),
]


def make(
    *arguments: str, cwd: Path = REPO_ROOT, timeout: float = 1200
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    return subprocess.run(
        ["make", *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def succeeded(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="session")
def standin_base() -> str:
    done = succeeded(make("docker-base-standin"))
    return re.search(r"stand-in base image: (\S+)", done.stdout).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """The lock's wheels, downloaded on the host (the build installs them with --no-index)."""
    succeeded(make("wheelhouse"))
    return REPO_ROOT / "wheelhouse"


@pytest.fixture(scope="session")
def image(standin_base: str, wheelhouse: Path) -> str:
    """The image, built offline from the wheelhouse on the stand-in base (the one an earlier
    session built is removed: each session leaves one test image behind, not one per run)."""
    previous = image_id(IMAGE)
    started = time.monotonic()
    succeeded(make("docker-build", f"BASE_IMAGE={standin_base}", f"IMAGE={IMAGE}"))
    print(f"image built in {time.monotonic() - started:.1f} s")
    if previous and previous != image_id(IMAGE):
        subprocess.run(["docker", "image", "rm", previous], capture_output=True)
    return IMAGE


def image_id(name: str) -> str | None:
    done = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


def test_the_image_runs_as_a_user_with_the_lock_s_versions(image: str) -> None:
    done = succeeded(
        subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                image,
                "python",
                "-c",
                "import os, torch, torchvision, albumentations, numpy; "
                "print(os.getuid(), torch.__version__, torchvision.__version__, "
                "albumentations.__version__, os.environ.get('OMP_NUM_THREADS'))",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    uid, torch_version, vision, albumentations, threads = done.stdout.split()
    assert uid != "0"
    assert (torch_version.split("+")[0], vision.split("+")[0], albumentations) == (
        "2.7.1",
        "0.22.1",
        "2.0.8",
    )
    assert threads == "None"  # the launcher decides, as on the host


def test_docker_train_reproduces_the_host_bit_for_bit(
    image: str, references: ReferenceRuns, tmp_path: Path
) -> None:
    """The tiny job on 2 processes in the container and in the host's .venv: same wheels,
    same CPU, same thread count (torchrun: one per process), same bits."""
    done = succeeded(
        make(
            "docker-train",
            f"IMAGE={image}",
            "SEED=42",
            "PROFILE=debug",
            "NPROC=2",
            "GPUS=auto",
            f"OUTPUT_DIR={tmp_path}",
            f"ARGS={' '.join(TINY)}",
        )
    )
    assert "--gpus" not in done.stdout  # a CPU host: no NVIDIA runtime, no flag
    run = find_one_run(tmp_path)
    manifest = run.read_manifest()
    assert manifest is not None and manifest["status"] == "completed"
    host = references.tiny(2).run.read_manifest()
    assert manifest["final_weights_sha256"] == host["final_weights_sha256"]
    libraries = {k: v for k, v in manifest["versions"].items() if k != "python"}
    assert libraries == {k: v for k, v in host["versions"].items() if k != "python"}
    assert manifest["versions"]["python"].startswith("3.11.")  # the patch level may differ
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert manifest["git"]["commit"] == head.stdout.strip()  # baked into the image
    for path in [run.path, *run.path.rglob("*")]:
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid()), path


def test_a_compiled_job_in_the_container_reproduces_the_host_s_bit_for_bit(
    image: str, compiled_run: RunResult, tmp_path: Path
) -> None:
    """torch.compile in the image: Inductor builds its kernels with the image's g++ (the
    stand-in's is the host's Debian g++ 12), into the cache in the mounted runs folder."""
    overrides = [*TINY, *SHORT_LAST_BATCH, "trainer.compile.enabled=true"]
    done = succeeded(
        make(
            "docker-train",
            f"IMAGE={image}",
            "SEED=42",
            "PROFILE=debug",
            "GPUS=none",
            "OMP_NUM_THREADS=1",  # the host's reference ran with one thread (launch_env)
            f"OUTPUT_DIR={tmp_path}",
            f"ARGS={' '.join(overrides)}",
        )
    )
    assert "compiled the training step in" in done.stdout
    manifest = find_one_run(tmp_path).read_manifest()
    assert manifest is not None and manifest["compile_s"] > 0
    assert manifest["final_weights_sha256"] == compiled_run.manifest()["final_weights_sha256"]
    assert any((tmp_path / ".inductor-cache").rglob("*.py"))  # kept for the next container


def test_the_fast_tests_pass_inside_the_image(image: str, tmp_path: Path) -> None:
    done = succeeded(make("docker-test", f"IMAGE={image}", f"OUTPUT_DIR={tmp_path}", timeout=900))
    assert re.search(r"\d+ passed", done.stdout), done.stdout[-2000:]


def test_a_code_only_change_reuses_the_package_layer(
    image: str, standin_base: str, tmp_path: Path
) -> None:
    wheels = [p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "wheelhouse").glob("*.whl")]
    copy = copy_of_repository(tmp_path / "repo", *wheels)
    with (copy / "train.py").open("a") as stream:
        stream.write("# a code-only change\n")
    started = time.monotonic()
    done = succeeded(
        make("docker-build", f"BASE_IMAGE={standin_base}", f"IMAGE={image}-rebuilt", cwd=copy)
    )
    seconds = time.monotonic() - started
    subprocess.run(["docker", "image", "rm", f"{image}-rebuilt"], capture_output=True)
    steps = re.split(r"\nStep \d+/\d+ : ", done.stdout)
    install = next(step for step in steps if "pip install" in step)
    code = next(step for step in steps if step.startswith("COPY --chown=trainer:trainer ."))
    assert "---> Using cache" in install, install  # the packages: not installed again
    assert "---> Using cache" not in code  # the code: copied anew
    print(f"rebuild after a code-only change: {seconds:.1f} s")
    assert seconds < 120


@pytest.mark.parametrize("problem", ["unknown base image", "wheelhouse off the lock"])
def test_bad_build_input_is_one_line(problem: str, wheelhouse: Path, tmp_path: Path) -> None:
    if problem == "unknown base image":
        done = make("docker-build", "BASE_IMAGE=no-such-registry.invalid/nothing:1", "IMAGE=x:y")
        expected = (
            "error: base image no-such-registry.invalid/nothing:1 is neither here nor pullable"
        )
    else:
        copy = tmp_path / "repo"
        shutil.copytree(
            REPO_ROOT, copy, ignore=shutil.ignore_patterns(".venv", "runs", ".git", "datasets")
        )
        scipy = next((copy / "wheelhouse").glob("scipy-*.whl"))
        scipy.rename(scipy.with_name(scipy.name.replace("scipy-1", "scipy-0")))
        done = make("docker-build", "BASE_IMAGE=whatever", "IMAGE=x:y", cwd=copy)
        expected = "error: wheelhouse/ does not match requirements-dev.lock: no wheel for scipy=="
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and len(errors) == 1 and errors[0].startswith(expected), done.stderr
