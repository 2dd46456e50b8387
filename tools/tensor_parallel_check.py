"""What `make diagnose ARGS="parallel.tensor=2"` checks of a tensor-parallel job, on every rank.

Seed document 000 says every stream is identical inside a tensor-parallel group. That holds for
the replicated parts of a step and breaks inside its sharded regions, so the check asks the rule
of each stream and each dropout site where it applies (seeding/regions.py):

- streams: every stream keyed by `tp` differs between the ranks of a group, every other one is
  the group's; every stream keyed by `dp` differs between replicas;
- the split model: its shards gathered back are the unsplit model's initial weights bit for bit,
  and its forward pass equals the unsplit one's within float tolerance (a row-parallel layer adds
  its partial sums in another order);
- training steps, through the trainer train.py builds: a forward hook on every `nn.Dropout` sees
  whether the site's input is the same on every rank of the group (a replicated site: the mask
  must be the same too, or the replicas drift apart) or not (a sharded site: the masks must
  differ, or every shard drops the same pattern), and the logits must be identical bit for bit
  on every rank of the group after every step.

The site kind is observed, not declared: a fork's model that forgets `sharded_randomness()` at a
sharded site, or puts a replicated site inside it, is caught the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

import seeding
from configs import Config
from models import build_model
from runtime.assembly import build_run, plan_run
from seeding.plan import STREAM_AXES, SeedPlan
from training.parallel.config import mesh_coordinates
from training.topology import Topology

STEPS = 3
FORWARD_TOLERANCE = 1e-5


def _digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().contiguous().cpu()
    return hashlib.sha256(data.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


@dataclass
class SiteRecorder:
    """Per training step, for every dropout site in call order: (input digest, mask digest)."""

    steps: list[list[tuple[str, str]]] = field(default_factory=list)

    def hook(
        self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        if not module.training or not self.steps:
            return
        kept = (output != 0) | (inputs[0] == 0)  # a zero input tells nothing of its mask
        self.steps[-1].append((_digest(inputs[0]), _digest(kept)))


def _draw_streams(plan: SeedPlan) -> dict[str, str]:
    """Each stream's seed at its first coordinates (the value the rule is about)."""
    extra = {"worker": (0, 0), "sampler": (0,), "microbatch": (0, 0), "mix": (0, 0)}
    values = {}
    for stream in STREAM_AXES:
        if stream == "augment":
            values[stream] = str(plan.augment_key()[0])
        else:
            values[stream] = str(plan.seed(stream, *extra.get(stream, ())))
    return values


@dataclass
class RankReport:
    coordinates: tuple[int, int]
    streams: dict[str, str]
    gathered_equals_unsplit: bool
    forward_difference: float
    sites: list[list[tuple[str, str]]]
    logits: list[str]


def check_this_rank(config: Config, topology: Topology) -> RankReport:
    """Build the job as train.py does, then train `STEPS` steps with the site hooks on."""
    planned = plan_run(config, topology)
    plan = planned.plan
    built = build_run(config, topology, planned)
    trainer = built.trainer
    gathered = trainer.weights()
    seeding.enter_init_stream(plan)
    unsplit = build_model(config.model, built.data.num_classes, built.data.image_size)
    same = all(torch.equal(gathered[k], v) for k, v in unsplit.state_dict().items())
    batches = list(_first_batches(trainer, STEPS))
    images = batches[0][0][0]
    trainer.model.eval()
    unsplit.eval()
    with torch.no_grad():
        difference = float((trainer.model(images) - unsplit(images)).abs().max())
    trainer.model.train()
    seeding.enter_dropout_stream(plan)  # back where train.py starts its first step

    recorder = SiteRecorder()
    logits: list[str] = []
    handles = [
        module.register_forward_hook(recorder.hook)
        for module in trainer.model.modules()
        if isinstance(module, nn.Dropout)
    ]
    handles.append(trainer.model.register_forward_hook(_keep_digest(logits)))
    for step_batches in batches:
        recorder.steps.append([])
        trainer.train_step(step_batches)
    for handle in handles:
        handle.remove()
    return RankReport(
        mesh_coordinates(topology.rank, config.parallel.tensor),
        _draw_streams(plan),
        same,
        difference,
        recorder.steps,
        logits,
    )


