"""Real training runs (tiny), alone and under torchrun with gloo, compared bitwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from runtime.provenance import state_dict_sha256
from tests.helpers.runs import (
    TINY,
    ReferenceRuns,
    RunResult,
    assert_same_weights,
    run_command,
    run_train,
    run_two_nodes,
    torchrun,
    weights_differ,
    written_by_a_run,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def single_run(references: ReferenceRuns) -> RunResult:
    """The tiny job, one process, debug profile, the config's seed 42."""
    return references.tiny(1)


def test_run_directory_layout_and_manifest(single_run) -> None:
    run_dir = single_run.run_dir
    assert run_dir.relative_to(single_run.output_dir) == Path("default/debug/seed42")
    for name in (
        "config.yaml",
        "manifest.json",
        "metrics.jsonl",
        "determinism.json",
        "tb",
        "checkpoints/last.pt",
    ):
        assert (run_dir / name).exists(), name
    manifest = single_run.manifest()
    assert manifest["status"] == "completed"
    assert manifest["seeds"]["base"] == 42
    assert [entry["rank"] for entry in manifest["seeds"]["ranks"]] == [0]
    assert {"init", "dropout", "sampler", "augment", "worker"} <= set(
        manifest["seeds"]["ranks"][0]["streams"]
    )
    assert manifest["profile"] == "debug" and manifest["world_size"] == 1 and manifest["nodes"] == 1
    for library in ("python", "torch", "cuda", "cudnn", "torchvision", "albumentations", "numpy"):
        assert library in manifest["versions"]
    assert manifest["versions"]["torch"].startswith("2.7.1")
    assert set(manifest["git"]) == {"commit", "dirty"}
    assert manifest["start_time"] and manifest["end_time"]
    assert set(manifest["final_metrics"]) == {"val_acc", "val_loss"}
    assert manifest["final_weights_sha256"] == state_dict_sha256(single_run.weights())
    # The machine the digest belongs to: the launch environment's one thread, this CPU's kernels.
    assert manifest["machine"]["threads"] == 1
    assert manifest["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert manifest["machine"]["cpu"] and manifest["machine"]["platform"]
    assert manifest["machine"]["cuda_device"] is None and manifest["device"] == "cpu"
    assert (manifest["final_step"], manifest["final_epoch"], manifest["final_batch_in_epoch"]) == (
        24,
        2,
        0,
    )
    assert "train.py" in manifest["command_line"][1] and "--profile" in manifest["arguments"]


def test_checkpoint_loads_with_weights_only(single_run) -> None:
    checkpoint = torch.load(single_run.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "step", "epoch"} <= set(checkpoint)
    assert checkpoint["step"] == single_run.manifest()["final_step"] == 24
    assert checkpoint["epoch"] == 2


def test_metrics_jsonl_has_steps_and_epochs(single_run) -> None:
    records = single_run.metrics()
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "samples_per_s"} <= set(
        epochs[-1]
    )
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 25))


def test_tensorboard_events_read_back(single_run) -> None:
    events = EventAccumulator(str(single_run.run_dir / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "epoch/train_loss",
        "epoch/val_loss",
        "epoch/val_acc",
        "epoch/lr",
        "epoch/samples_per_s",
        "step/loss",
    } <= scalars
    val_acc = [event.value for event in events.Scalars("epoch/val_acc")]
    final = single_run.manifest()["final_metrics"]["val_acc"]
    assert len(val_acc) == 2 and val_acc[-1] == pytest.approx(final, abs=1e-6)
    # HParams tab: every resolved config key, and the final metrics as its metrics.
    content = events.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["optim.lr"].number_value == pytest.approx(0.05)
    assert hparams["model.name"].string_value == "smallcnn"
    assert hparams["seed"].number_value == 42 and hparams["world_size"].number_value == 1
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"final/val_acc", "final/val_loss"}


def test_existing_run_is_refused_and_left_untouched(single_run) -> None:
    """Another computation into a run's folder is refused, naming how to continue or where else
    to go; the finished run's own command again only says that nothing is left to train. Either
    way every file stays as it was."""
    run_dir = single_run.run_dir
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if written_by_a_run(path)}
    other = run_train(single_run.output_dir, "--seed", "42", "optim.lr=0.5", check=False)
    assert other.returncode == 2
    assert (
        other.process.stderr.strip().splitlines()[-1].startswith("error: ")
        and "already holds a run" in other.process.stderr
        and "--resume auto" in other.process.stderr
    )
    again = run_train(single_run.output_dir, "--seed", "42", check=False)
    assert again.returncode == 0 and "nothing left to train" in again.output, again.output
    assert {
        path: path.read_bytes() for path in run_dir.rglob("*") if written_by_a_run(path)
    } == before


