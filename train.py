"""Train a model reproducibly, alone or under torchrun: parse -> plan -> build -> loop -> save.

python train.py [--config PATH] [--seed INT] [--profile debug|eval|production]
                [--resume PATH|auto] [--output-dir DIR] [key=value ...]
torchrun --nproc_per_node=N train.py ...
"""

from __future__ import annotations

import sys

import seeding
from configs import Config, config_to_yaml, load_config, parse_args
from data.loaders import build_data
from engine.checkpoint import load_checkpoint
from engine.determinism import apply_determinism, nondeterministic_op_in, precision_for
from engine.distributed import (
    collective,
    init_distributed,
    post_fault,
    raise_if_a_peer_failed,
    shutdown,
)
from engine.errors import UserError, run_reporting_user_errors
from engine.faults import TrainingFault
from engine.invariance import InvariantMode, MicroBatchLayout, pin_threads
from engine.recorder import RunIdentity, RunRecorder
from engine.resume import (
    check_same_computation,
    computation_fingerprint,
    decide_resume,
    flatten,
)
from engine.rundir import RunDirectory
from engine.signals import StopSignals
from engine.trainer import Trainer
from models import build_model
from tools.provenance import git_state


def main() -> None:
    # 1. Parse: command line, config and checkpoint are checked before anything is written.
    arguments = parse_args(sys.argv[1:])
    config = load_config(arguments.config, arguments.profile, arguments.seed, arguments.overrides)
    run_dir = RunDirectory.of(arguments.output_dir, config.name, config.profile, config.seed)
    resume = decide_resume(arguments.resume, run_dir)
    checkpoint = None if resume.fresh else load_checkpoint(resume.checkpoint)

    # 2. Plan: join the process group, then fix every seed and determinism switch before any draw.
    context = init_distributed(config.trainer.device, config.trainer.collective_timeout_s)
    settings = config.model_dump(mode="json")
    fingerprint = computation_fingerprint(settings, context.world_size, context.device.type)
    if checkpoint is not None:
        check_same_computation(checkpoint, fingerprint)
    plan = seeding.data_parallel(config.seed, context.rank)  # the global rank, never LOCAL_RANK
    invariant = invariant_mode(config, context.world_size, context.rank, plan)
    determinism_notes = apply_determinism(config.determinism, context.device)
    if invariant is not None:
        pin_threads(context.device)
        determinism_notes.append(invariant.layout.note())
    seeding.seed_host_globals(plan)

    # 3. Build: data, the model from the init stream shared by all ranks, then per-rank dropout;
    #    the recorder, which the trainer knows only through its events.
    precision = precision_for(config.determinism, context.device)
    eval_chunk = None if invariant is None else invariant.layout.micro_batch
    data = build_data(
        config.data, plan, context.world_size, context.rank, precision.pin_memory, eval_chunk
    )
    seeding.enter_init_stream(plan)
    model = build_model(config.model, data.num_classes, config.data.image_size)
    seeding.enter_dropout_stream(plan)
    resume_step = (checkpoint["step"] if checkpoint else 0) if resume.continuing else None
    identity = run_identity(
        config, settings, arguments.argv, git_state() if context.is_main else None, invariant
    )
    stop_signals = StopSignals(announce=context.is_main)
    recorder = RunRecorder(
        run_dir, identity, context, plan, precision, determinism_notes, fingerprint, resume_step
    )
    trainer = Trainer(
        config.trainer,
        config.optim,
        precision,
        context,
        model,
        data.train,
        data.val,
        recorder,
        invariant,
        stop_signals,
    )
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)

    # 4. Loop: train until trainer.epochs or trainer.max_steps, checkpointing on the way. A
    #    fault (engine/faults.py) ends the run with one line; SIGTERM/SIGINT end it after a
    #    checkpoint, every rank at the same step.
    recorder.start(trainer.position)
    failed_op = None
    stop_signals.install()
    try:
        with recorder.recording_nondeterminism():
            trainer.fit()
        final_metrics = trainer.evaluate()
    except TrainingFault as fault:
        stop_signals.quietly()  # torchrun's SIGTERM to the others must not cut this exit short
        recorder.record_fault(trainer.position, fault)
        post_fault(context, str(fault))  # the ranks still waiting for this one learn why
        raise
    except RuntimeError as error:
        failed_op = nondeterministic_op_in(error)
        if failed_op is None:
            raise_if_a_peer_failed(context)  # then that rank's line is the cause, not this error
            raise
        final_metrics = None
    stop_signals.uninstall()

    # 5. Save: manifest with the final evaluation, determinism report; leave the process group.
    recorder.finish(
        trainer.position,
        trainer.model.state_dict(),
        final_metrics,
        status="completed" if failed_op is None else "failed",
        error=None if failed_op is None else f"nondeterministic op {failed_op}",
    )
    del trainer  # DDP's reducer holds the process group; it must go before the group (see shutdown)
    with collective(context, "leaving the process group"):
        shutdown(context)
    if failed_op is not None:
        raise UserError(
            f"profile {config.profile!r}: {failed_op} has no deterministic implementation on "
            f"{context.device.type}; use --profile eval to record such ops instead of failing"
        )


def invariant_mode(
    config: Config, world_size: int, rank: int, plan: seeding.SeedPlan
) -> InvariantMode | None:
    """The world-size-invariant mode, if asked for; a world size it cannot serve is refused here,
    before anything is written."""
    if not config.trainer.world_size_invariant:
        return None
    assert config.data.global_batch_size and config.trainer.micro_batch_size  # the schema checks
    layout = MicroBatchLayout.checked(
        config.data.global_batch_size, config.trainer.micro_batch_size, world_size, rank
    )
    return InvariantMode(layout, lambda step, j: plan.seed("microbatch", step, j))


def run_identity(
    config: Config,
    settings: dict,
    argv: tuple[str, ...],
    git: dict | None,
    invariant: InvariantMode | None,
) -> RunIdentity:
    """The run as the recorder writes it: names, the resolved config, TensorBoard hparams."""
    return RunIdentity(
        config_name=config.name,
        profile=config.profile,
        seed=config.seed,
        argv=argv,
        settings=settings,
        config_yaml=config_to_yaml(config),
        determinism=config.determinism,
        # Every resolved key (dotted), so TensorBoard's HParams tab can set runs side by side.
        hyperparameters=flatten(settings),
        epochs=config.trainer.epochs,
        keep_checkpoints=config.trainer.keep_checkpoints,
        git=git,
        world_size_invariance=None if invariant is None else invariant.layout.describe(),
    )


if __name__ == "__main__":
    run_reporting_user_errors(main)
