"""Train a model reproducibly, alone or under torchrun: parse -> plan -> build -> loop -> save.

python train.py [--config PATH] [--seed INT] [--profile debug|eval|production]
                [--resume PATH|auto] [--output-dir DIR] [key=value ...]
torchrun --nproc_per_node=N train.py ...
"""

from __future__ import annotations

import sys

import seeding
from data.loaders import build_data
from engine.checkpoint import load_checkpoint
from engine.cli import parse_args
from engine.config import load_config
from engine.determinism import apply_determinism, nondeterministic_op_in
from engine.distributed import init_distributed, shutdown
from engine.errors import UserError, run_reporting_user_errors
from engine.outputs import RunOutputs
from engine.resume import check_same_computation, computation_fingerprint, decide_resume
from engine.rundir import run_directory
from engine.trainer import Trainer
from models import build_model


def main() -> None:
    # 1. Parse: command line, config and checkpoint are checked before anything is written.
    arguments = parse_args(sys.argv[1:])
    config = load_config(arguments.config, arguments.profile, arguments.seed, arguments.overrides)
    run_dir = run_directory(arguments.output_dir, config)
    resume = decide_resume(arguments.resume, run_dir)
    checkpoint = None if resume.fresh else load_checkpoint(resume.checkpoint)

    # 2. Plan: join the process group, then fix every seed and determinism switch before any draw.
    context = init_distributed(config.trainer.device)
    fingerprint = computation_fingerprint(config, context.world_size, context.device.type)
    if checkpoint is not None:
        check_same_computation(checkpoint, fingerprint)
    plan = seeding.data_parallel(config.seed, context.rank)  # the global rank, never LOCAL_RANK
    determinism_notes = apply_determinism(config.determinism, context.device)
    seeding.seed_host_globals(plan)

    # 3. Build: data, the model from the init stream shared by all ranks, then per-rank dropout.
    pin_memory = config.determinism.pin_memory and context.device.type == "cuda"
    data = build_data(config.data, plan, context.world_size, context.rank, pin_memory)
    seeding.enter_init_stream(plan)
    model = build_model(config.model, data.num_classes, config.data.image_size)
    seeding.enter_dropout_stream(plan)
    resume_step = (checkpoint["step"] if checkpoint else 0) if resume.continuing else None
    outputs = RunOutputs(
        run_dir, config, context, plan, arguments, determinism_notes, resume_step, fingerprint
    )
    trainer = Trainer(config, context, model, data, outputs)
    if checkpoint is not None:
        trainer.restore(checkpoint)

    # 4. Loop: train until trainer.epochs or trainer.max_steps, checkpointing on the way.
    outputs.start(trainer)
    failed_op = None
    try:
        with outputs.recording_nondeterminism():
            trainer.fit()
    except RuntimeError as error:
        failed_op = nondeterministic_op_in(error)
        if failed_op is None:
            raise

    # 5. Save: final evaluation, manifest, determinism report; then leave the process group.
    if failed_op is None:
        outputs.finish(trainer)
    else:
        outputs.finish(trainer, status="failed", error=f"nondeterministic op {failed_op}")
    del trainer  # DDP's reducer holds the process group; it must go before the group (see shutdown)
    shutdown(context)
    if failed_op is not None:
        raise UserError(
            f"profile {config.profile!r}: {failed_op} has no deterministic implementation on "
            f"{context.device.type}; use --profile eval to record such ops instead of failing"
        )


if __name__ == "__main__":
    run_reporting_user_errors(main)
