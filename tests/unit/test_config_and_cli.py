"""Config validation and bad input: one-line error, exit code != 0, no traceback, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import train
from configs import Config, load_config
from configs.loading import read_saved_config
from configs.resume import config_for_resume, refuse_a_run_past_its_schedule
from foundation.errors import UserError
from tests.helpers.runs import REPO_ROOT

DEFAULT = REPO_ROOT / "configs" / "default.yaml"


def run_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        train.run_reporting_user_errors(train.main)
    captured = capsys.readouterr()
    return int(exit_info.value.code), captured.err


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_ARGUMENTS = {
    "missing config": (["--config", "no/such.yaml"], "config file not found"),
    "unknown key with suggestion": (["optim.lrr=0.1"], "did you mean 'optim.lr'"),
    "unknown section": (["trainr.epochs=2"], "unknown config key 'trainr'"),
    "wrong type": (["trainer.epochs=abc"], "trainer.epochs"),
    "epochs 0": (["trainer.epochs=0"], "trainer.epochs"),
    "batch size 0": (["data.batch_size=0"], "data.batch_size"),
    "negative lr": (["optim.lr=-0.1"], "optim.lr"),
    "seed -1": (["--seed", "-1"], "--seed"),
    "seed 1.5": (["--seed", "1.5"], "--seed"),
    "seed 2**64": (["--seed", str(2**64)], "--seed"),
    "seed abc": (["--seed", "abc"], "--seed"),
    "unknown profile": (["--profile", "fast"], "invalid choice"),
    "unknown dataset": (["data.name=imagenet"], "unknown dataset 'imagenet'"),
    "unknown model": (["model.name=smallcnnn"], "did you mean 'smallcnn'"),
    "malformed override": (["trainer.epochs"], "malformed override"),
    "malformed override key": (["=3"], "malformed override"),
    "float for int": (["trainer.epochs=1.5"], "trainer.epochs"),
    "seed in override out of range": ([f"seed={2**64}"], "seed"),
    "debug with amp": (["determinism.amp=true"], "profile 'debug' cannot use determinism.amp=true"),
    "invariant mode without its batch sizes": (
        ["trainer.world_size_invariant=true"],
        "trainer.world_size_invariant=true needs data.global_batch_size and "
        "trainer.micro_batch_size",
    ),
    "micro-batch outside the mode": (
        ["trainer.micro_batch_size=8"],
        "trainer.micro_batch_size is used only with trainer.world_size_invariant=true",
    ),
    "global batch not a multiple of the micro-batch": (
        [
            "data.global_batch_size=30",
            "trainer.micro_batch_size=8",
            "trainer.world_size_invariant=true",
        ],
        "data.global_batch_size=30 is not a multiple of trainer.micro_batch_size=8",
    ),
    "invariant mode in production": (
        [
            "--profile",
            "production",
            "data.global_batch_size=32",
            "trainer.micro_batch_size=8",
            "trainer.world_size_invariant=true",
        ],
        "trainer.world_size_invariant=true needs the debug or eval profile",
    ),
    "eval with benchmark": (
        ["--profile", "eval", "determinism.cudnn_benchmark=true"],
        "cudnn_benchmark",
    ),
    "mixup alpha below 0": (["data.mix.mixup_alpha=-0.2"], "data.mix.mixup_alpha"),
    "cutmix alpha below 0": (["data.mix.cutmix_alpha=-1.0"], "data.mix.cutmix_alpha"),
    "accumulate 0 steps": (["trainer.accumulate_steps=0"], "trainer.accumulate_steps"),
    "EMA decay 1": (["trainer.ema.enabled=true", "trainer.ema.decay=1.0"], "trainer.ema.decay"),
    "EMA every 0 steps": (["trainer.ema.every_steps=0"], "trainer.ema.every_steps"),
    "clip at 0": (["optim.clip_grad_norm=0.0"], "optim.clip_grad_norm"),
    "clip below 0": (["optim.clip_grad_norm=-1.0"], "optim.clip_grad_norm"),
    "label smoothing 1": (["optim.label_smoothing=1.0"], "optim.label_smoothing"),
    "two warmups": (
        ["optim.warmup_steps=5", "optim.warmup_epochs=1"],
        "set optim.warmup_steps or optim.warmup_epochs, not both",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_bad_arguments_give_one_line_and_write_nothing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, expected = BAD_ARGUMENTS[case]
    output_dir = tmp_path / "runs"
    code, err = run_in_process(monkeypatch, capsys, ["--output-dir", str(output_dir), *argv])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert "Traceback" not in err
    assert not output_dir.exists()


def test_malformed_yaml_names_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "broken.yaml", "trainer:\n  epochs: [1, 2\n")
    code, err = run_in_process(
        monkeypatch, capsys, ["--config", str(config), "--output-dir", str(tmp_path / "r")]
    )
    assert code == 2
    assert err.startswith("error: malformed YAML in") and "line" in err
    assert len(err.strip().splitlines()) == 1


def test_config_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config(write(tmp_path, "list.yaml", "- 1\n- 2\n"))


def test_wrong_type_in_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"'data.num_workers'.*got 'two'"):
        load_config(write(tmp_path, "x.yaml", "data:\n  num_workers: two\n"))


def test_seed_zero_is_a_real_seed_and_max_seed_is_accepted() -> None:
    assert load_config(DEFAULT, seed=0).seed == 0
    assert load_config(DEFAULT, seed=2**64 - 1).seed == 2**64 - 1


def test_precedence_file_then_profile_then_overrides_then_seed(tmp_path: Path) -> None:
    path = write(
        tmp_path, "mine.yaml", "seed: 7\noptim:\n  lr: 0.3\ndata:\n  persistent_workers: false\n"
    )
    config = load_config(path, profile="production", overrides=["optim.lr=1e-3", "seed=9"])
    assert config.name == "mine"
    assert config.optim.lr == pytest.approx(1e-3)
    assert config.data.persistent_workers is True  # the production profile is merged over the file
    assert config.seed == 9
    assert load_config(path, profile="production", overrides=["seed=9"], seed=11).seed == 11


def test_documented_keys_exist_with_their_types() -> None:
    config = load_config(DEFAULT)
    for dotted in (
        "trainer.epochs",
        "trainer.max_steps",
        "trainer.device",
        "checkpoint.every_steps",
        "data.name",
        "data.subset",
        "data.batch_size",
        "data.num_workers",
        "data.persistent_workers",
        "model.name",
        "model.dropout",
        "optim.lr",
    ):
        section, key = dotted.split(".")
        assert hasattr(getattr(config, section), key), dotted
    overridden = load_config(
        DEFAULT,
        overrides=[
            "trainer.max_steps=5",
            "trainer.device=cpu",
            "data.subset=100",
            "checkpoint.every_steps=null",
        ],
    )
    assert (overridden.trainer.max_steps, overridden.trainer.device, overridden.data.subset) == (
        5,
        "cpu",
        100,
    )


def test_every_profile_file_validates() -> None:
    for profile in ("debug", "eval", "production"):
        assert isinstance(load_config(DEFAULT, profile=profile), Config)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("trainer.checkpoint_every_steps=2", "checkpoint.every_steps"),
        ("trainer.keep_checkpoints=1", "checkpoint.keep"),
        ("trainer.collective_timeout_s=5", "distributed.collective_timeout_s"),
    ],
)
def test_a_key_that_moved_to_its_owners_section_is_refused_with_its_new_name(
    old: str, new: str
) -> None:
    with pytest.raises(UserError) as refused:
        load_config(DEFAULT, overrides=[old])
    assert str(refused.value) == f"config key {old.split('=')[0]!r} moved: use {new!r}"


def test_a_config_file_with_a_moved_key_is_refused_too(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("trainer:\n  epochs: 2\n  keep_checkpoints: 2\n")
    with pytest.raises(UserError, match=r"'trainer.keep_checkpoints' moved: use 'checkpoint.keep'"):
        load_config(old)


def test_a_run_saved_before_the_keys_moved_resumes_with_them_in_their_new_place() -> None:
    """A user cannot edit a checkpoint: a config saved by an earlier version is migrated."""
    saved = load_config(DEFAULT).model_dump(mode="json")
    checkpoint, distributed = saved.pop("checkpoint"), saved.pop("distributed")
    saved["trainer"].update(
        checkpoint_every_steps=7,
        keep_checkpoints=checkpoint["keep"],
        collective_timeout_s=distributed["collective_timeout_s"],
    )
    config, notes = config_for_resume(saved, load_config(DEFAULT), [], None)
    assert config.checkpoint.every_steps == 7
    assert notes == [
        "resuming with the run's own config.yaml; the config file differs in "
        "checkpoint.every_steps (kept as the run started)"
    ]


def test_the_schedule_s_epochs_come_from_its_horizon_not_the_last_session_s_config() -> None:
    """A resume that lowered trainer.epochs (10 -> 5) did not move the horizon: going back to
    10 is fine, 11 is past the schedule."""
    checkpoint = {
        "schedule_horizon": 120,  # 10 epochs of 12 steps
        "epoch": 3,
        "step": 40,
        "batch_in_epoch": 4,
        "config": {"trainer": {"epochs": 5}},
    }
    refuse_a_run_past_its_schedule(
        load_config(DEFAULT, overrides=["trainer.epochs=10"]), checkpoint
    )
    with pytest.raises(UserError, match=r"reaches 0 at the end of epoch 10 \(step 120"):
        refuse_a_run_past_its_schedule(
            load_config(DEFAULT, overrides=["trainer.epochs=11"]), checkpoint
        )


@pytest.mark.parametrize(
    ("invariant", "said"),
    [
        ([], "(continues, not bit for bit: a reduce-scatter adds the gradients in another order"),
        (
            [
                "data.global_batch_size=32",
                "trainer.micro_batch_size=8",
                "trainer.world_size_invariant=true",
            ],
            "(continues bit for bit: the invariant mode only splits its optimizer state)",
        ),
    ],
)
def test_a_resume_that_turns_sharding_on_says_whether_it_is_bit_for_bit(
    invariant: list[str], said: str
) -> None:
    saved = load_config(DEFAULT, overrides=invariant).model_dump(mode="json")
    asked = ["parallel.shard=true"]
    config, notes = config_for_resume(saved, load_config(DEFAULT, overrides=invariant), asked, None)
    assert config.parallel.shard
    (note,) = notes
    assert note.startswith(f"resuming with changes: parallel.shard: False -> True {said}")


def test_a_saved_config_never_names_the_compile_cache(tmp_path: Path) -> None:
    """A run's config.yaml or a checkpoint from someone else naming a compile cache (code
    Inductor loads and runs) is read without it: only this machine's command names one."""
    theirs = str(tmp_path / "their-run" / "cache")
    saved = load_config(
        "configs/default.yaml", None, None, [f"trainer.compile.cache_dir={theirs}"]
    ).model_dump(mode="json")
    as_loaded = load_config("configs/default.yaml", None, None, [])
    resumed, _ = config_for_resume(saved, as_loaded, [], None)
    assert resumed.trainer.compile.cache_dir is None
    mine = str(tmp_path / "my-cache")
    again, _ = config_for_resume(saved, as_loaded, [f"trainer.compile.cache_dir={mine}"], None)
    assert again.trainer.compile.cache_dir == mine
    assert "cache_dir" not in read_saved_config(saved)["trainer"]["compile"]
