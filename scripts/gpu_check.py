"""One prepared GPU check: `make gpu-check` on a CUDA machine, `make gpu-check DEVICE=cpu QUICK=1`
to rehearse it anywhere (CI runs that, so the script keeps working before a GPU is lent).

    python -m scripts.gpu_check [--device cuda|cpu] [--quick] [--repeats N] [--budget-s S]
                              [--output-dir runs/gpu-check]

Each line is a check with a result (pass / fail / skipped) and its numbers:

| line            | what runs                                                                  |
|-----------------|----------------------------------------------------------------------------|
| versions        | GPU, driver, CUDA, cuDNN, torch, torchvision                               |
| debug twice     | train.py --profile debug twice: equal final weights; the determinism        |
|                 | report's flags (read back from torch) are the strict ones                   |
| eval twice      | equal weights, or the report's verdict says why not                         |
| speed           | production (AMP, channels_last, TF32, cudnn.benchmark) against the plain    |
|                 | loop (benchmarks/plain_loop.py, the same knobs) on the same model and data, best |
|                 | and median; debug and eval against production; the bare step's rate on an  |
|                 | in-memory batch says whether the GPU, not Python or loading, is the limit   |
| no host sync    | a production epoch (real loaders, pinned memory, the non-finite watch)      |
|                 | under torch.cuda.set_sync_debug_mode("error") until its last step           |
| invariant W=1   | the world-size-invariant mode twice, debug: equal weights; its cost         |
|                 | against the ordinary debug step                                             |
| fp16 GradScaler | fp16 autocast with a real GradScaler started at 2**20: steps skipped while  |
|                 | the scale falls are not failures (the non-finite watch stays clear)         |

The job: on CUDA, ResNet-18 (CIFAR stem) on 32x32 synthetic images in batches of 256, 8
loading workers, 3 epochs of 40 steps (speed = the epochs after the first); with --quick, the
small CNN on 256 images in batches of 32, 2 epochs, no workers. On CPU the speed lines are CPU
figures and the sync line is skipped (CUDA only); the fp16 line runs with CPU autocast. A line
that would start after --budget-s is skipped, saying so. Writes gpu-check.json to --output-dir,
prints the table, exits 1 if a line failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from configs import Config, load_config
from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from models import build_model
from runtime.assembly import build_run, plan_run
from tools.launch import train_subprocess
from tools.measure import run_plain_loop, steady
from training.determinism import Precision, apply_determinism, precision_for
from training.events import NoEvents, Position
from training.health import NOT_SEEN, NonFiniteWatch
from training.topology import Topology
from training.trainer import Trainer

CUDA_JOB = (
    "model.name=resnet18",
    "data.batch_size=256",
    "data.num_workers=8",
    "data.synthetic.train_size=10240",
    "data.synthetic.val_size=1024",
    "trainer.epochs=3",
    "trainer.log_every_steps=1000",
)
QUICK_JOB = (
    "model.width=8",
    "data.batch_size=32",
    "data.num_workers=0",
    "data.synthetic.train_size=256",
    "data.synthetic.val_size=64",
    "trainer.epochs=2",
    "trainer.log_every_steps=1000",
)
STRICT_FLAGS = {
    "deterministic_algorithms": True,
    "deterministic_warn_only": False,
    "cudnn_deterministic": True,
    "cudnn_benchmark": False,
    "cuda_matmul_allow_tf32": False,
    "cudnn_allow_tf32": False,
}
FP16_INITIAL_SCALE = 2.0**20  # far above what fp16 gradients survive: the first steps overflow


@dataclass
class Line:
    name: str
    result: str  # pass | fail | skipped | info
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainRun:
    """What one train.py run left behind that the check needs."""

    weights_sha256: str
    samples_per_s: float
    determinism: dict[str, Any]
    compile_s: float | None = None


class Check:
    """The job, the device and the clock shared by every line."""

    def __init__(self, device: str, quick: bool, repeats: int, budget_s: float) -> None:
        self.device = device
        self.quick = quick
        self.repeats = repeats
        self.job = [*(QUICK_JOB if quick else CUDA_JOB), f"trainer.device={device}"]
        self.deadline = time.monotonic() + budget_s
        self.workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.runs = 0

    def train(self, profile: str, *more: str) -> TrainRun:
        self.runs += 1
        output = self.workdir / f"run-{self.runs}"
        done = train_subprocess(["--profile", profile, *self.job, *more], output)
        if done.returncode != 0:
            raise RuntimeError(f"train.py --profile {profile} failed: {_last_line(done.stderr)}")
        run = done.run
        manifest = run.read_manifest() or {}
        rates = [record["samples_per_s"] for record in run.read_metrics("epoch")]
        return TrainRun(
            manifest["final_weights_sha256"],
            steady(rates),
            manifest["determinism"],
            manifest.get("compile_s"),
        )

    def plain(self) -> float:
        return run_plain_loop("configs/default.yaml", self.job)["samples_per_s"]

    def config(self, profile: str) -> Config:
        return load_config("configs/default.yaml", profile, None, self.job)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


# ----------------------------------------------------------------------------- the lines
def versions(check: Check) -> Line:
    numbers: dict[str, Any] = {
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if check.device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        numbers |= {
            "gpu": properties.name,
            "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
            "compute_capability": f"{properties.major}.{properties.minor}",
            "driver": _driver_version(),
        }
        detail = f"{properties.name}, driver {numbers['driver']}"
    else:
        detail = f"no GPU used ({platform.processor() or platform.machine()})"
    detail += f", torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {numbers['cudnn']}"
    return Line("versions", "info", detail, numbers)


def twice(check: Check, profile: str) -> tuple[Line, list[TrainRun]]:
    runs = [check.train(profile), check.train(profile)]
    first, second = runs
    same = first.weights_sha256 == second.weights_sha256
    verdict = second.determinism["verdict"]
    numbers = {
        "weights_sha256": [r.weights_sha256 for r in runs],
        "verdict": verdict,
        "effective": first.determinism["effective"],
        "nondeterministic_ops": second.determinism["nondeterministic_ops"],
    }
    if profile == "debug":
        flags = {k: first.determinism["effective"][k] for k in STRICT_FLAGS}
        wrong = {k: v for k, v in flags.items() if v != STRICT_FLAGS[k]}
        result = "pass" if same and not wrong else "fail"
        detail = ("identical weights" if same else "weights differ") + (
            f"; flags not strict: {wrong}" if wrong else "; strict flags read back from torch"
        )
        return Line("debug twice", result, detail, numbers), runs
    # eval warns instead of raising: differing weights are fine when the verdict says why.
    explained = not same and verdict.startswith("not bitwise reproducible")
    result = "pass" if same or explained else "fail"
    detail = "identical weights" if same else f"weights differ; verdict: {verdict}"
    return Line("eval twice", result, detail, numbers), runs


def speed(check: Check, debug: list[TrainRun], eval_: list[TrainRun]) -> Line:
    plain, production = [], []
    for _ in range(check.repeats):  # interleaved: a slow moment hits both
        plain.append(check.plain())
        production.append(check.train("production").samples_per_s)
    rates = {
        "plain": plain,
        "production": production,
        "eval": [r.samples_per_s for r in eval_],
        "debug": [r.samples_per_s for r in debug],
    }
    best = {name: max(values) for name, values in rates.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    bare = bare_step_rate(check)
    numbers = {
        "samples_per_s": rates,
        "production_vs_plain": {
            "best": best["production"] / best["plain"],
            "median": median["production"] / median["plain"],
        },
        "vs_production_best": {name: best[name] / best["production"] for name in ("eval", "debug")},
        "bare_step_samples_per_s": bare,
        "production_share_of_bare_step": best["production"] / bare,
        "figures": "GPU" if check.device == "cuda" else "CPU",
    }
    bound = best["production"] / bare
    detail = (
        f"{numbers['figures']} figures: production {best['production']:,.0f}/s best, "
        f"{median['production']:,.0f}/s median = {numbers['production_vs_plain']['best']:.3f}x / "
        f"{numbers['production_vs_plain']['median']:.3f}x the plain loop; eval "
        f"{numbers['vs_production_best']['eval']:.2f}x, debug "
        f"{numbers['vs_production_best']['debug']:.2f}x production; the run reaches "
        f"{100 * bound:.0f} % of the bare step ({bare:,.0f}/s): "
        + ("the model is the limit" if bound >= 0.8 else "loading or Python is the limit")
    )
    return Line("speed", "info", detail, numbers)


def no_host_sync(check: Check) -> Line:
    config = check.config("production")
    device = torch.device(check.device)
    trainer = in_process_trainer(config, device)
    trainer.events = SyncCheckWindow(cuda=device.type == "cuda")
    steps = trainer.steps_per_epoch
    if device.type != "cuda":
        trainer.train_epoch()
        return Line("no host sync", "skipped", f"CUDA only (the {steps}-step epoch ran on CPU)")
    try:
        trainer.train_epoch()
    except RuntimeError as error:
        return Line("no host sync", "fail", f"a step synchronised: {_last_line(str(error))}")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return Line(
        "no host sync", "pass", f"steps 2-{steps} of a production epoch: no synchronising call"
    )


def invariant(check: Check, debug: list[TrainRun]) -> Line:
    batch = int(next(o for o in check.job if o.startswith("data.batch_size=")).split("=")[1])
    keys = (
        f"data.global_batch_size={batch}",
        f"trainer.micro_batch_size={batch // 4}",
        "trainer.world_size_invariant=true",
    )
    runs = [check.train("debug", *keys), check.train("debug", *keys)]
    same = runs[0].weights_sha256 == runs[1].weights_sha256
    cost = max(r.samples_per_s for r in debug) / max(r.samples_per_s for r in runs)
    numbers = {
        "weights_sha256": [r.weights_sha256 for r in runs],
        "samples_per_s": [r.samples_per_s for r in runs],
        "time_vs_ordinary_debug_best": cost,
        "micro_batches": 4,
    }
    detail = (
        f"{'identical' if same else 'different'} weights; 4 micro-batches of {batch // 4}: "
        f"{cost:.2f}x the ordinary debug step's time"
    )
    return Line("invariant W=1", "pass" if same else "fail", detail, numbers)


def compiled_twice(check: Check, debug: list[TrainRun]) -> Line:
    """The determinism contract's GPU rows (docs/determinism.md): compiled twice is bitwise
    (Inductor's Triton kernels under the debug profile's deterministic algorithms); compiled
    against eager is not, and the speed-up of the steady steps beside the compile time."""
    cache = f"trainer.compile.cache_dir={check.workdir / 'inductor'}"  # cold, then warm
    runs = [check.train("debug", "trainer.compile.enabled=true", cache) for _ in range(2)]
    same = runs[0].weights_sha256 == runs[1].weights_sha256
    eager = max(r.samples_per_s for r in debug)
    speedup = max(r.samples_per_s for r in runs) / eager
    numbers = {
        "weights_sha256": [r.weights_sha256 for r in runs],
        "same_as_eager": runs[0].weights_sha256 == debug[0].weights_sha256,
        "compile_s": [r.compile_s for r in runs],
        "speedup_vs_eager_debug_best": speedup,
    }
    detail = (
        f"{'identical' if same else 'different'} weights; {speedup:.2f}x eager's samples/s; "
        f"compile {runs[0].compile_s:.1f} s cold, {runs[1].compile_s:.1f} s from the cache"
    )
    compiled = same and not numbers["same_as_eager"]  # a compile that did nothing fails
    return Line("compiled twice", "pass" if compiled else "fail", detail, numbers)


def fp16_grad_scaler(check: Check) -> Line:
    config = check.config("production")
    device = torch.device(check.device)
    fp16 = Precision(torch.float16, device.type == "cuda", device.type == "cuda")
    # On CPU the trainer's own GradScaler("cuda") disables itself, saying so; it is replaced below.
    warnings.filterwarnings("ignore", message=r".*GradScaler is enabled, but CUDA is not available")
    trainer = in_process_trainer(config, device, fp16)
    trainer.scaler = torch.amp.GradScaler(device.type, init_scale=FP16_INITIAL_SCALE)
    trainer.fit()
    bad_step, _ = trainer.watch.read()  # type: ignore[union-attr]
    final_scale = trainer.scaler.get_scale()
    skipped = round(math.log2(FP16_INITIAL_SCALE / final_scale))
    steps = trainer.position.step
    finite = all(torch.isfinite(p).all() for p in trainer.model.parameters())
    ok = bad_step == NOT_SEEN and skipped > 0 and skipped < steps and finite
    detail = (
        f"{skipped} of {steps} steps skipped by the GradScaler (scale "
        f"2^{math.log2(FP16_INITIAL_SCALE):.0f} -> "
        f"2^{math.log2(final_scale):.0f}); the non-finite watch "
        + ("stayed clear" if bad_step == NOT_SEEN else f"stopped at step {bad_step}")
        + ("" if finite else "; weights not finite")
        + ("" if check.device == "cuda" else " (CPU autocast)")
    )
    numbers = {"skipped_steps": skipped, "steps": steps, "watch_first_bad_step": bad_step}
    return Line("fp16 GradScaler", "pass" if ok else "fail", detail, numbers)


# ----------------------------------------------------------------------------- in process
class SyncCheckWindow(NoEvents):
    """Turns the sync check on after the first step (its one-time set-up: cudnn.benchmark's
    search, lazy initialisation) and off when the last is reported (the epoch-end reads that
    follow are meant to synchronise)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        if not self.cuda:
            return
        if position.batch_in_epoch == batches_per_epoch:
            torch.cuda.set_sync_debug_mode("default")
        elif position.batch_in_epoch == 1:
            torch.cuda.set_sync_debug_mode("error")


