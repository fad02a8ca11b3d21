"""Label assignment: which prior learns which ground-truth box.

ATSS (Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free
Detection via Adaptive Training Sample Selection", CVPR 2020), as run by NanoDet's
``ATSSAssigner`` and mmdetection's, on the priors of a dense head.

Results use 0-based gt indices and named sentinels. mmdetection and NanoDet store
``assigned_gt_inds`` 1-based with 0 for negatives and -1 for ignored priors; the
conversion is ``assigned_gt_inds = gt_inds + 1`` for positives (see the ATSS
walkthrough notebook).

:class:`Matcher` (end of this file) is the IoU-threshold matcher of torchvision's
Faster R-CNN (RPN and RoI heads), with its own sentinels ``BELOW_LOW_THRESHOLD`` and
``BETWEEN_THRESHOLDS``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from detviz._validate import check_boxes, check_labels
from detviz.anchors import grid_cells_to_centers, level_slices
from detviz.boxes import box_iof, box_iou
from detviz.trace import record

__all__ = ["NEGATIVE", "IGNORE", "AssignResult", "ATSSSteps", "ATSSAssigner",
           "BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS", "MatchSteps", "Matcher"]

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

    With N priors, M gts, L levels and K = topk (fewer on a level with fewer priors).

    Attributes:
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
    ``torch.std``'s default, which NanoDet and the official ATSS code use. A single
    candidate has an undefined (NaN) std there, so its threshold is NaN and it never
    becomes positive; that is kept. Without candidates or gts both are empty/zero."""
    num_candidates, num_gts = candidate_overlaps.shape
    if num_candidates == 0 or num_gts == 0:
        zeros = candidate_overlaps.new_zeros(num_gts)
        return zeros, zeros.clone()
    mean = candidate_overlaps.mean(0)
    if num_candidates == 1:
        return mean, torch.full_like(mean, float("nan"))
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
        # NanoDet returns "all negative" for an image without gts before looking at ignore regions
        ignored = self._ignored_priors(bboxes, gt_bboxes_ignore) if num_gts > 0 else None  # [N] bool
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
        record("atss.candidate_idxs", candidate_idxs)
        record("atss.overlaps_thr", overlaps_thr)
        record("atss.is_pos", is_pos)

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
        record("atss.gt_inds", gt_inds)
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
        return box_iof(bboxes, gt_bboxes_ignore).max(dim=1).values > self.ignore_iof_thr  # [N, I] -> [N]

    @staticmethod
    def _check_inputs(bboxes, num_level_bboxes, gt_bboxes, gt_bboxes_ignore, gt_labels, num_classes):
        for boxes, name in ((bboxes, "bboxes"), (gt_bboxes, "gt_bboxes"), (gt_bboxes_ignore, "gt_bboxes_ignore")):
            if name == "gt_bboxes_ignore" and boxes is None:
                continue
            check_boxes(boxes, name)
            if boxes.dim() != 2:
                raise ValueError(f"{name} must be Tensor[M, 4] xyxy, got shape {list(boxes.shape)}")
        if any(int(n) != n or n < 0 for n in num_level_bboxes) or sum(num_level_bboxes) != bboxes.shape[0]:
            raise ValueError(
                f"num_level_bboxes must be non-negative counts summing to the {bboxes.shape[0]} bboxes, "
                f"got {list(num_level_bboxes)}")
        if gt_labels is not None:
            check_labels(gt_labels, "gt_labels", gt_bboxes.shape[0], num_classes)


# --- Faster R-CNN's threshold matcher (torchvision ``_utils.Matcher``) ------------------------

BELOW_LOW_THRESHOLD = -1  # best IoU < low_threshold: background
BETWEEN_THRESHOLDS = -2  # low_threshold <= best IoU < high_threshold: ignored by the losses


class MatchSteps(NamedTuple):
    """Intermediates of one :class:`Matcher` call, N predictions and M gts.

    Attributes:
        matched_vals: [N] best quality of each prediction over the gts.
        all_matches: [N] int64, the gt giving it (first of equal maxima, ``Tensor.max``).
        below_low_threshold: [N] bool, matched_vals < low_threshold.
        between_thresholds: [N] bool, low_threshold <= matched_vals < high_threshold.
        low_quality: [N] bool, predictions that are some gt's best (ties included);
            all False unless ``allow_low_quality_matches``.
        matches: [N] int64, the result: all_matches, overwritten by the sentinels, then
            restored to all_matches where ``low_quality``.
    """

    matched_vals: Tensor
    all_matches: Tensor
    below_low_threshold: Tensor
    between_thresholds: Tensor
    low_quality: Tensor
    matches: Tensor


