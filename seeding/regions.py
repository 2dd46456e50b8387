"""Randomness inside a tensor-parallel *sharded* region: `with sharded_randomness(): ...`.

Why a second torch stream: `nn.Dropout` draws from torch's default generator, and under tensor
parallelism one forward pass has two kinds of dropout site. After a row-parallel layer (its
all-reduce) the activation is *replicated*: every tp rank holds the same tensor and must drop the
same elements, so those sites draw from the ordinary `dropout` stream, identical inside the
tensor-parallel group. Between a column-parallel and a row-parallel layer the activation is
*sharded*: each rank holds other heads or another slice of the MLP, and the same mask on every
slice would correlate them; those sites draw from `sharded_dropout`, distinct per tp rank. This is
Megatron-LM's model-parallel RNG tracker, for torch's CPU and CUDA generators alike.

A model marks its sharded sites and nothing else:

    with sharded_randomness():
        probabilities = self.attention_dropout(probabilities)

Outside tensor parallelism the region is an ordinary stream of its own (one per data-parallel
replica): a model behaves the same whether or not it is sharded, apart from the mask values.
The stream's state is swapped in and out of torch's default generators, so it is saved and
restored with the other RNG states (seeding/state.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from seeding.derive import derive_seed
from seeding.plan import SeedPlan


class _ShardedStream:
    """The saved generator states of the sharded region (CPU, and the current CUDA device)."""

    def __init__(self, seed: int) -> None:
        # Private generators: `torch.manual_seed` here would queue a CUDA seed that a later
        # lazy CUDA start applies over the ordinary dropout stream's.
        self.cpu = torch.Generator().manual_seed(seed).get_state()
        self.cuda: torch.Tensor | None = None
        if torch.cuda.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device())
            self.cuda = torch.Generator(device=device).manual_seed(seed).get_state()

    def state_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "cuda": self.cuda}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cpu, self.cuda = state["cpu"], state["cuda"]


def _current_states() -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_states(cpu: torch.Tensor, cuda: torch.Tensor | None) -> None:
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)


_stream: _ShardedStream | None = None


def enter_sharded_stream(plan: SeedPlan, after_step: int | None = None) -> None:
    """Seed the sharded region's stream from the plan. `after_step`: a run resumed on another
    tensor-parallel degree has no saved state for its new shards; their streams restart keyed
    by the step, so no two shards share one (training/parallel/tensor.py)."""
    global _stream
    seed = plan.seed("sharded_dropout")
    if after_step is not None:
        seed = derive_seed(seed, "sharded_dropout", after_step)
    _stream = _ShardedStream(seed)


def reseed_sharded_stream(seed: int) -> None:
    """The world-size-invariant mode re-seeds the forward pass per micro-batch (whichever rank
    computes it); this follows it for the sharded region, from the micro-batch's own seed."""
    global _stream
    if _stream is not None:
        _stream = _ShardedStream(derive_seed(seed, "sharded_dropout"))


@contextlib.contextmanager
def sharded_randomness() -> Iterator[None]:
    """Draw from this rank's sharded-region stream inside the block; the ordinary stream is
    left exactly where it was. Without a seeded stream (a model used outside a run) a no-op."""
    stream = _stream
    if stream is None:
        yield
        return
    outer = _current_states()
    _set_states(stream.cpu, stream.cuda)
    try:
        yield
    finally:
        stream.cpu, stream.cuda = _current_states()
        _set_states(*outer)


def sharded_stream_state() -> dict[str, Any] | None:
    return None if _stream is None else _stream.state_dict()


def restore_sharded_stream_state(state: dict[str, Any]) -> None:
    if _stream is not None:
        _stream.load_state_dict(state)
