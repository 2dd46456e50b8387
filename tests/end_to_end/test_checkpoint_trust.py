"""Checkpoints and run directories are untrusted input: a planted one is refused in one line by
every reader a user reaches, nothing it names runs or is written, and a damaged newer checkpoint
never makes pruning delete the good one.

The corpus (tests/helpers/checkpoint_corpus.py) is planted into copies of a real run's
checkpoints, in both formats, and each case goes to `--resume auto`, `--init-from`, `make
evaluate`, `make predict`, `make convert-checkpoint` and `make verify`'s reader. The table of
what each reader answered is written to the test's folder (corpus.md)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from runtime.checkpoint.contents import load_checkpoint
from runtime.checkpoint.files import write_checkpoint_directory
from runtime.rundir import LAST_CHECKPOINT, LAST_SHARDED, RunDirectory
from tests.helpers.checkpoint_corpus import CASES, Case
from tests.helpers.runs import TINY, ReferenceRuns, run_command, run_train

pytestmark = pytest.mark.slow

# --resume auto last: it moves a damaged checkpoint aside, as it should, before the others read.
READERS = ("init_from", "evaluate", "predict", "convert", "verify", "resume")
TRAIN_FLAGS = [*TINY, "--profile", "debug"]


def _numbered(checkpoints: Path) -> list[Path]:
    return sorted(p for p in checkpoints.glob("step-*") if not p.name.endswith(".sha256"))


def planted_run(reference: Path, case: Case, folder: Path) -> tuple[Path, RunDirectory, Path]:
    """A copy of the reference run's output folder with `case` planted in its newest
    checkpoint (turned into a sharded directory first for a directory case); the older
    checkpoint stays, as a run leaves it. Returns (output dir, run dir, the planted path)."""
    output = folder / "out"
    shutil.copytree(reference, output, symlinks=True)
    (run,) = [RunDirectory(p.parent) for p in output.glob("*/*/seed*/manifest.json")]
    checkpoints = run.checkpoint_dir
    newest = _numbered(checkpoints)[-1]
    scratch = folder / "scratch"
    scratch.mkdir()
    if case.kind == "rundir":
        case.plant(run.path, scratch)
        return output, run, newest
    if case.kind == "directory":
        payload = load_checkpoint(newest)
        directory = newest.with_suffix("")
        write_checkpoint_directory(directory, payload)
        for stale in (newest, newest.with_name(newest.name + ".sha256")):
            stale.unlink()
        for pointer in (LAST_CHECKPOINT, LAST_CHECKPOINT + ".sha256"):
            (checkpoints / pointer).unlink()
        (checkpoints / LAST_SHARDED).symlink_to(directory.name)
        newest = directory
    case.plant(newest, scratch)
    if case.kind == "file":  # last.pt: the planted file, as the writer points it
        last = checkpoints / LAST_CHECKPOINT
        last.unlink()
        last.hardlink_to(newest)
        sums = newest.with_name(newest.name + ".sha256")
        if sums.exists():
            text = sums.read_text().replace(newest.name, LAST_CHECKPOINT)
            (checkpoints / f"{LAST_CHECKPOINT}.sha256").write_text(text)
    return output, run, newest


def one_image(folder: Path) -> Path:
    folder.mkdir(parents=True)
    Image.new("RGB", (32, 32), (120, 30, 200)).save(folder / "one.png")
    return folder


def test_every_planted_checkpoint_is_refused_by_every_reader_in_one_line(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    reference = references.tiny(1).run.path.parents[2]  # <output>/<config>/<profile>/seed<N>
    images = one_image(tmp_path / "images")
    jobs, victims = [], {}
    for number, case in enumerate(CASES):
        folder = tmp_path / f"case{number:02d}"
        output, run, planted = planted_run(reference, case, folder)
        victims[case.name] = {
            p: p.read_bytes() for p in (folder / "scratch").rglob("*") if p.is_file()
        }
        readers = ("resume",) if case.kind == "rundir" else READERS
        for reader in readers:
            scratch = folder / "scratch" / reader
            scratch.mkdir()
            jobs.append(
                {
                    "case": case.name,
                    "damaged": case.damaged,
                    "reason": case.reason,
                    "reader": reader,
                    "checkpoint": str(planted),
                    "run_dir": str(run.path),
                    "output_dir": str(output),
                    "scratch": str(scratch),
                    "images": str(images),
                    "train_flags": TRAIN_FLAGS,
                    "marker": str(folder / "scratch" / "marker"),
                    "rewritten": str(folder / "scratch" / "x"),
                }
            )
    plan, results_file = tmp_path / "plan.json", tmp_path / "results.json"
    plan.write_text(json.dumps(jobs))
    driven = run_command(
        [sys.executable, "-m", "tests.helpers.checkpoint_corpus", str(plan), str(results_file)],
        timeout=900,
    )
    assert driven.returncode == 0, driven.stderr[-3000:]
    results = json.loads(results_file.read_text())
    assert len(results) == len(jobs) and len(CASES) >= 20

    table: dict[str, dict[str, str]] = {}
    failures = []
    for result in results:
        lines = [line for line in result["output"].splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        if result["damaged"] and result["reader"] == "resume":
            # --resume auto skips a damaged checkpoint, resumes from the older one, and moves
            # the damaged one aside.
            ok = result["exit"] == 0 and any("skipped incomplete or damaged" in x for x in lines)
            moved = Path(result["run_dir"]) / "checkpoints" / "damaged"
            ok = ok and moved.is_dir() and any(moved.iterdir())
            answer = "skipped, moved aside" if ok else "?"
        else:
            ok = (
                result["exit"] not in (0, 70, 71, "hung")
                and len(errors) == 1
                and "Traceback" not in result["output"]
                and result["reason"] in errors[0]
            )
            answer = re.sub(r"/\S+", "…", errors[0][len("error: ") :])[:90] if errors else "?"
        ok = ok and not Path(result["marker"]).exists() and not Path(result["rewritten"]).exists()
        for path, content in victims[result["case"]].items():
            ok = ok and Path(path).read_bytes() == content
        if result["reader"] != "resume" and not (result["damaged"] and result["exit"] == 0):
            written = [p for p in Path(result["scratch"]).iterdir() if p.suffix != ".log"]
            ok = ok and not written
        table.setdefault(result["case"], {})[result["reader"]] = answer if ok else "FAILED"
        if not ok:
            failures.append(
                f"{result['case']} / {result['reader']}: exit {result['exit']}\n"
                f"{result['output'][-1500:]}"
            )
    rows = ["| case | " + " | ".join(READERS) + " |", "|---" * (len(READERS) + 1) + "|"]
    for case, answers in table.items():
        rows.append(f"| {case} | " + " | ".join(answers.get(r, "—") for r in READERS) + " |")
    (tmp_path / "corpus.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    assert not failures, f"{len(failures)} of {len(results)} failed:\n" + "\n\n".join(failures[:6])


def test_the_class_rewriting_index_is_refused_by_each_command_in_one_line(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    """The headline case through the real commands: make evaluate, make convert-checkpoint and
    make train RESUME=auto, each one line, nothing rewritten."""
    reference = references.tiny(1).run.path.parents[2]
    (case,) = [c for c in CASES if c.name.startswith("index: BUILD rewrites a class")]
    output, _, planted = planted_run(reference, case, tmp_path)
    commands = [
        ["make", "evaluate", f"CHECKPOINT={planted}", f"OUTPUT_DIR={tmp_path / 'scratch'}"],
        ["make", "convert-checkpoint", f"CHECKPOINT={planted}", f"TO={tmp_path / 'converted'}"],
        [sys.executable, "train.py", *TRAIN_FLAGS, "--output-dir", str(output), "--resume", "auto"],
    ]
    for command in commands:
        done = run_command(command)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode != 0 and len(errors) == 1, done.stderr[-2000:]
        assert "Traceback" not in done.stderr and "BUILD" not in errors[0]
        assert "is refused" in errors[0], errors[0]
    assert not (tmp_path / "scratch" / "x").exists() and not (tmp_path / "converted").exists()


def test_a_damaged_newer_checkpoint_never_makes_pruning_delete_the_good_one(
    tmp_path: Path,
) -> None:
    """keep=1: a good step 4 and a damaged step 12. The resume skips 12 (moved aside), saves
    step 6 and keeps it; the next resume continues from step 6."""
    flags = ("checkpoint.every_steps=2", "checkpoint.keep=1")
    first = run_train(tmp_path, *flags, "trainer.max_steps=4")
    checkpoints = first.run.checkpoint_dir
    assert [p.name for p in _numbered(checkpoints)] == ["step-00000004.pt"]
    good = checkpoints / "step-00000004.pt"
    damaged = checkpoints / "step-00000012.pt"
    shutil.copyfile(good, damaged)
    (checkpoints / "step-00000012.pt.sha256").write_text(
        (checkpoints / "step-00000004.pt.sha256").read_text().replace("00000004", "00000012")
    )
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))

    resumed = run_train(tmp_path, *flags, "trainer.max_steps=6", "--resume", "auto")
    assert "skipped incomplete or damaged checkpoint(s): step-00000012.pt" in resumed.output
    assert [p.name for p in _numbered(checkpoints)] == ["step-00000006.pt"]
    assert (checkpoints / "damaged" / "step-00000012.pt").is_file()
    assert load_checkpoint(checkpoints / "step-00000006.pt")["step"] == 6

    again = run_train(tmp_path, *flags, "trainer.max_steps=8", "--resume", "auto")
    assert "resuming after step 6" in again.output, again.output[-2000:]
    assert [p.name for p in _numbered(checkpoints)] == ["step-00000008.pt"]


def test_a_refused_command_changes_nothing_in_the_run_directory(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    """A resume refused (it would change what is computed) leaves every file of the run as it
    was, the lock's holder record included; so does the finished run's own command again,
    which only says that nothing is left to train."""
    output = tmp_path / "out"
    shutil.copytree(references.tiny(1).run.path.parents[2], output, symlinks=True)
    (run,) = [p.parent for p in output.glob("*/*/seed*/manifest.json")]

    def files() -> dict[Path, tuple[bytes, int]]:
        return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}

    before = files()
    refused = run_train(
        output, "--profile", "debug", "optim.lr=0.5", "--resume", "auto", check=False
    )
    assert refused.returncode != 0 and "cannot resume: optim.lr differs" in refused.output
    assert files() == before
    again = run_train(output, "--profile", "debug", check=False)
    assert again.returncode == 0 and "nothing left to train" in again.output, again.output
    assert files() == before