class Matcher:
    """Match predictions (anchors, proposals) to gts by a quality matrix such as IoU.

    Equal to ``torchvision.models.detection._utils.Matcher``:
      1. every prediction takes the gt of highest quality (``all_matches``);
      2. quality < ``low_threshold`` -> ``BELOW_LOW_THRESHOLD`` (-1), quality in
         [low, high) -> ``BETWEEN_THRESHOLDS`` (-2), quality >= high keeps the gt;
      3. with ``allow_low_quality_matches`` (the RPN), each gt's best predictions,
         ties included, get back their step-1 gt even below the thresholds. Note that
         this is the prediction's own best gt, which need not be the gt that chose it.

    Args:
        high_threshold: quality at which a match becomes positive (0.7 RPN, 0.5 RoI).
        low_threshold: quality below which a prediction is background (0.3 RPN, 0.5 RoI:
            equal thresholds leave no ignore band).
        allow_low_quality_matches: step 3 above.
    """

    BELOW_LOW_THRESHOLD = BELOW_LOW_THRESHOLD  # as attributes too: torchvision's heads read them here
    BETWEEN_THRESHOLDS = BETWEEN_THRESHOLDS

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(
                f"low_threshold must be <= high_threshold, got low={low_threshold} and high={high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __repr__(self) -> str:
        return (f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """Args: match_quality_matrix Tensor[M, N] (gts x predictions).
        Returns: Tensor[N] int64, a gt index in [0, M) or a negative sentinel."""
        return self.match_with_steps(match_quality_matrix).matches

    def match_with_steps(self, match_quality_matrix: Tensor) -> MatchSteps:
        """Run the matcher and return every intermediate.

        Args:
            match_quality_matrix: Tensor[M, N] float, quality (e.g. IoU) of every
                (gt, prediction) pair; M >= 1 and N >= 1 (callers handle images without
                gts themselves, as torchvision's heads do).

        Returns:
            :class:`MatchSteps`; ``.matches`` is what ``__call__`` returns.
        """
        _check_quality_matrix(match_quality_matrix)
        matched_vals, all_matches = match_quality_matrix.max(dim=0)  # [N], [N]
        below = matched_vals < self.low_threshold
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches = torch.where(below, torch.full_like(all_matches, BELOW_LOW_THRESHOLD), all_matches)
        matches = torch.where(between, torch.full_like(all_matches, BETWEEN_THRESHOLDS), matches)

        low_quality = torch.zeros_like(below)
        if self.allow_low_quality_matches:
            best_for_gt = match_quality_matrix.max(dim=1).values  # [M]
            # A prediction qualifies if it reaches some gt's maximum, ties included.
            low_quality = (match_quality_matrix == best_for_gt[:, None]).any(dim=0)  # [M, N] -> [N]
            matches = torch.where(low_quality, all_matches, matches)
        return MatchSteps(matched_vals, all_matches, below, between, low_quality, matches)


def _check_quality_matrix(match_quality_matrix) -> None:
    if not isinstance(match_quality_matrix, Tensor):
        raise TypeError(f"match_quality_matrix must be Tensor[M, N] (gts x predictions), "
                        f"got {type(match_quality_matrix).__name__}")
    if match_quality_matrix.dim() != 2:
        raise ValueError(f"match_quality_matrix must be Tensor[M, N] (gts x predictions), "
                         f"got shape {list(match_quality_matrix.shape)}")
    if match_quality_matrix.shape[0] == 0:
        raise ValueError("No ground-truth boxes available for one of the images (match_quality_matrix "
                         f"has shape {list(match_quality_matrix.shape)}, M = 0); handle empty images before matching")
    if match_quality_matrix.shape[1] == 0:
        raise ValueError("No proposal boxes available for one of the images (match_quality_matrix "
                         f"has shape {list(match_quality_matrix.shape)}, N = 0)")
