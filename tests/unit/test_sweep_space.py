"""The sweep's input checks and its study's bookkeeping, in this process (no training): every
bad input is one UserError naming it before anything is written; the seeded sampler proposes
the same trials, also across a kill; an interrupted trial runs again with its parameters.

End to end (real runs, a real kill, the dashboard): end_to_end/test_sweep.py."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import scripts.sweep as sweep_script
from foundation.errors import UserError
from tools.sweep.objective import TrialOutcome
from tools.sweep.space import load_space
from tools.sweep.study import counted, open_study

GOOD = """\
metric: val_acc
params:
  optim.lr: {low: 0.005, high: 0.2, log: true}
  model.dropout: {choices: [0.1, 0.3]}
"""


def check(tmp_path: Path, space: str, *more: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(space)
    output = tmp_path / "out"
    arguments = sweep_script.parse(
        ["--space", str(path), "--trials", "3", "--seeds", "0", "1", "--output-dir", str(output),
         *more]
    )  # fmt: skip
    try:
        sweep_script.checked(arguments)
    finally:
        assert not output.exists()  # nothing written, refused or not


@pytest.mark.parametrize(
    ("space", "more", "message"),
    [
        (GOOD.replace("optim.lr", "optim.lrr"), (), "unknown config key 'optim.lrr'"),
        (GOOD.replace("high: 0.2", "high: 0.005"), (), "optim.lr: empty range (low 0.005"),
        (GOOD.replace("[0.1, 0.3]", "[]"), (), "model.dropout: empty choices"),
        (GOOD.replace("val_acc", "val_f1"), (), "metric 'val_f1' is not reported by the runs"),
        (GOOD, ("--held-out-seeds", "1", "7"), "held-out seed(s) 1 are also tuning seeds"),
        (GOOD.replace("low: 0.005", "low: 0"), (), "a log range needs low > 0"),
        (GOOD + "shell: rm -rf /\n", (), "unknown field(s) shell"),
        ("!!python/object/apply:os.system [echo hi]\n", (), "cannot read it (ConstructorError)"),
        (GOOD.replace("model.dropout", "../../etc"), (), "../../etc: not a dotted config key"),
        (GOOD.replace("{choices: [0.1, 0.3]}", "{choices: [0.1, 2.0]}"), (), "model.dropout=2.0"),
        (GOOD, ("--name", "../escape"), "sweep name '../escape'"),
        (GOOD + "prune_from_epoch: 0\n", (), "prune_from_epoch must be an epoch"),
    ],
)
def test_bad_input_is_one_error_naming_it_and_nothing_is_written(
    tmp_path: Path, space: str, more: tuple[str, ...], message: str
) -> None:
    with pytest.raises(UserError) as caught:
        check(tmp_path, space, *more)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_no_space_is_one_line() -> None:
    arguments = sweep_script.parse(["--space", "", "--trials", "3", "--seeds", "0"])
    with pytest.raises(UserError, match=r"no space given: use SPACE=configs/sweeps/NAME.yaml"):
        sweep_script.checked(arguments)


def test_a_good_space_passes(tmp_path: Path) -> None:
    check(tmp_path, GOOD)


def fake_sweep(
    tmp_path: Path, trials: int, monkeypatch: pytest.MonkeyPatch, space_text: str = GOOD
) -> optuna.Study:
    """tune() with a deterministic stand-in for the runs (a function of the parameters)."""
    tmp_path.mkdir(exist_ok=True)
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    arguments = sweep_script.parse(
        ["--space", str(space), "--trials", str(trials), "--seeds", "0", "--output-dir",
         str(tmp_path / "out")]
    )  # fmt: skip
    sweep, _ = sweep_script.checked(arguments)
    sweep.folder.mkdir(parents=True, exist_ok=True)

    def score(sweep: object, trial: optuna.Trial, params: dict[str, float]) -> TrialOutcome:
        value = -abs(params["optim.lr"] - 0.05) - params["model.dropout"]
        return TrialOutcome(optuna.trial.TrialState.COMPLETE, value, 2, 1, 0, 0)

    monkeypatch.setattr(sweep_script, "run_trial", score)
    study = open_study(sweep.folder, "maximize", journal=False)
    sweep_script.tune(sweep, study, trials)
    return study


def test_the_seeded_sampler_proposes_the_same_trials_also_across_a_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = [t.params for t in counted(fake_sweep(tmp_path / "a", 6, monkeypatch))]
    assert len({repr(p) for p in whole}) == 6  # six different points, TPE after the third
    assert whole == [t.params for t in counted(fake_sweep(tmp_path / "b", 6, monkeypatch))]
    # killed during the fifth trial: it is left RUNNING with its parameters
    study = fake_sweep(tmp_path / "c", 4, monkeypatch)
    study.sampler = sweep_script.sampler_for(4)
    left = study.ask(
        load_space(tmp_path / "c" / "space.yaml", "configs/default.yaml", "eval").params
    )
    assert left.params == whole[4]
    study = fake_sweep(tmp_path / "c", 6, monkeypatch)  # the same command again
    trials = study.get_trials()
    assert trials[4].state == optuna.trial.TrialState.FAIL and trials[4].user_attrs["interrupted"]
    assert trials[5].user_attrs["resumes_trial"] == 4 and trials[5].params == whole[4]
    assert [t.params for t in counted(study)] == whole


def test_a_folder_holding_a_sweep_of_another_space_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sweep(tmp_path, 2, monkeypatch)
    before = (tmp_path / "out" / "space" / "study.db").read_bytes()
    with pytest.raises(UserError, match="holds a sweep with another params"):
        fake_sweep(tmp_path, 2, monkeypatch, GOOD.replace("high: 0.2", "high: 0.3"))
    assert (tmp_path / "out" / "space" / "study.db").read_bytes() == before
