"""The pieces of tensor parallelism one process can check: the sharded region's stream, the
model's split, the config's refusals, and the clipping of a mixed model."""

from __future__ import annotations

import pytest
import torch

import seeding
from configs import load_config
from foundation.errors import UserError
from models import build_model
from models.vit_tiny import ViTTinyConfig
from seeding import regions
from seeding.state import capture_rng_state, restore_rng_state
from training.parallel.config import mesh_coordinates
from training.parallel.dtensor import clip_grad_norm

VIT = "configs/vit_tiny.yaml"
PLAN = seeding.tensor_parallel(42, dp_rank=0, tp_rank=1)


def test_the_region_leaves_the_replicated_stream_where_it_was() -> None:
    seeding.enter_dropout_stream(PLAN)
    plain = [torch.rand(3) for _ in range(2)]
    seeding.enter_dropout_stream(PLAN)
    first = torch.rand(3)
    with seeding.sharded_randomness():
        inside = torch.rand(5)
    second = torch.rand(3)
    assert torch.equal(first, plain[0]) and torch.equal(second, plain[1])
    assert not torch.equal(inside[:3], plain[1])


def test_the_region_is_one_stream_across_its_entries_seeded_from_the_plan() -> None:
    seeding.enter_dropout_stream(PLAN)
    with seeding.sharded_randomness():
        a = torch.rand(2)
    torch.rand(7)  # the replicated stream moves on in between
    with seeding.sharded_randomness():
        b = torch.rand(2)
    expected = torch.Generator().manual_seed(PLAN.seed("sharded_dropout"))
    assert torch.equal(torch.cat([a, b]), torch.rand(4, generator=expected))


def test_the_region_s_state_is_saved_and_restored_with_the_other_rng_states() -> None:
    seeding.enter_dropout_stream(PLAN)
    with seeding.sharded_randomness():
        torch.rand(3)
    saved = capture_rng_state()
    with seeding.sharded_randomness():
        after = torch.rand(4)
    restore_rng_state(saved)
    with seeding.sharded_randomness():
        again = torch.rand(4)
    assert "sharded_dropout" in saved
    assert torch.equal(after, again)


def test_without_a_seeded_stream_the_region_draws_from_the_ordinary_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(regions, "_stream", None)
    torch.manual_seed(3)
    with seeding.sharded_randomness():
        inside = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(inside, torch.rand(3))


def test_vit_tiny_classifies_32_pixel_images_and_its_dropout_sites_are_of_both_kinds() -> None:
    model = build_model(ViTTinyConfig(width=16), num_classes=10, image_size=32)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    plan = model.tensor_parallel_plan()  # type: ignore[operator]
    assert {type(style).__name__ for style in plan.values()} == {
        "ColwiseParallel",
        "RowwiseParallel",
    }
    assert mesh_coordinates(5, 2) == (2, 1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["parallel.tensor=3"], "parallel.tensor=3 does not divide model.heads=4"),
        (["parallel.tensor=2", "trainer.ema.enabled=true"], "trainer.ema.enabled=true yet"),
        (["parallel.tensor=0"], "parallel.tensor"),
        (["parallel.shard=true", "parallel.tensor=2"], "parallel.shard=true does not work with"),
        (
            ["parallel.shard=true", "trainer.ema.enabled=true"],
            "parallel.shard=true does not work with trainer.ema",
        ),
    ],
)
def test_a_split_the_run_cannot_do_is_refused_in_one_line(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(UserError, match=message) as refused:
        load_config(VIT, overrides=overrides)
    assert len(str(refused.value).splitlines()) == 1


def test_a_model_without_a_plan_is_refused_naming_one_with_a_plan() -> None:
    with pytest.raises(UserError, match=r"model smallcnn has none \(vit_tiny has one"):
        load_config("configs/default.yaml", overrides=["parallel.tensor=2"])


def test_clipping_a_model_without_shards_is_torch_s() -> None:
    def gradients() -> list[torch.nn.Parameter]:
        torch.manual_seed(0)
        parameters = [torch.nn.Parameter(torch.randn(5)) for _ in range(3)]
        for parameter in parameters:
            parameter.grad = torch.randn(5)
        return parameters

    ours, torchs = gradients(), gradients()
    norm = clip_grad_norm(ours, 0.5)
    assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(torchs, 0.5))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, torchs, strict=True))