def in_process_trainer(
    config: Config, device: torch.device, precision: Precision | None = None
) -> Trainer:
    """The trainer exactly as train.py builds it for one process (runtime/assembly.py), without
    a run directory; `precision` replaces the profile's (the fp16 line)."""
    topology = Topology.single(device)
    planned = plan_run(config, topology)
    if precision is not None:
        planned = dataclasses.replace(planned, precision=precision)
    return build_run(config, topology, planned, watch=NonFiniteWatch(device)).trainer


def bare_step_rate(check: Check) -> float:
    """Samples/s of production's step on one in-memory batch: no loading, no bookkeeping."""
    config = check.config("production")
    device = torch.device(check.device)
    apply_determinism(config.determinism, device)
    precision = precision_for(config.determinism, device)
    memory_format = torch.channels_last if precision.channels_last else torch.contiguous_format
    model = build_model(config.model, 10, config.data.image_size)
    model = model.to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = config.data.batch_size
    images = torch.randn(batch, 3, config.data.image_size, config.data.image_size)
    images = images.to(device, memory_format=memory_format)
    labels = torch.randint(0, 10, (batch,), device=device)
    amp = precision.amp

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # bf16 on CUDA needs no scaler; fp16 GPUs: an upper bound all the same
        optimizer.step()

    steps = 5 if check.quick else 30
    for _ in range(3):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    return steps * batch / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- report
