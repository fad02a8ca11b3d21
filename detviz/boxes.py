"""Box formats, pairwise and aligned IoU, NMS, and the ltrb coder of GFL/NanoDet.

Every function takes absolute-pixel ``xyxy`` boxes unless its name says otherwise.
Zero-width or zero-height boxes are legal; inverted boxes (``x2 < x1``) are rejected
wherever an area or an IoU is computed. The pairwise IoU family and ``nms`` are written
out in plain torch and equal ``torchvision.ops`` on the same inputs (tests check this),
including its ``0 / 0 = NaN`` for the IoU of two zero-area boxes.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from detviz._validate import check_boxes, check_labels, check_tensor


def _check_xyxy(boxes, name: str, rows: str = "N", allow_inverted: bool = False) -> None:
    check_tensor(boxes, name, ndim=2, last_dim=4, floating=True, layout=f"[{rows}, 4] xyxy")
    check_boxes(boxes, name, allow_inverted=allow_inverted)


def _check_any4(boxes, name: str, fmt: str) -> None:
    check_tensor(boxes, name, last_dim=4, floating=True, layout=f"[*, 4] {fmt}")


# ---- format conversions (any leading shape [*, 4]) ----

def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``. Args: boxes (Tensor[*, 4] xyxy). Returns: Tensor[*, 4] cxcywh."""
    _check_any4(boxes, "boxes", "xyxy")
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_cxcywh_to_xyxy(boxes_cxcywh: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``. Args: boxes_cxcywh (Tensor[*, 4]). Returns: Tensor[*, 4] xyxy."""
    _check_any4(boxes_cxcywh, "boxes_cxcywh", "cxcywh")
    cx, cy, w, h = boxes_cxcywh.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_xywh_to_xyxy(boxes_xywh: Tensor) -> Tensor:
    """COCO ``(x, y, w, h)`` (top-left corner) -> ``xyxy``. Args: boxes_xywh (Tensor[*, 4]). Returns: Tensor[*, 4] xyxy."""
    _check_any4(boxes_xywh, "boxes_xywh", "xywh")
    x, y, w, h = boxes_xywh.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``xyxy`` -> COCO ``(x, y, w, h)``. Args: boxes (Tensor[*, 4] xyxy). Returns: Tensor[*, 4] xywh."""
    _check_any4(boxes, "boxes", "xyxy")
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area ``(x2 - x1) * (y2 - y1)``.

    Args:
        boxes (Tensor[N, 4]): xyxy, float, ``x2 >= x1`` and ``y2 >= y1``.
    Returns:
        Tensor[N]: areas in squared pixels; 0 for zero-width or zero-height boxes.
    """
    _check_xyxy(boxes, "boxes")
    return _area(_upcast(boxes))


NMS_BLOCK = 256  # rows of the IoU matrix NMS computes at once


# ---- shared pieces of every IoU variant ----

def _upcast(boxes: Tensor) -> Tensor:
    """float16 / bfloat16 -> float32, as torchvision's ``_upcast``: a float16 area overflows past
    65504 px^2 (a 256 x 256 box), so half-precision boxes are measured in float32 and IoUs come back
    in float32. float32, float64 and integer boxes pass unchanged. One deliberate difference:
    torchvision subtracts the corners in half precision before it upcasts (IoUs off by about 1e-3
    in float16, 1e-2 in bfloat16); here the whole computation is float32, exact on the given boxes."""
    return boxes.float() if boxes.is_floating_point() and boxes.dtype not in (torch.float32, torch.float64) else boxes


def _area(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # [...]


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of two box tensors that broadcast against each other.

    Pairwise: pass ``[N, 1, 4]`` and ``[1, M, 4]`` -> ``[N, M]``; aligned: ``[N, 4]`` twice -> ``[N]``.
    """
    top_left = torch.max(boxes1[..., :2], boxes2[..., :2])  # [..., 2]
    bottom_right = torch.min(boxes1[..., 2:], boxes2[..., 2:])  # [..., 2]
    inter_wh = (bottom_right - top_left).clamp(min=0)  # no overlap -> width or height 0
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    return inter, _area(boxes1) + _area(boxes2) - inter


def _enclosing_wh(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Width and height ``[..., 2]`` of the smallest box enclosing each pair (broadcast as in ``_inter_union``)."""
    top_left = torch.min(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    return (bottom_right - top_left).clamp(min=0)


def _pairwise_args(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    _check_xyxy(boxes1, "boxes1", rows="N")
    _check_xyxy(boxes2, "boxes2", rows="M")
    return _upcast(boxes1)[:, None, :], _upcast(boxes2)[None, :, :]  # [N, 1, 4], [1, M, 4]


# ---- pairwise IoU family: boxes1 [N, 4], boxes2 [M, 4] -> [N, M] ----

def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU = |A ∩ B| / |A ∪ B| (no eps, as torchvision: two zero-area boxes give 0/0 = NaN).

    Args:
        boxes1 (Tensor[N, 4]): xyxy. boxes2 (Tensor[M, 4]): xyxy.
    Returns:
        Tensor[N, M]: IoU in [0, 1]; shape [0, M] or [N, 0] when a side is empty.
    """
    inter, union = _inter_union(*_pairwise_args(boxes1, boxes2))  # [N, M] each
    return inter / union


def box_iof(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Pairwise intersection over the area of the first box ("iof" in mmdetection): how much of
    each ``boxes1`` lies inside each ``boxes2``; used to ignore priors inside ignore regions.

    Args:
        boxes1 (Tensor[N, 4]): xyxy. boxes2 (Tensor[M, 4]): xyxy. eps: floor of the area.
    Returns:
        Tensor[N, M]: in [0, 1].
    """
    b1, b2 = _pairwise_args(boxes1, boxes2)
    inter, _ = _inter_union(b1, b2)  # [N, M]
    return inter / _area(b1).clamp(min=eps)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU = IoU - (|C| - |A ∪ B|) / |C|, C the smallest enclosing box (Rezatofighi et al. 2019).

    Args:
        boxes1 (Tensor[N, 4]): xyxy. boxes2 (Tensor[M, 4]): xyxy.
    Returns:
        Tensor[N, M]: GIoU in [-1, 1].
    """
    b1, b2 = _pairwise_args(boxes1, boxes2)
    inter, union = _inter_union(b1, b2)
    enclosing_wh = _enclosing_wh(b1, b2)  # [N, M, 2]
    enclosing = enclosing_wh[..., 0] * enclosing_wh[..., 1]
    return inter / union - (enclosing - union) / enclosing


def _diou_and_iou(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    b1, b2 = _pairwise_args(boxes1, boxes2)
    inter, union = _inter_union(b1, b2)
    iou = inter / union
    enclosing_wh = _enclosing_wh(b1, b2)  # [N, M, 2]
    diagonal_sq = enclosing_wh[..., 0] ** 2 + enclosing_wh[..., 1] ** 2 + eps
    center1 = (b1[..., :2] + b1[..., 2:]) / 2  # [N, 1, 2]
    center2 = (b2[..., :2] + b2[..., 2:]) / 2  # [1, M, 2]
    center_dist_sq = ((center1 - center2) ** 2).sum(dim=-1)  # [N, M]
    return iou - center_dist_sq / diagonal_sq, iou


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise DIoU = IoU - ρ²(centres) / (c² + eps), c the diagonal of the enclosing box (Zheng et al. 2020).

    Args:
        boxes1 (Tensor[N, 4]): xyxy. boxes2 (Tensor[M, 4]): xyxy. eps: keeps c² > 0.
    Returns:
        Tensor[N, M]: DIoU in [-1, 1].
    """
    return _diou_and_iou(boxes1, boxes2, eps)[0]


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise CIoU = DIoU - α·v, v = 4/π² (atan(w1/h1) - atan(w2/h2))², α = v / (1 - IoU + v + eps).

    CIoU is from the DIoU paper (Zheng et al. 2020). α is a trade-off weight, computed without
    gradient as torchvision does.

    Args:
        boxes1 (Tensor[N, 4]): xyxy. boxes2 (Tensor[M, 4]): xyxy. eps: keeps α's denominator > 0.
    Returns:
        Tensor[N, M]: CIoU values.
    """
    diou, iou = _diou_and_iou(boxes1, boxes2, eps)
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    aspect1 = torch.atan((boxes1[:, 2] - boxes1[:, 0]) / (boxes1[:, 3] - boxes1[:, 1]))  # [N]
    aspect2 = torch.atan((boxes2[:, 2] - boxes2[:, 0]) / (boxes2[:, 3] - boxes2[:, 1]))  # [M]
    v = 4 / math.pi**2 * (aspect1[:, None] - aspect2[None, :]) ** 2  # [N, M]
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


# ---- aligned IoU (row i with row i), as NanoDet's bbox_overlaps(is_aligned=True) ----

def _aligned_args(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    _check_xyxy(boxes1, "boxes1")
    _check_xyxy(boxes2, "boxes2")
    if boxes2.shape[0] != boxes1.shape[0]:
        raise ValueError(f"boxes2 must have as many rows as boxes1 ({boxes1.shape[0]}), got {boxes2.shape[0]}")
    return _upcast(boxes1), _upcast(boxes2)


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of ``boxes1[i]`` with ``boxes2[i]`` = inter / max(union, eps) (NanoDet's clamp and default eps).

    Args:
        boxes1 (Tensor[N, 4]): xyxy. boxes2 (Tensor[N, 4]): xyxy. eps: floor on the union.
    Returns:
        Tensor[N]: IoU in [0, 1]; 0 (not NaN) for two zero-area boxes.
    """
    boxes1, boxes2 = _aligned_args(boxes1, boxes2)
    inter, union = _inter_union(boxes1, boxes2)  # [N] each
    return inter / union.clamp(min=eps)


def aligned_generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """GIoU of ``boxes1[i]`` with ``boxes2[i]``, NanoDet's form: union and enclosing area both floored at eps.

    ``U = max(union, eps)``, ``E = max(|C|, eps)``, ``GIoU = inter / U - (E - U) / E``.

    Args:
        boxes1 (Tensor[N, 4]): xyxy. boxes2 (Tensor[N, 4]): xyxy. eps: floor on union and enclosing area.
    Returns:
        Tensor[N]: GIoU in [-1, 1].
    """
    boxes1, boxes2 = _aligned_args(boxes1, boxes2)
    inter, union = _inter_union(boxes1, boxes2)
    union = union.clamp(min=eps)
    enclosing_wh = _enclosing_wh(boxes1, boxes2)  # [N, 2]
    enclosing = (enclosing_wh[:, 0] * enclosing_wh[:, 1]).clamp(min=eps)
    return inter / union - (enclosing - union) / enclosing


# ---- post-processing ----

def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp x to [0, width] and y to [0, height]; inverted raw predictions pass through clamped.

    Args:
        boxes (Tensor[*, 4]): xyxy pixels. size: ``(height, width)`` of the image.
    Returns:
        Tensor[*, 4]: a new tensor of clipped boxes.
    """
    check_boxes(boxes, "boxes", allow_inverted=True)
    return _clip(boxes, size)


def _clip(boxes: Tensor, size, name: str = "size") -> Tensor:
    if not (isinstance(size, (tuple, list, torch.Size)) and len(size) == 2):
        raise ValueError(f"{name} must be (height, width), got {size!r}")
    height, width = size
    if isinstance(height, Tensor) or isinstance(width, Tensor):  # traced sizes (torch.jit / ONNX) pass as they are
        pass
    elif not (height >= 0 and width >= 0):  # a negative size would clamp every box into an empty range
        raise ValueError(f"{name} must be (height, width) >= 0, got {tuple(size)!r}")
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)], dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of boxes whose width and height are both ``>= min_size`` (inverted boxes are dropped).

    Args:
        boxes (Tensor[N, 4]): xyxy. min_size: minimum side in pixels.
    Returns:
        Tensor[K] int64: indices into ``boxes``, increasing.
    """
    _check_xyxy(boxes, "boxes", allow_inverted=True)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.nonzero((widths >= min_size) & (heights >= min_size)).flatten()


def _check_nms_args(boxes: Tensor, scores: Tensor, iou_threshold: float) -> None:
    _check_xyxy(boxes, "boxes")
    check_tensor(scores, "scores", ndim=1, floating=True, layout="[N] float")
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must have one score per box ({boxes.shape[0]}), got {scores.shape[0]}")
    if not isinstance(iou_threshold, (int, float)):
        raise TypeError(f"iou_threshold must be a float, got {type(iou_threshold).__name__}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    1. Sort boxes by decreasing score. 2. Keep the best remaining box. 3. Drop every remaining
    box whose IoU with it is ``> iou_threshold``. 4. Repeat until none remain. A NaN IoU (two
    zero-area boxes) never suppresses, as in torchvision's kernel. The IoUs are computed for
    ``NMS_BLOCK`` ranked boxes at a time, only for boxes not suppressed yet, and the greedy walk
    runs over booleans, so a box that is already suppressed costs one lookup.

    Args:
        boxes (Tensor[N, 4]): xyxy. scores (Tensor[N]): float. iou_threshold: suppression threshold.
    Returns:
        Tensor[K] int64: indices of kept boxes, sorted by decreasing score.
    """
    _check_nms_args(boxes, scores, iou_threshold)
    order = torch.argsort(scores, descending=True, stable=True)  # [N]
    # float16 areas overflow past 65504 px^2: half-precision boxes are compared in float32, as torchvision's
    # autocast wrapper of nms does
    ranked = boxes[order].to(torch.promote_types(boxes.dtype, torch.float32))  # [N, 4] by decreasing score
    n = ranked.shape[0]
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for start in range(0, n, NMS_BLOCK):
        rows = np.flatnonzero(~suppressed[start:start + NMS_BLOCK]) + start  # survivors of earlier blocks
        if rows.size == 0:
            continue
        cols = np.flatnonzero(~suppressed[start:]) + start  # boxes from this block on, not yet suppressed
        inter, union = _inter_union(ranked[torch.from_numpy(rows), None, :], ranked[None, torch.from_numpy(cols), :])
        # IoU in the boxes' dtype, compared with the threshold in double, as torchvision's kernel
        # does: IoU 30/100 is 0.30000001 in float32, which suppresses at threshold 0.3
        overlaps = ((inter / union).double() > iou_threshold).cpu().numpy()  # [rows, cols]; NaN never suppresses
        for i, row in zip(rows.tolist(), overlaps):
            if suppressed[i]:  # suppressed by a higher-ranked box of this block
                continue
            keep.append(i)
            hit = cols[row]
            suppressed[hit[hit > i]] = True
    return order[torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS run separately for each category in ``idxs``: boxes of different categories never suppress each other.

    A plain loop over categories (torchvision offsets each category's coordinates instead;
    both give the same kept set).

    Args:
        boxes (Tensor[N, 4]): xyxy. scores (Tensor[N]): float. idxs (Tensor[N] int64): category of each box.
        iou_threshold: suppression threshold.
    Returns:
        Tensor[K] int64: indices of kept boxes, sorted by decreasing score.
    """
    _check_nms_args(boxes, scores, iou_threshold)
    check_labels(idxs, "idxs", boxes.shape[0], None)
    keep_per_class = []
    for category in torch.unique(idxs):
        members = torch.nonzero(idxs == category).flatten()  # [N_c] indices into boxes
        keep_per_class.append(members[nms(boxes[members], scores[members], iou_threshold)])
    if not keep_per_class:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    keep = torch.cat(keep_per_class).sort().values  # input order first, so equal scores keep it
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


# ---- GFL's ltrb coder: a point and its distances to the four sides ----

def _check_points(points, distances, points_name: str, distances_name: str, layout: str) -> None:
    check_tensor(points, points_name, ndim=2, last_dim=2, floating=True, layout="[N, 2] xy")
    check_tensor(distances, distances_name, ndim=2, last_dim=4, floating=True, layout=f"[N, 4] {layout}")
    if distances.shape[0] != points.shape[0]:
        raise ValueError(f"{distances_name} must have one row per point ({points.shape[0]}), got {distances.shape[0]}")


def distance2bbox(points: Tensor, distance: Tensor, max_shape: tuple[int, int] | None = None) -> Tensor:
    """Decode ltrb distances: ``(px - l, py - t, px + r, py + b)``.

    Invariant: ``distance2bbox(p, bbox2distance(p, b)) == b`` for ``p`` inside ``b`` when
    ``max_dis`` is None, and with ``max_dis`` only while every side is closer than
    ``max_dis - eps`` (farther sides are clamped), up to float rounding.

    Args:
        points (Tensor[N, 2]): xy, same units as ``distance`` (pixels, or stride units in the GFL loss).
        distance (Tensor[N, 4]): ltrb distances, normally >= 0.
        max_shape: optional ``(height, width)``; x is clamped to [0, width], y to [0, height].
    Returns:
        Tensor[N, 4]: xyxy boxes.
    """
    _check_points(points, distance, "points", "distance", "ltrb")
    px, py = points.unbind(-1)
    left, top, right, bottom = distance.unbind(-1)
    boxes = torch.stack([px - left, py - top, px + right, py + bottom], dim=-1)  # [N, 4]
    return boxes if max_shape is None else _clip(boxes, max_shape, "max_shape")


def bbox2distance(points: Tensor, bbox: Tensor, max_dis: float | None = None, eps: float = 0.1) -> Tensor:
    """Encode boxes as ltrb distances from points; the inverse of ``distance2bbox``.

    With ``max_dis`` (NanoDet passes reg_max) each distance is clamped to ``[0, max_dis - eps]``,
    so a DFL target ``y`` always has a right neighbour bin ``floor(y) + 1 <= reg_max``.

    Args:
        points (Tensor[N, 2]): xy. bbox (Tensor[N, 4]): xyxy, same units as points.
        max_dis: optional upper bound. eps: margin below ``max_dis``.
    Returns:
        Tensor[N, 4]: ltrb distances (negative for a side the point lies outside, unless clamped).
    """
    _check_points(points, bbox, "points", "bbox", "xyxy")
    check_boxes(bbox, "bbox")
    px, py = points.unbind(-1)
    x1, y1, x2, y2 = bbox.unbind(-1)
    ltrb = torch.stack([px - x1, py - y1, x2 - px, y2 - py], dim=-1)  # [N, 4]
    return ltrb if max_dis is None else ltrb.clamp(min=0, max=max_dis - eps)
