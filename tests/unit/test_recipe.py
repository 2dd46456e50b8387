"""The recipe's pieces on their own: the schedule's curve, MixUp/CutMix against torchvision's
transforms, the mix draws as a pure function of (seed, step, slot), the EMA's update rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

import seeding
from data.mix import BatchMix, MixConfig, cutmix, mixup
from foundation.errors import UserError
from training.ema import EmaConfig, WeightAverage
from training.objective import Objective
from training.optim import LearningRateFactor, OptimConfig, check_schedule


def test_without_a_warmup_the_cosine_is_the_one_runs_were_trained_with() -> None:
    """The default job keeps its weights' digest: the same float expression, step for step."""
    factor = LearningRateFactor(OptimConfig(), horizon=368, steps_per_epoch=46)
    for step in range(0, 400):
        progress = min(step, 368) / 368
        assert factor(step) == 0.5 * (1.0 + math.cos(math.pi * progress))


def test_a_linear_warmup_then_the_cosine_over_the_rest() -> None:
    config = OptimConfig(warmup_steps=10, warmup_start_factor=0.1)
    factor = LearningRateFactor(config, horizon=110, steps_per_epoch=11)
    assert factor(0) == pytest.approx(0.1)
    assert factor(5) == pytest.approx(0.55)
    assert factor(10) == 1.0
    assert factor(60) == pytest.approx(0.5)
    assert factor(110) == pytest.approx(0.0) and factor(500) == factor(110)
    in_epochs = LearningRateFactor(OptimConfig(warmup_epochs=2), horizon=110, steps_per_epoch=11)
    assert in_epochs.warmup == 22


def test_the_step_schedule_decays_every_step_epochs() -> None:
    config = OptimConfig(scheduler="step", step_epochs=2, step_gamma=0.5)
    factor = LearningRateFactor(config, horizon=100, steps_per_epoch=10)
    assert [factor(s) for s in (0, 19, 20, 39, 40, 99)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.0625]


def test_a_warmup_as_long_as_the_schedule_is_refused() -> None:
    check_schedule(OptimConfig(warmup_steps=9), horizon=10, steps_per_epoch=5)
    with pytest.raises(UserError, match=r"optim.warmup_epochs: a warmup of 10 optimizer steps"):
        check_schedule(OptimConfig(warmup_epochs=2), horizon=10, steps_per_epoch=5)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, 8, 10, generator=generator), torch.tensor([0, 1, 2, 3, 4, 0])


def test_mixup_is_torchvisions_mixup_for_the_same_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = _batch()
    theirs = v2.MixUp(alpha=0.4, num_classes=5)
    monkeypatch.setattr(theirs._dist, "sample", lambda *shape: torch.tensor(0.3))
    expected_images, expected_targets = theirs(images, labels)
    mixed, targets = mixup(images, torch.nn.functional.one_hot(labels, 5).float(), 0.3)
    assert torch.equal(mixed, expected_images) and torch.equal(targets, expected_targets)


def test_cutmix_is_torchvisions_cutmix_for_the_same_lambda_and_box(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images, labels = _batch()  # 8 high, 10 wide
    theirs = v2.CutMix(alpha=1.0, num_classes=5)
    monkeypatch.setattr(theirs._dist, "sample", lambda *shape: torch.tensor(0.6))
    corners = iter([torch.tensor([9]), torch.tensor([2])])  # x, then y
    monkeypatch.setattr(torch, "randint", lambda *args, **kwargs: next(corners))
    expected_images, expected_targets = theirs(images, labels)
    monkeypatch.undo()
    mixed, targets = cutmix(
        images, torch.nn.functional.one_hot(labels, 5).float(), 0.6, (0.95, 0.3)
    )
    assert torch.equal(mixed, expected_images) and torch.equal(targets, expected_targets)
    assert not torch.equal(mixed, images)  # the box is not empty


def test_mix_draws_are_a_pure_function_of_seed_step_and_slot() -> None:
    config = MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0)
    mix = BatchMix(config, seeding.data_parallel(7, rank=0), num_classes=5)
    on_another_rank = BatchMix(config, seeding.data_parallel(7, rank=3), num_classes=5)
    draws = [mix.draw(step, slot) for step in range(20) for slot in range(4)]
    assert draws == [on_another_rank.draw(step, slot) for step in range(20) for slot in range(4)]
    assert len({(d.kind, d.lam) for d in draws}) == len(draws)  # each micro-batch its own draw
    assert {d.kind for d in draws} == {"mixup", "cutmix"}
    other_seed = BatchMix(config, seeding.data_parallel(8, rank=0), num_classes=5)
    assert other_seed.draw(0, 0) != mix.draw(0, 0)


def test_prob_and_the_alphas_choose_what_mixes() -> None:
    plan = seeding.data_parallel(0, rank=0)
    never = BatchMix(MixConfig(mixup_alpha=1.0, prob=0.0), plan, 5)
    only_cutmix = BatchMix(MixConfig(cutmix_alpha=1.0), plan, 5)
    assert all(never.draw(step, 0).kind is None for step in range(50))
    assert all(only_cutmix.draw(step, 0).kind == "cutmix" for step in range(50))
    images, labels = _batch()
    unmixed, targets = never(0, 0, images, labels)
    assert unmixed is images and torch.equal(targets.argmax(dim=1), labels)


def test_the_objective_counts_a_mixed_target_by_its_larger_part() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    soft = torch.tensor([[0.7, 0.3], [0.7, 0.3]])
    assert int(Objective.correct(logits, soft)) == 1
    assert int(Objective.correct(logits, torch.tensor([0, 1]))) == 2
    smoothed = Objective(label_smoothing=0.1).loss(logits, torch.tensor([0, 1]))
    assert smoothed > Objective().loss(logits, torch.tensor([0, 1]))


def test_the_ema_copies_during_its_warmup_then_averages_every_n_steps() -> None:
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = WeightAverage(EmaConfig(enabled=True, decay=0.5, every_steps=2, warmup_steps=2), model)
    for step, value in enumerate([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], start=1):
        model.weight.data.fill_(value)
        ema.after_step(step, model)
    # step 2 (warmup): a copy, 2; step 4: 0.5 x 2 + 0.5 x 8 = 5; step 6: 0.5 x 5 + 0.5 x 32.
    assert ema.module.weight.flatten().tolist() == [18.5, 18.5]
