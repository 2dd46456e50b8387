"""What a user does with a checkpoint: evaluate it, predict with it, fine-tune from it.

Real commands (make evaluate, make predict, make train INIT_FROM=) on real runs' checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.dataset_files import write_image_tree
from tests.helpers.runs import ReferenceRuns, run_command, run_train

pytestmark = pytest.mark.slow


def test_evaluate_reproduces_the_final_metrics_of_the_manifest(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    run = references.tiny(1)
    done = run_command(
        ["make", "evaluate", f"CHECKPOINT={run.run.last_checkpoint}", f"OUTPUT_DIR={tmp_path}"]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = (tmp_path / "evaluations").glob("*.json")
    report = json.loads(written.read_text())
    assert report["metrics"] == run.manifest()["final_metrics"]  # bit for bit
    assert f"val_acc {report['metrics']['val_acc']:.4f}" in done.stdout


def test_evaluate_reproduces_the_ema_metrics_too(tmp_path: Path) -> None:
    """With an EMA: the checkpoint's EMA is evaluated, not a fresh copy of the weights, and
    printed with the rest in one line; an evaluation on 2 processes is kept beside it."""
    run = run_train(tmp_path / "run", "trainer.ema.enabled=true", "trainer.ema.decay=0.9")
    evaluate = [
        "make",
        "evaluate",
        f"CHECKPOINT={run.run.last_checkpoint}",
        f"OUTPUT_DIR={tmp_path}",
    ]
    done = run_command(evaluate)
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = (tmp_path / "evaluations").glob("*.json")
    metrics = json.loads(written.read_text())["metrics"]
    assert metrics == run.manifest()["final_metrics"]  # bit for bit, ema_val_* included
    assert {"ema_val_loss", "ema_val_acc"} <= metrics.keys()
    (line,) = [line for line in done.stdout.splitlines() if "val_acc" in line]
    assert (
        line.endswith("  ".join(f"{key} {value:.4f}" for key, value in metrics.items()))
        and line.count("val_") == 4
    ), line
    first = written.read_bytes()

    on_two = run_command([*evaluate, "NPROC=2"])
    assert on_two.returncode == 0, on_two.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "evaluations").glob("*.json")) == [
        written.name,
        written.name.replace("-1proc.json", "-2proc.json"),
    ]
    assert written.read_bytes() == first  # the first evaluation is kept


def test_predict_writes_one_line_per_image_with_the_folder_names(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "images")
    flags = ["--config", "configs/imagefolder_cpu.yaml", f"data.root={root}", "trainer.epochs=1"]
    trained = run_train(tmp_path / "run", *flags, "data.batch_size=8", tiny=False)
    images = root / "val"
    done = run_command(
        [
            "make",
            "predict",
            f"CHECKPOINT={trained.run.last_checkpoint}",
            f"IMAGES={images}",
            f"OUTPUT_DIR={tmp_path}",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = (tmp_path / "predictions").glob("*.tsv")
    rows = [line.split("\t") for line in written.read_text().splitlines()]
    assert [row[0] for row in rows] == sorted(str(p) for p in images.rglob("*.*"))
    assert {row[1] for row in rows} <= {"cat", "dog", "fox"}
    assert all(0.0 < float(row[2]) <= 1.0 for row in rows)


def test_a_fine_tuning_run_starts_from_the_checkpoint_s_exact_weights(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    source = references.tiny(1)
    checkpoint = source.run.last_checkpoint
    # With lr 1e-30 no update survives float32 rounding: the parameters end as they started,
    # which must be the checkpoint's, bit for bit (the optimizer and schedule start fresh).
    tuned = run_train(tmp_path / "tuned", "optim.lr=1e-30", "--init-from", str(checkpoint))
    start = source.weights()
    end = tuned.weights()
    for name, parameter in start.items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(parameter, end[name]), name
    manifest = tuned.manifest()
    assert manifest["init_from"]["path"] == str(checkpoint)
    assert manifest["init_from"]["sha256"] and manifest["resumed_from_step"] is None
    assert tuned.checkpoint()["fingerprint"]["init_from"] == str(checkpoint)
    # Weights that do not fit the model are refused in one line, before anything is written.
    refused = run_train(
        tmp_path / "refused", "model.width=16", "--init-from", str(checkpoint), check=False
    )
    assert refused.returncode == 2
    line = refused.process.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: init_from {checkpoint}: its weights do not fit this model")
    assert not (tmp_path / "refused").exists()