def run_lines(check: Check) -> list[Line]:
    lines = [versions(check)]
    results: dict[str, list[TrainRun]] = {}

    def attempt(name: str, body: Callable[[], Line | tuple[Line, list[TrainRun]]]) -> None:
        if time.monotonic() > check.deadline:
            lines.append(Line(name, "skipped", "time budget (--budget-s) spent"))
            return
        started = time.monotonic()
        try:
            outcome = body()
        except Exception as error:  # a line that crashes is a failed line, the others still run
            lines.append(Line(name, "fail", f"{type(error).__name__}: {_last_line(str(error))}"))
            return
        line, runs = outcome if isinstance(outcome, tuple) else (outcome, [])
        line.numbers["seconds"] = round(time.monotonic() - started, 1)
        results[name] = runs
        lines.append(line)
        print(f"  {line.name}: {line.result} ({line.numbers['seconds']} s)", flush=True)

    attempt("debug twice", lambda: twice(check, "debug"))
    attempt("eval twice", lambda: twice(check, "eval"))
    if results.get("debug twice") and results.get("eval twice"):
        attempt("speed", lambda: speed(check, results["debug twice"], results["eval twice"]))
    else:
        lines.append(Line("speed", "skipped", "needs the debug and eval runs"))
    attempt("no host sync", lambda: no_host_sync(check))
    if results.get("debug twice"):
        attempt("invariant W=1", lambda: invariant(check, results["debug twice"]))
    else:
        lines.append(Line("invariant W=1", "skipped", "needs the debug runs"))
    if results.get("debug twice"):
        attempt("compiled twice", lambda: compiled_twice(check, results["debug twice"]))
    else:
        lines.append(Line("compiled twice", "skipped", "needs the debug runs"))
    attempt("fp16 GradScaler", lambda: fp16_grad_scaler(check))
    return lines


