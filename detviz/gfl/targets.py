"""Training targets of the GFL head (NanoDet's ``target_assign``), for a batch.

Per image: assign the grid cells with ATSS, then::

    labels        = gt class for positives, C (background) elsewhere,
    label_weights = 1 for positives and negatives, 0 for ignored cells,
    bbox_targets  = the assigned gt box (xyxy pixels) for positives, 0 elsewhere,
    bbox_weights  = 1 for positives, 0 elsewhere.

Then split every per-image [N, ...] tensor into per-level [B, N_l, ...] tensors,
the ``mlvl_*`` lists of the NanoDet trace, because the loss runs level by level.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from detviz.anchors import level_slices, multilevel_grid_cells
from detviz.assigners import IGNORE, ATSSAssigner, ATSSSteps
from detviz.trace import record

__all__ = ["GFLImageTargets", "GFLTargets", "gfl_targets_single", "gfl_targets", "images_to_levels"]


class GFLImageTargets(NamedTuple):
    """Targets of one image over all N grid cells (levels concatenated)."""

    labels: Tensor  # [N] int64, background = C
    label_weights: Tensor  # [N] float
    bbox_targets: Tensor  # [N, 4] xyxy pixels of the network input
    bbox_weights: Tensor  # [N, 4] float
    pos_inds: Tensor  # [P] int64
    neg_inds: Tensor  # [Q] int64
    steps: ATSSSteps  # the assignment and its intermediates


class GFLTargets(NamedTuple):
    """Targets of a batch, split per level (index l) as the loss consumes them."""

    grid_cells: list[Tensor]  # L x [B, N_l, 4]
    labels: list[Tensor]  # L x [B, N_l]
    label_weights: list[Tensor]  # L x [B, N_l]
    bbox_targets: list[Tensor]  # L x [B, N_l, 4]
    bbox_weights: list[Tensor]  # L x [B, N_l, 4]
    pos_inds: list[Tensor]  # B x [P_b], indices into the image's N cells
    neg_inds: list[Tensor]  # B x [Q_b]
    num_total_pos: int  # sum over images of max(P_b, 1)
    num_total_neg: int  # sum over images of max(Q_b, 1)
    per_image: list[GFLImageTargets]


def gfl_targets_single(grid_cells: Tensor, num_level_cells: Sequence[int], gt_bboxes: Tensor,
                       gt_labels: Tensor, num_classes: int, assigner: ATSSAssigner,
                       gt_bboxes_ignore: Tensor | None = None) -> GFLImageTargets:
    """Targets of one image.

    Args:
        grid_cells: Tensor[N, 4] priors of all levels, xyxy pixels of the network input.
        num_level_cells: cells per level, e.g. [1600, 400, 100].
        gt_bboxes: Tensor[M, 4] xyxy pixels of the network input (M may be 0).
        gt_labels: Tensor[M] int64 in [0, C).
        num_classes: C.
        assigner: the prior assigner (ATSS).
        gt_bboxes_ignore: optional Tensor[I, 4] regions to ignore.

    Returns:
        :class:`GFLImageTargets`.
    """
    steps = assigner.assign_with_steps(grid_cells, num_level_cells, gt_bboxes, gt_bboxes_ignore,
                                       gt_labels, num_classes)
    result = steps.result
    num_cells = grid_cells.shape[0]
    pos_inds = result.pos_inds
    neg_inds = result.neg_inds

    labels = result.labels.clone()  # background already C outside positives
    label_weights = torch.zeros(num_cells, dtype=grid_cells.dtype, device=grid_cells.device)
    label_weights[result.gt_inds != IGNORE] = 1.0
    bbox_targets = torch.zeros_like(grid_cells)
    bbox_weights = torch.zeros_like(grid_cells)
    if pos_inds.numel() > 0:
        bbox_targets[pos_inds] = gt_bboxes[result.gt_inds[pos_inds]]
        bbox_weights[pos_inds] = 1.0
    record("gfl.pos_inds", pos_inds)
    record("gfl.labels", labels)
    record("gfl.bbox_targets", bbox_targets)
    return GFLImageTargets(labels, label_weights, bbox_targets, bbox_weights, pos_inds, neg_inds, steps)


def images_to_levels(per_image: Sequence[Tensor], num_level_cells: Sequence[int]) -> list[Tensor]:
    """Stack per-image tensors and cut them by level: B x [N, ...] -> L x [B, N_l, ...]."""
    stacked = torch.stack(list(per_image), dim=0)  # [B, N, ...]
    return [stacked[:, level] for level in level_slices(num_level_cells)]


def gfl_targets(featmap_sizes: Sequence[Sequence[int]], strides: Sequence[int], octave_base_scale: float,
                gt_bboxes_list: Sequence[Tensor], gt_labels_list: Sequence[Tensor], num_classes: int,
                assigner: ATSSAssigner | None = None,
                gt_bboxes_ignore_list: Sequence[Tensor | None] | None = None) -> GFLTargets:
    """Targets of a batch of B images sharing one input size.

    Args:
        featmap_sizes: (H_l, W_l) per level, finest first.
        strides: pixels per cell per level (8, 16, 32 for NanoDet-m).
        octave_base_scale: grid-cell side in strides (5 for NanoDet-m).
        gt_bboxes_list: B x Tensor[M_b, 4] xyxy pixels of the network input.
        gt_labels_list: B x Tensor[M_b] int64 in [0, C).
        num_classes: C.
        assigner: defaults to ``ATSSAssigner(topk=9)``.
        gt_bboxes_ignore_list: B x (Tensor[I_b, 4] or None), or None.

    Returns:
        :class:`GFLTargets`.
    """
    if len(gt_bboxes_list) != len(gt_labels_list):
        raise ValueError(f"gt_bboxes_list and gt_labels_list must have one entry per image, got "
                         f"{len(gt_bboxes_list)} and {len(gt_labels_list)}")
    if len(gt_bboxes_list) == 0:
        raise ValueError("gt_bboxes_list must hold one Tensor[M, 4] per image, got an empty batch")
    if gt_bboxes_ignore_list is not None and len(gt_bboxes_ignore_list) != len(gt_bboxes_list):
        raise ValueError(f"gt_bboxes_ignore_list must have one entry (Tensor[I, 4] or None) per image, got "
                         f"{len(gt_bboxes_ignore_list)} for {len(gt_bboxes_list)} images")
    assigner = assigner if assigner is not None else ATSSAssigner(topk=9)
    ignores = gt_bboxes_ignore_list if gt_bboxes_ignore_list is not None else [None] * len(gt_bboxes_list)
    device = gt_bboxes_list[0].device
    mlvl_cells = multilevel_grid_cells(featmap_sizes, strides, octave_base_scale, device=device)
    num_level_cells = [cells.shape[0] for cells in mlvl_cells]
    grid_cells = torch.cat(mlvl_cells, dim=0)  # [N, 4]

    per_image = [
        gfl_targets_single(grid_cells, num_level_cells, gt_bboxes, gt_labels, num_classes, assigner, ignore)
        for gt_bboxes, gt_labels, ignore in zip(gt_bboxes_list, gt_labels_list, ignores)
    ]
    # NanoDet counts at least one positive and one negative per image, so the loss
    # normaliser is never 0 (an image without objects still counts as 1).
    num_total_pos = sum(max(t.pos_inds.numel(), 1) for t in per_image)
    num_total_neg = sum(max(t.neg_inds.numel(), 1) for t in per_image)
    record("gfl.num_total_pos", num_total_pos)
    record("gfl.num_total_neg", num_total_neg)
    return GFLTargets(
        grid_cells=images_to_levels([grid_cells] * len(per_image), num_level_cells),
        labels=images_to_levels([t.labels for t in per_image], num_level_cells),
        label_weights=images_to_levels([t.label_weights for t in per_image], num_level_cells),
        bbox_targets=images_to_levels([t.bbox_targets for t in per_image], num_level_cells),
        bbox_weights=images_to_levels([t.bbox_weights for t in per_image], num_level_cells),
        pos_inds=[t.pos_inds for t in per_image],
        neg_inds=[t.neg_inds for t in per_image],
        num_total_pos=num_total_pos,
        num_total_neg=num_total_neg,
        per_image=per_image,
    )
