"""Splitting a network into ordered stages, the unit of partial freezing."""

from __future__ import annotations

from torch import nn

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _param_children(m: nn.Module) -> list[nn.Module]:
    return [c for c in m.children() if _nparams(c) > 0]


def _norm_only(m: nn.Module) -> bool:
    return all(isinstance(x, NORMS) or not any(True for _ in x.parameters(recurse=False)) for x in m.modules())


def split_stages(body: nn.Module, max_stages: int = 24) -> list[list[nn.Module]]:
    """Ordered stages of `body`, each a list of modules, from the input side.

    Start from the top-level children that hold weights; while one of them holds most of the
    weights and has parts of its own (a `features` or `blocks` container), open it up. A
    normalisation layer alone is merged into the stage before it (`conv1`+`bn1` is one stem).
    """
    parts = _param_children(body) or [body]
    while len(parts) < 6:
        total = sum(_nparams(p) for p in parts)
        big = [i for i, p in enumerate(parts) if _nparams(p) > total / 2 and len(_param_children(p)) > 1]
        if not big:
            break
        i = big[0]
        parts[i : i + 1] = _param_children(parts[i])
    stages: list[list[nn.Module]] = []
    for p in parts:
        if stages and _norm_only(p):
            stages[-1].append(p)
        else:
            stages.append([p])
    while len(stages) > max_stages:  # very deep containers: pair neighbours up
        stages = [sum(stages[i : i + 2], []) for i in range(0, len(stages), 2)]
    return stages
