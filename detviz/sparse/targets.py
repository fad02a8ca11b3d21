"""Targets, set matching and the losses of the sparse RepPoints head (``detviz.sparse.head``).

Objectness target (FCOS's centerness, Tian et al. 2019). For a feature point at pixel
``(x, y)`` inside a gt, with ``l, t, r, b`` its distances to the gt's left, top, right and
bottom sides::

    centerness = sqrt( min(l, r) / max(l, r) * min(t, b) / max(t, b) )     in (0, 1]

The target of a point is the largest centerness over the gts that contain it (strictly), and 0
for points inside no gt and for points in the padding beyond ``img_shape``. A gt smaller than
one stride contains one point of a level (target = its centerness) or none (no target at all).

Set matching. Each image's top-n predictions of all levels (K in all) are matched one-to-one
to its M gts by a minimum-cost assignment (Hungarian method) over DETR's cost (Carion et al.
2020, weights 1 / 5 / 2)::

    cost[k, m] = w_class * -p_k[label_m] + w_l1 * |b_k - g_m|_1 + w_giou * -GIoU(b_k, g_m)

with ``p`` the sigmoid class probabilities and the L1 term on ``cxcywh`` boxes divided by
the image size (``img_shape``), so that it does not depend on the resolution.
:func:`linear_sum_assignment` solves it exactly in plain Python; it returns the same
assignment cost as ``scipy.optimize.linear_sum_assignment``, which is not a detviz dependency.

Losses: :func:`sigmoid_focal_loss` (Lin et al. 2017) for the classes, :func:`box_loss` (GIoU plus
the normalised L1 distance of the matching cost) for the matched boxes.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from detviz._validate import check_boxes, check_labels, check_tensor
from detviz.anchors import center_points
from detviz.boxes import box_xyxy_to_cxcywh, generalized_box_iou
from detviz.losses import giou_loss

__all__ = ["UNMATCHED", "sigmoid_focal_loss", "box_loss", "linear_sum_assignment", "SetMatch", "HungarianMatcher",
           "centerness_targets", "featmap_sizes_for", "input_shape_of", "img_shape_of",
           "objectness_targets_single", "objectness_targets", "SparseImageTargets", "SparseTargets",
           "sparse_targets_single", "sparse_targets"]

UNMATCHED = -1  # matched_gt_inds of a prediction that no gt chose: a background prediction


# ---------------------------------------------------------------------------- focal loss
def sigmoid_focal_loss(pred: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal loss (Lin et al. 2017) per element: ``FL = -alpha_t * (1 - p_t)^gamma * log(p_t)``.

    ``p_t = p`` where the target is 1 and ``1 - p`` where it is 0 (p = sigmoid(pred));
    ``alpha_t`` is ``alpha`` / ``1 - alpha`` likewise, and 1 when ``alpha < 0``. Equal to
    ``torchvision.ops.sigmoid_focal_loss(..., reduction="none")``.

    Args:
        pred (Tensor[*]): logits. target (Tensor[*]): same shape, float in [0, 1] (one-hot rows).
    Returns:
        Tensor[*]: loss per element; not normalised.
    """
    check_tensor(pred, "pred", floating=True, layout="[*] logits")
    check_tensor(target, "target", floating=True, layout=f"{list(pred.shape)} float, the shape of pred")
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred {list(pred.shape)}, got shape {list(target.shape)}")
    prob = pred.sigmoid()
    ce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss


def box_loss(pred: Tensor, target: Tensor, img_wh: Tensor, l1_weight: float = 2.5) -> Tensor:
    """Loss of matched boxes: ``1 - GIoU + l1_weight * |cxcywh(pred) - cxcywh(target)|_1`` on
    coordinates divided by the image size.

    GIoU alone rewards a box that overlaps its gt nowhere for growing until it encloses the gt
    (``GIoU -> 0`` from below); with one-to-one matching some gts (those smaller than a stride,
    which have no objectness target) are always matched to distant predictions, and through the
    shared weights every box inflates. The L1 term, as in DETR, pulls size and position towards the
    gt. ``l1_weight = 0`` gives plain GIoU loss; 2.5 is DETR's 5 : 2 ratio of the two.

    Args:
        pred (Tensor[P, 4]): xyxy pixels. target (Tensor[P, 4]): xyxy pixels.
        img_wh (Tensor[P, 4]): (w, h, w, h) of each pair's image (``img_shape``).
    Returns:
        Tensor[P]: loss per pair; not normalised.
    """
    check_tensor(img_wh, "img_wh", ndim=2, last_dim=4, floating=True, layout="[P, 4] (w, h, w, h)")
    l1 = ((box_xyxy_to_cxcywh(pred) - box_xyxy_to_cxcywh(target)) / img_wh).abs().sum(dim=-1)  # [P]
    return giou_loss(pred, target) + l1_weight * l1