def table(lines: list[Line]) -> list[str]:
    return [
        "| check | result | detail |",
        "|---|---|---|",
        *(f"| {line.name} | {line.result} | {line.detail} |" for line in lines),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="the small job (the CPU rehearsal)")
    parser.add_argument("--repeats", type=int, default=None, help="speed repeats (3; quick: 1)")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--output-dir", default="runs/gpu-check")
    arguments = parser.parse_args()
    if arguments.device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda: no CUDA device here; rehearse with make gpu-check DEVICE=cpu QUICK=1"
        )
    repeats = arguments.repeats or (1 if arguments.quick else 3)
    check = Check(arguments.device, arguments.quick, repeats, arguments.budget_s)
    started = time.monotonic()
    print(f"gpu-check on {arguments.device}{' (quick)' if arguments.quick else ''} ...", flush=True)
    try:
        lines = run_lines(check)
    finally:
        check.cleanup()
    report = {
        "device": arguments.device,
        "quick": arguments.quick,
        "job": check.job,
        "repeats": repeats,
        "seconds": round(time.monotonic() - started, 1),
        "lines": [asdict(line) for line in lines],
    }
    output = Path(arguments.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(table(lines)))
    failed = [line.name for line in lines if line.result == "fail"]
    print(f"{report['seconds']} s; written: {output}/gpu-check.json")
    if failed:
        raise UserError(f"gpu-check: failed: {', '.join(failed)}")


def _driver_version() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


if __name__ == "__main__":
    run_reporting_user_errors(main)
