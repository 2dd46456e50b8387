"""What each feature of the reference recipe costs: `make bench-recipe`.

The default job in the production profile, without the recipe (the base) and with one feature
at a time, then with all of them (configs/recipe.yaml's settings), run in interleaved rounds in
one invocation: steady-state training samples/s (epochs after the first; evaluation, which the
EMA doubles, and start-up excluded) and the wall time of the whole run (evaluation included).
Writes bench-recipe.json and bench-recipe.md to --output-dir (runs/bench/recipe).

Why paired rounds: on a shared 2-core machine the speed drifts by several per cent between
minutes; each round runs the base and every variant back to back, and a variant's cost is the
median over rounds of its ratio to that round's base. The order rotates from round to round, so
no variant always runs first (the first run of a round was measured slower).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from tools.launch import train_subprocess
from tools.measure import steady
from tools.report import bench_folder, write_report

VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "label smoothing 0.1": ("optim.label_smoothing=0.1",),
    "mixup 0.2 / cutmix 1.0": ("data.mix.mixup_alpha=0.2", "data.mix.cutmix_alpha=1.0"),
    "EMA every step": ("trainer.ema.enabled=true", "trainer.ema.decay=0.99"),
    "accumulation 2 x 64": ("trainer.accumulate_steps=2", "data.batch_size=64"),
    "clip grad norm 5": ("optim.clip_grad_norm=5.0",),
    "warmup 1 epoch": ("optim.warmup_epochs=1",),
}
ALL = tuple(override for overrides in VARIANTS.values() for override in overrides)


def run(overrides: tuple[str, ...], common: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as output:
        started = time.perf_counter()
        trained = train_subprocess([*common, *overrides], output)
        wall = time.perf_counter() - started
        if trained.returncode != 0:
            raise SystemExit(f"train.py {' '.join(overrides)} failed:\n{trained.tail()}")
        rates = [r["samples_per_s"] for r in trained.run.read_metrics("epoch")]
    return {"samples_per_s": steady(rates), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--profile", default="production")
    parser.add_argument("--output-dir", default=bench_folder("recipe"))
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    arguments = parser.parse_args()
    common = [
        "--config",
        arguments.config,
        "--profile",
        arguments.profile,
        f"trainer.epochs={arguments.epochs}",
        "trainer.log_every_steps=1000",
        *arguments.overrides,
    ]
    variants = {**VARIANTS, "all together": ALL}
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(arguments.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            measured[name].append(run(variants[name], common))
        print(
            f"round {repeat + 1}/{arguments.repeats}: "
            + "  ".join(
                f"{name} {runs[-1]['samples_per_s']:,.0f}/s" for name, runs in measured.items()
            ),
            flush=True,
        )

    def paired(name: str, key: str) -> float:
        """The median over rounds of the variant's ratio to the base of the same round."""
        pairs = zip(measured[name], measured["base"], strict=True)
        return statistics.median(mine[key] / base[key] for mine, base in pairs)

    rows = {
        name: {
            "samples_per_s_median": statistics.median(r["samples_per_s"] for r in runs),
            "speed_vs_base": paired(name, "samples_per_s"),
            "wall_s_median": statistics.median(r["wall_s"] for r in runs),
            "wall_vs_base": paired(name, "wall_s"),
        }
        for name, runs in measured.items()
    }
    result = {"common": common, "repeats": arguments.repeats, "variants": variants, "runs": rows}
    lines = [
        f"{arguments.config}, profile {arguments.profile}, {arguments.epochs} epochs, "
        f"{arguments.repeats} paired rounds",
        "",
        "| variant | training samples/s (median) | vs base | run wall s (median) | vs base |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {row['samples_per_s_median']:,.0f} | {row['speed_vs_base']:.3f}x "
            f"| {row['wall_s_median']:.1f} | {row['wall_vs_base']:.3f}x |"
            for name, row in rows.items()
        ),
    ]
    write_report(arguments.output_dir, "bench-recipe", result, lines)


if __name__ == "__main__":
    main()
