"""Run under torchrun: what each rank gets from the seed plan, gathered to rank 0 as JSON.

Model weights right after `enter_init_stream` (must match on all ranks, before DDP's broadcast
could hide a difference), a dropout mask after `enter_dropout_stream` (must differ), two masks of
a dropout compiled the way the training step compiles (`StepParts.compiled`: must differ across
ranks and calls), and global RNG draws inside DataLoader workers (must differ across ranks).
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import seeding
from models import build_model
from models.smallcnn import SmallCNNConfig
from runtime.process_group import leave_process_group
from runtime.provenance import state_dict_sha256
from training.compile import CompileConfig, compiled


class GlobalDraws(Dataset):
    def __init__(self, seeder: seeding.WorkerSeeder) -> None:
        self.seeder = seeder

    def __len__(self) -> int:
        return 4

    def __getitem__(self, key: seeding.SampleKey) -> torch.Tensor:
        self.seeder.enter_epoch(key.epoch)
        return torch.tensor(
            [random.random(), float(np.random.random()), float(torch.rand(()))], dtype=torch.float64
        )


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 42
    local_rank_mistake = os.environ.get("PROBE_SEED_FROM_LOCAL_RANK") == "1"
    plan = seeding.data_parallel(
        seed, int(os.environ["LOCAL_RANK"]) if local_rank_mistake else rank
    )
    seeding.enter_init_stream(plan)
    model = build_model(SmallCNNConfig(width=8), 10, 32)
    seeding.enter_dropout_stream(plan)
    mask = F.dropout(torch.ones(64), p=0.5).tolist()
    settings = CompileConfig(enabled=True, cache_dir=str(Path(sys.argv[1]).parent / "inductor"))
    dropout = compiled(nn.Dropout(0.5), settings, torch.device("cpu"))
    compiled_masks = [dropout(torch.ones(64)).tolist() for _ in range(2)]
    seeder = seeding.WorkerSeeder(plan)
    dataset = GlobalDraws(seeder)
    sampler = seeding.SeededDistributedSampler(dataset, plan, num_replicas=1, rank=0, shuffle=False)
    sampler.set_epoch(0)
    loader = DataLoader(
        dataset,
        batch_size=2,
        sampler=sampler,
        num_workers=2,
        worker_init_fn=seeder,
        generator=torch.Generator(),
    )
    worker_draws = [batch.tolist() for batch in loader]
    mine = {
        "rank": rank,
        "init_sha": state_dict_sha256(model.state_dict()),
        "mask": mask,
        "compiled_masks": compiled_masks,
        "workers": worker_draws,
    }
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        with open(sys.argv[1], "w") as stream:
            json.dump(everyone, stream)
    leave_process_group(torch.device("cpu"))


if __name__ == "__main__":
    main()
