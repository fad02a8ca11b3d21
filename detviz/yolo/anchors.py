"""YOLOv3 anchor shapes: the COCO set, shape-only IoU, best-anchor matching, k-means estimation.

YOLOv3 anchors are ``(w, h)`` sizes in pixels of the 416x416 input, with no position. They
are compared with a box by their *shape-only* IoU: both centred on the same point, so
``inter = min(w1, w2) * min(h1, h2)``. The 9 COCO anchors come from k-means with distance
``1 - IoU`` and are sorted small to large; ``ANCHOR_MASKS[l]`` picks the 3 anchors of
level ``l`` (level 0 = stride 32 gets the 3 largest: bottom-up, the anchor groups serve
levels 2, 1, 0).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from detviz._validate import check_tensor
from detviz.boxes import box_cxcywh_to_xyxy, box_iou

__all__ = ["COCO_ANCHORS", "ANCHOR_MASKS", "LEVEL_STRIDES", "level_anchors", "wh_iou", "best_anchors",
           "KMeansAnchors", "kmeans_anchors"]

# keras-yolo3 model_data/yolo_anchors.txt, (w, h) pixels of the 416x416 input, small to large
COCO_ANCHORS = ((10.0, 13.0), (16.0, 30.0), (33.0, 23.0), (30.0, 61.0), (62.0, 45.0), (59.0, 119.0),
                (116.0, 90.0), (156.0, 198.0), (373.0, 326.0))
ANCHOR_MASKS = ((6, 7, 8), (3, 4, 5), (0, 1, 2))  # level 0 (stride 32), 1 (16), 2 (8)
LEVEL_STRIDES = (32, 16, 8)


def _anchor_tensor(anchors, dtype=torch.float32, device=None) -> Tensor:
    anchors = torch.as_tensor(anchors, dtype=dtype, device=device)
    if anchors.dim() != 2 or anchors.shape[-1] != 2 or not bool((anchors > 0).all()):
        raise ValueError(f"anchors must be [N, 2] positive (w, h) pixels, got shape {list(anchors.shape)}")
    return anchors


def level_anchors(level: int, anchors=COCO_ANCHORS, anchor_masks=ANCHOR_MASKS) -> Tensor:
    """The ``[A, 2]`` (w, h) anchors of one level, e.g. level 0 -> anchors 6, 7, 8."""
    if not 0 <= level < len(anchor_masks):
        raise ValueError(f"level must be in [0, {len(anchor_masks) - 1}], got {level}")
    return _anchor_tensor(anchors)[list(anchor_masks[level])]


def wh_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """Shape-only IoU: the IoU of the two boxes placed on a common centre.

    Args:
        wh1 (Tensor[N, 2]), wh2 (Tensor[M, 2]): (w, h) in the same units, >= 0.
    Returns:
        Tensor[N, M]: ``min(w1,w2) * min(h1,h2) / (w1 h1 + w2 h2 - inter)``; NaN only when
        both boxes have zero area (0 / 0, as ``box_iou``).
    """
    check_tensor(wh1, "wh1", ndim=2, last_dim=2, floating=True, layout="[N, 2] (w, h)")
    check_tensor(wh2, "wh2", ndim=2, last_dim=2, floating=True, layout="[M, 2] (w, h)")
    if bool((wh1 < 0).any()) or bool((wh2 < 0).any()):
        raise ValueError("wh1 and wh2 must be (w, h) >= 0")

    def centred(wh: Tensor) -> Tensor:
        return box_cxcywh_to_xyxy(torch.cat([torch.zeros_like(wh), wh], dim=-1))  # [*, 4] around (0, 0)

    return box_iou(centred(wh1), centred(wh2))


def best_anchors(gt_wh: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
    """Index and shape IoU of the best anchor of every gt (first index on ties, as argmax).

    Args:
        gt_wh (Tensor[M, 2]): gt (w, h) pixels, > 0. anchors (Tensor[N, 2]): (w, h) pixels.
    Returns:
        (Tensor[M] int64 in [0, N), Tensor[M] IoU).
    """
    ious = wh_iou(gt_wh, anchors)  # [M, N]
    if ious.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=gt_wh.device), ious.new_zeros(0)
    best_iou, best = ious.max(dim=1)
    return best, best_iou


class KMeansAnchors(NamedTuple):
    """Result of :func:`kmeans_anchors`."""

    anchors: Tensor  # [k, 2] (w, h), sorted by area, small to large
    assignment: Tensor  # [N] int64: cluster of each box, an index into anchors
    mean_iou: Tensor  # []: mean over boxes of the best IoU with any anchor ("avg IoU")
    iterations: int


def _kmeans_plus_plus(boxes_wh: Tensor, k: int, generator: torch.Generator) -> Tensor:
    chosen = [int(torch.randint(boxes_wh.shape[0], (1,), generator=generator))]
    for _ in range(1, k):
        nearest = (1 - wh_iou(boxes_wh, boxes_wh[chosen])).min(dim=1).values  # [N] distance to the closest centre
        weights = (nearest**2).double().cpu()
        if float(weights.sum()) == 0:  # every box already coincides with a centre
            weights = torch.ones_like(weights)
        chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
    return boxes_wh[chosen].clone()


def kmeans_anchors(boxes_wh: Tensor, k: int = 9, *, seed: int = 0, max_iter: int = 300,
                   center: str = "median") -> KMeansAnchors:
    """k-means on box shapes with distance ``d = 1 - wh_iou`` (YOLOv2/v3's anchor estimation).

    1. Seed the centres with k-means++ (Arthur & Vassilvitskii 2007): the first is a random box,
       each next one a box drawn with probability proportional to ``d^2`` to its nearest centre
       (a CPU ``torch.Generator`` seeded with ``seed``, so the result is repeatable).
    2. Assign every box to the centre of largest shape IoU (smallest ``1 - IoU``).
    3. Move each centre to the median (or mean) (w, h) of its boxes; an empty cluster keeps its centre.
    4. Repeat 2-3 until no assignment changes, at most ``max_iter`` times.

    Args:
        boxes_wh (Tensor[N, 2]): (w, h) of the dataset's boxes, > 0, N >= k.
        center: "median" (most public YOLO anchor scripts) or "mean" (textbook k-means).
    Returns:
        KMeansAnchors with anchors sorted by area.
    """
    check_tensor(boxes_wh, "boxes_wh", ndim=2, last_dim=2, floating=True, layout="[N, 2] (w, h)")
    if not isinstance(k, int) or k < 1 or boxes_wh.shape[0] < k:
        raise ValueError(f"k must be an int in [1, N={boxes_wh.shape[0]}], got {k!r}")
    if not bool((boxes_wh > 0).all()):
        raise ValueError("boxes_wh must hold positive (w, h); drop empty boxes first")
    if center not in ("median", "mean"):
        raise ValueError(f"center must be 'median' or 'mean', got {center!r}")
    centres = _kmeans_plus_plus(boxes_wh, k, torch.Generator().manual_seed(seed))  # [k, 2]
    assignment = torch.full((boxes_wh.shape[0],), -1, dtype=torch.int64, device=boxes_wh.device)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        new_assignment = wh_iou(boxes_wh, centres).argmax(dim=1)  # [N]
        if torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for j in range(k):
            members = boxes_wh[assignment == j]  # [N_j, 2]
            if members.shape[0] > 0:
                centres[j] = members.median(dim=0).values if center == "median" else members.mean(dim=0)
    anchors = centres[torch.argsort(centres.prod(dim=1))]  # small to large area
    best_iou, assignment = wh_iou(boxes_wh, anchors).max(dim=1)  # [N] each
    return KMeansAnchors(anchors, assignment, best_iou.mean(), iterations)
