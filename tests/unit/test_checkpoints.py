"""The checkpoint owner on its own: the file format's refusals, keep-last-k, which checkpoint a
run resumes from, and which config changes a resume refuses (decided by each key's role).

The same refusals end to end, one message format each, are in end_to_end/test_resume.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from configs import load_config
from foundation.errors import UserError
from runtime.checkpoint.contents import load_checkpoint
from runtime.checkpoint.files import save_checkpoint, set_aside
from runtime.checkpoint.fingerprint import computation_defaults, computation_fingerprint
from runtime.checkpoint.owner import Checkpointer
from runtime.checkpoint.resume import ResumePoint, resume_point
from runtime.rundir import RunDirectory
from tests.helpers.checkpoint_fields import checkpoint_fields


def a_checkpoint(directory: Path, step: int = 1, keep: int = 3) -> Path:
    payload = {**checkpoint_fields(step), "model": {"w": torch.arange(4.0)}}
    return save_checkpoint(directory, step, payload, keep)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("empty", "cannot load checkpoint"),
        ("garbage", "cannot load checkpoint"),
        ("truncated", "cannot load checkpoint"),
        ("foreign", "is not a checkpoint of this template"),
        ("bad checksum", "is corrupt or truncated (sha256 does not match bad.pt.sha256)"),
        ("missing", "checkpoint not found"),
    ],
)
def test_a_bad_checkpoint_file_is_one_line(tmp_path: Path, damage: str, expected: str) -> None:
    good = a_checkpoint(tmp_path / "good")
    assert load_checkpoint(good)["step"] == 1
    bad = tmp_path / "bad.pt"
    content = {
        "empty": b"",
        "garbage": b"not a checkpoint at all",
        "truncated": good.read_bytes()[: good.stat().st_size // 2],
        "bad checksum": good.read_bytes(),
    }
    if damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, bad)
    elif damage in content:
        bad.write_bytes(content[damage])
    if damage == "bad checksum":
        (tmp_path / "bad.pt.sha256").write_text("0" * 64 + "  bad.pt\n")
    with pytest.raises(UserError) as caught:
        load_checkpoint(bad)
    assert expected in str(caught.value) and len(str(caught.value).splitlines()) == 1


def test_keeps_only_the_newest_k_and_last_names_the_newest(tmp_path: Path) -> None:
    for step in (2, 4, 6, 8, 10):
        a_checkpoint(tmp_path, step, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*.pt")) == [
        "step-00000008.pt",
        "step-00000010.pt",
    ]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 10


def test_which_checkpoint_a_run_resumes_from(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path / "run")
    assert resume_point(run_dir, None) == ResumePoint(None, continuing=False)
    assert resume_point(run_dir, "auto") == ResumePoint(None, continuing=False)  # fresh
    with pytest.raises(UserError, match="--resume: checkpoint not found"):
        resume_point(run_dir, str(tmp_path / "nowhere.pt"))
    a_checkpoint(run_dir.checkpoint_dir, 3)
    a_checkpoint(run_dir.checkpoint_dir, 5)
    (run_dir.checkpoint_dir / "step-00000005.pt.sha256").unlink()  # a writer killed mid-save
    resumed = resume_point(run_dir, "auto")
    assert resumed.continuing and resumed.checkpoint is not None and resumed.step == 3
    with pytest.raises(UserError, match="already holds a run; continue it with --resume auto"):
        resume_point(run_dir, None)


def fingerprint(*overrides: str, world_size: int | str = 1, profile: str | None = None) -> dict:
    config = load_config("configs/default.yaml", profile, overrides=overrides)
    return computation_fingerprint(config, world_size, "cpu")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("data.batch_size=16",), "data.batch_size"),
        (("model.dropout=0.3",), "model.dropout"),
        (("optim.lr=0.1",), "optim.lr"),
        (("seed=7",), "seed"),
        (("data.synthetic.seed=3",), "data.synthetic.seed"),
        (("seed_streams.order=3",), "seed_streams.order"),
        (("trainer.ema.enabled=true",), "trainer.ema.enabled"),
        (("data.mix.mixup_alpha=0.2",), "data.mix.mixup_alpha"),
        (("trainer.accumulate_steps=2",), "trainer.accumulate_steps"),
    ],
)
def test_a_resume_under_another_computation_is_refused(
    tmp_path: Path, change: tuple[str, ...], named: str
) -> None:
    checkpoint = {"fingerprint": fingerprint(), "step": 3}
    checkpoints = Checkpointer(
        RunDirectory(tmp_path), load_config("configs/default.yaml").checkpoint
    )
    with pytest.raises(UserError, match=rf"^cannot resume: {named} differs \(checkpoint "):
        checkpoints.expect(fingerprint(*change), ResumePoint(checkpoint, continuing=True))


def test_another_profile_is_another_computation() -> None:
    assert fingerprint(profile="eval")["profile"] == "eval" != fingerprint()["profile"]


def test_stopping_criteria_and_runtime_settings_may_change_on_resume() -> None:
    same = fingerprint(
        "trainer.epochs=20",
        "trainer.max_steps=5",
        "checkpoint.every_steps=2",
        "checkpoint.keep=1",
        "trainer.log_every_steps=1",
        "trainer.finite_check=log_steps",
        "distributed.collective_timeout_s=5",
        "data.num_workers=3",
        "data.persistent_workers=true",
        "determinism.anomaly_detection=true",
    )
    assert same == fingerprint()
    cifar = fingerprint("data.name=cifar10", "data.root=here")
    assert fingerprint("data.name=cifar10", "data.root=elsewhere") == cifar  # the data moved


def test_the_world_size_is_part_of_the_computation_unless_the_mode_makes_it_irrelevant() -> None:
    assert fingerprint(world_size=2) != fingerprint(world_size=1)
    invariant = ("data.global_batch_size=32", "trainer.micro_batch_size=8")
    invariant += ("trainer.world_size_invariant=true",)
    assert fingerprint(*invariant, world_size="any")["world_size"] == "any"
    other_batch = fingerprint("data.global_batch_size=64", *invariant[1:], world_size="any")
    assert other_batch != fingerprint(*invariant, world_size="any")


def test_a_checkpoint_from_before_a_key_existed_resumes_while_the_key_is_at_its_default(
    tmp_path: Path,
) -> None:
    """A run started before the recipe's keys were added: its fingerprint lacks them."""
    config = load_config("configs/default.yaml")
    older = {
        k: v for k, v in fingerprint().items() if not k.startswith(("optim.label", "data.mix"))
    }
    checkpoints = Checkpointer(RunDirectory(tmp_path), config.checkpoint)
    resume = ResumePoint({"fingerprint": older, "step": 3}, continuing=True)
    checkpoints.expect(fingerprint(), resume, defaults=computation_defaults(config))
    changed = load_config("configs/default.yaml", overrides=("optim.label_smoothing=0.1",))
    with pytest.raises(
        UserError, match=r"optim.label_smoothing differs \(checkpoint None, now 0.1\)"
    ):
        checkpoints.expect(
            fingerprint("optim.label_smoothing=0.1"), resume, defaults=computation_defaults(changed)
        )
    with pytest.raises(
        UserError, match=r"data\.mix\.cutmix_alpha differs \(checkpoint None, now 0\.0\)"
    ):
        checkpoints.expect(fingerprint(), resume)  # without the defaults: every key must match


