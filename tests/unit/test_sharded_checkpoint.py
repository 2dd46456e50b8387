"""Sharded checkpoints on their own (one process, no process group): the directory layout and its
round trip, keep-last-k and the `last` link, what a killed writer leaves and how the resume treats
it, and the refusal to unpickle anything a crafted checkpoint holds.

The same format under real torchrun, SIGKILL mid-save included, is in
end_to_end/test_sharding.py."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path, PosixPath

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn

from foundation.errors import UserError
from runtime.checkpoint.contents import load_checkpoint
from runtime.checkpoint.directory import INDEX, SUMS, DirectoryTensors
from runtime.checkpoint.files import (
    is_complete,
    newest_complete,
    remove_stale_temporaries,
    save_checkpoint,
    save_checkpoint_directory,
)
from runtime.rundir import RunDirectory
from scripts import convert_checkpoint
from tests.helpers.checkpoint_corpus import rewrite_sums
from tests.helpers.checkpoint_fields import checkpoint_fields


def trained_state(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, dict]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(2):
        model(torch.randn(5, 3)).square().sum().backward()
        optimizer.step()
    state = {
        **checkpoint_fields(2),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": [torch.get_rng_state()],
        "fingerprint": {"model.name": "x"},
    }
    return model, optimizer, state


def assert_same(first: object, second: object) -> None:
    if isinstance(first, dict):
        assert isinstance(second, dict) and sorted(map(str, first)) == sorted(map(str, second))
        for key in first:
            assert_same(first[key], second[key])
    elif isinstance(first, list | tuple):
        assert len(first) == len(second)  # type: ignore[arg-type]
        for a, b in zip(first, second, strict=True):  # type: ignore[call-overload]
            assert_same(a, b)
    elif torch.is_tensor(first):
        assert torch.equal(first, second) and first.dtype == second.dtype  # type: ignore[union-attr]
    else:
        assert first == second


def test_a_sharded_checkpoint_is_a_directory_that_loads_back_bit_for_bit(tmp_path: Path) -> None:
    _, _, state = trained_state()
    final = save_checkpoint_directory(tmp_path, 2, state, keep=3, is_main=True)
    assert final.name == "step-00000002" and final.is_dir()
    assert sorted(p.name for p in final.iterdir()) == [INDEX, SUMS, "__0_0.distcp", "state.pt"]
    assert (tmp_path / "last").resolve() == final.resolve()
    loaded = load_checkpoint(final)
    assert loaded.pop("format").startswith("reproducible-ddp-template/")
    assert_same(state, loaded)


def test_the_trainer_reads_a_sharded_checkpoint_into_its_own_model(tmp_path: Path) -> None:
    _, _, state = trained_state(seed=0)
    final = save_checkpoint_directory(tmp_path, 2, state, keep=3, is_main=True)
    model, optimizer, _ = trained_state(seed=1)  # other values, same layout
    stored = load_checkpoint(final, whole_tensors=False)["stored"]
    assert isinstance(stored, DirectoryTensors)
    weights, optimizer_state = stored.read_for(model, optimizer)
    model.load_state_dict(weights)
    optimizer.load_state_dict(optimizer_state)
    assert_same(state["model"], model.state_dict())
    assert_same(state["optimizer"], optimizer.state_dict())


def test_keep_last_k_and_last_point_across_both_kinds(tmp_path: Path) -> None:
    _, _, state = trained_state()
    run = RunDirectory(tmp_path)
    directory = run.checkpoint_dir
    save_checkpoint(directory, 1, {**state, "step": 1}, keep=2)
    assert run.last_checkpoint.name == "last.pt"
    for step in (2, 3):
        save_checkpoint_directory(directory, step, {**state, "step": step}, keep=2, is_main=True)
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["last", "step-00000002", "step-00000003"]  # last.pt went with its run
    assert run.last_checkpoint.name == "last" and load_checkpoint(run.last_checkpoint)["step"] == 3
    save_checkpoint(directory, 4, {**state, "step": 4}, keep=2)  # continued by a DDP run
    assert run.last_checkpoint.name == "last.pt"
    assert not (directory / "last").exists() and load_checkpoint(run.last_checkpoint)["step"] == 4


def test_what_a_killed_writer_leaves_is_never_resumed_from(tmp_path: Path) -> None:
    _, _, state = trained_state()
    save_checkpoint_directory(tmp_path, 2, state, keep=3, is_main=True)
    newer = save_checkpoint_directory(tmp_path, 4, {**state, "step": 4}, keep=3, is_main=True)
    # killed before the rename: a staging directory with shards and an index
    os.rename(newer, tmp_path / ".step-00000006.tmp")
    # a damaged directory: a shard changed after its checksum was written
    save_checkpoint_directory(tmp_path, 8, {**state, "step": 8}, keep=3, is_main=True)
    with (tmp_path / "step-00000008" / "__0_0.distcp").open("r+b") as shard:
        shard.seek(100)
        shard.write(b"XYZ")
    assert not is_complete(tmp_path / "step-00000008")
    newest, skipped = newest_complete(tmp_path)
    assert newest == tmp_path / "step-00000002"
    assert skipped == [tmp_path / "step-00000008"]
    with pytest.raises(UserError, match=r"__0_0\.distcp does not match its sha256"):
        load_checkpoint(tmp_path / "step-00000008")
    assert remove_stale_temporaries(tmp_path) == [tmp_path / ".step-00000006.tmp"]
    assert not (tmp_path / ".step-00000006.tmp").exists()


class Planted:
    """Unpickling this runs a command: what a crafted checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_in_the_index_is_refused_unrun(tmp_path: Path) -> None:
    _, _, state = trained_state()
    final = save_checkpoint_directory(tmp_path, 2, state, keep=3, is_main=True)
    marker = tmp_path / "ran"
    index = pickle.loads((final / INDEX).read_bytes())
    index.storage_meta = Planted(marker)  # type: ignore[assignment]
    (final / INDEX).write_bytes(pickle.dumps(index))
    rewrite_sums(final)
    with pytest.raises(UserError, match=r"index \.metadata is refused \(posix\.system is not"):
        load_checkpoint(final)
    assert not marker.exists()
    # The planted file is live: DCP's own reader runs it (why this template has its own).
    with pytest.raises(AttributeError):  # after the command ran: its exit status is no StorageMeta
        dcp.FileSystemReader(final).read_metadata()
    assert marker.exists()


