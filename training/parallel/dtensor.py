"""DTensor helpers every layout that splits parameters uses (tensor parallelism, FSDP2):
whole tensors gathered for a checkpoint, a whole checkpoint cut like this run's tensors, and a
gradient-norm clip over a model that mixes DTensors and plain tensors."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from training.topology import local_tensor


def gathered(state: Any) -> Any:
    """`state` with every DTensor replaced by its whole tensor (a collective over its mesh):
    checkpoints hold whole tensors whatever the tp degree."""
    if isinstance(state, dict):
        return {key: gathered(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(gathered(value) for value in state)
    full_tensor = getattr(state, "full_tensor", None)
    return full_tensor() if full_tensor is not None else state


def sharded_like(current: dict[str, Any], whole: dict[str, Any]) -> dict[str, Any]:
    """The whole tensors of a checkpoint's model state, each cut like this run's DTensor of the
    same name (every rank keeps its own slice; no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    sharded = dict(whole)
    for name, mine in current.items():
        if isinstance(mine, DTensor) and name in whole:
            sharded[name] = distribute_tensor(
                whole[name].to(mine.device), mine.device_mesh, mine.placements, src_data_rank=None
            )
    return sharded


def optimizer_state_sharded_like(
    optimizer: torch.optim.Optimizer, whole: dict[str, Any]
) -> dict[str, Any]:
    """An optimizer state dict of whole tensors with each parameter's state (momentum, moments)
    cut like that parameter."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for index, values in whole["state"].items():
        parameter = parameters[int(index)]
        if isinstance(parameter, DTensor):
            values = {
                key: distribute_tensor(
                    value.to(parameter.device),
                    parameter.device_mesh,
                    parameter.placements,
                    src_data_rank=None,
                )
                if torch.is_tensor(value) and value.shape == parameter.shape
                else value
                for key, value in values.items()
            }
        state[index] = values
    return {**whole, "state": state}


def clip_grad_norm(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_`, also for a model split by tensor parallelism.

    Why our own: torch 2.7.1's refuses a model whose gradients mix DTensors and plain tensors
    ("got mixed torch.Tensor and DTensor"), which is every tensor-parallel model (its norms and
    embeddings stay whole). The norm is the whole model's: a sharded gradient's squares are
    summed over its mesh, a replicated one counts once; every rank gets the same norm."""
    from torch.distributed.tensor import DTensor

    gradients = [p.grad for p in parameters if p.grad is not None]
    if not any(isinstance(g, DTensor) for g in gradients):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    whole = [local_tensor(g) for g in gradients if not _sharded(g)]
    shards = [g for g in gradients if _sharded(g)]
    squares = torch.zeros((), dtype=torch.float32, device=gradients[0].device)
    if whole:
        squares = squares + torch.stack(torch._foreach_norm(whole)).float().square().sum()
    for mesh in {shard.device_mesh for shard in shards}:
        local = [s.to_local() for s in shards if s.device_mesh == mesh]
        summed = torch.stack(torch._foreach_norm(local)).float().square().sum()
        dist.all_reduce(summed, group=mesh.get_group())
        squares = squares + summed
    total = squares.sqrt()
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_([local_tensor(g) for g in gradients], coefficient)
    return total


def _sharded(gradient: torch.Tensor) -> bool:
    placements = getattr(gradient, "placements", ())
    return any(placement.is_shard() for placement in placements)
