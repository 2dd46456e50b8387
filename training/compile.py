"""Compiled training: `trainer.compile`, torch.compile (Dynamo + Inductor) of the training forward.

What is compiled: the module each parallel mode runs its training passes through, after the
mode has wrapped or split it (FSDP2's `fully_shard`, tensor parallelism's `parallelize_module`,
then compile: measured to work here, one graph per layout; torchtitan compiles each block before
`fully_shard` instead, which would need the model's blocks). DDP wraps the compiled module:
its all-reduce runs after the compiled backward, with no overlap. AOTAutograd compiles the
backward with it. Evaluation runs
eager: it is a small share of a run's time, and one graph fewer to compile. The loss and the
optimizer step stay eager (small next to the model; the optimizer's kernels are foreach-fused).

Why `dynamic=False`: with automatic dynamic shapes, the graph recompiled for an epoch's short
last batch is symbolically sized and then serves the full batches of the next epoch too, so which
kernels compute a batch would depend on what the process compiled before, and a run resumed at
an epoch boundary (it starts with a full batch) would not retrace the uninterrupted run's path.
On this CPU both graphs gave the same bits (tests/end_to_end/test_compile.py resumes there),
but nothing in torch promises it; with static shapes each batch shape has its own graph,
whatever came before.

Randomness: Inductor's compiled dropout does not draw eager's masks; each call of a compiled
graph draws one seed from torch's default generator (the plan's `dropout` stream, or the
micro-batch's stream in the world-size-invariant mode) and derives its Philox masks from it. So
the plan still governs it: the same plan draws the same masks, another rank or micro-batch other
ones, and a resume that restores the generator continues them. docs/determinism.md has the
contract.

The cache: Inductor keeps compiled graphs in a cache keyed by the graph, the inputs' shapes, its
config (the thread count included) and the library versions, under a subfolder per CPU and
compiler (`use_cache`). One cache per user (`~/.cache/reproducible-ddp-template/inductor`,
`trainer.compile.cache_dir` to share one between the nodes of a cluster) lets the second seed of
a benchmark compile from it; tested here, a run from the cache computes the same bits.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from foundation.errors import UserError
from foundation.section import RUNTIME, Section

CACHE_ENVIRONMENT = "TORCHINDUCTOR_CACHE_DIR"


class CompileConfig(Section):
    """`trainer.compile`: torch.compile of the training passes (this module's docstring)."""

    enabled: bool = Field(False, description="compile the training forward and backward")
    mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = Field(
        "default",
        description="torch.compile's mode: reduce-overhead adds CUDA graphs (GPU only); "
        "max-autotune-no-cudagraphs benchmarks kernel choices",
    )
    cache_dir: str | None = Field(
        None,
        min_length=1,
        description="Inductor's cache (a subfolder per CPU and compiler inside); null: "
        "$TORCHINDUCTOR_CACHE_DIR, else ~/.cache/reproducible-ddp-template/inductor",
        json_schema_extra=RUNTIME,
    )


def compiled(
    module: nn.Module,
    settings: CompileConfig,
    device: torch.device,
    layout_without_cuda_graphs: str | None = None,
) -> nn.Module:
    """`module` compiled as `settings` ask (it shares its parameters and buffers), or itself.
    `layout_without_cuda_graphs`: a parallel layout whose CUDA graphs (reduce-overhead) no
    measurement covers yet, refused for now."""
    if not settings.enabled:
        return module
    check_mode(settings.mode, device, layout_without_cuda_graphs)
    check_compiler()
    use_cache(settings)
    if device.type == "cpu":
        cpu_kernels()
    import torch._dynamo.config as dynamo

    # Never fall back to eager in silence: a run that says it compiled, compiled.
    dynamo.suppress_errors = False
    dynamo.fail_on_recompile_limit_hit = True
    return torch.compile(module, mode=settings.mode, dynamic=False)  # type: ignore[return-value]


def check_mode(mode: str, device: torch.device, layout_without_cuda_graphs: str | None) -> None:
    """Refuse, in one line, a compile mode that cannot keep the run's guarantees."""
    if mode == "reduce-overhead" and device.type != "cuda":
        raise UserError(
            "trainer.compile.mode=reduce-overhead replays CUDA graphs: a GPU run only; "
            "use trainer.compile.mode=default"
        )
    if mode == "reduce-overhead" and layout_without_cuda_graphs:
        raise UserError(
            f"trainer.compile.mode=reduce-overhead: CUDA graphs with {layout_without_cuda_graphs} "
            "are not measured to keep this template's guarantees yet; use "
            "trainer.compile.mode=default"
        )
    if mode == "max-autotune-no-cudagraphs" and torch.are_deterministic_algorithms_enabled():
        raise UserError(
            "trainer.compile.mode=max-autotune-no-cudagraphs picks kernels by timing them, so "
            "two runs may compute with different kernels: not with the deterministic algorithms "
            "of the debug and eval profiles; use --profile production, or mode=default"
        )


def cpu_kernels() -> None:
    """Inductor's C++ kernels as this template runs them.

    The thread count is written into the generated code (a parallel reduction splits its sum
    over that many threads, so it changes the result, as it does eager): it is set explicitly,
    so a graph cached under another count is never reused. Vectorization is off: in torch 2.7
    a parallel reduction inside a vectorized loop generates C++ that does not compile
    (`conflicting declaration 'float tmp_acc0_arr'`, pytorch#151290, fixed in 2.8) as soon as
    more than one thread runs; measured on the default job's CNN, the unvectorized kernels are
    as fast as eager (the convolutions are oneDNN's either way)."""
    import torch._inductor.config as inductor

    inductor.cpp.threads = torch.get_num_threads()
    inductor.cpp.vec_isa_ok = False


def check_compiler() -> None:
    """Inductor's CPU kernels and Triton's launcher are built with a C/C++ compiler: without
    one, the first step would end in a long traceback."""
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise UserError(
            f"trainer.compile.enabled=true needs a C++ compiler ({compiler} not found): install "
            "g++ (Debian/Ubuntu: apt-get install g++), or train with trainer.compile.enabled=false"
        )


_CHOSEN_BY_ENVIRONMENT = os.environ.get(CACHE_ENVIRONMENT)  # before use_cache sets it


def use_cache(settings: CompileConfig) -> Path:
    """Point Inductor at the cache (before its first compile; it reads the variable then): the
    chosen folder's subfolder for this machine's CPU and compiler.

    Why a subfolder per machine: Inductor builds CPU kernels with `-march=native` and keys them
    by their source and command line, neither of which names the CPU, so a cache shared by
    nodes of two CPU generations could hand one of them code for the other's instructions."""
    chosen = settings.cache_dir or _CHOSEN_BY_ENVIRONMENT
    folder = (Path(chosen).expanduser() if chosen else default_cache()) / machine_key()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{folder} is not writable")
    except OSError as error:
        raise UserError(
            f"trainer.compile.cache_dir: cannot use {folder} for Inductor's cache "
            f"({error.strerror or error}); name a writable folder"
        ) from None
    os.environ[CACHE_ENVIRONMENT] = str(folder)
    return folder


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reproducible-ddp-template" / "inductor"


def machine_key() -> str:
    """`cpu-<12 hex>`: the CPU model and instruction-set flags, the C++ compiler's version."""
    described = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")) and line not in described:
                described.append(line)
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler:
        from torch._inductor.cpp_builder import get_compiler_version_info

        described.append(get_compiler_version_info(compiler))
    return "cpu-" + hashlib.sha256("\n".join(described).encode()).hexdigest()[:12]


def compile_seconds() -> float:
    """Seconds this process has spent compiling so far: Dynamo's tracing and Inductor's code
    generation of the forward, and AOTAutograd's of the backward (compiled lazily at the first
    backward), cache hits included, as torch measures them. Triton's first-run autotuning on a
    GPU is not in it."""
    if "torch._dynamo.utils" not in sys.modules:
        return 0.0  # nothing compiled, and an eager run does not pay for importing Dynamo
    from torch._dynamo.utils import compilation_time_metrics

    keys = ("_compile.compile_inner", "backward._backward_impl")
    return float(sum(sum(compilation_time_metrics.get(key, [])) for key in keys))
