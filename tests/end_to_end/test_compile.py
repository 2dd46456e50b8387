"""Compiled training (`trainer.compile.enabled=true`) under the determinism contract of
docs/determinism.md: compiled twice is bitwise; compiled, killed and resumed equals compiled
uninterrupted; compiled 1 and 2 processes in the world-size-invariant mode are bitwise; compiled
and eager are not (a compile that silently did nothing would pass the others). The per-rank and
per-call dropout masks of a compiled graph are tested with the seed plan's probe
(test_training.py: test_ranks_share_init_and_differ_in_dropout_and_worker_streams).

Every run compiles into one Inductor cache for the session: the first compiles (about 40 s on
2 cores), the others read it (a few seconds), as a user's second seed does.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import seeding
from runtime.checkpoint.files import newest_complete
from runtime.rundir import RunDirectory
from seeding.regions import enter_sharded_stream, sharded_randomness
from tests.end_to_end.test_world_size_invariance import INVARIANT
from tests.helpers.runs import (
    SHORT_LAST_BATCH,
    TINY,
    RunResult,
    assert_same_weights,
    run_train,
    start_train_to_kill,
    weights_differ,
)
from training.compile import CompileConfig, compiled

pytestmark = pytest.mark.slow
CPU = torch.device("cpu")


def test_compiled_training_repeats_bitwise_and_is_not_eager_s(
    compiled_run: RunResult, compiling: tuple[str, ...], tmp_path: Path
) -> None:
    again = run_train(tmp_path / "again", *SHORT_LAST_BATCH, *compiling)
    eager = run_train(tmp_path / "eager", *SHORT_LAST_BATCH)
    assert_same_weights(compiled_run.weights(), again.weights())
    assert compiled_run.logged() == again.logged()
    # Compiled is another computation (Inductor's kernels, its Philox dropout): were the
    # compile a no-op, the runs above would be eager's.
    assert weights_differ(eager.weights(), compiled_run.weights())

    # The compile time is reported apart: console, manifest, TensorBoard; eager has none.
    assert "compiled the training step in" in compiled_run.process.stdout
    assert "(compiling " in compiled_run.process.stdout
    compile_s = compiled_run.manifest()["compile_s"]
    assert compile_s > 0
    events = EventAccumulator(str(compiled_run.run_dir / "tb"))
    events.Reload()
    assert [event.value for event in events.Scalars("time/compile_s")] == [pytest.approx(compile_s)]
    assert eager.manifest()["compile_s"] is None
    # Inductor's cache is the one the key names (training/compile.py): the second seed of a
    # benchmark compiles from it.
    assert any(Path(compiling[1].split("=", 1)[1]).rglob("*.py"))


def test_compiled_run_killed_then_resumed_equals_compiled_uninterrupted(
    compiled_run: RunResult, compiling: tuple[str, ...], tmp_path: Path
) -> None:
    process = start_train_to_kill(tmp_path, *TINY, *SHORT_LAST_BATCH, *compiling)
    run_dir = RunDirectory.of(tmp_path, "default", "debug", 42)
    deadline = time.monotonic() + 240
    while not list(run_dir.checkpoint_dir.glob("step-*.pt.sha256")):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint written"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    newest, _ = newest_complete(run_dir.checkpoint_dir)
    assert newest is not None

    # Switching compile off on resume is another computation: refused in one line, no change.
    before = {path: path.stat().st_mtime_ns for path in run_dir.path.rglob("*") if path.is_file()}
    eager = run_train(
        tmp_path,
        *SHORT_LAST_BATCH,
        *compiling,
        "trainer.compile.enabled=false",
        "--resume",
        "auto",
        check=False,
    )
    assert eager.returncode != 0
    assert "Traceback" not in eager.output
    assert "trainer.compile.enabled" in eager.process.stderr.strip().splitlines()[-1]
    after = {path: path.stat().st_mtime_ns for path in run_dir.path.rglob("*") if path.is_file()}
    assert after == before

    assert newest.name == "step-00000013.pt"  # at the end of the first epoch, past its batch of 8
    resumed = run_train(tmp_path, *SHORT_LAST_BATCH, *compiling, "--resume", "auto")
    assert_same_weights(compiled_run.weights(), resumed.weights())
    assert json.dumps(compiled_run.logged()) == json.dumps(resumed.logged())


def test_compiled_world_size_invariant_mode_gives_one_result_on_1_and_2_processes(
    compiling: tuple[str, ...], tmp_path: Path
) -> None:
    runs = [
        run_train(tmp_path / f"w{nproc}", *INVARIANT, *compiling, nproc=nproc) for nproc in (1, 2)
    ]
    assert_same_weights(runs[0].weights(), runs[1].weights())
    assert all(run.manifest()["compile_s"] > 0 for run in runs)  # the step compiled


class _TwoKindsOfDropout(nn.Module):
    """A tensor-parallel block's dropout sites: replicated, sharded, replicated again."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        replicated = F.dropout(x, 0.5)
        with sharded_randomness():
            sharded = F.dropout(x, 0.5)
        return replicated, sharded, F.dropout(x, 0.5)