class Looked:
    """Unpickling this looks an attribute up with getattr, as Python pickles an Enum member:
    allowed for DCP's own Enum only."""

    def __reduce__(self) -> tuple:
        return (getattr, (PosixPath, "cwd"))


def test_getattr_in_the_index_reaches_dcp_s_own_enum_only(tmp_path: Path) -> None:
    _, _, state = trained_state()
    final = save_checkpoint_directory(tmp_path, 2, state, keep=3, is_main=True)
    index = pickle.loads((final / INDEX).read_bytes())
    index.storage_meta = Looked()  # type: ignore[assignment]
    (final / INDEX).write_bytes(pickle.dumps(index))
    rewrite_sums(final)
    with pytest.raises(
        UserError, match=r"getattr on something other than DCP's memory-format names"
    ):
        load_checkpoint(final)


def test_a_pickled_entry_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    final = tmp_path / "step-00000002"
    _, _, state = trained_state()
    save_checkpoint_directory(tmp_path, 2, state, keep=3, is_main=True)
    (final / INDEX).unlink()
    (final / "__0_0.distcp").unlink()
    # DCP writes any non-tensor value as a pickle, and its default planner would unpickle it.
    dcp.save({"model.w": torch.zeros(2), "extra": Planted(marker)}, checkpoint_id=final)
    rewrite_sums(final)
    with pytest.raises(UserError, match=r"holds pickled objects \(extra\)"):
        load_checkpoint(final, whole_tensors=False)
    assert not marker.exists()


