"""Compiled against eager training and a plain PyTorch loop, per parallel mode: `make bench-compile`.

For each model (the default small CNN; ResNet-18 on the same 32x32 images) and each layout (one
process; DDP on 2; the world-size-invariant step on 2), train.py runs eager and compiled
(`trainer.compile.enabled=true`); the plain loop (benchmarks/plain_loop.py) runs beside the
one-process rows. The production profile (the speed path), except the invariant rows, which
need exact numerics (eval). Reported per run: steady-state samples/s (the epochs after the first, so
neither compile time nor start-up counts), and the compile time apart: cold (the first
compile, into an empty Inductor cache) and warm (later repeats read the cache, as a benchmark's
second seed does). Repetitions are interleaved, best-of-N (noise only ever slows a run down).
Writes bench-compile.json and .md to --output-dir (runs/bench/compile) and prints the table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from tools.launch import train_subprocess
from tools.measure import run_plain_loop, steady
from tools.report import bench_folder, write_report

MODELS = {
    "smallcnn": [],
    "resnet18": ["model.name=resnet18"],
}
LAYOUTS = {
    "1 process": (1, []),
    "DDP 2": (2, []),
    "invariant 2": (
        2,
        [
            "--profile=eval",  # the mode needs exact numerics: not the production profile
            "data.global_batch_size=128",
            "trainer.micro_batch_size=32",
            "trainer.world_size_invariant=true",
        ],
    ),
}


def run_template(
    nproc: int, config: str, overrides: list[str], output: Path
) -> dict[str, float | None]:
    trained = train_subprocess(["--config", config, *overrides], output, nproc=nproc)
    if trained.returncode != 0:
        raise SystemExit(f"train.py {' '.join(overrides)} failed:\n{trained.tail()}")
    manifest = trained.run.read_manifest() or {}
    rates = [r["samples_per_s"] for r in trained.run.read_metrics("epoch")]
    return {"samples_per_s": steady(rates), "compile_s": manifest.get("compile_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--profile", default="production", help="the speed path by default")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--output-dir", default=bench_folder("compile"))
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    arguments = parser.parse_args()
    common = [
        f"--profile={arguments.profile}",
        f"trainer.epochs={arguments.epochs}",
        "trainer.log_every_steps=1000",
        *arguments.overrides,
    ]
    measured: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        caches = Path(scratch) / "inductor"
        for repeat in range(arguments.repeats):
            for model in arguments.models:
                base = [*common, *MODELS[model]]
                for layout in arguments.layouts:
                    nproc, layout_overrides = LAYOUTS[layout]
                    if nproc == 1:
                        key = f"{model} | {layout} | plain loop"
                        plain = run_plain_loop(arguments.config, base[1:])  # no --profile
                        measured.setdefault(key, []).append({**plain, "compile_s": None})
                    for variant, extra in (
                        ("eager", []),
                        ("compiled", ["trainer.compile.enabled=true"]),
                    ):
                        overrides = [*base, *layout_overrides, *extra]
                        # One cache per model and layout: each row's first compile is cold.
                        cache = caches / f"{model}-{nproc}-{layout.split()[0]}"
                        overrides.append(f"trainer.compile.cache_dir={cache}")
                        output = (
                            Path(scratch)
                            / f"r{repeat}-{model}-{layout.replace(' ', '-')}-{variant}"
                        )
                        key = f"{model} | {layout} | {variant}"
                        result = run_template(nproc, arguments.config, overrides, output)
                        measured.setdefault(key, []).append(result)
                        print(f"repeat {repeat + 1}: {key}: {_row_text(result)}", flush=True)

    rows = {key: _summary(runs) for key, runs in measured.items()}
    lines = [
        f"{arguments.config}, profile {arguments.profile}, {arguments.epochs} epochs, "
        f"{arguments.repeats} interleaved repeats "
        f"(best samples/s of the epochs after the first; compile cold = first repeat)",
        "",
        "| model | layout | run | best samples/s | vs eager | compile cold (s) | compile warm (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in rows.items():
        eager = rows[key.rsplit("|", 1)[0] + "| eager"]["samples_per_s_best"]
        lines.append(
            f"| {key} | {row['samples_per_s_best']:,.0f} | "
            f"{row['samples_per_s_best'] / eager:.2f}x | {_seconds(row['compile_cold_s'])} | "
            f"{_seconds(row['compile_warm_s'])} |"
        )
    result = {
        "config": arguments.config,
        "overrides": common,
        "repeats": arguments.repeats,
        "runs": rows,
        "raw": measured,
    }
    write_report(arguments.output_dir, "bench-compile", result, lines)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    compiles = [run["compile_s"] for run in runs]
    return {
        "samples_per_s_best": max(run["samples_per_s"] for run in runs),
        "samples_per_s_median": statistics.median(run["samples_per_s"] for run in runs),
        "compile_cold_s": compiles[0],
        "compile_warm_s": statistics.median(compiles[1:]) if compiles[1:] and compiles[0] else None,
    }


def _row_text(result: dict[str, Any]) -> str:
    compiling = "" if result["compile_s"] is None else f", compiling {result['compile_s']:.1f} s"
    return f"{result['samples_per_s']:,.0f} samples/s{compiling}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
