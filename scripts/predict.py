"""Predict the class of every image in a folder with a checkpoint: `make predict`.

    python -m scripts.predict --checkpoint PATH --images FOLDER [--output FILE] [key=value ...]

The model and the evaluation pipeline are rebuilt from the checkpoint's own config as train.py
builds them (runtime/assembly.py); each image (any format PIL reads, found recursively, in path
order) goes through the evaluation pipeline alone. Writes one line per image,
`path<TAB>class<TAB>probability`, to FILE (default <output-dir>/predictions/<run>-step<N>.tsv);
class names are the dataset's own where it has them (ImageFolder: its folder names), else the
label. An unreadable image stops the command with one line naming it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from configs.loading import apply_override, read_saved_config, validated
from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from runtime.assembly import build_run, plan_run
from runtime.atomic import atomic_write_text
from runtime.checkpoint.contents import load_checkpoint, reading
from runtime.process_group import choose_device
from training.topology import Topology

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
BATCH = 64


def images_under(text: str) -> list[Path]:
    if not text:
        raise UserError("no images given: make predict CHECKPOINT=… IMAGES=folder")
    folder = Path(text)
    if not folder.is_dir():
        raise UserError(f"--images: not a folder: {folder}")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise UserError(f"--images: no image files under {folder}")
    return found


def read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise UserError(f"cannot read image {path}: {error}") from None


def prepared(transform: Any, path: Path, size: int) -> torch.Tensor:
    """One image through the evaluation pipeline, which must make it the model's size."""
    image = transform(image=read(path))["image"]
    if tuple(image.shape[-2:]) != (size, size):
        raise UserError(
            f"{path}: the evaluation pipeline makes it {tuple(image.shape[-2:])}, the model takes "
            f"{size}x{size}; give an eval pipeline that resizes (data.augment.eval=resize)"
        )
    return image


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.predict", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file (…/last.pt)")
    parser.add_argument("--images", required=True, help="a folder of images")
    parser.add_argument("--output", default=None, help="the .tsv to write")
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    arguments = parser.parse_args()
    images = images_under(arguments.images)
    checkpoint = load_checkpoint(Path(arguments.checkpoint))
    tree = read_saved_config(checkpoint["config"])
    for assignment in arguments.overrides:
        tree = apply_override(tree, assignment)
    config = validated(tree)
    device = choose_device(config.trainer.device, local_rank=0)
    topology = Topology.single(device)
    built = build_run(config, topology, plan_run(config, topology), resuming=True)
    model = built.trainer.model
    with reading(arguments.checkpoint):
        model.load_state_dict(checkpoint["model"])
    model.eval()
    transform = built.data.pipelines["eval"]
    names = built.data.class_names
    lines = []
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            chunk = images[start : start + BATCH]
            batch = torch.stack(
                [prepared(transform, path, config.data.image_size) for path in chunk]
            )
            probabilities = torch.softmax(model(batch.to(device)).float(), dim=1).cpu()
            best, labels = probabilities.max(dim=1)
            for path, label, probability in zip(chunk, labels.tolist(), best.tolist(), strict=True):
                name = names[label] if names else str(label)
                lines.append(f"{path}\t{name}\t{probability:.6f}")
    run = f"{config.name}-{config.profile}-seed{config.seed}-step{checkpoint['step']}"
    output = Path(arguments.output or Path(arguments.output_dir) / "predictions" / f"{run}.tsv")
    atomic_write_text(output, "\n".join(lines) + "\n")  # replaces a link, never writes through
    print(f"{len(lines)} images -> {output}")


if __name__ == "__main__":
    run_reporting_user_errors(main)