def test_pruning_never_removes_the_checkpoint_just_saved(tmp_path: Path) -> None:
    """keep=1 after a resume from step 4 while a complete step 12 exists: step 6 (just saved)
    stays, and so does 12 (above it, not counted); only 4 goes."""
    for step in (4, 12):
        a_checkpoint(tmp_path, step, keep=3)
    a_checkpoint(tmp_path, 6, keep=1)
    names = sorted(p.name for p in tmp_path.glob("step-*.pt"))
    assert names == ["step-00000006.pt", "step-00000012.pt"]


@pytest.mark.parametrize("in_the_way", ["file", "link"])
def test_setting_a_damaged_checkpoint_aside_refuses_a_non_directory_in_one_line(
    tmp_path: Path, in_the_way: str
) -> None:
    damaged = tmp_path / "step-00000004.pt"
    damaged.write_bytes(b"torn")
    aside = tmp_path / "damaged"
    if in_the_way == "file":
        aside.write_text("not a folder")
    else:
        (tmp_path / "elsewhere").mkdir()
        aside.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="is not a plain directory"):
        set_aside(tmp_path, [damaged])
    assert damaged.read_bytes() == b"torn"  # left where it was


@pytest.mark.parametrize("field", ["step", "epoch", "schedule_horizon"])
def test_a_count_beyond_int64_is_refused_in_one_line(tmp_path: Path, field: str) -> None:
    """A step becomes a file name in evaluate and predict: 10**300 would be a name too long."""
    payload = {**checkpoint_fields(1), "model": {"w": torch.arange(4.0)}, field: 10**300}
    path = save_checkpoint(tmp_path, 1, payload, 3)
    with pytest.raises(UserError, match=f"its {field!r} is int .*, not a whole number from 0"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["a\x00b", "tab\there", "x" * 101, "é" * 51])
def test_a_run_name_that_cannot_be_a_file_name_is_refused(name: str) -> None:
    with pytest.raises(UserError, match="name"):
        load_config("configs/default.yaml", None, None, [f"name={name}"])
