"""The reference: a plain, minimal PyTorch training loop on the template's model and data pipeline.

Same synthetic data, same albumentations pipeline, same model, optimizer, schedule and batch size
as `configs/default.yaml`, but a plain `DataLoader(shuffle=True)` and no seeding machinery, no
checkpoints, no logging. On CUDA (trainer.device) it uses what the production profile asks for,
as a user who knows the knobs would write it: cudnn.benchmark, TF32, autocast (bf16 where
supported, else fp16 with a GradScaler), channels_last, pinned memory and non-blocking copies; so
the comparison measures the template, not the settings. Prints one JSON line: per-epoch training
samples/s and the time from process start to the first optimizer step.
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
from runtime.process_group import choose_device
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
    device = choose_device(config.trainer.device, 0)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    memory_format = torch.channels_last if cuda else torch.contiguous_format
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
        pin_memory=cuda,
    )
    model = build_model(config.model, splits.num_classes, config.data.image_size)
    model = model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(config.optim, model)
    scheduler, _ = build_scheduler(
        optimizer, config.optim, config.trainer.epochs * len(loader), len(loader)
    )
    first_step = None
    per_epoch = []
    model.train()
    for _ in range(config.trainer.epochs):
        start, seen = time.perf_counter(), 0
        for images, labels in loader:
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            seen += labels.numel()
            if first_step is None:
                first_step = seconds_since_process_start()
        if cuda:
            torch.cuda.synchronize()
        per_epoch.append(seen / (time.perf_counter() - start))
    print(json.dumps({"samples_per_s": per_epoch, "time_to_first_step_s": first_step}))


if __name__ == "__main__":
    main()
