"""The reference: a plain, minimal PyTorch training loop on the template's model and data pipeline.

Same synthetic data, same albumentations pipeline, same model, optimizer, schedule and batch size
as `configs/default.yaml`, but a plain `DataLoader(shuffle=True)` and no seeding machinery, no
checkpoints, no logging. Prints one JSON line: per-epoch training samples/s and the time from
process start to the first optimizer step.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from configs import load_config
from data.augment import pipeline
from data.synthetic import build_synthetic
from models import build_model
from runtime.clock import seconds_since_process_start
from training.optim import build_optimizer, build_scheduler


class Augmented(Dataset):
    def __init__(self, source: Dataset, transform: object) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.source[index]
        return self.transform(image=image)["image"], label  # type: ignore[operator]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("overrides", nargs="*")
    arguments = parser.parse_args()
    config = load_config(arguments.config, "production", None, arguments.overrides)
    torch.manual_seed(config.seed)
    splits = build_synthetic(config.data)
    loader = DataLoader(
        Augmented(
            splits.train,
            pipeline(config.data.augment.train, config.data.image_size, splits.mean, splits.std),
        ),
        batch_size=config.data.batch_size,
        shuffle=True,
        num_workers=config.data.num_workers,
        persistent_workers=config.data.num_workers > 0,
    )
    model = build_model(config.model, splits.num_classes, config.data.image_size)
    optimizer = build_optimizer(config.optim, model)
    scheduler, _ = build_scheduler(optimizer, config.optim, config.trainer.epochs * len(loader))
    first_step = None
    per_epoch = []
    model.train()
    for _ in range(config.trainer.epochs):
        start, seen = time.perf_counter(), 0
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += labels.numel()
            if first_step is None:
                first_step = seconds_since_process_start()
        per_epoch.append(seen / (time.perf_counter() - start))
    print(json.dumps({"samples_per_s": per_epoch, "time_to_first_step_s": first_step}))


if __name__ == "__main__":
    main()
