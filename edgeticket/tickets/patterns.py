"""Sparsity patterns: which weights form one prunable group, and how groups are scored and chosen.

For a conv weight of shape [out, in, kh, kw] (here 2 filters, 2 input channels, 3x3 kernels):

    unstructured  one weight            row     one kernel row (kw weights)
      [x . x]                             [x x x]
      [. x x]                             [. . .]   <- a whole row removed
      [x x .]                             [x x x]

    kernel        one kh x kw kernel    channel  one output filter: every kernel of filter `o`
      [. . .]                             (removed physically by torch-pruning, so the model
      [. . .]   <- all 9 weights gone      becomes a smaller dense model; see tickets/channel.py)
      [. . .]

A group's magnitude is the L1 norm of its weights. Linear layers have no kernels, so `row` and `kernel`
treat them as unstructured. `--sparsity` for these masked patterns is the fraction of weights removed from
the prunable layers (first conv and classifier stay dense unless asked).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import Registry


@dataclass(frozen=True)
class Pattern:
    name: str
    conv_group_dims: tuple[int, ...]  # weight dims summed into one group (empty: each weight alone)
    physical: bool = False            # channel pruning removes the weights instead of masking them


PATTERNS: Registry[Pattern] = Registry("sparsity pattern")
PATTERNS.add("unstructured", Pattern("unstructured", ()))
PATTERNS.add("row", Pattern("row", (3,)))
PATTERNS.add("kernel", Pattern("kernel", (2, 3)))
PATTERNS.add("channel", Pattern("channel", (1, 2, 3), physical=True))


def list_patterns() -> list[str]:
    return PATTERNS.names()


def _dims(pattern: Pattern, weight: torch.Tensor) -> tuple[int, ...]:
    return pattern.conv_group_dims if weight.dim() == 4 else ()


def group_scores(scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Per-group L1 norm of `scores` (weights, or learned scores) for this pattern."""
    dims = _dims(pattern, scores)
    return scores.abs().sum(dim=dims) if dims else scores.abs()


def expand_groups(keep: torch.Tensor, shape: torch.Size, pattern: Pattern) -> torch.Tensor:
    """Broadcast a per-group keep mask back to the weight's shape."""
    for dim in _dims(pattern, torch.empty(shape, device="meta")):
        keep = keep.unsqueeze(dim)
    return keep.expand(shape).clone()


def lowest(values: torch.Tensor, count: int) -> torch.Tensor:
    """Mask of the `count` smallest of 1-D `values`, ties going to the lower index: the first `count` of a stable
    argsort, in linear time (a stable argsort of vgg16_bn's 103M-weight classifier layer takes 30 s)."""
    drop = torch.zeros_like(values, dtype=torch.bool)
    if count <= 0:
        return drop
    threshold = values.kthvalue(count).values
    drop = values < threshold
    ties = (values == threshold).nonzero().flatten()
    drop[ties[: count - int(drop.sum())]] = True
    return drop


def select_masks(scores: dict[str, torch.Tensor], pattern: Pattern, sparsity: float,
                 scope: str = "layerwise") -> dict[str, torch.Tensor]:
    """Keep masks that remove the lowest-scoring groups until `sparsity` of the weights are gone.

    `layerwise` removes that fraction from every layer; `global` ranks groups across layers by their mean
    magnitude (L1 norm / group size, so groups of different sizes compare fairly).
    """
    grouped = {name: group_scores(s, pattern) for name, s in scores.items()}
    sizes = {name: s.numel() // g.numel() for (name, s), g in zip(scores.items(), grouped.values())}
    keeps: dict[str, torch.Tensor] = {}
    if scope == "layerwise":
        for name, groups in grouped.items():
            flat = groups.flatten()
            keeps[name] = ~lowest(flat, int(round(sparsity * flat.numel()))).view_as(groups)
    else:
        names = list(grouped)
        flat = torch.cat([grouped[n].flatten() / sizes[n] for n in names])
        group_size = torch.cat([torch.full((grouped[n].numel(),), sizes[n]) for n in names])
        order = torch.argsort(flat, stable=True)
        sorted_sizes = group_size[order].double()
        target = sparsity * sum(scores[n].numel() for n in names)
        drop = int(((torch.cumsum(sorted_sizes, 0) - sorted_sizes / 2) < target).sum())  # nearest to target
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[order[:drop]] = False
        offset = 0
        for name in names:
            count = grouped[name].numel()
            keeps[name] = keep[offset:offset + count].view_as(grouped[name])
            offset += count
    return {name: expand_groups(keeps[name], scores[name].shape, pattern) for name in scores}