# ---------------------------------------------------------------------------- assignment
def _hungarian(cost: list[list[float]]) -> list[int]:
    """Column of each row in a minimum-cost assignment of an R x C matrix with R <= C.

    Kuhn-Munkres with row/column potentials ``u, v`` (reduced cost ``cost - u - v >= 0``),
    adding one row at a time along a shortest augmenting path: O(R^2 C).
    """
    num_rows, num_cols = len(cost), len(cost[0])
    u, v = [0.0] * (num_rows + 1), [0.0] * (num_cols + 1)
    owner = [0] * (num_cols + 1)  # owner[j]: 1-based row holding column j, 0 = free; column 0 is the path's root
    way = [0] * (num_cols + 1)  # previous column on the shortest path
    for row in range(1, num_rows + 1):
        owner[0], col = row, 0
        min_reduced = [math.inf] * (num_cols + 1)
        used = [False] * (num_cols + 1)
        while owner[col] != 0:  # grow the path until it reaches a free column
            used[col] = True
            i, delta, next_col = owner[col], math.inf, 0
            for j in range(1, num_cols + 1):
                if not used[j]:
                    reduced = cost[i - 1][j - 1] - u[i] - v[j]
                    if reduced < min_reduced[j]:
                        min_reduced[j], way[j] = reduced, col
                    if min_reduced[j] < delta:
                        delta, next_col = min_reduced[j], j
            for j in range(num_cols + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    min_reduced[j] -= delta
            col = next_col
        while col:  # flip the path: each column on it passes to the row before
            prev = way[col]
            owner[col] = owner[prev]
            col = prev
    row_to_col = [0] * num_rows
    for j in range(1, num_cols + 1):
        if owner[j]:
            row_to_col[owner[j] - 1] = j - 1
    return row_to_col


def linear_sum_assignment(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Exact minimum-cost one-to-one assignment of rows to columns.

    Args:
        cost (Tensor[R, C]): finite floats (R or C may be 0).
    Returns:
        ``(row_inds, col_inds)``, Tensor[min(R, C)] int64 each on ``cost.device``, rows ascending:
        row ``row_inds[i]`` takes column ``col_inds[i]`` and ``cost[row_inds, col_inds].sum()`` is
        minimal (scipy's contract; with tied optima the chosen one may differ).
    """
    check_tensor(cost, "cost", ndim=2, floating=True, layout="[R, C] float")
    if cost.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=cost.device)
        return empty, empty.clone()
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("cost must hold finite values only, got NaN or Inf")
    transposed = cost.shape[0] > cost.shape[1]  # the solver wants R <= C
    matrix = (cost.T if transposed else cost).detach().double().cpu().tolist()
    firsts = torch.arange(len(matrix), dtype=torch.long)
    seconds = torch.tensor(_hungarian(matrix), dtype=torch.long)
    rows, cols = (seconds, firsts) if transposed else (firsts, seconds)
    order = rows.argsort()
    return rows[order].to(cost.device), cols[order].to(cost.device)


class SetMatch(NamedTuple):
    """One image's one-to-one match of K predictions with M gts (P = min(K, M) pairs).

        pred_inds: [P] int64, matched predictions, ascending. gt_inds: [P] int64, their gts.
        cost: [K, M] the weighted total cost; cost_class, cost_l1, cost_giou: [K, M] its terms
            before weighting (``-p``, normalised L1, ``-GIoU``).
    """

    pred_inds: Tensor
    gt_inds: Tensor
    cost: Tensor
    cost_class: Tensor
    cost_l1: Tensor
    cost_giou: Tensor


class HungarianMatcher:
    """Match predictions to gts one-to-one by the class + L1 + GIoU cost (module docstring).

    Args:
        cost_class, cost_l1, cost_giou: weights of the three terms (DETR's 1, 5, 2).
    """

    def __init__(self, *, cost_class: float = 1.0, cost_l1: float = 5.0, cost_giou: float = 2.0):
        self.cost_class, self.cost_l1, self.cost_giou = cost_class, cost_l1, cost_giou

    def __repr__(self) -> str:
        return f"HungarianMatcher(cost_class={self.cost_class}, cost_l1={self.cost_l1}, cost_giou={self.cost_giou})"

    @torch.no_grad()
    def __call__(self, cls_logits: Tensor, boxes: Tensor, gt_bboxes: Tensor, gt_labels: Tensor,
                 img_size: Sequence[int]) -> SetMatch:
        """Args:
            cls_logits (Tensor[K, C]): class logits. boxes (Tensor[K, 4]): xyxy pixels.
            gt_bboxes (Tensor[M, 4]): xyxy pixels. gt_labels (Tensor[M] int64): classes in [0, C).
            img_size: (h, w) of the image without padding (``img_shape``), for the L1 term.
        Returns:
            :class:`SetMatch`.
        """
        h, w = img_size
        scale = boxes.new_tensor([w, h, w, h])
        cost_class = -cls_logits.sigmoid()[:, gt_labels]  # [K, M]
        cost_l1 = torch.cdist(box_xyxy_to_cxcywh(boxes) / scale, box_xyxy_to_cxcywh(gt_bboxes.to(boxes)) / scale,
                              p=1)  # [K, M]
        cost_giou = -generalized_box_iou(boxes, gt_bboxes.to(boxes))  # [K, M]
        cost = self.cost_class * cost_class + self.cost_l1 * cost_l1 + self.cost_giou * cost_giou
        pred_inds, gt_inds = linear_sum_assignment(cost)
        return SetMatch(pred_inds, gt_inds, cost, cost_class, cost_l1, cost_giou)


# ---------------------------------------------------------------------------- objectness targets
def centerness_targets(points: Tensor, gt_bboxes: Tensor, img_size: Sequence[int] | None = None) -> Tensor:
    """Objectness target of each point: max FCOS centerness over the gts containing it.

    Args:
        points (Tensor[N, 2]): xy pixels of the padded input. gt_bboxes (Tensor[M, 4]): xyxy pixels.
        img_size: optional (h, w) = ``img_shape[:2]``; points with ``x >= w`` or ``y >= h`` lie in
            the padding and get 0.
    Returns:
        Tensor[N] in [0, 1], dtype and device of ``points``.
    """
    check_tensor(points, "points", ndim=2, last_dim=2, floating=True, layout="[N, 2] xy")
    check_boxes(gt_bboxes, "gt_bboxes")
    if gt_bboxes.shape[0] == 0:
        return points.new_zeros(points.shape[0])
    gt = gt_bboxes.to(points)
    x, y = points[:, 0:1], points[:, 1:2]  # [N, 1] each
    left, top = x - gt[:, 0], y - gt[:, 1]  # [N, M] each
    right, bottom = gt[:, 2] - x, gt[:, 3] - y
    inside = torch.minimum(torch.minimum(left, right), torch.minimum(top, bottom)) > 0  # [N, M]
    tiny = torch.finfo(points.dtype).tiny
    ratio_x = torch.minimum(left, right) / torch.maximum(left, right).clamp(min=tiny)
    ratio_y = torch.minimum(top, bottom) / torch.maximum(top, bottom).clamp(min=tiny)
    centerness = torch.where(inside, (ratio_x * ratio_y).clamp(min=0).sqrt(), torch.zeros_like(ratio_x))
    target = centerness.max(dim=1).values  # [N, M] -> [N]
    if img_size is not None:
        h, w = img_size
        target = torch.where((points[:, 0] < w) & (points[:, 1] < h), target, torch.zeros_like(target))
    return target


def _check_meta(img_meta) -> None:
    if not isinstance(img_meta, Mapping):
        raise TypeError(f"img_meta must be a dict with 'img_shape' and 'batch_input_shape' or 'pad_shape', "
                        f"got {type(img_meta).__name__}")


def _shape_of(img_meta: Mapping, key: str) -> tuple[int, int]:
    _check_meta(img_meta)
    value = img_meta.get(key)
    if (not isinstance(value, (tuple, list)) or len(value) < 2
            or any(not isinstance(v, numbers.Integral) or v <= 0 for v in value[:2])):
        raise ValueError(f"img_meta must hold {key!r} = (h, w[, c]) with positive integers, got {value!r}")
    return int(value[0]), int(value[1])


def img_shape_of(img_meta: Mapping) -> tuple[int, int]:
    """(h, w) of the resized image inside the padded input: ``img_meta["img_shape"][:2]``."""
    return _shape_of(img_meta, "img_shape")


def input_shape_of(img_meta: Mapping) -> tuple[int, int]:
    """(h, w) of the padded network input: ``batch_input_shape``, else ``pad_shape[:2]``."""
    _check_meta(img_meta)
    return _shape_of(img_meta, "batch_input_shape" if "batch_input_shape" in img_meta else "pad_shape")


def featmap_sizes_for(input_shape: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature-map (h, w) per stride: ``ceil(H / s), ceil(W / s)``.

    Ceil division is what a chain of 3x3, stride-2, padding-1 convolutions gives (each halves
    with ``floor((n - 1) / 2) + 1 = ceil(n / 2)``), as in ResNet + FPN with P6/P7:
    800 x 1344 -> 100x168, 50x84, 25x42, 13x21, 7x11 for strides 8..128.
    """
    h, w = input_shape
    return [(-(-int(h) // int(s)), -(-int(w) // int(s))) for s in strides]


def objectness_targets_single(gt_bboxes: Tensor, img_meta: Mapping, strides: Sequence[int],
                              featmap_sizes: Sequence[Sequence[int]]) -> list[Tensor]:
    """Objectness targets of one image, per level.

    Args:
        gt_bboxes (Tensor[M, 4]): xyxy pixels of the padded input (after the resize), M may be 0.
        img_meta: needs ``img_shape``; points beyond it (the padding) get 0.
        strides: pixels per cell of each level. featmap_sizes: (h, w) of each level.
    Returns:
        L tensors [1, 1, h_l, w_l] (num_imgs = 1) in [0, 1], dtype and device of ``gt_bboxes``.
    """
    check_boxes(gt_bboxes, "gt_bboxes")
    if len(strides) != len(featmap_sizes):
        raise ValueError(f"featmap_sizes must have one (h, w) per stride ({len(strides)}), got {len(featmap_sizes)}")
    img_size = img_shape_of(img_meta)
    targets = []
    for (h, w), stride in zip(featmap_sizes, strides):
        points = center_points((h, w), stride, dtype=gt_bboxes.dtype, device=gt_bboxes.device)  # [h*w, 2]
        targets.append(centerness_targets(points, gt_bboxes, img_size).reshape(1, 1, h, w))  # [h*w] -> [1, 1, h, w]
    return targets


def objectness_targets(gt_bboxes_list: Sequence[Tensor], img_metas: Sequence[Mapping], strides: Sequence[int],
                       featmap_sizes: Sequence[Sequence[int]] | None = None) -> list[Tensor]:
    """Objectness targets of a batch: L tensors [B, 1, h_l, w_l].

    ``featmap_sizes`` defaults to :func:`featmap_sizes_for` of the images' common padded input.
    """
    if not isinstance(gt_bboxes_list, (list, tuple)) or not isinstance(img_metas, (list, tuple)):
        raise TypeError(f"gt_bboxes_list and img_metas must be lists (one entry per image), got "
                        f"{type(gt_bboxes_list).__name__} and {type(img_metas).__name__}")
    if len(gt_bboxes_list) != len(img_metas) or not img_metas:
        raise ValueError(f"gt_bboxes_list and img_metas must have one entry per image, got {len(gt_bboxes_list)} "
                         f"and {len(img_metas)}")
    if featmap_sizes is None:
        input_shapes = {input_shape_of(meta) for meta in img_metas}
        if len(input_shapes) != 1:
            raise ValueError(f"img_metas must share one batch_input_shape, got {sorted(input_shapes)}")
        featmap_sizes = featmap_sizes_for(input_shapes.pop(), strides)
    per_image = [objectness_targets_single(gt, meta, strides, featmap_sizes)
                 for gt, meta in zip(gt_bboxes_list, img_metas)]
    return [torch.cat(level, dim=0) for level in zip(*per_image)]  # B x L x [1, 1, h, w] -> L x [B, 1, h, w]


# ---------------------------------------------------------------------------- box and class targets
class SparseImageTargets(NamedTuple):
    """Targets of one image's K top-n predictions (levels concatenated)."""

    labels: Tensor  # [K] int64: the matched gt's class, or C (background) when unmatched
    bbox_targets: Tensor  # [K, 4] xyxy pixels of the matched gt; 0 when unmatched
    matched_gt_inds: Tensor  # [K] int64: gt index, or UNMATCHED
    match: SetMatch


class SparseTargets(NamedTuple):
    """Targets of a batch; K = sum over levels of K_l (the top-n of each level)."""

    labels: Tensor  # [B, K] int64, background = C
    bbox_targets: Tensor  # [B, K, 4] xyxy pixels
    matched_gt_inds: Tensor  # [B, K] int64, UNMATCHED for background
    num_pos: int  # matched predictions in the batch (the loss divides by max(num_pos, 1))
    num_level_preds: list[int]  # K_l per level; split the K axis with these
    per_image: list[SparseImageTargets]


def sparse_targets_single(cls_pred: Tensor, bbox_pred: Tensor, gt_bboxes: Tensor, gt_labels: Tensor,
                          img_meta: Mapping, matcher: HungarianMatcher, num_classes: int) -> SparseImageTargets:
    """Match one image's predictions (Tensor[K, C] logits, Tensor[K, 4] xyxy) to its gts (M may be 0)."""
    check_boxes(gt_bboxes, "gt_bboxes")
    check_labels(gt_labels, "gt_labels", gt_bboxes.shape[0], num_classes)
    num_preds = cls_pred.shape[0]
    labels = torch.full((num_preds,), num_classes, dtype=torch.long, device=cls_pred.device)
    matched = torch.full((num_preds,), UNMATCHED, dtype=torch.long, device=cls_pred.device)
    bbox_targets = bbox_pred.new_zeros(num_preds, 4)
    match = matcher(cls_pred, bbox_pred, gt_bboxes, gt_labels.to(cls_pred.device), img_shape_of(img_meta))
    matched[match.pred_inds] = match.gt_inds
    labels[match.pred_inds] = gt_labels.to(labels.device)[match.gt_inds]
    bbox_targets[match.pred_inds] = gt_bboxes.to(bbox_pred)[match.gt_inds]
    return SparseImageTargets(labels, bbox_targets, matched, match)


def sparse_targets(cls_preds: Sequence[Tensor], bbox_preds: Sequence[Tensor], gt_bboxes: Sequence[Tensor],
                   gt_labels: Sequence[Tensor], img_metas: Sequence[Mapping], matcher: HungarianMatcher,
                   num_classes: int) -> SparseTargets:
    """Targets of a batch.

    Args:
        cls_preds: L tensors [B, K_l, C] logits (the forward layout). bbox_preds: L x [B, K_l, 4] xyxy.
        gt_bboxes, gt_labels, img_metas: one entry per image.
    Returns:
        :class:`SparseTargets`; the K axis holds the levels one after another.
    """
    cls_all = torch.cat(list(cls_preds), dim=1)  # L x [B, K_l, C] -> [B, K, C]
    boxes_all = torch.cat(list(bbox_preds), dim=1)  # L x [B, K_l, 4] -> [B, K, 4]
    per_image = [sparse_targets_single(cls, boxes, gt, labels, meta, matcher, num_classes)
                 for cls, boxes, gt, labels, meta in zip(cls_all, boxes_all, gt_bboxes, gt_labels, img_metas)]
    return SparseTargets(
        labels=torch.stack([t.labels for t in per_image]),
        bbox_targets=torch.stack([t.bbox_targets for t in per_image]),
        matched_gt_inds=torch.stack([t.matched_gt_inds for t in per_image]),
        num_pos=sum(int(t.match.pred_inds.numel()) for t in per_image),
        num_level_preds=[int(c.shape[1]) for c in cls_preds],
        per_image=per_image,
    )
