"""A per-step profile when asked (`trainer.trace_steps=N`), and the peak memory of the steps.

Why in the run itself: a speed claim ("compile pays", "this loader is the bottleneck") should be
looked at on the real job, its data, model and parallel mode, not on a toy. torch.profiler runs
over N steps after the first two (the first compiles when `trainer.compile` is on, the second
settles the caches) and writes a Chrome trace (`*.pt.trace.json`) into the run's TensorBoard
folder, where TensorBoard's PyTorch profiler plugin (torch-tb-profiler) shows it; Perfetto
(ui.perfetto.dev) opens the file as it is. Rank 0 traces; the others run as usual.

The profiler observes: it draws no random number and changes no kernel, so a traced run
computes what an untraced one does (tests/end_to_end/test_compile.py compares them).
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import torch

SKIPPED_STEPS = 2  # the compile step and one to settle: what a trace of the steady state skips


class StepTrace:
    def __init__(self, folder: Path, steps: int, device: torch.device, worker: str) -> None:
        self.folder = folder
        self.steps = steps
        self.device = device
        self.worker = worker
        self._profiler: Any = None

    def begin(self) -> None:
        if self.steps == 0:
            return
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._profiler = profile(
            activities=activities,
            schedule=schedule(wait=SKIPPED_STEPS, warmup=1, active=self.steps, repeat=1),
            on_trace_ready=tensorboard_trace_handler(str(self.folder), worker_name=self.worker),
            profile_memory=True,
        )
        self._profiler.start()

    def step(self) -> None:
        if self._profiler is not None:
            self._profiler.step()

    def end(self) -> None:
        """Stop (a run shorter than the trace writes what it saw)."""
        if self._profiler is not None:
            profiler, self._profiler = self._profiler, None
            profiler.stop()


def peak_memory_mb(device: torch.device) -> float:
    """On a GPU, the most memory allocated since the last call (its peak is reset here); on a
    CPU, the process's peak resident memory so far (the kernel keeps no per-interval peak)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
