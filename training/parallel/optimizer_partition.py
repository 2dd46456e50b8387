"""The optimizer state split over the ranks (ZeRO stage 1), for the world-size-invariant mode.

With `parallel.shard=true` and `trainer.world_size_invariant=true`, each rank keeps the optimizer
state (momentum, Adam's moments) of 1/W of the weights only: the parameters of each optimizer
group are laid end to end in one flat vector, cut into W equal slices (the last padded with
zeros), and rank r's optimizer updates slice r; the updated slices are then gathered, so every
rank holds the whole new weights again for the next forward.

Why this keeps the invariant mode bit for bit: the gradients are still the mode's fixed-order
sums, the same on every rank (training/parallel/invariant.py), and SGD and Adam(W) are elementwise: an
element's update is the same bits whichever slice it is updated in (measured for SGD with
Nesterov momentum and weight decay, and AdamW, cut in 2, 3, 4 and 8 at odd offsets). Nothing
is added across ranks. Why not FSDP2: its reduce-scatter cannot be replaced by the mode's
exchange in torch 2.7.1, and it keeps the unsynchronised gradients in private buffers.

Checkpoints hold the state whole and per parameter (gathered), in the layout an unsharded
optimizer has: a sharded run resumes on any W, and into an unsharded run and back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from foundation.errors import UserError
from training.topology import Topology


class OptimizerPartition:
    """This rank's optimizer over its flat slice of each parameter group; `original` (the
    optimizer over the whole model, never stepped) is the layout checkpoints are written in."""

    def __init__(self, original: torch.optim.Optimizer, topology: Topology) -> None:
        self.original = original
        self.world = topology.world_size
        self.rank = topology.rank
        self.groups: list[list[nn.Parameter]] = [list(g["params"]) for g in original.param_groups]
        for group in self.groups:
            if len({p.dtype for p in group}) > 1:
                raise UserError(
                    "parallel.shard with trainer.world_size_invariant: an optimizer group mixes "
                    "dtypes; give each dtype its own group"
                )
        self.widths = [-(-sum(p.numel() for p in group) // self.world) for group in self.groups]
        slices = [
            nn.Parameter(self._own(self._flat(index, _weights), index).clone())
            for index in range(len(self.groups))
        ]
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in original.param_groups]
        self.optimizer = type(original)(
            [{**h, "params": [s]} for h, s in zip(hyper, slices, strict=True)],
            **original.defaults,
        )
        self.slices = slices
        self.optimizer.register_step_pre_hook(lambda *_: self._take_gradients())
        self.optimizer.register_step_post_hook(lambda *_: self._give_weights())

    # ----------------------------------------------------------------- the step
    def _flat(self, index: int, part: Any) -> torch.Tensor:
        """Group `index`'s `part` of each parameter, end to end, padded to W equal slices."""
        flat = torch.cat([part(p).reshape(-1) for p in self.groups[index]])
        return torch.nn.functional.pad(flat, (0, self.widths[index] * self.world - flat.numel()))

    def _own(self, flat: torch.Tensor, index: int) -> torch.Tensor:
        width = self.widths[index]
        return flat[self.rank * width : (self.rank + 1) * width]

    def _take_gradients(self) -> None:
        """Before the step: this rank's slice of the reduced gradients, the same on every rank.
        (The slices of the weights are the weights: `_give_weights` writes them back whole after
        every step, and `load_whole_state` takes them again after a resume.)"""
        with torch.no_grad():
            for index, piece in enumerate(self.slices):
                piece.grad = self._own(self._flat(index, _gradient), index).clone()

    def _give_weights(self) -> None:
        """After the step: every rank's updated slice gathered into the whole weights."""
        with torch.no_grad():
            for index, (group, piece) in enumerate(zip(self.groups, self.slices, strict=True)):
                whole = self._gathered(piece.detach(), index)
                offset = 0
                for parameter in group:
                    count = parameter.numel()
                    parameter.copy_(whole[offset : offset + count].view_as(parameter))
                    offset += count

    def _gathered(self, piece: torch.Tensor, index: int) -> torch.Tensor:
        if self.world == 1:
            return piece
        whole = piece.new_empty(self.widths[index] * self.world)
        dist.all_gather_into_tensor(whole, piece.contiguous())
        return whole

    # ----------------------------------------------------------------- checkpoints
    def whole_state(self) -> dict[str, Any]:
        """Collective: the state as the unsharded optimizer would hold it, per parameter."""
        mine = self.optimizer.state_dict()
        layout = self.original.state_dict()["param_groups"]
        state: dict[int, dict[str, Any]] = {}
        for index, group in enumerate(self.groups):
            numbers = layout[index]["params"]
            for key, value in mine["state"].get(index, {}).items():
                if torch.is_tensor(value) and value.shape == (self.widths[index],):
                    whole = self._gathered(value, index)
                    offset = 0
                    for number, parameter in zip(numbers, group, strict=True):
                        count = parameter.numel()
                        part = whole[offset : offset + count].view_as(parameter).clone()
                        state.setdefault(number, {})[key] = part
                        offset += count
                else:  # a scalar (Adam's step count): every parameter has its own copy
                    for number in numbers:
                        copy = value.clone() if torch.is_tensor(value) else value
                        state.setdefault(number, {})[key] = copy
        groups = [
            {**{k: v for k, v in mine_group.items() if k != "params"}, "params": saved["params"]}
            for mine_group, saved in zip(mine["param_groups"], layout, strict=True)
        ]
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_whole_state(self, whole: dict[str, Any]) -> None:
        """The inverse of `whole_state`: this rank's slice of each per-parameter state, and of
        the weights the model has just been given."""
        with torch.no_grad():
            for index, piece in enumerate(self.slices):
                piece.copy_(self._own(self._flat(index, _weights), index))
        layout = self.original.state_dict()["param_groups"]
        state: dict[int, dict[str, Any]] = {}
        for index, group in enumerate(self.groups):
            numbers = layout[index]["params"]
            saved = [whole["state"].get(n, {}) for n in numbers]
            for key in saved[0] if saved else []:
                values = [entry[key] for entry in saved]
                if all(
                    torch.is_tensor(v) and v.shape == p.shape
                    for v, p in zip(values, group, strict=True)
                ):
                    flat = torch.cat([v.reshape(-1) for v in values])
                    padding = self.widths[index] * self.world - flat.numel()
                    flat = torch.nn.functional.pad(flat, (0, padding))
                    state.setdefault(index, {})[key] = self._own(flat, index).clone()
                else:
                    state.setdefault(index, {})[key] = values[0]
        groups = [
            {**{k: v for k, v in saved_group.items() if k != "params"}, "params": [index]}
            for index, saved_group in enumerate(whole["param_groups"])
        ]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})


def _weights(parameter: nn.Parameter) -> torch.Tensor:
    return parameter.detach()


def _gradient(parameter: nn.Parameter) -> torch.Tensor:
    return torch.zeros_like(parameter) if parameter.grad is None else parameter.grad
