"""Is B better than A? `make compare A="k=v ..." B="k=v ..." SEEDS="0 1 2 3 4"`.

    python -m scripts.compare --a "optim.lr=0.05" --b "optim.lr=0.1" --seeds 0 1 2 3 4
                            [--profile eval] [--config PATH] [--output-dir runs/compare]
                            [--jobs N] [--nproc N] [--metrics val_acc val_loss] [-- key=value ...]

A and B are each a list of `key=value` overrides, optionally led by a config file
(`--a "configs/other.yaml model.width=32"`); an empty one is the config as it is. Both start
from --config and the common overrides after `--`. Each comparison has its own folder,
`<output-dir>/<name>/` (`--name`, or made from A and B), so comparisons never meet: every
(variant, seed) runs as a normal train.py run under `<name>/A/` and `<name>/B/` (the multi-seed
benchmark's runner: resumable, failures isolated, progress lines), then `compare.json`,
`compare.md` and `compare.png` are written to `<name>/`. Statistics: `tools/paired.py`.

`--sequential` (SEQUENTIAL=1 MAX_SEEDS=10 ALPHA=0.05) adds seed pairs in rounds, 3 and then 2
more up to MAX_SEEDS, and stops as soon as the group-sequential test of the first metric decides
(tools/sequential.py: the false "different" rate over all looks stays at ALPHA). SEEDS, if given,
is the order seeds are taken in; by default 0, 1, 2, ...
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from configs import Config, load_config
from configs.keys import differing_keys, keys_in_role
from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from runtime.rundir import write_json
from tools.paired import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, compare_metric
from tools.seed_runs import (
    METRICS,
    Launch,
    Progress,
    Variant,
    add_seed_run_arguments,
    first_completed_manifest,
    run_variants,
    seeds_and_launch,
)
from tools.sequential import METHOD, SPENT_SHARE, Look, look_at, looks, nominal_levels

# Keys that group the same samples into other batches (they change no sample's draws).
_BATCHING = {"data.batch_size", "data.global_batch_size"}


def parse_variant(text: str, label: str, default_config: str) -> tuple[str, tuple[str, ...]]:
    """`[config.yaml] key=value ...` -> (config path, overrides)."""
    tokens = shlex.split(text or "")
    config = default_config
    if tokens and "=" not in tokens[0] and tokens[0].endswith((".yaml", ".yml")):
        config, tokens = tokens[0], tokens[1:]
    for token in tokens:
        if "=" not in token:
            raise UserError(f"{label}: malformed override {token!r}: expected dotted.key=value")
    return config, tuple(tokens)


def comparison_name(a: str, b: str) -> str:
    """A folder name from A and B: readable, and short (a digest keeps long ones apart)."""

    def part(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._=+-]+", "_", " ".join(shlex.split(text or ""))) or "as-is"

    name = f"{part(a)}__vs__{part(b)}"
    if len(name) > 80:
        digest = hashlib.sha256(f"{a}\0{b}".encode()).hexdigest()[:8]
        name = f"{name[:71]}-{digest}"
    return name


def describe_differences(differences: dict[str, list[Any]]) -> list[str]:
    """The keys that differ, each in a few words: a pipeline by the transforms it adds, drops
    or changes (its serialized form runs to a thousand characters), any other key by value."""
    described = []
    for key, (first, second) in differences.items():
        if isinstance(first, list | dict) or isinstance(second, list | dict):
            described.append(f"`{key}`: {_pipeline_change(first, second)}")
        else:
            described.append(f"`{key}`: {first!r} → {second!r}")
    return described


def _pipeline_change(first: Any, second: Any) -> str:
    def steps(value: Any) -> list[dict[str, Any]]:
        if isinstance(value, dict):
            value = value.get("transforms", [value])
        return [step for step in value or [] if isinstance(step, dict)]

    def name(step: dict[str, Any]) -> str:
        return str(step.get("__class_fullname__", "?")).rsplit(".", 1)[-1]

    a, b = steps(first), steps(second)
    names_a, names_b = [name(s) for s in a], [name(s) for s in b]
    parts = [f"+{n}" for n in names_b if n not in names_a]
    parts += [f"-{n}" for n in names_a if n not in names_b]
    for step in a:
        match = next((s for s in b if name(s) == name(step)), None)
        if match is not None and match != step:
            changed = sorted(k for k in set(step) | set(match) if step.get(k) != match.get(k))
            parts.append(f"{name(step)}({', '.join(changed)})")
    return " ".join(parts) or "the same transforms, in another order"


def pairing(config: Config, differences: dict[str, list[Any]]) -> dict[str, Any]:
    """What a seed pair shares, computed from the keys that differ and their roles."""
    computing = keys_in_role(config, list(differences), "computation", "stopping")
    draws = [k for k in computing if k.startswith("data.") and k not in _BATCHING]
    notes = []
    if draws:
        notes.append(
            f"{', '.join(draws)} changes which samples are drawn or how they are augmented: "
            "pairs do not share data order and augmentation, so pairing cancels less noise"
        )
    elif any(key in _BATCHING for key in computing):
        notes.append(
            "the batch size differs: pairs share the data order and every sample's "
            "augmentation, grouped into other batches"
        )
    else:
        notes.append("pairs share the data order and every sample's augmentation")
    model_keys = [key for key in computing if key.startswith("model.")]
    if any(key != "model.dropout" for key in model_keys):
        notes.append("the model differs: its initial weights are drawn anew")
    else:
        notes.append("pairs start from the same initial weights")
    if "model.dropout" in model_keys:
        notes.append("the dropout rate differs, so the dropout masks differ")
    if not computing:
        notes.append("A and B compute the same thing: every difference must be exactly 0")
    return {"shares_data_order_and_augmentation": not draws, "notes": notes}


def paired_values(
    results: dict[str, list[dict[str, Any]]], metric: str
) -> dict[int, tuple[float, float]]:
    pairs = {}
    for a, b in zip(results["A"], results["B"], strict=True):
        if a["status"] == "completed" and b["status"] == "completed":
            pairs[a["seed"]] = (float(a["metrics"][metric]), float(b["metrics"][metric]))
    return pairs


def excluded(results: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    left_out = {}
    for a, b in zip(results["A"], results["B"], strict=True):
        failed = [(label, r) for label, r in (("A", a), ("B", b)) if r["status"] != "completed"]
        if failed:
            left_out[str(a["seed"])] = "; ".join(
                f"{r['status']} in {label}: {r['error']}" for label, r in failed
            )
    return left_out


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    a, b = report["a"], report["b"]
    lines = [
        f"# Compare: B vs A, {len(report['seeds'])} seed(s), profile {report['profile']}",
        "",
        f"- A: `{a['spec']}` (config `{a['config']}`)",
        f"- B: `{b['spec']}` (config `{b['config']}`)",
        "- keys that differ (computed from the resolved configs): "
        + ("; ".join(describe_differences(report["differing_keys"])) or "none"),
        f"- seeds: {', '.join(map(str, report['seeds']))}; processes per run: {report['world_size']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
        f"- paired by seed: {'; '.join(report['pairing']['notes'])}",
        f"- statistics: {report['method']}",
    ]
    sequential = report.get("sequential")
    if sequential:
        lines += [
            f"- **sequential ({sequential['metric']}): {sequential['decision']}** "
            f"(at most {sequential['max_seeds']} pairs); {sequential['guarantee']}",
            f"- sequential method: {sequential['method']}",
            "- looks: "
            + "; ".join(
                f"{look['pairs']} pairs: p = "
                + ("n/a" if look["p_value"] is None else f"{look['p_value']:.4g}")
                + f" (boundary {look['level']:.4g}){', decided' if look['decided'] else ''}"
                for look in sequential["looks"]
            ),
        ]
    if report["excluded_seeds"]:
        lines.append(
            "- **left out of the pairs**: "
            + "; ".join(f"seed {s}: {why}" for s, why in report["excluded_seeds"].items())
        )
    for metric, result in report["metrics"].items():
        better = "higher" if result["higher_is_better"] else "lower"
        headline, decided_by, disagreement = decision(metric, result, sequential)
        lines += [
            "",
            f"## {metric} ({better} is better): {headline}",
            "",
            f"- decided by: {decided_by}",
            *([f"- {disagreement}"] if disagreement else []),
            "",
            "| seed | A | B | B − A |",
            "|---|---|---|---|",
            *(
                f"| {seed} | {v['a']:.4f} | {v['b']:.4f} | {v['diff']:+.4f} |"
                for seed, v in result["per_seed"].items()
            ),
        ]
        if result["n_pairs"] >= 2:
            lines += [
                "",
                f"- mean B − A: {result['diff_mean']:+.4f} over {result['n_pairs']} pairs "
                f"(A {result['a_mean']:.4f}, B {result['b_mean']:.4f})",
                f"- paired t 95 % CI: {_interval(result['paired_ci95'])}; paired bootstrap "
                f"95 % CI: {_interval(result['bootstrap_ci95'])}",
                f"- unpaired (Welch) 95 % CI: {_interval(result['unpaired_ci95'])}: what the "
                "same runs would say without pairing",
                f"- sign-flip permutation p-value (no normality assumed): "
                f"{result['sign_flip_p']:.4g}",
                f"- P(B better than A) over seed pairs: {result['p_improvement']:.2f}",
            ]
    path.write_text("\n".join(lines) + "\n")


def decision(
    metric: str, result: dict[str, Any], sequential: dict[str, Any] | None
) -> tuple[str, str, str]:
    """(headline, the test that decides it, a sentence on why a printed check says otherwise,
    or "").

    One test decides each metric, so the headline never contradicts itself: the sequential
    test for its metric, the paired t 95 % interval otherwise. The bootstrap interval and the
    sign-flip p are checks printed beside it; where one says otherwise, the report says why in
    one sentence, the reason belonging to that check and that direction."""
    n = result["n_pairs"]
    if sequential and sequential["metric"] == metric:
        different = sequential["decision"].startswith("different")
        last = sequential["looks"][-1]
        headline = f"sequential: {sequential['decision']}"
        decided_by = (
            f"the group-sequential paired t-test (at most {sequential['max_seeds']} pairs); "
            "the intervals below are fixed-design, not adjusted for the sequential stop"
        )
        stricter = (
            f"the sequential test's levels are stricter than a fixed 95 % test's (its look at "
            f"{last['pairs']} pairs needed p ≤ {last['level']:.4g}), which keeps its error "
            "rate over every look at α"
        )
    else:
        different = _excludes_zero(result.get("paired_ci95"))
        headline = result["verdict"]
        decided_by = "the paired t 95 % CI" + (
            " (fixed design, not adjusted for the sequential stop)" if sequential else ""
        )
        stricter = (
            "with few pairs the BCa bootstrap interval is too narrow (it cannot reach past the "
            "observed differences), and the t interval, which widens for the unknown spread, "
            "decides"
        )
    reasons = []
    if _excludes_zero(result.get("bootstrap_ci95")) != different:
        reasons.append(
            f"the paired bootstrap 95 % CI excludes 0 but {stricter}"
            if not different
            else "the paired bootstrap 95 % CI holds 0: it is a check that assumes no "
            "normality, and the deciding test's difference stands"
        )
    flip = result.get("sign_flip_p")
    if flip is not None and (flip < 0.05) != different:
        reasons.append(
            f"the sign-flip p is {flip:.3g} but {stricter}"
            if not different
            else f"the sign-flip p is {flip:.3g}: with {n} pairs it cannot go below "
            f"2/2^{n} = {2 / 2**n:.3g}, so it cannot confirm at 0.05"
            if 2 / 2**n >= 0.05
            else f"the sign-flip p is {flip:.3g}: it assumes no normality and sees less"
        )
    if not reasons or n < 2:
        return headline, decided_by, ""
    shows = "shows a difference" if different else "shows no difference"
    return headline, decided_by, f"the deciding test {shows}; " + "; ".join(reasons)


def _excludes_zero(interval: list[float] | None) -> bool:
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


def _interval(interval: list[float] | None) -> str:
    return "n/a" if interval is None else f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"


def plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report["metrics"]
    ticks = [
        _short(f"A: {report['a']['spec'] or 'the config as is'}"),
        _short(f"B: {report['b']['spec'] or 'the config as is'}"),
    ]
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4.5), dpi=110)
    for axis, (metric, result) in zip(
        axes if len(metrics) > 1 else [axes], metrics.items(), strict=True
    ):
        for seed, values in result["per_seed"].items():
            axis.plot(
                [0, 1], [values["a"], values["b"]], marker="o", alpha=0.7, label=f"seed {seed}"
            )
        axis.set_xticks([0, 1], ticks, fontsize=7)
        axis.set_xlim(-0.3, 1.3)
        axis.set_ylabel(
            f"{metric} ({'higher' if result['higher_is_better'] else 'lower'} is better)"
        )
        axis.set_title(result["verdict"], fontsize=8, wrap=True)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, title="pairs", title_fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True)
class Comparison:
    """A comparison as asked for, every part checked before anything runs."""

    arguments: argparse.Namespace
    seeds: list[int]
    launch: Launch
    variants: list[Variant]
    specs: dict[str, tuple[str, str]]  # label -> (as given, config file)

    @property
    def output(self) -> Path:
        """This comparison's own folder."""
        name = self.arguments.name or comparison_name(self.arguments.a, self.arguments.b)
        return Path(self.arguments.output_dir) / name


