"""The command line of train.py (a documented contract; see docs/configuration.md "Command line").

python train.py [--config PATH] [--seed INT] [--profile debug|eval|production]
                [--resume PATH|auto] [--output-dir DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from foundation.errors import UserError
from seeding.derive import SEED_LIMIT
from training.determinism import PROFILES

DEFAULT_CONFIG = "configs/default.yaml"
DEFAULT_OUTPUT_DIR = "runs"


@dataclass(frozen=True)
class Arguments:
    config: str = DEFAULT_CONFIG
    seed: int | None = None
    profile: str | None = None
    resume: str | None = None
    output_dir: str = DEFAULT_OUTPUT_DIR
    overrides: tuple[str, ...] = field(default_factory=tuple)
    argv: tuple[str, ...] = field(default_factory=tuple)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see --help)")


def parse_seed(text: str) -> int:
    """Any integer in [0, 2**64): 0 is a real seed, and no float or sign tricks are accepted."""
    stripped = text.strip()
    if not stripped.isdigit():
        raise UserError(f"--seed must be an integer in [0, 2**64), got {text!r}")
    value = int(stripped)
    if value >= SEED_LIMIT:
        raise UserError(f"--seed must be an integer in [0, 2**64), got {text!r}")
    return value


def parse_args(argv: list[str]) -> Arguments:
    parser = _Parser(
        prog="train.py",
        description="Reproducible (distributed) training. Extra key=value arguments override "
        "config keys, e.g. trainer.epochs=3 data.batch_size=64.",
    )
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)"
    )
    parser.add_argument("--seed", type=str, default=None, help="base seed, 0 <= seed < 2**64")
    parser.add_argument("--profile", choices=PROFILES, default=None, help="determinism profile")
    parser.add_argument("--resume", default=None, metavar="PATH|auto", help="continue a run")
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="CHECKPOINT",
        help="start a new run from a checkpoint's weights (the key init_from)",
    )
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="(default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    namespace = parser.parse_intermixed_args(argv)  # overrides may stand before and after flags
    for item in namespace.overrides:
        if "=" not in item:
            raise UserError(f"malformed override {item!r}: expected dotted.key=value")
    return Arguments(
        config=namespace.config,
        seed=None if namespace.seed is None else parse_seed(namespace.seed),
        profile=namespace.profile,
        resume=namespace.resume,
        output_dir=namespace.output_dir,
        overrides=(
            *namespace.overrides,
            *(() if namespace.init_from is None else (f"init_from={namespace.init_from}",)),
        ),
        argv=tuple(argv),
    )