def test_same_seed_twice_is_bitwise_identical_and_workers_do_not_matter(
    single_run, tmp_path: Path
) -> None:
    # Per-sample augmentation seeds and a private loader generator: a second run, loading with
    # 2 persistent workers, gives the very same weights as the first, loading in the process.
    again = run_train(
        tmp_path / "again", "--seed", "42", "data.num_workers=2", "data.persistent_workers=true"
    )
    assert_same_weights(single_run.weights(), again.weights())
    assert again.manifest()["final_weights_sha256"] == single_run.manifest()["final_weights_sha256"]


def test_different_seeds_differ(single_run, tmp_path: Path) -> None:
    other = run_train(tmp_path / "other", "--seed", "43")
    assert weights_differ(single_run.weights(), other.weights())


def test_eval_profile_is_bitwise_identical_too(references: ReferenceRuns, tmp_path: Path) -> None:
    first = references.tiny(1, "eval")
    second = run_train(tmp_path / "b", "--profile", "eval", "data.num_workers=2")
    assert_same_weights(first.weights(), second.weights())
    assert (
        json.loads((first.run_dir / "determinism.json").read_text())["nondeterministic_ops"] == {}
    )


@pytest.fixture
def ddp_run(references: ReferenceRuns) -> RunResult:
    return references.tiny(2)


def test_two_process_gloo_run(ddp_run) -> None:
    manifest = ddp_run.manifest()
    assert manifest["world_size"] == 2 and manifest["backend"] == "gloo" and manifest["nodes"] == 1
    ranks = manifest["seeds"]["ranks"]
    assert [entry["rank"] for entry in ranks] == [0, 1]
    assert ranks[0]["streams"]["dropout"]["seed"] != ranks[1]["streams"]["dropout"]["seed"]
    assert ranks[0]["streams"]["init"]["seed"] == ranks[1]["streams"]["init"]["seed"]
    assert manifest["final_step"] == 12  # 384 samples / (2 ranks x 32) x 2 epochs
    # Rank 0 alone prints progress.
    assert ddp_run.process.stdout.count("epoch   1/2") == 1


def test_two_process_run_is_bitwise_reproducible_with_0_or_2_workers(
    ddp_run, tmp_path: Path
) -> None:
    again = run_train(tmp_path / "again", "--seed", "42", "data.num_workers=2", nproc=2)
    assert_same_weights(ddp_run.weights(), again.weights())


def test_ranks_leave_the_process_group_without_hanging() -> None:
    # Regression: plain barrier + destroy_process_group hung ~1 run in 50 at exit (gloo, torch
    # 2.7.1). This helper ends 30 rounds the way train.py ends; with the plain leave it hung
    # within 20 rounds in 5 of 5 tries.
    done = run_command(torchrun(2, "tests/helpers/shutdown_rounds.py", "30"), timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "30 rounds left cleanly" in done.stdout


def test_ranks_share_init_and_differ_in_dropout_and_worker_streams(tmp_path: Path) -> None:
    report = tmp_path / "probe.json"
    done = run_command(torchrun(2, "tests/helpers/ddp_probe.py", str(report)), timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    rank0, rank1 = json.loads(report.read_text())
    assert rank0["init_sha"] == rank1["init_sha"]
    assert rank0["mask"] != rank1["mask"]
    # Compiled dropout (Inductor's Philox masks, seeded from the same stream): per rank, per call.
    assert rank0["compiled_masks"][0] != rank1["compiled_masks"][0]
    assert rank0["compiled_masks"][0] != rank0["compiled_masks"][1]
    assert rank0["workers"] != rank1["workers"]
    assert rank0["workers"][0] != rank0["workers"][1]  # two workers of one rank differ too


def test_two_nodes_use_the_global_rank_and_equal_one_node(ddp_run, tmp_path: Path) -> None:
    output_dir = tmp_path / "nodes"
    results = run_two_nodes("train.py", "--output-dir", str(output_dir), "--seed", "42", *TINY)
    assert all(r.returncode == 0 for r in results), (
        results[0].stderr[-2000:] + results[1].stderr[-2000:]
    )
    nodes = RunResult(results[0], output_dir)
    manifest = nodes.manifest()
    assert manifest["nodes"] == 2 and manifest["world_size"] == 2
    streams = [entry["streams"]["dropout"]["seed"] for entry in manifest["seeds"]["ranks"]]
    assert streams[0] != streams[1]  # LOCAL_RANK is 0 on both nodes; the global rank differs
    assert_same_weights(ddp_run.weights(), nodes.weights())
