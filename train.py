"""Train a model reproducibly, alone or under torchrun: parse -> plan -> build -> loop -> save.

python train.py [--config PATH] [--seed INT] [--profile debug|eval|production]
                [--resume PATH|auto] [--output-dir DIR] [key=value ...]
torchrun --nproc_per_node=N train.py ...
"""

from __future__ import annotations

import sys

from configs import Config, config_to_yaml, load_config, parse_args
from configs.resume_plan import plan_resume
from data.loaders import DataBundle
from foundation.exit import run_reporting_user_errors
from foundation.faults import TrainingFault
from foundation.process import process_launch
from foundation.section import flatten
from runtime.assembly import RunPlan, build_run, initial_weights, plan_run
from runtime.checkpoint.owner import Checkpointer
from runtime.launcher_watch import watch_launcher
from runtime.process_group import ProcessGroup, join_process_group
from runtime.provenance import git_state
from runtime.recorder import RunIdentity, RunRecorder, seed_table
from runtime.rundir import RunDirectory
from runtime.session import RunSession
from runtime.writer_lock import claim_run_directory
from runtime.writes import WriteFailures
from training.health import NonFiniteWatch


def main() -> None:
    # 1. Parse: command line, config and checkpoint are checked before anything is written; a
    #    resumed run keeps its own config.yaml; a worker whose launcher dies stops at once; a
    #    run directory has one writer.
    watch_launcher(process_launch().rank)
    arguments = parse_args(sys.argv[1:])
    config = load_config(arguments.config, arguments.profile, arguments.seed, arguments.overrides)
    run_dir = RunDirectory.of(arguments.output_dir, config.name, config.profile, config.seed)
    if process_launch().rank == 0:
        claim_run_directory(run_dir, before_writing=True)
    resume = plan_resume(run_dir, arguments, config)
    if resume.done is not None:
        return say_done(resume.done)  # nothing to train, nothing written
    config = resume.config

    # 2. Plan: join the process group, then fix every seed and determinism switch before any
    #    draw; the parallel layout decides what a checkpoint holds; a checkpoint of another
    #    computation is refused here.
    group = join_process_group(config.trainer.device, config.distributed.collective_timeout_s)
    planned = plan_run(config, group.topology)
    checkpoints = Checkpointer(run_dir, config.checkpoint, planned.mode.state_layout)
    resume.check(checkpoints, planned.mode, group.topology)

    # 3. Build (runtime/assembly.py, which make gpu-check builds too): data, the model from the
    #    init stream shared by all ranks, per-rank dropout, the trainer; then the recorder and
    #    the session around it, and the checkpoint's state.
    watch = NonFiniteWatch(group.topology.device)
    built = build_run(
        config, group.topology, planned, watch=watch, guard=group.guard, resuming=resume.loads
    )
    trainer = built.trainer
    identity = run_identity(config, arguments.argv, group, planned, built.data, resume.notes)
    start_writing(run_dir, group, identity)
    recorder = RunRecorder(run_dir, identity, group, planned, resume.step, WriteFailures())
    recorder.show_augmentation(built.data.preview)
    session = RunSession(config.trainer, config.profile, group, recorder, checkpoints, watch)
    trainer.observe(recorder, session)
    resume.restore(trainer)

    # 4. Loop: train until trainer.epochs or trainer.max_steps, checkpointing on the way. A
    #    fault (foundation/faults.py) ends every rank with one line and the fault's exit code;
    #    SIGTERM/SIGINT/SIGHUP end it after a checkpoint, every rank at the same step.
    try:
        with session.running(trainer.position):
            trainer.fit()
            final_metrics = trainer.evaluate()
    except TrainingFault as fault:
        session.exit_on(fault, trainer.position)
    else:
        # 5. Save: the manifest with the final evaluation and the determinism report; leave the
        #    process group.
        session.finish(trainer, final_metrics)


def say_done(line: str) -> None:
    if process_launch().rank == 0:
        print(line, flush=True)


def start_writing(run_dir: RunDirectory, group: ProcessGroup, identity: RunIdentity) -> None:
    """From here on this training is the run directory's one writer (rank 0): the directory is
    created, the lock names this process, config.yaml is the run's."""
    if group.is_main:
        claim_run_directory(run_dir)
        run_dir.write_config(identity.config_yaml)


def run_identity(
    config: Config,
    argv: tuple[str, ...],
    group: ProcessGroup,
    planned: RunPlan,
    data: DataBundle,
    resume_notes: tuple[str, ...],
) -> RunIdentity:
    """The run as the recorder writes it: names, the resolved config, TensorBoard hparams, the
    commit (rank 0 asks git), every rank's seeds (a collective)."""
    resolved = config.model_dump(mode="json")
    git = git_state() if group.is_main else None
    return RunIdentity(
        config_name=config.name,
        profile=config.profile,
        seed=config.seed,
        argv=argv,
        resolved=resolved,
        config_yaml=config_to_yaml(config),
        determinism=config.determinism,
        # Every resolved key (dotted), so TensorBoard's HParams tab can set runs side by side.
        hyperparameters=flatten(resolved),
        epochs=config.trainer.epochs,
        git=git,
        seeds=seed_table(group, planned.plan, config.seed),
        world_size_invariance=planned.mode.describe(),
        augmentation=data.describe_pipelines(),
        data_subset=data.subset,
        init_from=initial_weights(config.init_from),
        resume_notes=resume_notes,
        compiles=config.trainer.compile.enabled,
        trace_steps=config.trainer.trace_steps,
    )


if __name__ == "__main__":
    run_reporting_user_errors(main)
