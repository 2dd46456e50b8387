"""Multi-seed benchmark: `make benchmark SEEDS="0 1 2 3 4" [PROFILE=eval] [JOBS=2] [NPROC=..]
[VARY="init order augment dropout all"]`.

    python -m scripts.benchmark --seeds 0 1 2 [--profile eval] [--config PATH] [--output-dir DIR]
                               [--jobs N] [--nproc N] [--vary SOURCE ...] [-- key=value ...]

Each seed is a normal run in its normal run directory; finished seeds are reused, interrupted ones
resume from their checkpoint, a failing seed is reported without losing the others. The report
(`report.json`, `report.md`, `curves.png`) lands in `<output-dir>/<config-name>/<profile>/benchmark/`;
`make tensorboard LOGDIR=<output-dir>/<config-name>/<profile>` shows every seed as its own run.

With `--vary` (VARY=), each named source of randomness (seeding/plan.py's SOURCES: init, order,
augment, dropout, mix, subset, host) gets its own set of runs in which only that source's seed
varies, every other stream pinned to the config's own seed; `all` varies everything, exactly as a
plain benchmark does. `variance.md` / `.json` / `.png` then say how much spread each source
causes alone and its share of the spread of `all` (tools/variance.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from configs import Config, load_config
from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from runtime.rundir import RunDirectory, benchmark_directory, write_json
from seeding import SOURCES
from tools.aggregate import aggregate, format_summary
from tools.seed_runs import (
    METRICS,
    Launch,
    Variant,
    add_seed_run_arguments,
    epoch_curves,
    first_completed_manifest,
    run_variants,
    seeds_and_launch,
)
from tools.variance import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, format_row, source_spread


def write_markdown(
    path: Path,
    config: Config,
    results: list[dict[str, Any]],
    summary: dict[str, Any],
    context: dict[str, Any],
) -> None:
    failed = [r for r in results if r["status"] == "failed"]
    lines = [
        f"# Benchmark: {config.name}, profile {config.profile}, {len(results)} seed(s)",
        "",
        f"- config: `{context['config_path']}` (resolved in each run's config.yaml); overrides: `{' '.join(context['overrides']) or 'none'}`",
        f"- determinism: {context['verdict']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in context['versions'].items())}",
        f"- processes per run: {context['nproc']}; TensorBoard: `make tensorboard LOGDIR={context['tb_root']}`",
        "- aggregate: mean ± sample std (ddof=1) [95 % Student-t confidence interval]",
        "",
        "| seed | status | val_acc | val_loss | best val_acc (epoch) | wall time (s) | weights sha256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["status"] == "completed":
            m = r["metrics"]
            lines.append(
                f"| {r['seed']} | completed | {m['val_acc']:.4f} | {m['val_loss']:.4f} | "
                f"{r['best_val_acc']:.4f} ({r['best_epoch']}) | {r['wall_time_s']:.1f} | `{r['weights_sha256'][:12]}` |"
            )
        else:
            lines.append(f"| {r['seed']} | **{r['status']}**: {r['error']} | | | | | |")
    lines += ["", "| metric | n | mean ± std [95 % CI] |", "|---|---|---|"]
    lines += [f"| {metric} | {s['n']} | {format_summary(s)} |" for metric, s in summary.items()]
    if failed:
        lines += [
            "",
            f"**{len(failed)} seed(s) failed and are not in the aggregate:** {', '.join(str(r['seed']) for r in failed)}.",
        ]
    pending = [str(r["seed"]) for r in results if r["status"] == "pending"]
    if pending:
        lines += [
            "",
            f"**{len(pending)} seed(s) still queued or running, not in the aggregate:** "
            f"{', '.join(pending)}; run the same command again to add them.",
        ]
    path.write_text("\n".join(lines) + "\n")


def plot_curves(path: Path, results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    curves = {
        r["seed"]: epoch_curves(RunDirectory(Path(r["run_dir"])))
        for r in results
        if r["status"] == "completed"
    }
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for axis, metric, title in (
        (axes[0], "val_acc", "validation accuracy"),
        (axes[1], "val_loss", "validation loss"),
    ):
        lengths = [len(c) for c in curves.values() if c]
        for seed, curve in curves.items():
            axis.plot(
                [p["epoch"] for p in curve],
                [p[metric] for p in curve],
                linewidth=0.8,
                alpha=0.6,
                label=f"seed {seed}",
            )
        if lengths:
            common = min(lengths)
            values = np.array([[p[metric] for p in c[:common]] for c in curves.values() if c])
            epochs = [p["epoch"] for p in next(iter(curves.values()))[:common]]
            mean, std = (
                values.mean(axis=0),
                values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(common),
            )
            axis.plot(epochs, mean, color="black", linewidth=2, label="mean")
            axis.fill_between(
                epochs, mean - std, mean + std, color="gray", alpha=0.3, label="± std"
            )
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    if any(curves.values()):
        axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def vary_variants(
    arguments: argparse.Namespace, seeds: list[int], overrides: tuple[str, ...], base: int
) -> list[Variant]:
    """One variant per source: its own seed varies, every other source pinned to the config's
    seed `base` (`seed_streams.<other>=<base>`); `all` pins nothing. Checked before anything
    runs."""
    unknown = [source for source in arguments.vary if source not in (*SOURCES, "all")]
    if unknown or len(set(arguments.vary)) != len(arguments.vary):
        raise UserError(
            f"VARY: {', '.join(map(repr, unknown)) or 'a source named twice'}; choose among "
            f"{', '.join(SOURCES)} and all"
        )
    variants = []
    for source in arguments.vary:
        others = [other for other in SOURCES if other != source] if source != "all" else []
        pinned = (*overrides, *(f"seed_streams.{other}={base}" for other in others))
        config = load_config(arguments.config, arguments.profile, seeds[0], pinned)
        output = str(Path(arguments.output_dir) / f"vary-{source}")
        variants.append(Variant(source, arguments.config, pinned, output, config))
    return variants


def variance_report(
    arguments: argparse.Namespace, seeds: list[int], launch: Launch, overrides: tuple[str, ...]
) -> int:
    base = load_config(arguments.config, arguments.profile, None, overrides).seed
    variants = vary_variants(arguments, seeds, overrides, base)
    config = variants[0].config
    bench_dir = benchmark_directory(arguments.output_dir, config.name, config.profile)
    results = run_variants(variants, seeds, launch, bench_dir / "logs")
    values = {
        metric: {
            source: [float(r["metrics"][metric]) for r in runs if r["status"] == "completed"]
            for source, runs in results.items()
        }
        for metric in METRICS
    }
    spread = {metric: source_spread(per_source) for metric, per_source in values.items()}
    report = {
        "config": config.name,
        "profile": config.profile,
        "seeds": seeds,
        "pinned_to": base,
        "sources": {source: list(SOURCES.get(source, ("every stream",))) for source in results},
        "method": (
            "per source: sample std (ddof=1) over its seeds, every other source's streams at the "
            f"config's seed ({base}); share = var(source) / var(all); 95 % percentile bootstrap "
            f"intervals ({BOOTSTRAP_RESAMPLES} resamples, numpy seed {BOOTSTRAP_SEED})"
        ),
        "spread": spread,
        "failed": {
            source: [r["seed"] for r in runs if r["status"] == "failed"]
            for source, runs in results.items()
        },
        "runs": results,
    }
    write_json(bench_dir / "variance.json", report)
    lines = [
        f"# Where the seed variance comes from: {config.name}, profile {config.profile}",
        "",
        f"- seeds {' '.join(map(str, seeds))} for each source; the other sources pinned to seed "
        f"{base}; `all` varies every stream (a plain benchmark)",
        f"- method: {report['method']}",
        "- how to read it: a source whose std is close to `all`'s (share near 100 %) makes the "
        "spread by itself; one near 0 % hardly matters. Shares need not add up to 100 % "
        "(sources interact, and each std comes from few seeds: read the intervals).",
    ]
    if "all" not in results:
        lines.append(
            "- no share of all (`—`): `all` was not among the sources; add it "
            f'(VARY="{" ".join([*results, "all"])}") for the share of each source; the runs '
            "already done are reused"
        )
    for metric, rows in spread.items():
        lines += [
            "",
            f"## {metric}",
            "",
            "| source | n | mean | std [95 % CI] | share of all | share 95 % CI |",
            "|---|---|---|---|---|---|",
            *(format_row(source, row) for source, row in rows.items()),
        ]
    failed = {source: seeds for source, seeds in report["failed"].items() if seeds}
    if failed:
        lines += ["", f"**failed runs, left out:** {failed}"]
    (bench_dir / "variance.md").write_text("\n".join(lines) + "\n")
    plot_spread(bench_dir / "variance.png", spread)
    print((bench_dir / "variance.md").read_text())
    print(f"report: {bench_dir}/variance.md, variance.json, variance.png")
    return 1 if failed else 0


def plot_spread(path: Path, spread: dict[str, dict[str, dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [metric for metric in ("val_acc", "val_loss") if metric in spread]
    figure, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4), dpi=110)
    for axis, metric in zip(axes if len(shown) > 1 else [axes], shown, strict=True):
        rows = {s: r for s, r in spread[metric].items() if r["std"] is not None}
        stds = [r["std"] for r in rows.values()]
        low = [r["std"] - r["std_ci95"][0] for r in rows.values()]
        high = [r["std_ci95"][1] - r["std"] for r in rows.values()]
        colours = ["black" if s == "all" else "tab:blue" for s in rows]
        axis.bar(list(rows), stds, yerr=[low, high], color=colours, alpha=0.7, capsize=4)
        axis.set_title(f"{metric}: std over seeds, one source varied at a time")
        axis.set_ylabel("std (95 % bootstrap interval)")
        axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.benchmark", description=__doc__.split("\n")[0]
    )
    add_seed_run_arguments(parser, output_dir="runs")
    parser.add_argument("--vary", nargs="*", default=[], help="sources varied one at a time")
    arguments = parser.parse_args()
    seeds, launch, overrides = seeds_and_launch(arguments)
    arguments.vary = " ".join(arguments.vary).split()
    if arguments.vary:
        return variance_report(arguments, seeds, launch, overrides)
    config = load_config(arguments.config, arguments.profile, seeds[0], overrides)  # validates once
    bench_dir = benchmark_directory(arguments.output_dir, config.name, config.profile)
    variant = Variant("", arguments.config, overrides, arguments.output_dir, config)
    results = run_variants([variant], seeds, launch, bench_dir / "logs")[""]

    summary = aggregate(results, METRICS)
    manifest = first_completed_manifest(results)
    context = {
        "config_path": arguments.config,
        "overrides": overrides,
        "nproc": arguments.nproc,
        "verdict": manifest.get("determinism", {}).get("verdict", "n/a"),
        "versions": manifest.get("versions", {}),
        "tb_root": str(bench_dir.parent),
    }
    report = {
        "config": config.name,
        "profile": config.profile,
        "seeds": results,
        "aggregate": summary,
        "aggregate_method": "sample std (ddof=1); 95 % CI = mean ± t(0.975, n-1)·std/√n over completed seeds",
        "failed_seeds": [r["seed"] for r in results if r["status"] == "failed"],
        "pending_seeds": [r["seed"] for r in results if r["status"] == "pending"],
        **context,
    }
    write_json(bench_dir / "report.json", report)
    write_markdown(bench_dir / "report.md", config, results, summary, context)
    plot_curves(bench_dir / "curves.png", results)
    print((bench_dir / "report.md").read_text())
    print(f"report: {bench_dir}/report.md, report.json, curves.png")
    return 1 if report["failed_seeds"] else 0


if __name__ == "__main__":
    run_reporting_user_errors(main)
