"""LP-FT and the automatic recipe.

LP-FT (Kumar et al., ICLR 2022): fit the linear probe first, then fine-tune from it, so that the
first gradients reaching the backbone come from a sensible head instead of a random one and do
not wreck the features. The backbone's stages get learning rates that shrink toward the input,
one factor per stage (timm's layer decay, fastai's discriminative rates).

`--freeze auto` fits the probe, then runs LP-FT in the time its budget has left, cut to fit where
it must (`auto.fine_tune_plan`), and keeps whichever scores better on validation.
"""

from __future__ import annotations

import math

import torch

from ..errors import TlguiError

STAGE_DECAY = 0.7  # each stage nearer the input learns at 0.7 times the rate of the one above it
BUDGET_CPU = 60.0  # seconds `auto` may spend by default (candidates, then fine-tuning): a CPU's first run stays quick
BUDGET_GPU = 600.0


def default_budget(device: torch.device) -> float:
    return BUDGET_GPU if device.type == "cuda" else BUDGET_CPU


def check_auto(infos) -> None:
    """`auto` needs backbones whose features are fixed when frozen (a probe) and that can fine-tune."""
    for i in infos:
        if i.trains_when_frozen or i.stages < 1:
            raise TlguiError(f"--freeze auto cannot use {i.name}: its features are not fixed when frozen, so there "
                             "is no linear probe to start from; use --freeze all or none")


def stage_groups(model, top_lr: float, decay: float = STAGE_DECAY) -> list[dict]:
    """Parameter groups for fine-tuning: the head and fusion at `top_lr`, each backbone's last
    stage at `top_lr`, each earlier stage at `decay` times the next one's rate."""
    seen: set[int] = set()
    groups: list[dict] = []

    def add(params, lr):
        params = [p for p in params if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "lr": lr})

    add([p for m in (model.fusion, model.head) for p in m.parameters()], top_lr)
    for b in model.backbones:
        add(b.scratch_parameters(), top_lr)
        stages = b.stages
        for depth, stage in enumerate(reversed(stages)):
            add([p for m in stage for p in m.parameters()], top_lr * decay ** depth)
        add(b.parameters(), top_lr * decay ** max(len(stages) - 1, 0))  # loose ones go with the stem
    return groups


def choose(probe_accuracy: float | None, tuned_accuracy: float | None, estimate: float | None, budget: float,
           ran: bool, wins: tuple[int, int] | None = None, left: float | None = None, plan: dict | None = None) -> dict:
    """What `auto` did and why, for results.json, tlgui.json, the card and the status.

    `wins`: validation examples LP-FT got right and the probe wrong, and the other way round. LP-FT
    replaces the probe only where its lead is beyond the validation set's noise (McNemar's test at
    one standard deviation: lead > sqrt(examples they disagree on)). On a few dozen validation
    examples a lead of one or two is chance, and the probe is the steadier model."""
    record = {"budget_s": budget, "lpft_estimate_s": estimate, "probe_val_accuracy": probe_accuracy,
              "lpft_val_accuracy": tuned_accuracy, "lpft_ran": ran}
    if left is not None:  # the seconds the budget had left after the probe (and auto's other candidates)
        record["budget_left_s"] = round(max(left, 0.0), 1)
    if plan:  # fine-tuning as planned to fit them: its epochs, its pictures' size (None: the native size)
        record["lpft_plan"] = plan
    if not ran:
        record.update(chosen="probe", margin=None)
        return record
    margin = None if tuned_accuracy is None or probe_accuracy is None else tuned_accuracy - probe_accuracy
    better = margin is not None and margin > 0
    if wins is not None:
        record.update(lpft_wins=int(wins[0]), probe_wins=int(wins[1]))
        better = wins[0] - wins[1] > math.sqrt(wins[0] + wins[1])
    record.update(chosen="lp-ft" if better else "probe", margin=margin)
    return record
