"""CUDA-only guarantees; skipped cleanly where there is no GPU (CI has none)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.runs import assert_same_weights, run_train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_debug_twice_on_the_gpu_is_bitwise_identical(tmp_path: Path) -> None:
    first = run_train(tmp_path / "a", "--profile", "debug", "trainer.device=cuda")
    second = run_train(tmp_path / "b", "--profile", "debug", "trainer.device=cuda")
    assert first.manifest()["device"].startswith("cuda")
    assert_same_weights(first.weights(), second.weights())


def test_production_runs_with_amp_on_the_gpu(tmp_path: Path) -> None:
    run = run_train(tmp_path / "p", "--profile", "production", "trainer.device=cuda")
    effective = run.manifest()["determinism"]["effective"]
    assert effective["amp_dtype"] in ("bfloat16", "float16") and effective["channels_last"] is True
