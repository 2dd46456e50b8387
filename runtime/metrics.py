"""Run metrics for humans and tools: metrics.jsonl and TensorBoard events (rank 0 only).

Why both: metrics.jsonl is trivially machine-readable (the benchmark aggregates it); TensorBoard
is what people look at. On resume, records past the checkpoint's step are dropped from both, so a
resumed run's logs read like an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from runtime.rundir import RunDirectory


class MetricsLogger:
    def __init__(self, run_dir: RunDirectory, enabled: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self.writer: SummaryWriter | None = None
        if not enabled:
            return
        if resume_step is not None:
            run_dir.drop_metrics_after(resume_step)
        self.writer = SummaryWriter(str(run_dir.tensorboard_dir), purge_step=resume_step)

    def log(self, kind: str, step: int, values: dict[str, float], **context: Any) -> None:
        if self.writer is None:
            return
        self.run_dir.append_metrics({"kind": kind, "step": step, **context, **values})
        for name, value in values.items():
            self.writer.add_scalar(f"{kind}/{name}", value, step)

    def log_measure(self, tag: str, value: float, step: int) -> None:
        """A measurement of the machine (a duration, memory) in TensorBoard only: metrics.jsonl
        holds what the run computed, which a resumed or repeated run must reproduce row for
        row; measurements never do."""
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def log_hparams(self, hyperparameters: dict[str, Any], final_metrics: dict[str, float]) -> None:
        """Hyperparameters with the final metrics, in the run's own event file (HParams tab)."""
        if self.writer is None:
            return
        plain = {
            k: v if isinstance(v, int | float | str | bool) else str(v)
            for k, v in hyperparameters.items()
        }
        metric_tags = {f"final/{name}": value for name, value in final_metrics.items()}
        experiment, session_start, session_end = hparams(plain, metric_tags)
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)
        for tag, value in metric_tags.items():
            self.writer.add_scalar(tag, value)

    def images(self, tag: str, images: Any) -> None:
        """A batch of images (N x 3 x H x W in [0, 1]) as one grid in the Images tab, step 0."""
        if self.writer is not None:
            self.writer.add_images(tag, images, 0, dataformats="NCHW")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