def test_compiled_sharded_dropout_follows_each_tensor_parallel_rank_s_stream(
    compiling: tuple[str, ...],
) -> None:
    """Compiled, the replicated sites still draw the same masks on both tp ranks and the
    sharded site its own per rank (seeding/regions.py), as eager does."""
    cache = compiling[1].split("=", 1)[1]
    masks = []
    for tp_rank in (0, 1):
        plan = seeding.tensor_parallel(42, 0, tp_rank)
        model = compiled(_TwoKindsOfDropout(), CompileConfig(enabled=True, cache_dir=cache), CPU)
        seeding.enter_dropout_stream(plan)
        enter_sharded_stream(plan)
        masks.append([mask.tolist() for mask in model(torch.ones(64))])
        torch._dynamo.reset()
    (first, sharded_0, last), (first_1, sharded_1, last_1) = masks
    assert (first, last) == (first_1, last_1)
    assert sharded_0 != sharded_1


@pytest.mark.parametrize(
    ("mode", "why"),
    [("reduce-overhead", "a GPU run only"), ("max-autotune-no-cudagraphs", "picks kernels by")],
)
def test_a_compile_mode_that_cannot_keep_the_guarantees_is_refused_in_one_line(
    mode: str, why: str, tmp_path: Path
) -> None:
    refused = run_train(
        tmp_path, "trainer.compile.enabled=true", f"trainer.compile.mode={mode}", check=False
    )
    assert refused.returncode == 2
    assert refused.process.stderr.strip().splitlines() == [refused.process.stderr.strip()]
    assert f"trainer.compile.mode={mode}" in refused.process.stderr and why in refused.output
    assert not any(path.is_file() for path in tmp_path.rglob("*"))


def test_a_traced_run_writes_a_profile_and_computes_what_an_untraced_one_does(
    compiled_run: RunResult, compiling: tuple[str, ...], tmp_path: Path
) -> None:
    traced = run_train(tmp_path, *SHORT_LAST_BATCH, *compiling, "trainer.trace_steps=3")
    assert_same_weights(compiled_run.weights(), traced.weights())
    traces = list((traced.run_dir / "tb").glob("rank0.*.pt.trace.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert sum(event.get("name") == "ProfilerStep#4" for event in events) == 1  # after 2 + 1
    scalars = EventAccumulator(str(traced.run_dir / "tb"))
    scalars.Reload()
    memory = scalars.Scalars("memory/peak_mb")
    assert len(memory) == len(traced.metrics("step")) and all(m.value > 0 for m in memory)


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ("trainer.compile.cache_dir=/proc/no-such-folder", "cannot use /proc/no-such-folder/"),
        ("trainer.compile.cache_dir=", "trainer.compile.cache_dir"),
    ],
)
def test_a_cache_folder_that_cannot_be_used_is_refused_in_one_line(
    override: str, why: str, tmp_path: Path
) -> None:
    refused = run_train(tmp_path, "trainer.compile.enabled=true", override, check=False)
    assert refused.returncode == 2
    assert refused.process.stderr.strip().splitlines() == [refused.process.stderr.strip()]
    assert why in refused.process.stderr
    assert not any(path.is_file() for path in tmp_path.rglob("*"))
