"""Label assignment: which prior learns which ground-truth box.

ATSS (Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free
Detection via Adaptive Training Sample Selection", CVPR 2020), as run by NanoDet's
``ATSSAssigner`` and mmdetection's, on the priors of a dense head.

Results use 0-based gt indices and named sentinels. mmdetection and NanoDet store
``assigned_gt_inds`` 1-based with 0 for negatives and -1 for ignored priors; the
conversion is ``assigned_gt_inds = gt_inds + 1`` for positives (see the ATSS
walkthrough notebook).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from detviz._validate import check_boxes, check_labels
from detviz.anchors import grid_cells_to_centers, level_slices
from detviz.boxes import box_area, box_iou

__all__ = ["NEGATIVE", "IGNORE", "AssignResult", "ATSSSteps", "ATSSAssigner"]

NEGATIVE = -1  # prior assigned to background
IGNORE = -2  # prior excluded from the classification loss (overlaps an ignore region)

_INF = 100000000.0  # distance given to ignored priors so they are never candidates (NanoDet's INF)


class AssignResult(NamedTuple):
    """Per-prior assignment.

    Attributes:
        num_gts: M, the number of ground-truth boxes.
        gt_inds: Tensor[N] int64, 0-based index of the assigned gt for positives,
            else ``NEGATIVE`` (-1) or ``IGNORE`` (-2).
        max_overlaps: Tensor[N] float, IoU between a positive prior and its gt; 0 for
            the others (NanoDet keeps -INF there).
        labels: Tensor[N] int64, the gt's class for positives, ``num_classes``
            (background) for the others.
    """

    num_gts: int
    gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor

    @property
    def pos_inds(self) -> Tensor:
        """Tensor[P] int64, indices of the positive priors, ascending."""
        return torch.nonzero(self.gt_inds >= 0).squeeze(1)

    @property
    def neg_inds(self) -> Tensor:
        """Tensor[Q] int64, indices of the negative (background) priors, ascending."""
        return torch.nonzero(self.gt_inds == NEGATIVE).squeeze(1)


class ATSSSteps(NamedTuple):
    """Every intermediate of one ATSS assignment, in the order they are computed.

    With N priors, M gts, L levels and K = topk (fewer on a level with fewer priors):
        overlaps: [N, M] IoU of every prior with every gt.
        distances: [N, M] L2 distance between prior centres and gt centres (pixels).
        candidate_idxs: [K*L, M] int64, per gt the K closest priors of each level,
            level by level, as indices into the N concatenated priors.
        candidate_overlaps: [K*L, M] IoU of each candidate with its gt.
        overlaps_mean, overlaps_std, overlaps_thr: [M] statistics of each gt's
            candidate IoUs; std is unbiased (N-1), thr = mean + std.
        is_pos_iou: [K*L, M] bool, candidate IoU >= thr.
        candidate_idxs_flat: [K*L, M] int64, ``candidate_idxs + gt * N``: indices into
            the gt-major flattened [M*N] table of prior centres.
        is_in_gts: [K*L, M] bool, candidate centre inside its gt by more than eps.
        is_pos: [K*L, M] bool, ``is_pos_iou & is_in_gts``.
        result: the final :class:`AssignResult`.
    """

    overlaps: Tensor
    distances: Tensor
    candidate_idxs: Tensor
    candidate_overlaps: Tensor
    overlaps_mean: Tensor
    overlaps_std: Tensor
    overlaps_thr: Tensor
    is_pos_iou: Tensor
    candidate_idxs_flat: Tensor
    is_in_gts: Tensor
    is_pos: Tensor
    result: AssignResult


def _mean_and_unbiased_std(candidate_overlaps: Tensor) -> tuple[Tensor, Tensor]:
    """Column statistics of [K*L, M] candidate IoUs; std divides by (n - 1) like
    ``torch.std``'s default, which NanoDet and the official ATSS code use. With fewer
    than two candidates (or no gt) there is no spread: std is 0 rather than NaN."""
    num_candidates, num_gts = candidate_overlaps.shape
    if num_candidates == 0 or num_gts == 0:
        zeros = candidate_overlaps.new_zeros(num_gts)
        return zeros, zeros.clone()
    mean = candidate_overlaps.mean(0)
    if num_candidates == 1:
        return mean, torch.zeros_like(mean)
    return mean, candidate_overlaps.std(0)


class ATSSAssigner:
    """Adaptive Training Sample Selection.

    For each gt:
      1. on every level, take the ``topk`` priors whose centres are closest to the gt
         centre (the candidates, K*L per gt);
      2. threshold = mean + std of the candidates' IoU with the gt (std unbiased, as
         in the official ATSS code and NanoDet);
      3. positives = candidates with IoU >= threshold whose centre lies inside the gt
         (every side distance > ``eps`` = 0.01 px);
      4. a prior positive for several gts keeps the gt it overlaps most.
    Everything else is negative.

    Args:
        topk: candidates per level and gt (9 in ATSS and NanoDet).
        eps: margin of the centre-inside-gt test, pixels.
        ignore_iof_thr: priors whose intersection-over-prior-area with any ignore box
            exceeds this are ``IGNORE``; negative disables it (NanoDet's default -1).
    """

    def __init__(self, topk: int = 9, *, eps: float = 0.01, ignore_iof_thr: float = -1.0):
        if int(topk) != topk or topk < 1:
            raise ValueError(f"topk must be a positive integer, got {topk!r}")
        self.topk = int(topk)
        self.eps = eps
        self.ignore_iof_thr = ignore_iof_thr

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk}, eps={self.eps}, ignore_iof_thr={self.ignore_iof_thr})"

    def assign(self, bboxes: Tensor, num_level_bboxes: Sequence[int], gt_bboxes: Tensor,
               gt_bboxes_ignore: Tensor | None = None, gt_labels: Tensor | None = None,
               num_classes: int = 80) -> AssignResult:
        """Assign priors to gts; see :meth:`assign_with_steps` for the arguments."""
        return self.assign_with_steps(bboxes, num_level_bboxes, gt_bboxes, gt_bboxes_ignore,
                                      gt_labels, num_classes).result

    def assign_with_steps(self, bboxes: Tensor, num_level_bboxes: Sequence[int], gt_bboxes: Tensor,
                          gt_bboxes_ignore: Tensor | None = None, gt_labels: Tensor | None = None,
                          num_classes: int = 80) -> ATSSSteps:
        """Run ATSS and return every intermediate.

        Args:
            bboxes: Tensor[N, 4] priors (grid cells), xyxy pixels of the network input,
                levels concatenated finest first.
            num_level_bboxes: priors per level, summing to N (e.g. [1600, 400, 100]).
            gt_bboxes: Tensor[M, 4] xyxy pixels of the network input; M may be 0.
            gt_bboxes_ignore: Tensor[I, 4] regions to ignore, or None.
            gt_labels: Tensor[M] int64 in [0, num_classes), or None (labels are then
                all background).
            num_classes: C; background label is C.

        Returns:
            :class:`ATSSSteps`.
        """
        self._check_inputs(bboxes, num_level_bboxes, gt_bboxes, gt_bboxes_ignore, gt_labels, num_classes)
        num_gts, num_bboxes = gt_bboxes.shape[0], bboxes.shape[0]

        overlaps = box_iou(bboxes, gt_bboxes)  # [N, M]
        gt_centers = grid_cells_to_centers(gt_bboxes)  # [M, 2]
        prior_centers = grid_cells_to_centers(bboxes)  # [N, 2]
        distances = (prior_centers[:, None, :] - gt_centers[None, :, :]).pow(2).sum(-1).sqrt()  # [N, M]

        gt_inds = torch.full((num_bboxes,), NEGATIVE, dtype=torch.long, device=bboxes.device)
        ignored = self._ignored_priors(bboxes, gt_bboxes_ignore)  # [N] bool
        if ignored is not None:
            distances = distances.clone()
            distances[ignored, :] = _INF
            gt_inds[ignored] = IGNORE

        candidate_idxs = self._select_candidates(distances, num_level_bboxes)  # [K*L, M]
        gt_cols = torch.arange(num_gts, device=bboxes.device)
        candidate_overlaps = overlaps[candidate_idxs, gt_cols]  # [K*L, M]
        overlaps_mean, overlaps_std = _mean_and_unbiased_std(candidate_overlaps)  # [M] each
        overlaps_thr = overlaps_mean + overlaps_std  # [M]
        is_pos_iou = candidate_overlaps >= overlaps_thr[None, :]  # [K*L, M]

        # The reference code flattens the [M, N] table of prior centres and offsets
        # gt g's candidates by g*N to index it; e.g. with N = 2100, candidate 848 of
        # gt 2 becomes 848 + 2*2100 = 5048. Kept for comparison with traces.
        candidate_idxs_flat = candidate_idxs + gt_cols[None, :] * num_bboxes
        cand_centers = prior_centers[candidate_idxs]  # [K*L, M, 2]
        side_dists = torch.stack([
            cand_centers[..., 0] - gt_bboxes[None, :, 0],  # left
            cand_centers[..., 1] - gt_bboxes[None, :, 1],  # top
            gt_bboxes[None, :, 2] - cand_centers[..., 0],  # right
            gt_bboxes[None, :, 3] - cand_centers[..., 1],  # bottom
        ], dim=-1)  # [K*L, M, 4]
        is_in_gts = side_dists.min(dim=-1).values > self.eps  # [K*L, M]
        is_pos = is_pos_iou & is_in_gts

        # Keep, per prior, the positive gt with the highest IoU (-1 where none).
        pos_overlaps = torch.full_like(overlaps, -1.0)  # [N, M]
        cand_rows, gt_of_pos = torch.nonzero(is_pos, as_tuple=True)
        prior_of_pos = candidate_idxs[cand_rows, gt_of_pos]
        pos_overlaps[prior_of_pos, gt_of_pos] = overlaps[prior_of_pos, gt_of_pos]
        if num_gts > 0:
            best_overlap, best_gt = pos_overlaps.max(dim=1)  # [N]; ties -> lowest gt index
        else:
            best_overlap = torch.full((num_bboxes,), -1.0, device=bboxes.device)
            best_gt = torch.zeros(num_bboxes, dtype=torch.long, device=bboxes.device)
        positive = best_overlap >= 0
        gt_inds = torch.where(positive, best_gt, gt_inds)
        max_overlaps = torch.where(positive, best_overlap, torch.zeros_like(best_overlap))

        labels = torch.full((num_bboxes,), num_classes, dtype=torch.long, device=bboxes.device)
        if gt_labels is not None:
            labels[positive] = gt_labels[gt_inds[positive]]
        result = AssignResult(num_gts, gt_inds, max_overlaps, labels)
        return ATSSSteps(overlaps, distances, candidate_idxs, candidate_overlaps, overlaps_mean,
                         overlaps_std, overlaps_thr, is_pos_iou, candidate_idxs_flat, is_in_gts,
                         is_pos, result)

    def _select_candidates(self, distances: Tensor, num_level_bboxes: Sequence[int]) -> Tensor:
        """Per level, the topk closest priors of each gt: [N, M] -> [K*L, M] global indices."""
        per_level = []
        for level in level_slices(num_level_bboxes):
            level_dists = distances[level]  # [N_l, M]
            k = min(self.topk, level_dists.shape[0])
            _, idxs = level_dists.topk(k, dim=0, largest=False)  # [k, M]
            per_level.append(idxs + level.start)
        return torch.cat(per_level, dim=0)

    def _ignored_priors(self, bboxes: Tensor, gt_bboxes_ignore: Tensor | None) -> Tensor | None:
        if self.ignore_iof_thr <= 0 or gt_bboxes_ignore is None or gt_bboxes_ignore.numel() == 0:
            return None
        top_left = torch.max(bboxes[:, None, :2], gt_bboxes_ignore[None, :, :2])
        bottom_right = torch.min(bboxes[:, None, 2:], gt_bboxes_ignore[None, :, 2:])
        inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # [N, I]
        iof = inter / box_area(bboxes).clamp(min=1e-6)[:, None]
        return iof.max(dim=1).values > self.ignore_iof_thr

    @staticmethod
    def _check_inputs(bboxes, num_level_bboxes, gt_bboxes, gt_bboxes_ignore, gt_labels, num_classes):
        check_boxes(bboxes, "bboxes")
        check_boxes(gt_bboxes, "gt_bboxes")
        if gt_bboxes_ignore is not None:
            check_boxes(gt_bboxes_ignore, "gt_bboxes_ignore")
        if any(int(n) != n or n < 0 for n in num_level_bboxes) or sum(num_level_bboxes) != bboxes.shape[0]:
            raise ValueError(
                f"num_level_bboxes must be non-negative counts summing to the {bboxes.shape[0]} bboxes, "
                f"got {list(num_level_bboxes)}")
        if gt_labels is not None:
            check_labels(gt_labels, "gt_labels", gt_bboxes.shape[0], num_classes)
