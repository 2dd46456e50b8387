"""The sweep's report in its folder: `sweep.md`, `sweep.json` and three plots
(`history.png`: each trial's score and the best so far; `params.png`: each parameter against
the score; `heldout.png`: base and best on the tuning seeds and on the held-out seeds).

The point of the last table and plot is the winner's curse, measured: the best trial's score is
the maximum of many noisy scores on the same tuning seeds, so it overstates what the point
gives on seeds it was not chosen on; the held-out comparison says what is left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from runtime.rundir import write_json
from tools.sweep.study import INTERRUPTED


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "epochs_reported": len(t.intermediate_values),
            "interrupted": bool(t.user_attrs.get(INTERRUPTED)),
            "runs": t.user_attrs.get("runs"),
            "error": t.user_attrs.get("error"),
        }
        for t in study.get_trials(deepcopy=False)
    ]


def side_by_side(
    metric: str, best: dict[str, Any], base_tuning: float | None, confirm: dict[str, Any] | None
) -> dict[str, Any]:
    """Tuning score and held-out score of the base config and the best point."""
    held = (confirm or {}).get("metrics", {}).get(metric) or {}
    return {
        "metric": metric,
        "base": {"tuning": base_tuning, "held_out": held.get("a_mean")},
        "best": {"tuning": best.get("value"), "held_out": held.get("b_mean")},
        "gain_tuning": None if base_tuning is None else best["value"] - base_tuning,
        "gain_held_out": held.get("diff_mean"),
        "held_out_ci95": held.get("paired_ci95"),
        "held_out_verdict": held.get("verdict"),
        "sequential": (confirm or {}).get("sequential"),
    }


def write(folder: Path, summary: dict[str, Any], study: optuna.Study) -> None:
    write_json(folder / "sweep.json", summary)
    _plots(folder, summary, study)
    (folder / "sweep.md").write_text("\n".join(_markdown(summary)) + "\n")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _markdown(summary: dict[str, Any]) -> list[str]:
    best, side = summary["best"], summary["side_by_side"]
    counts = summary["counts"]
    lines = [
        f"# Sweep {summary['name']}: {summary['metric']} ({summary['direction']}), "
        f"{counts['counted']} trials × {len(summary['tuning_seeds'])} tuning seeds",
        "",
        f"- space: `{summary['space']}`; config `{summary['config']}`, profile {summary['profile']}",
        f"- study: `{summary['storage']}` (`make sweep-dashboard SWEEP={summary['folder']}`)",
        f"- tuning seeds: {', '.join(map(str, summary['tuning_seeds']))}; held-out seeds: "
        f"{', '.join(map(str, summary['held_out_seeds']))}",
        f"- trials: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} "
        f"failed; {counts['interrupted']} interrupted and resumed",
        f"- pruning: {summary['pruning']['runs_stopped']} seed runs stopped mid-run and "
        f"{summary['pruning']['runs_not_started']} never started, of "
        f"{summary['pruning']['runs_planned']} planned",
        f"- best trial {best['number']}: `{' '.join(best['overrides'])}`, tuning score "
        f"{_number(best['value'])}",
        "",
        "## Tuning score and held-out score (the winner's curse, measured)",
        "",
        f"| {summary['metric']} | tuning seeds | held-out seeds |",
        "|---|---|---|",
        f"| base config | {_number(side['base']['tuning'])} | {_number(side['base']['held_out'])} |",
        f"| best point | {_number(side['best']['tuning'])} | {_number(side['best']['held_out'])} |",
        f"| best − base | {_signed(side['gain_tuning'])} | {_signed(side['gain_held_out'])} |",
        "",
        f"- held-out comparison ([confirm/compare.md](confirm/compare.md), `make compare`'s "
        f"statistics): {side['held_out_verdict'] or 'not run'}",
    ]
    if side["sequential"]:
        lines.append(f"- held-out sequential test: {side['sequential']['decision']}")
    lines += [
        "",
        "![history](history.png) ![parameters](params.png) ![held-out](heldout.png)",
        "",
        "## Trials",
        "",
        "| trial | state | score (pruned: its last report) | epochs reported | "
        + " | ".join(summary["params"])
        + " |",
        "|---|---|---|---|" + "---|" * len(summary["params"]),
    ]
    for row in summary["trials"]:
        state = row["state"] + (" (interrupted, run again)" if row["interrupted"] else "")
        values = " | ".join(str(row["params"].get(key, "")) for key in summary["params"])
        lines.append(
            f"| {row['number']} | {state} | {_number(row['value'])} | "
            f"{row['epochs_reported']} | {values} |"
        )
    return lines


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _plots(folder: Path, summary: dict[str, Any], study: optuna.Study) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    maximize = summary["direction"] == "maximize"
    metric = summary["metric"]

    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    numbers = [t.number for t in done]
    values = [t.value for t in done]
    best, running = [], None
    for value in values:
        running = value if running is None else (max if maximize else min)(running, value)
        best.append(running)
    axis.plot(numbers, values, "o", label="complete trial (mean over tuning seeds)")
    axis.step(numbers, best, where="post", label="best so far")
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)):
        if t.intermediate_values:
            step = max(t.intermediate_values)
            axis.plot([t.number], [t.intermediate_values[step]], "x", color="grey")
    axis.set_xlabel("trial")
    axis.set_ylabel(metric)
    axis.set_title("optimization history (x: pruned, last report)", fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "history.png")
    plt.close(figure)

    keys = summary["params"]
    figure, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 4), dpi=110)
    for axis, key in zip(axes if len(keys) > 1 else [axes], keys, strict=True):
        categorical = "Categorical" in summary["space_kinds"].get(key, "")
        xs = [str(t.params[key]) if categorical else t.params[key] for t in done]
        axis.plot(xs, values, "o")
        if "log" in summary["space_kinds"].get(key, ""):
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "params.png")
    plt.close(figure)

    side = summary["side_by_side"]
    figure, axis = plt.subplots(figsize=(5, 4), dpi=110)
    for offset, (label, key) in enumerate((("tuning seeds", "tuning"), ("held-out", "held_out"))):
        heights = [side["base"][key], side["best"][key]]
        positions = [offset * 0.4, 1 + offset * 0.4]
        shown = [(p, h) for p, h in zip(positions, heights, strict=True) if h is not None]
        if shown:
            axis.bar([p for p, _ in shown], [h for _, h in shown], width=0.35, label=label)
    axis.set_xticks([0.2, 1.2], ["base config", "best point"])
    axis.set_ylabel(f"{metric} (mean over seeds)")
    low = [v for row in (side["base"], side["best"]) for v in row.values() if v is not None]
    if low:
        axis.set_ylim(min(low) - 0.05 * abs(min(low)), max(low) + 0.05 * abs(max(low)))
    axis.set_title("tuning vs held-out score (winner's curse)", fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / "heldout.png")
    plt.close(figure)
