"""The pieces of the world-size-invariant mode on their own (the end-to-end proof is in
end_to_end/test_world_size_invariance.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from foundation.errors import UserError
from training.parallel.batchnorm_replay import BatchNormReplay
from training.parallel.invariant import parameter_groups
from training.parallel.micro_batches import MicroBatchLayout
from training.parallel.reduction_tree import rank_block, serving_world_sizes, tree_sum


def test_served_world_sizes_are_those_whose_blocks_are_subtrees() -> None:
    assert serving_world_sizes(8) == [1, 2, 4, 8]
    assert serving_world_sizes(6) == [1, 2, 6]  # 3 ranks would own [0,2), [2,4): not subtrees
    assert serving_world_sizes(5) == [1, 5]


def test_an_unserved_world_size_is_a_user_error_naming_those_that_work() -> None:
    with pytest.raises(UserError, match=r"world sizes that work: 1, 2, 6$"):
        MicroBatchLayout.checked(48, 8, 3, 0)


@pytest.mark.parametrize("micro_batches", [4, 8, 6])
def test_the_tree_sum_is_the_same_bits_whichever_ranks_computed_the_blocks(
    micro_batches: int,
) -> None:
    generator = torch.Generator().manual_seed(0)
    # Magnitudes far apart, so that another order of additions gives other bits.
    leaves = [
        torch.randn(1000, generator=generator) * 10.0 ** (j % 4) for j in range(micro_batches)
    ]
    alone = tree_sum(0, micro_batches, leaves.__getitem__, {})
    for world in serving_world_sizes(micro_batches):
        blocks = [rank_block(micro_batches, world, rank) for rank in range(world)]
        partials = {block: tree_sum(*block, leaves.__getitem__, {}) for block in blocks}
        combined = tree_sum(0, micro_batches, _unused, partials)
        assert torch.equal(combined, alone), world
    left_to_right = leaves[0].clone()
    for leaf in leaves[1:]:
        left_to_right += leaf
    assert not torch.equal(left_to_right, alone)  # the order does matter, so the test can fail


def _unused(j: int) -> torch.Tensor:
    raise AssertionError("every leaf is inside a block")


def test_batchnorm_replay_equals_one_process_seeing_the_micro_batches_in_order() -> None:
    torch.manual_seed(0)
    micro_batches = [torch.randn(8, 3, 4, 4) * (j + 1) for j in range(4)]
    sequential = nn.BatchNorm2d(3)
    for batch in micro_batches:
        sequential(batch)

    replayed = nn.BatchNorm2d(3)
    replay = BatchNormReplay(replayed)
    replay.begin_step()
    captured = []
    for batch in reversed(micro_batches):  # computed in another order, as ranks would
        replayed(batch)
        captured.append(replay.capture())
    replay.finish_step(list(reversed(captured)))
    assert replayed.momentum == 0.1
    assert int(replayed.num_batches_tracked) == 4
    torch.testing.assert_close(replayed.running_mean, sequential.running_mean)
    torch.testing.assert_close(replayed.running_var, sequential.running_var)


def test_parameters_travel_as_one_vector_per_dtype_float32_first_in_model_order() -> None:
    model = nn.Sequential(nn.Linear(2, 2).double(), nn.Linear(2, 3), nn.Linear(3, 1).bfloat16())
    model[1].bias.requires_grad_(False)  # frozen parameters do not travel
    groups = parameter_groups(model)
    assert [[p.dtype for p in group] for group in groups] == [
        [torch.float32],
        [torch.bfloat16, torch.bfloat16],
        [torch.float64, torch.float64],
    ]
    assert groups[0][0] is model[1].weight
    assert groups[2][0] is model[0].weight and groups[2][1] is model[0].bias