def _keep_digest(into: list[str]) -> Callable[[nn.Module, object, torch.Tensor], None]:
    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if module.training:
            into.append(_digest(output))

    return hook


def _first_batches(trainer: object, steps: int) -> list:
    groups = []
    for group in trainer.optimizer_steps(0):  # type: ignore[attr-defined]
        groups.append([(i.to(trainer.device), t.to(trainer.device)) for i, t in group])  # type: ignore[attr-defined]
        if len(groups) == steps:
            break
    return groups


def gather_reports(report: RankReport, world_size: int) -> list[RankReport]:
    reports: list[RankReport | None] = [None] * world_size
    dist.all_gather_object(reports, report)
    return [r for r in reports if r is not None]


# The rule, written apart from the plan's table so that a wrong table is caught.
def _expected(stream: str) -> tuple[bool, bool]:
    """(distinct across tp, distinct across dp) as the rule says."""
    axes = RULE[stream]
    return "tp" in axes, "dp" in axes


RULE = dict(STREAM_AXES)  # copied at import: `--plant-mistake` edits the live table afterwards


def verdicts(reports: list[RankReport]) -> list[tuple[str, bool]]:
    """One line per rule, True where it holds."""
    lines: list[tuple[str, bool]] = []
    groups: dict[int, list[RankReport]] = {}
    for report in reports:
        groups.setdefault(report.coordinates[0], []).append(report)
    for stream in STREAM_AXES:
        across_tp, across_dp = _expected(stream)
        ok = True
        for a in reports:
            for b in reports:
                (dp_a, tp_a), (dp_b, tp_b) = a.coordinates, b.coordinates
                should_differ = (across_tp and tp_a != tp_b) or (across_dp and dp_a != dp_b)
                if (a.streams[stream] != b.streams[stream]) != should_differ:
                    ok = False
        rule = (
            f"{'distinct' if across_tp else 'identical'} across tp, "
            f"{'distinct' if across_dp else 'identical'} across dp"
        )
        lines.append((f"stream {stream}: {rule}", ok))
    lines.append(
        (
            "initial weights: the shards gathered equal the unsplit model's, bit for bit",
            all(r.gathered_equals_unsplit for r in reports),
        )
    )
    worst = max(r.forward_difference for r in reports)
    lines.append(
        (
            f"forward at initialisation: equals the unsplit model's (max |difference| "
            f"{worst:.1e} <= {FORWARD_TOLERANCE:.0e})",
            worst <= FORWARD_TOLERANCE,
        )
    )
    replicated = sharded = 0
    replicated_ok = sharded_ok = logits_ok = True
    for group in groups.values():
        first = group[0]
        logits_ok &= all(r.logits == first.logits for r in group)
        for step, sites in enumerate(first.sites):
            for site, (input_digest, _) in enumerate(sites):
                inputs = {r.sites[step][site][0] for r in group}
                masks = {r.sites[step][site][1] for r in group}
                if inputs == {input_digest}:
                    replicated += 1
                    replicated_ok &= len(masks) == 1
                else:
                    sharded += 1
                    sharded_ok &= len(masks) == len(group)
    lines.append(
        (
            f"steps 1-{STEPS}: logits identical bit for bit on every rank of each tp group",
            logits_ok,
        )
    )
    lines.append(
        (
            f"steps 1-{STEPS}: replicated dropout sites ({replicated} seen): the same mask on "
            "every rank of the group",
            replicated_ok,
        )
    )
    lines.append(
        (
            f"steps 1-{STEPS}: sharded dropout sites ({sharded} seen): a different mask on each "
            "rank of the group",
            sharded_ok and sharded > 0,
        )
    )
    return lines
