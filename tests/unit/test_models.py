"""Contract of every registered model, a fork's included (no edit of this file needed): it trains
under deterministic algorithms (CPU here, CUDA where present), from its section's defaults."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from models import MODELS, build_model


@pytest.fixture
def deterministic() -> Iterator[None]:
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def forward_backward(name: str, device: torch.device) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(MODELS.config(name)(), 10, 32).to(device)
    images = torch.randn(4, 3, 32, 32, device=device)
    labels = torch.arange(4, device=device)
    F.cross_entropy(model(images), labels).backward()
    return {
        n: p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_forward_backward_under_deterministic_algorithms(
    name: str, deterministic: None
) -> None:
    first = forward_backward(name, torch.device("cpu"))
    assert first
    second = forward_backward(name, torch.device("cpu"))
    assert all(torch.equal(first[n], second[n]) for n in first)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_debug_profile_on_cuda(
    name: str, deterministic: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ops without a deterministic CUDA kernel (e.g. AdaptiveAvgPool2d backward) would raise here.
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    first = forward_backward(name, torch.device("cuda"))
    second = forward_backward(name, torch.device("cuda"))
    assert all(torch.equal(first[n], second[n]) for n in first)