def checked(argv: list[str] | None = None) -> Comparison:
    """Parse and check the command line, A and B (each a config file plus overrides) and the
    metrics; any problem is a one-line error before anything is written or trained."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--a", default="", help='variant A: "[config.yaml] key=value ..."')
    parser.add_argument("--b", default="", help='variant B: "[config.yaml] key=value ..."')
    parser.add_argument("--metrics", nargs="*", default=list(METRICS))
    parser.add_argument("--name", default="", help="this comparison's folder (default: from A, B)")
    parser.add_argument("--sequential", action="store_true", help="add seeds until a decision")
    parser.add_argument("--max-seeds", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.05)
    add_seed_run_arguments(parser, output_dir="runs/compare")
    arguments = parser.parse_args(argv)
    if arguments.sequential:
        if arguments.max_seeds < 3 or not 0 < arguments.alpha < 1:
            raise UserError("SEQUENTIAL=1 needs MAX_SEEDS >= 3 and 0 < ALPHA < 1")
        given = " ".join(arguments.seeds).split()
        if given and len(given) < arguments.max_seeds:
            raise UserError(
                f"SEQUENTIAL=1 takes up to MAX_SEEDS={arguments.max_seeds} seeds: SEEDS has "
                f"{len(given)}; give at least {arguments.max_seeds} or leave SEEDS empty"
            )
        pool = given[: arguments.max_seeds] or [str(s) for s in range(arguments.max_seeds)]
        arguments.seeds = pool
    seeds, launch, common = seeds_and_launch(arguments)
    unknown = [metric for metric in arguments.metrics if metric not in METRICS]
    if unknown or not arguments.metrics:
        raise UserError(
            f"unknown metric {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(METRICS)}"
        )
    if arguments.name and not re.fullmatch(r"[A-Za-z0-9._=+-]+", arguments.name):
        raise UserError(f"--name {arguments.name!r}: use letters, digits and . _ = + - only")
    output = Path(arguments.output_dir) / (
        arguments.name or comparison_name(arguments.a, arguments.b)
    )
    variants, specs = [], {}
    for label, text in (("A", arguments.a), ("B", arguments.b)):
        config_path, overrides = parse_variant(text, label, arguments.config)
        try:
            config = load_config(config_path, arguments.profile, seeds[0], (*common, *overrides))
        except UserError as error:
            raise UserError(f"{label}: {error}") from None
        variants.append(
            Variant(label, config_path, (*common, *overrides), str(output / label), config)
        )
        specs[label] = (text, config_path)
    return Comparison(arguments, seeds, launch, variants, specs)


def sequential_runs(
    comparison: Comparison, output: Path
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Rounds of seed pairs until a look decides or MAX_SEEDS pairs ran; the runs and the
    sequential part of the report."""
    arguments = comparison.arguments
    counts = looks(3, 2, len(comparison.seeds))
    metric = arguments.metrics[0]
    taken: list[Look] = []
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in ("A", "B")}
    progress = Progress(0)
    for k, count in enumerate(counts):
        seeds = comparison.seeds[:count]
        # only this look's new seeds: a run is run (or said reused) once, not at every look
        new = comparison.seeds[len(results["A"]) : count]
        more = run_variants(comparison.variants, new, comparison.launch, output / "logs", progress)
        results = {label: results[label] + more[label] for label in results}
        pairs = paired_values(results, metric)
        differences = np.array([pairs[s][1] - pairs[s][0] for s in seeds if s in pairs])
        look = look_at(differences, counts, k, arguments.alpha)
        taken.append(look)
        p_value = "n/a" if look.p_value is None else f"{look.p_value:.4g}"
        print(
            f"sequential: look {k + 1}/{len(counts)}: {len(differences)} pairs of {metric}, "
            f"p = {p_value}, boundary p ≤ {look.level:.4g}: "
            + ("decided" if look.decided else "go on" if k + 1 < len(counts) else "no decision"),
            flush=True,
        )
        if look.decided:
            break
    levels = nominal_levels(tuple(counts), arguments.alpha)
    final = taken[-1]
    sequential = {
        "metric": metric,
        "alpha": arguments.alpha,
        "max_seeds": len(comparison.seeds),
        "planned_looks": counts,
        "looks": [look.as_dict() for look in taken],
        "seeds_used": final.pairs,
        "decision": (
            f"different after {final.pairs} pairs"
            if final.decided
            else f"no difference shown with {final.pairs} pairs"
        ),
        "method": METHOD.format(
            looks=", ".join(map(str, counts)),
            alpha=arguments.alpha,
            levels=", ".join(f"{level:.4g}" for level in levels),
            spent_share=SPENT_SHARE,
        ),
        "guarantee": (
            f"if A and B do not differ, the chance that any look says 'different' is at most "
            f"{arguments.alpha} (normal seed differences; measured by simulation: "
            "make bench-sequential, tests/unit/test_sequential.py)"
        ),
    }
    return results, sequential


