"""Run under torchrun: join, train a DDP step, gather, leave with `shutdown`; many rounds.

Each round ends the way train.py ends, so a leave that can deadlock (gloo's exit hang in torch
2.7.1: see runtime.process_group.leave_process_group) hangs here within a few dozen rounds.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from runtime.process_group import ProcessGroup
from training.topology import Topology, all_gather_objects


def one_round(store: dist.Store, round_index: int, rank: int, world_size: int) -> None:
    dist.init_process_group(
        "gloo",
        store=dist.PrefixStore(f"round-{round_index}", store),  # fresh keys for each round
        rank=rank,
        world_size=world_size,
    )
    group = ProcessGroup(Topology(rank, world_size, rank, 1, torch.device("cpu"), "gloo"))
    model = DistributedDataParallel(nn.Linear(4, 2))
    model(torch.ones(3, 4)).sum().backward()
    gathered = all_gather_objects(group.topology, {"rank": rank, "round": round_index})
    assert [entry["rank"] for entry in gathered] == list(range(world_size))
    del model
    group.leave()


def main() -> None:
    rounds = int(sys.argv[1])
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size))
    for round_index in range(rounds):
        one_round(store, round_index, rank, world_size)
    print(f"rank {rank}: {rounds} rounds left cleanly", flush=True)


if __name__ == "__main__":
    main()
