"""What compare and the multi-seed runner refuse, and what a seed pair shares, in this process.

End to end (real runs, one refusal each) in end_to_end/test_compare.py and test_benchmark.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import scripts.compare as compare_script
from configs import load_config
from configs.keys import differing_keys
from foundation.errors import UserError
from runtime.rundir import RunDirectory
from scripts.compare import checked, comparison_name, decision, describe_differences, pairing
from tools import slurm_array
from tools.seed_runs import parse_seeds
from tools.slurm_array import abandoned


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ([], "no seeds given"),
        (["1", "2", "1"], "duplicate seed(s): 1"),
        (["1", "x"], "seed 'x' is not an integer in [0, 2**64)"),
        (["-3"], "seed '-3' is not an integer"),
    ],
)
def test_bad_seed_lists_are_refused(seeds: list[str], message: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_seeds(seeds)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("a", "b", "more", "message"),
    [
        ("optim.lr=0.1", "optim.lr=0.2", ["--name", "a/b"], "--name 'a/b': use letters"),
        ("optim.lrr=0.1", "optim.lr=0.1", [], "A: unknown config key 'optim.lrr'"),
        ("optim.lr=0.1", "optim.lr=0.2", ["--metrics", "val_f1"], "unknown metric 'val_f1'"),
        ("optim.lr=0.1", "optim.lr", [], "B: malformed override 'optim.lr'"),
        ("optim.lr=0.1", "nowhere.yaml", [], "B: config file not found: nowhere.yaml"),
    ],
)
def test_bad_comparisons_are_refused_before_anything_runs(
    a: str, b: str, more: list[str], message: str
) -> None:
    with pytest.raises(UserError) as caught:
        checked(["--a", a, "--b", b, "--seeds", "0", "1", *more])
    assert str(caught.value).startswith(message)


def test_an_empty_variant_is_the_config_as_it_is_and_each_comparison_has_its_folder() -> None:
    comparison = checked(["--a", "", "--b", "optim.lr=0.1", "--seeds", "0"])
    a = comparison.variants[0]
    assert a.overrides == () and a.config_path == "configs/default.yaml"
    assert comparison.output == Path("runs/compare/as-is__vs__optim.lr=0.1")
    assert str(a.output_dir) == "runs/compare/as-is__vs__optim.lr=0.1/A"
    named = checked(["--a", "", "--b", "optim.lr=0.1", "--seeds", "0", "--name", "lr"])
    assert named.output == Path("runs/compare/lr")
    long = comparison_name("data.augment.train=" + "x" * 200, "")
    assert len(long) <= 80 and long != comparison_name("data.augment.train=" + "y" * 200, "")


def test_a_pipeline_that_differs_is_said_by_its_transforms() -> None:
    first = [{"__class_fullname__": "HorizontalFlip", "p": 0.5}, {"__class_fullname__": "Blur"}]
    second = [{"__class_fullname__": "HorizontalFlip", "p": 0.9}, {"__class_fullname__": "Rotate"}]
    (line,) = describe_differences({"data.augment.train.transform.transforms": [first, second]})
    assert line == "`data.augment.train.transform.transforms`: +Rotate -Blur HorizontalFlip(p)"


def pairing_of(a: tuple[str, ...], b: tuple[str, ...]) -> dict:
    first = load_config("configs/default.yaml", overrides=a)
    second = load_config("configs/default.yaml", overrides=b)
    return pairing(first, differing_keys(first, second))


def test_what_a_seed_pair_shares_follows_the_keys_that_differ() -> None:
    same = pairing_of((), ("data.num_workers=2", "trainer.log_every_steps=5"))
    assert "every difference must be exactly 0" in " ".join(same["notes"])
    lr = pairing_of((), ("optim.lr=0.1",))
    assert lr["shares_data_order_and_augmentation"] is True
    assert "pairs start from the same initial weights" in lr["notes"]
    dropout = pairing_of((), ("model.dropout=0.0",))
    assert "the dropout rate differs, so the dropout masks differ" in dropout["notes"]
    data = pairing_of((), ("data.synthetic.seed=1",))
    assert data["shares_data_order_and_augmentation"] is False
    width = pairing_of((), ("model.width=8",))
    assert "the model differs: its initial weights are drawn anew" in width["notes"]


def test_a_run_whose_task_ended_abruptly_stops_claiming_to_run(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    run.create()
    run.write_manifest({"status": "running", "seed": 1})
    reason = abandoned(run, "NODE_FAIL", "12_3")
    assert reason == "SLURM task 12_3 ended NODE_FAIL"
    assert run.read_manifest() == {
        "status": "failed",
        "seed": 1,
        "fault": "scheduler",
        "error": reason,
    }
    run.write_manifest({"status": "interrupted"})
    abandoned(run, "CANCELLED", "12_4")
    assert run.read_manifest() == {"status": "interrupted"}  # it said what happened itself


@pytest.mark.skipif(shutil.which("sinfo") is None, reason="no SLURM client here")
def test_a_slurm_that_does_not_answer_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """sinfo retries a missing configuration for a minute; the runner gives up sooner."""
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/slurm.conf")
    monkeypatch.setattr(slurm_array, "REACH_TIMEOUT_S", 1.0)
    with pytest.raises(UserError) as caught:
        slurm_array.check_reachable()
    assert str(caught.value).startswith("LAUNCHER=slurm, but no SLURM answers within 1 s (sinfo: ")


def test_each_look_runs_only_its_new_seeds_so_a_run_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sequential loop asks the runner for each look's new seeds only: a reused run is
    printed once, not again at every look (12 runs over 3 looks: 12 run lines, not 26)."""
    comparison = checked(
        [
            "--a",
            "",
            "--b",
            "optim.lr=0.1",
            "--sequential",
            "--max-seeds",
            "6",
            "--output-dir",
            str(tmp_path),
        ]
    )
    asked: list[list[int]] = []

    def fake_run_variants(variants, seeds, launch, log_dir, progress=None):  # type: ignore[no-untyped-def]
        asked.append(list(seeds))
        return {
            v.label: [
                {
                    "seed": s,
                    "status": "completed",
                    "metrics": {"val_acc": 0.5 + 0.001 * s * (v.label == "B")},
                }
                for s in seeds
            ]
            for v in variants
        }

    monkeypatch.setattr(compare_script, "run_variants", fake_run_variants)
    results, sequential = compare_script.sequential_runs(comparison, tmp_path)
    assert asked == [[0, 1, 2], [3, 4], [5]]
    assert [r["seed"] for r in results["A"]] == [0, 1, 2, 3, 4, 5]
    assert sequential["seeds_used"] == 6