def main() -> int:
    comparison = checked()
    arguments, output = comparison.arguments, comparison.output
    a, b = comparison.variants
    sequential = None
    if arguments.sequential:
        results, sequential = sequential_runs(comparison, output)
    else:
        results = run_variants(
            comparison.variants, comparison.seeds, comparison.launch, output / "logs"
        )
    used = [r["seed"] for r in results["A"]]

    manifest = first_completed_manifest([r for runs in results.values() for r in runs])
    differences = differing_keys(a.config, b.config)
    report = {
        "a": {
            "spec": comparison.specs["A"][0],
            "config": comparison.specs["A"][1],
            "overrides": list(a.overrides),
        },
        "b": {
            "spec": comparison.specs["B"][0],
            "config": comparison.specs["B"][1],
            "overrides": list(b.overrides),
        },
        "differing_keys": differences,
        "seeds": used,
        "sequential": sequential,
        "profile": arguments.profile,
        "world_size": arguments.nproc,
        "versions": manifest.get("versions", {}),
        "determinism": manifest.get("determinism", {}).get("verdict", "n/a"),
        "pairing": pairing(a.config, differences),
        "method": (
            "paired Student-t and paired BCa bootstrap (scipy.stats.bootstrap, "
            f"{BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}) 95 % CIs of mean(B − A); "
            "sign-flip permutation p-value; unpaired Welch 95 % CI for contrast; P(B better "
            "than A) over seed pairs, ties 1/2"
        ),
        "bootstrap": {"seed": BOOTSTRAP_SEED, "resamples": BOOTSTRAP_RESAMPLES, "method": "BCa"},
        "excluded_seeds": excluded(results),
        "metrics": {
            metric: compare_metric(paired_values(results, metric), metric)
            for metric in arguments.metrics
        },
        "runs": results,
    }
    write_json(output / "compare.json", report)
    write_markdown(output / "compare.md", report)
    plot(output / "compare.png", report)
    print((output / "compare.md").read_text())
    print(f"report: {output}/compare.md, compare.json, compare.png")
    return 1 if report["excluded_seeds"] else 0


if __name__ == "__main__":
    run_reporting_user_errors(main)
