"""The non-finite watch: did the loss, the gradients or the model's state stop being finite?

Why on the device: reading the loss on the host every step makes the CPU wait for the GPU every
step. The watch keeps the first bad step, and what was bad, in device tensors; the runtime's vote
reads it on the host only when it must (`trainer.finite_check`; see runtime/vote.py), always
before a checkpoint is written.

Why the state too: with a huge learning rate the BatchNorm running variance overflowed to inf
at a step whose loss was still finite; checkpoints taken after it held inf. So after every
optimizer step the watch also checks the parameters, the buffers and the optimizer state. It
takes the largest absolute value of each tensor (`torch._foreach_norm` with ord=inf: one pass,
no copy, and unlike a sum of squares it cannot overflow on large finite values); a NaN or an inf
anywhere makes it non-finite.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from training.topology import local_tensor

NOT_SEEN = -1
LOSS, GRADIENTS, STATE = 1, 2, 4  # what was not finite at the first bad step (bits)


def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor on the tensors' device: every value of every tensor is finite."""
    tensors = [tensor for tensor in tensors if tensor.numel()]  # an empty tensor has no max
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    largest = torch._foreach_norm(tensors, float("inf"))
    return torch.isfinite(torch.stack([value.float() for value in largest])).all()


def model_state_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """What a checkpoint saves of the computation: parameters, floating buffers (BatchNorm
    statistics) and the optimizer's floating state (momentum, Adam's moments)."""
    tensors = [parameter.detach() for parameter in model.parameters()]
    tensors += [buffer for buffer in model.buffers() if buffer.is_floating_point()]
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if torch.is_tensor(v) and v.is_floating_point()]
    return [local_tensor(tensor) for tensor in tensors]  # a tp shard checks its own slice


def first_non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating tensor holding a NaN or an inf (a host read per tensor;
    for the rare places that must name it, such as a checkpoint about to be written)."""
    for name, tensor in named:
        floating = torch.is_tensor(tensor) and tensor.is_floating_point()
        if floating and not bool(torch.isfinite(tensor).all()):
            return name
    return None


class NonFiniteWatch:
    """The first step whose loss, gradients or state were not finite, and which of them; all
    on the device until `read()`."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad_step = torch.full((), NOT_SEEN, dtype=torch.int64, device=device)
        self.what = torch.zeros((), dtype=torch.int64, device=device)

    def record(
        self,
        step: int,
        loss: torch.Tensor,
        gradients: list[torch.Tensor],
        state: list[torch.Tensor] | None = None,
    ) -> None:
        """Queue the check of `step` on the device: no host synchronisation.

        Pass no gradients under a GradScaler: its skipped steps (inf gradients at too high a
        scale) are how fp16 training works, not failures; the state, which a skipped step
        leaves untouched, is still checked."""
        what = (~torch.isfinite(loss.detach()).all()).long() * LOSS
        if gradients:
            what = what + (~all_finite(gradients)).long().to(what.device) * GRADIENTS
        if state:
            what = what + (~all_finite(state)).long().to(what.device) * STATE
        first = (what > 0) & (self.first_bad_step == NOT_SEEN)
        self.first_bad_step = torch.where(first, step, self.first_bad_step)
        self.what = torch.where(first, what, self.what)

    def read(self) -> tuple[int, int]:
        """(first bad step or NOT_SEEN, LOSS | GRADIENTS | STATE bits): waits for the device."""
        step, what = torch.stack([self.first_bad_step, self.what]).tolist()
        return step, what