SEQUENTIAL_6 = {
    "metric": "val_acc",
    "decision": "no difference shown with 6 pairs",
    "max_seeds": 6,
    "looks": [
        {"pairs": 3, "level": 0.0004},
        {"pairs": 5, "level": 0.01},
        {"pairs": 6, "level": 0.03},
    ],
}


def test_the_headline_names_its_test_and_says_why_a_check_disagrees() -> None:
    """The issue's case: the sequential test shows no difference with 6 pairs while the
    bootstrap CI excludes 0 and the sign-flip p is 0.031: one sentence says why."""
    accuracy = {
        "n_pairs": 6,
        "bootstrap_ci95": [-0.084, -0.014],
        "sign_flip_p": 0.031,
        "paired_ci95": [-0.09, 0.001],
        "verdict": "no evidence of a difference at 95 %",
    }
    headline, decided_by, why = decision("val_acc", accuracy, SEQUENTIAL_6)
    assert headline == "sequential: no difference shown with 6 pairs"
    assert decided_by.startswith("the group-sequential paired t-test")
    assert why.startswith(
        "the deciding test shows no difference; the paired bootstrap 95 % CI excludes 0 but "
        "the sequential test's levels are stricter than a fixed 95 % test's (its look at 6 "
        "pairs needed p ≤ 0.03)"
    )
    assert "; the sign-flip p is 0.031 but the sequential test's levels are stricter" in why
    loss = {
        "n_pairs": 6,
        "bootstrap_ci95": [0.01, 0.05],
        "sign_flip_p": 0.031,
        "paired_ci95": [0.005, 0.06],
        "verdict": "B higher (worse), 95 % CI [+0.0050, +0.0600]",
    }
    headline, decided_by, why = decision("val_loss", loss, SEQUENTIAL_6)
    assert headline.startswith("B higher (worse)") and why == ""
    assert decided_by == "the paired t 95 % CI (fixed design, not adjusted for the sequential stop)"
    # 5 pairs, all one way: the sign-flip p cannot go below 2/32, and the report says so
    five = {**loss, "n_pairs": 5, "sign_flip_p": 0.0625}
    assert decision("val_loss", five, None)[2] == (
        "the deciding test shows a difference; the sign-flip p is 0.0625: with 5 pairs it "
        "cannot go below 2/2^5 = 0.0625, so it cannot confirm at 0.05"
    )