def convert(monkeypatch: pytest.MonkeyPatch, source: Path, destination: Path) -> None:
    monkeypatch.setattr("sys.argv", ["convert_checkpoint", str(source), str(destination)])
    convert_checkpoint.main()


def test_conversion_to_a_directory_and_back_keeps_every_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, state = trained_state()
    single = save_checkpoint(tmp_path / "a", 2, state, keep=3)
    convert(monkeypatch, single, tmp_path / "b" / "step-00000002")
    assert "a sharded checkpoint directory of step 2" in capsys.readouterr().out
    convert(monkeypatch, tmp_path / "b" / "step-00000002", tmp_path / "c.pt")
    assert is_complete(tmp_path / "c.pt")
    assert_same(load_checkpoint(single), load_checkpoint(tmp_path / "c.pt"))
    assert_same(load_checkpoint(single), load_checkpoint(tmp_path / "b" / "step-00000002"))
    before = (tmp_path / "c.pt").read_bytes()
    with pytest.raises(UserError, match=r"c\.pt already exists"):
        convert(monkeypatch, single, tmp_path / "c.pt")
    assert (tmp_path / "c.pt").read_bytes() == before


def test_an_index_object_created_but_never_filled_is_refused_in_one_line(tmp_path: Path) -> None:
    """NEWOBJ without BUILD leaves a TensorProperties without its fields: refused as the index,
    not an AttributeError later."""
    import copyreg
    import io

    from torch.distributed.checkpoint.metadata import TensorProperties

    from runtime.checkpoint.dcp_index import IndexRefused, load_index

    _, _, state = trained_state()
    final = save_checkpoint_directory(tmp_path, 2, state, keep=3, is_main=True)
    index = pickle.loads((final / INDEX).read_bytes())
    original = TensorProperties.__reduce_ex__
    TensorProperties.__reduce_ex__ = lambda self, protocol: (  # type: ignore[method-assign]
        copyreg.__newobj__,
        (TensorProperties,),
    )
    try:
        crafted = pickle.dumps(index, protocol=4)
    finally:
        TensorProperties.__reduce_ex__ = original  # type: ignore[method-assign]
    with pytest.raises(IndexRefused, match="TensorProperties lacks its field 'dtype'"):
        load_index(io.BytesIO(crafted))


def test_pruning_keeps_the_checkpoint_just_written_and_ignores_names_it_never_writes(
    tmp_path: Path,
) -> None:
    """keep=1: a single-file run's step 8 continued sharded from step 4 keeps the new step-8
    directory (not the old branch's file), and a planted `step-8` is no step 8."""
    _, _, state = trained_state()
    for step in (4, 8):
        save_checkpoint(tmp_path, step, {**state, "step": step}, keep=3)
    shutil.copyfile(tmp_path / "step-00000004.pt", tmp_path / "step-8")  # planted
    final = save_checkpoint_directory(tmp_path, 8, {**state, "step": 8}, keep=1, is_main=True)
    assert final.is_dir() and (tmp_path / "last").resolve() == final.resolve()
    assert not (tmp_path / "step-00000008.pt").exists()
    assert newest_complete(tmp_path)[0] == final


def test_an_index_whose_chunks_leave_part_of_a_tensor_unread_is_refused(tmp_path: Path) -> None:
    """An entry with no chunks would be 'read' as whatever memory held: refused instead."""
    _, _, state = trained_state()
    final = save_checkpoint_directory(tmp_path, 2, state, keep=3, is_main=True)
    index = pickle.loads((final / INDEX).read_bytes())
    next(iter(index.state_dict_metadata.values())).chunks = []
    (final / INDEX).write_bytes(pickle.dumps(index))
    rewrite_sums(final)
    with pytest.raises(UserError, match="do not cover the tensor exactly once"):
        load_checkpoint(final)
