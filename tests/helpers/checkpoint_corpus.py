"""Planted checkpoints: crafted inputs of both formats, and a driver that hands each one to every
reader a user reaches, as that reader's own command runs it.

Why a driver that forks: each (case, reader) pair is one command run (its `main`, through the
one exit path `run_reporting_user_errors`, with its own argv, exit code and stderr), but starting
a fresh interpreter for each of ~150 pairs would cost ten minutes of imports on two cores. The
driver imports the readers once, then forks a child per pair: the child is a real process (a
crafted index that rewrites a class changes that child only), its exit code and stderr are the
command's, and a hang (a FIFO read) is seen as one. Cases that need a real launch anyway (the
class rewrite through `make evaluate`, `make convert-checkpoint`, `--resume auto`) are run as
commands by the test too.

    python -m tests.helpers.checkpoint_corpus PLAN.json RESULTS.json
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import runpy
import shutil
import signal
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SUMS = "SHA256SUMS"
INDEX = ".metadata"
CHILD_TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------- planting
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_sums(directory: Path) -> None:
    """What a forger does after planting: checksums that match the planted files."""
    lines = [
        f"{sha256(path) if path.is_file() else '0' * 64}  {path.name}\n"
        for path in sorted(directory.iterdir())
        if path.name != SUMS
    ]
    (directory / SUMS).write_text("".join(lines))


def rewrite_file_sum(path: Path) -> None:
    path.with_name(path.name + ".sha256").write_text(f"{sha256(path)}  {path.name}\n")


def global_op(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def prefixed(body: bytes, prefix: bytes) -> bytes:
    """`prefix` run first, its result popped: then the honest pickle, whose result stays. A
    protocol-2+ pickle starts with PROTO n; the splice goes after it."""
    if body[:1] == pickle.PROTO:
        return body[:2] + prefix + pickle.POP + body[2:]
    return prefix + pickle.POP + body


# {(((…),),): 0}: hashing the key recurses in C past the stack (CPython segfaults).
DEEP_KEY = (
    pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * 300_000 + b"K\x00" + pickle.SETITEM
)


def class_build(module: str, name: str, attribute: str, value: str) -> bytes:
    """GLOBAL module.name, state (None, {attribute: value}), BUILD: setattr on the class."""
    state = pickle.dumps((None, {attribute: value}), protocol=2)[2:-1]  # no PROTO, no STOP
    return global_op(module, name) + state + pickle.BUILD


def system_call(marker: Path) -> bytes:
    return (
        global_op("os", "system")
        + pickle.dumps((f"touch {marker}",), protocol=2)[2:-1]
        + pickle.REDUCE
    )


def edit_index(directory: Path, change: Callable[[bytes], bytes]) -> None:
    (directory / INDEX).write_bytes(change((directory / INDEX).read_bytes()))
    rewrite_sums(directory)


def edit_index_object(directory: Path, change: Callable[[Any], None]) -> None:
    """Unpickle the honest index (the test's own file), change it, pickle it again."""
    index = pickle.loads((directory / INDEX).read_bytes())
    change(index)
    (directory / INDEX).write_bytes(pickle.dumps(index))
    rewrite_sums(directory)


def first_storage(index: Any) -> Any:
    return next(iter(index.storage_data.values()))


def shard_elsewhere(directory: Path, scratch: Path, relative: bool) -> None:
    """The index names a copy of the shard outside the checkpoint (by `../` or an absolute
    path): readable, so only the reader's rule refuses it."""
    outside = scratch / "outside.distcp"
    shutil.copyfile(directory / "__0_0.distcp", outside)
    name = os.path.relpath(outside, directory) if relative else str(outside)

    def point(index: Any) -> None:
        for stored in index.storage_data.values():
            stored.relative_path = name

    edit_index_object(directory, point)


def edit_state(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    state = torch.load(directory / "state.pt", weights_only=True)
    change(state)
    torch.save(state, directory / "state.pt")
    rewrite_sums(directory)


def edit_payload(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    rewrite_file_sum(path)


def edit_file_pickle(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Change data.pkl inside a torch.save zip, keep every other member, fix the checksum."""
    source = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as target:
        for member in source.infolist():
            data = source.read(member)
            if member.filename.endswith("/data.pkl"):
                data = change(data)
            target.writestr(member, data)
    path.write_bytes(out.getvalue())
    rewrite_file_sum(path)


def torn(path: Path) -> None:
    """Bytes flipped after the checksum was written, as a torn write leaves them."""
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 64):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def fifo_instead(path: Path, listed: bool = False) -> None:
    path.unlink()
    os.mkfifo(path)
    if listed:  # still named in SHA256SUMS, as a forger would leave it
        rewrite_sums(path.parent)


def directory_link_outside(path: Path, outside: Path) -> None:
    shutil.copytree(path, outside, symlinks=True)
    shutil.rmtree(path)
    path.symlink_to(outside)


def link_outside(path: Path, outside: Path) -> None:
    """`path` becomes a link to a copy of itself outside the checkpoint (checksums still match)."""
    shutil.copyfile(path, outside)
    path.unlink()
    path.symlink_to(outside)
    if (path.parent / SUMS).exists():
        rewrite_sums(path.parent)


@dataclass(frozen=True)
class Case:
    """One planted input: which format it applies to and how it is made from a good one.
    `plant(checkpoint, scratch)`: the checkpoint (a `.pt` file or a directory) to change in
    place; `scratch`, a folder outside the run for what the case places elsewhere."""

    name: str
    kind: str  # "file", "directory" or "rundir" (links in the run directory, for the resume)
    plant: Callable[[Path, Path], None]
    damaged: bool = False  # its checksums show it: --resume auto skips it (and moves it aside)
    reason: str = ""  # what the refusal must say (where another check could refuse it first)


def _reducer_of(module: str, name: str) -> Callable[[Path, Path], None]:
    """A call of an allowed global with arguments an honest index never gives it."""
    arguments = pickle.dumps((1,), protocol=2)[2:-1]
    call = global_op(module, name) + arguments + pickle.REDUCE
    return lambda d, _: edit_index(d, lambda body: prefixed(body, call))


_DCP = "torch.distributed.checkpoint.metadata"
CASES: list[Case] = [
    # --- the sharded format: DCP's index, forged with matching SHA256SUMS
    Case(
        "index: BUILD rewrites a class (PosixPath._str)",
        "directory",
        lambda d, s: edit_index(
            d, lambda b: prefixed(b, class_build("pathlib", "PosixPath", "_str", str(s / "x")))
        ),
        reason="filling PosixPath",
    ),
    Case(
        "index: BUILD rewrites a function (_get_layout.cache)",
        "directory",
        lambda d, s: edit_index(
            d,
            lambda b: prefixed(
                b, class_build("torch.serialization", "_get_layout", "cache", "planted")
            ),
        ),
        reason="filling _layout",
    ),
    Case(
        "index: os.system called",
        "directory",
        lambda d, s: edit_index(d, lambda b: prefixed(b, system_call(s / "marker"))),
        reason="os.system is not part",
    ),
    *[
        Case(f"index: {cls} called by REDUCE", "directory", _reducer_of(module, cls))
        for module, cls in [
            (_DCP, "Metadata"),
            (_DCP, "TensorStorageMetadata"),
            (_DCP, "ChunkStorageMetadata"),
            (_DCP, "TensorProperties"),
            (_DCP, "MetadataIndex"),
            (_DCP, "StorageMeta"),
            ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
            ("pathlib", "PosixPath"),
            ("torch.serialization", "_get_layout"),
        ]
    ],
    Case(
        "index: a field the dataclass does not have",
        "directory",
        lambda d, _: edit_index_object(d, lambda i: first_storage(i).__dict__.update(planted="x")),
    ),
    Case(
        "index: a shard path with ../",
        "directory",
        lambda d, s: shard_elsewhere(d, s, relative=True),
        reason="not a file of the checkpoint listed",
    ),
    Case(
        "index: an absolute shard path",
        "directory",
        lambda d, s: shard_elsewhere(d, s, relative=False),
        reason="not a file of the checkpoint listed",
    ),
    Case(
        "index: a huge shard length",
        "directory",
        lambda d, _: edit_index_object(d, lambda i: setattr(first_storage(i), "length", 1 << 62)),
        reason="beyond the end",
    ),
    Case(
        "index: a string where a count goes",
        "directory",
        lambda d, _: edit_index_object(d, lambda i: setattr(first_storage(i), "offset", "0")),
    ),
    Case(
        "index: a huge string length",
        "directory",
        lambda d, _: edit_index(
            d, lambda b: prefixed(b, pickle.BINUNICODE + (0xFFFFFFF0).to_bytes(4, "little"))
        ),
    ),
    Case(
        "index: a tuple nested 300,000 deep as a dict key (SIGSEGV when hashed)",
        "directory",
        lambda d, _: edit_index(d, lambda b: prefixed(b, DEEP_KEY)),
        reason="nests deeper than",
    ),
    Case(
        "SHA256SUMS names ../state.pt",
        "directory",
        lambda d, _: (d / SUMS).write_text((d / SUMS).read_text() + f"{'0' * 64}  ../state.pt\n"),
        damaged=True,
    ),
    Case(
        "a shard file is a FIFO",
        "directory",
        lambda d, _: fifo_instead(d / "__0_0.distcp", listed=True),
        damaged=True,
    ),
    Case(
        "a shard file is a link outside",
        "directory",
        lambda d, s: link_outside(d / "__0_0.distcp", s / "shard"),
        damaged=True,
    ),
    Case("a torn shard", "directory", lambda d, _: torn(d / "__0_0.distcp"), damaged=True),
    Case(
        "state.pt: step is a path",
        "directory",
        lambda d, _: edit_state(d, lambda p: p.update(step="1/../../x")),
    ),
    # --- the single-file format, forged with a matching .sha256
    Case(
        "file: BUILD rewrites a class",
        "file",
        lambda f, s: edit_file_pickle(
            f, lambda b: prefixed(b, class_build("pathlib", "PosixPath", "_str", str(s / "x")))
        ),
        reason="Unsupported global",
    ),
    Case(
        "file: os.system called",
        "file",
        lambda f, s: edit_file_pickle(f, lambda b: prefixed(b, system_call(s / "marker"))),
    ),
    Case(
        "file: step is a path",
        "file",
        lambda f, _: edit_payload(f, lambda p: p.update(step="1/../../x")),
    ),
    Case(
        "file: a negative epoch", "file", lambda f, _: edit_payload(f, lambda p: p.update(epoch=-1))
    ),
    Case(
        "file: step is a bool", "file", lambda f, _: edit_payload(f, lambda p: p.update(step=True))
    ),
    Case(
        "file: config is a string",
        "file",
        lambda f, _: edit_payload(f, lambda p: p.update(config="x")),
    ),
    Case(
        "file: the model holds a string",
        "file",
        lambda f, _: edit_payload(f, lambda p: p["model"].update(planted="x")),
    ),
    Case(
        "file: no optimizer state",
        "file",
        lambda f, _: edit_payload(f, lambda p: p["optimizer"].pop("state")),
    ),
    Case(
        "file: no fingerprint", "file", lambda f, _: edit_payload(f, lambda p: p.pop("fingerprint"))
    ),
    Case(
        "file: a tuple nested 300,000 deep as a dict key",
        "file",
        lambda f, _: edit_file_pickle(f, lambda b: prefixed(b, DEEP_KEY)),
        reason="nests deeper than",
    ),
    Case("file: torn", "file", lambda f, _: torn(f), damaged=True),
    Case("file: a FIFO", "file", lambda f, _: fifo_instead(f), damaged=True),
    Case("file: a link outside", "file", lambda f, s: link_outside(f, s / "linked.pt")),
    # --- the run directory (read by --resume auto before anything is written)
    Case(
        "run dir: metrics.jsonl links outside",
        "rundir",
        lambda run, s: link_outside(run / "metrics.jsonl", s / "victim"),
    ),
    Case(
        "run dir: .writer.lock links outside",
        "rundir",
        lambda run, s: link_outside(run / ".writer.lock", s / "victim"),
    ),
    Case(
        "run dir: checkpoints/ links outside",
        "rundir",
        lambda run, s: directory_link_outside(run / "checkpoints", s / "victim"),
    ),
]


# ----------------------------------------------------------------------------- the readers
def _command(module: str, argv: list[str]) -> None:
    from foundation.exit import run_reporting_user_errors

    sys.argv = [module, *argv]
    if module.endswith(".py"):
        runpy.run_path(str(REPO_ROOT / module), run_name="__main__")
    else:
        main = __import__(module, fromlist=["main"]).main
        run_reporting_user_errors(main)


def _verify_reader(run_dir: str) -> None:
    from foundation.exit import run_reporting_user_errors
    from runtime.checkpoint.contents import load_last
    from runtime.rundir import RunDirectory

    run_reporting_user_errors(lambda: load_last(RunDirectory(Path(run_dir))) and None)


def run_reader(reader: str, job: dict[str, Any]) -> None:
    """In the child: the reader's command on the job's planted input."""
    checkpoint, scratch = job["checkpoint"], job["scratch"]
    if reader == "resume":
        _command(
            "train.py", [*job["train_flags"], "--output-dir", job["output_dir"], "--resume", "auto"]
        )
    elif reader == "init_from":
        fresh = str(Path(scratch) / "fresh")
        _command(
            "train.py", [*job["train_flags"], "--output-dir", fresh, "--init-from", checkpoint]
        )
    elif reader == "evaluate":
        _command("scripts.evaluate", ["--checkpoint", checkpoint, "--output-dir", scratch])
    elif reader == "predict":
        _command(
            "scripts.predict",
            ["--checkpoint", checkpoint, "--images", job["images"], "--output-dir", scratch],
        )
    elif reader == "convert":
        _command("scripts.convert_checkpoint", [checkpoint, str(Path(scratch) / "converted")])
    elif reader == "verify":
        _verify_reader(job["run_dir"])
    else:
        raise SystemExit(f"unknown reader {reader}")


def _child(reader: str, job: dict[str, Any], log: Path) -> None:
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    code = 70
    try:
        run_reader(reader, job)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 71
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def drive(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each job in a forked child; its exit code, its output, whether it hung."""
    results = []
    for job in jobs:
        log = Path(job["scratch"]) / f"{job['reader']}.log"
        pid = os.fork()
        if pid == 0:
            _child(job["reader"], job, log)
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        status = None
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = "hung"
            else:
                time.sleep(0.02)
        results.append({**job, "exit": status, "output": log.read_text(errors="replace")})
    return results


def main() -> None:
    plan, output = Path(sys.argv[1]), Path(sys.argv[2])
    # The readers' imports, once, before any fork (no torch computation here: the children
    # start their thread pools themselves).

    import scripts.convert_checkpoint
    import scripts.evaluate
    import scripts.predict  # noqa: F401

    os.chdir(REPO_ROOT)
    output.write_text(json.dumps(drive(json.loads(plan.read_text())), indent=1))


if __name__ == "__main__":
    main()
