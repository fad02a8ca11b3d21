"""Inference for the GFL head of NanoDet-m: raw per-level outputs -> boxes, labels, scores.

:func:`gfl_predict` follows NanoDet's ``GFLHead.get_bboxes``:

1. per level, class scores are ``sigmoid(logits)`` and each side's distance is the
   expectation of its distribution (:func:`detviz.losses.distribution_project`) times
   the level's stride;
2. boxes are decoded from the cell centres ``((x + 0.5) * stride, (y + 0.5) * stride)``
   with :func:`detviz.boxes.distance2bbox`, clamped to the input image;
3. each level keeps its ``nms_pre`` (1000) priors of highest best-class score;
4. every (prior, class) pair scoring above ``score_thresh`` is a candidate, candidates
   go through per-class NMS (:func:`detviz.boxes.batched_nms`), and the best
   ``max_per_img`` survive (mmdetection's ``multiclass_nms``).

:func:`decode_gfl_level` does steps 1-3 for one image and level. :func:`gfl_predict` gives
the same detections, bit for bit, with less work: step 1's distances and step 2's boxes are
computed only for priors that have a candidate (12% of them for the shipped NanoDet-m on
``data/synthetic/val``; each row of the decoding depends on its own prior alone), for the whole
batch in one call, and step 4's NMS runs once over (image, class) groups (``_nms_per_group``)
instead of once per class of each image. The scores and the ``nms_pre`` cut stay per image and
level: a vectorised ``sigmoid`` and its scalar tail can differ in the last bit, so only the same
call on the same values gives the same scores.

The images given to the model are normalised first
(:func:`detviz.gfl.model.normalize_images`).
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from detviz._validate import is_finite_number
from detviz.anchors import center_points
from detviz.boxes import NMS_BLOCK, box_iou, distance2bbox
from detviz.losses import distribution_project

__all__ = ["NMS_PRE", "gfl_predict", "decode_gfl_level"]

NMS_PRE = 1000  # priors kept per level before NMS, as NanoDet's test_cfg


def _check_level(cls_score: Tensor, bbox_pred: Tensor, reg_max: int, batch: str = "") -> None:
    """ValueError unless ``cls_score`` [C, H, W] and ``bbox_pred`` [4R, H, W] (with ``batch="B, "``:
    [B, C, H, W] and [B, 4R, H, W], one B) share one grid."""
    ndim = 4 if batch else 3
    if cls_score.dim() != ndim or bbox_pred.dim() != ndim or bbox_pred.shape[-3] != 4 * (reg_max + 1) \
            or bbox_pred.shape[-2:] != cls_score.shape[-2:] or bbox_pred.shape[:-3] != cls_score.shape[:-3]:
        raise ValueError(f"cls_score must be [{batch}C, H, W] and bbox_pred [{batch}4 * (reg_max + 1) = "
                         f"{4 * (reg_max + 1)}, H, W] on the same grid, got {list(cls_score.shape)} and "
                         f"{list(bbox_pred.shape)}")


def _top_priors(scores: Tensor, nms_pre: int) -> Tensor:
    """Rows of ``scores`` [H*W, C] kept before NMS: the ``nms_pre`` best by best class score, best
    first (NanoDet's topk order), or every row in grid order when there are no more."""
    if scores.shape[0] > nms_pre:
        return scores.max(dim=1).values.topk(nms_pre).indices  # [K]
    return torch.arange(scores.shape[0], device=scores.device)  # [K = H*W]


def _decode_boxes(reg: Tensor, points: Tensor, strides: Tensor | int, reg_max: int,
                  image_size: tuple[int, int]) -> Tensor:
    """Boxes of some priors: reg [P, 4R] distance logits, points [P, 2] cell centres, strides [P, 1]
    (or one int) -> [P, 4] xyxy input pixels, clamped to ``image_size``. Each row depends on its
    own inputs only, so decoding a subset of the priors gives those priors' boxes bit for bit."""
    distances = distribution_project(reg, reg_max) * strides  # [P, 4] ltrb pixels
    return distance2bbox(points, distances, max_shape=image_size)


def decode_gfl_level(cls_score: Tensor, bbox_pred: Tensor, stride: int, reg_max: int,
                     image_size: tuple[int, int], nms_pre: int = NMS_PRE) -> tuple[Tensor, Tensor]:
    """Scores and boxes of one image at one level, the top ``nms_pre`` priors only.

    Args:
        cls_score: Tensor[C, H, W] class logits.
        bbox_pred: Tensor[4 * R, H, W] distance logits, sides in ltrb order.
        stride: pixels of the input per cell.
        reg_max: largest bin (R = reg_max + 1).
        image_size: (height, width) of the network input; boxes are clamped to it.
        nms_pre: priors kept, ranked by their best class score.

    Returns:
        scores: Tensor[K, C] in [0, 1]; boxes: Tensor[K, 4] xyxy pixels of the input,
        K = min(nms_pre, H * W).
    """
    _check_level(cls_score, bbox_pred, reg_max)
    if isinstance(nms_pre, bool) or not isinstance(nms_pre, numbers.Integral) or nms_pre < 1:
        raise ValueError(f"nms_pre must be an int >= 1, got {nms_pre!r}")
    num_classes, h, w = cls_score.shape
    scores = cls_score.permute(1, 2, 0).reshape(h * w, num_classes).sigmoid()  # [C, H, W] -> [H*W, C]
    reg = bbox_pred.permute(1, 2, 0).reshape(h * w, -1)  # [4R, H, W] -> [H*W, 4R]
    points = center_points((h, w), stride, dtype=reg.dtype, device=reg.device)  # [H*W, 2]
    top = _top_priors(scores, nms_pre)  # [K]
    return scores[top], _decode_boxes(reg[top], points[top], stride, reg_max, image_size)


class _Candidates(NamedTuple):
    """The (prior, class) pairs above the score threshold, of every image of a batch, image after image.

    image: [P] batch index; label: [P] class; score: [P]; row: [P] index into ``reg``/``points``/
    ``strides``, the priors that have a candidate (one row per prior, shared by its classes):
    reg [Q, 4R] distance logits, points [Q, 2] cell centres, strides [Q, 1] pixels.
    """
    image: Tensor
    label: Tensor
    score: Tensor
    row: Tensor
    reg: Tensor
    points: Tensor
    strides: Tensor


def _candidates(cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], strides: Sequence[int],
                score_thresh: float, nms_pre: int) -> _Candidates:
    """Steps 1, 3 and 4's threshold for a batch: per image and level the scores and the ``nms_pre``
    cut exactly as :func:`decode_gfl_level` makes them, then every (prior, class) pair above
    ``score_thresh`` in the order of the image's [N, C] score matrix (prior-major)."""
    num_images = cls_scores[0].shape[0]
    reg_dtype = bbox_preds[0].dtype
    # per level, once for the batch: [B, C, H, W] -> [B, H*W, C], [B, 4R, H, W] -> [B, H*W, 4R]
    flat_cls = [cls.permute(0, 2, 3, 1).reshape(num_images, -1, cls.shape[1]) for cls in cls_scores]
    flat_reg = [reg.permute(0, 2, 3, 1).reshape(num_images, -1, reg.shape[1]) for reg in bbox_preds]
    points = [center_points(cls.shape[-2:], stride, dtype=reg_dtype, device=cls.device)
              for cls, stride in zip(cls_scores, strides)]  # per level [H*W, 2]
    parts = {key: [] for key in _Candidates._fields}
    offset = 0  # rows of reg/points/strides taken by the earlier images
    for b in range(num_images):
        scores, reg, centres, prior_strides = [], [], [], []
        for cls, reg_level, centres_level, stride in zip(flat_cls, flat_reg, points, strides):
            level_scores = cls[b].sigmoid()  # [H*W, C], the same call on the same values as decode_gfl_level
            top = _top_priors(level_scores, nms_pre)  # [K]
            scores.append(level_scores[top])
            reg.append(reg_level[b, top])
            centres.append(centres_level[top])
            prior_strides.append(torch.full((len(top), 1), stride, dtype=reg_dtype, device=reg_level.device))
        scores = torch.cat(scores)  # [N, C], N = sum of K over levels
        prior, label = torch.nonzero(scores > score_thresh, as_tuple=True)  # [P_b] each, prior-major
        rows, row = torch.unique(prior, return_inverse=True)  # [Q_b] priors with a candidate, [P_b] into them
        parts["image"].append(torch.full_like(label, b))
        parts["label"].append(label)
        parts["score"].append(scores[prior, label])
        parts["row"].append(row + offset)
        offset += len(rows)
        parts["reg"].append(torch.cat(reg)[rows])
        parts["points"].append(torch.cat(centres)[rows])
        parts["strides"].append(torch.cat(prior_strides)[rows])
    return _Candidates(*(torch.cat(parts[key]) for key in _Candidates._fields))


def _greedy_walk(overlaps: np.ndarray) -> np.ndarray:
    """Which of ``n`` ranked boxes greedy NMS keeps, given ``overlaps`` [n, n] bool: ``[i, j]`` when box
    ``i`` would suppress box ``j`` (``i < j``, IoU above the threshold, same group).

    Box ``j`` is kept when no kept box before it overlaps it. That defines ``kept`` one box after the
    other, and ``kept = not any(overlaps[kept], axis=0)`` is its only fixed point: iterating it from
    "all kept", box ``j`` is right once every box it depends on is, so the loop ends after the longest
    chain of suppressions (a few steps for a detector's boxes) with exactly the walk's result.
    """
    kept = np.ones(overlaps.shape[0], dtype=bool)
    while True:
        step = ~overlaps[kept].any(axis=0)  # [n]
        if np.array_equal(step, kept):
            return kept
        kept = step


def _block(group_end: np.ndarray, start: int) -> tuple[int, int]:
    """The next block of ranked rows from ``start``: whole groups, as many as fit in ``NMS_BLOCK`` rows
    (their columns end where the rows do), or the first ``NMS_BLOCK`` rows of a larger group (its
    columns run to the group's end). Returns ``(stop, end)``: rows ``[start, stop)``, columns ``[start, end)``."""
    first_end = int(group_end[start])
    if first_end - start >= NMS_BLOCK:
        return start + NMS_BLOCK, first_end
    limit = min(start + NMS_BLOCK, len(group_end))
    stop = int(group_end[start:limit][group_end[start:limit] <= limit].max())  # last whole group that fits
    return stop, stop


def _nms_per_group(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS within each group, every group in one pass: the kept indices and their order are
    those of :func:`detviz.boxes.batched_nms` ``(boxes, scores, groups, iou_threshold)``.

    ``batched_nms`` calls ``nms`` once per group; with a batch of images and a group per (image,
    class) that is dozens of small calls. Here the boxes are ranked group after group (by decreasing
    score, ties in input order: each group's own ``nms`` ranking), so every group is one contiguous
    run. Whole groups are packed into blocks of at most ``NMS_BLOCK`` ranked rows (a larger group is
    cut into blocks of its own) and each block's rows are compared with the boxes not yet suppressed,
    pairs from different groups masked out; the IoUs come from the same coordinates (no per-group
    offsets) and meet the threshold as in ``nms``, so the same boxes survive.

    Returns:
        Tensor[K] int64: kept indices, by decreasing score, ties in input order.
    """
    by_score = torch.argsort(scores, descending=True, stable=True)  # [P]
    order = by_score[torch.argsort(groups[by_score], stable=True)]  # [P] group after group, best first
    ranked, ranked_groups = boxes[order], groups[order].cpu().numpy()  # [P, 4], [P]
    group_end = np.searchsorted(ranked_groups, ranked_groups, side="right")  # [P] one past its group's last
    suppressed = np.zeros(len(order), dtype=bool)
    keep, start = [], 0
    while start < len(order):
        stop, end = _block(group_end, start)
        rows = np.flatnonzero(~suppressed[start:stop]) + start  # survivors of earlier blocks
        cols = np.flatnonzero(~suppressed[start:end]) + start  # the boxes they may suppress, rows among them
        start = stop
        if rows.size == 0:
            continue
        ious = box_iou(ranked[torch.from_numpy(rows)], ranked[torch.from_numpy(cols)])  # [rows, cols]
        overlaps = ((ious.double() > iou_threshold).cpu().numpy() & (rows[:, None] < cols[None, :])
                    & (ranked_groups[rows, None] == ranked_groups[None, cols]))  # row i would suppress col j
        kept = _greedy_walk(overlaps[:, np.searchsorted(cols, rows)])  # [rows]
        keep.append(rows[kept])
        suppressed[cols[overlaps[kept].any(axis=0)]] = True
    kept = order[torch.from_numpy(np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)).to(order.device)]
    kept = kept.sort().values  # input order first, so equal scores keep it
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


def _per_image(candidates: _Candidates, boxes: Tensor, keep: Tensor, num_images: int,
               max_per_img: int) -> list[dict[str, Tensor]]:
    """Split the batch's kept candidates (by decreasing score) into each image's best ``max_per_img``."""
    predictions = []
    for b in range(num_images):
        mine = keep[candidates.image[keep] == b][:max_per_img]  # still by decreasing score
        predictions.append({"boxes": boxes[mine], "labels": candidates.label[mine], "scores": candidates.score[mine]})
    return predictions


def _check_predict_args(model, images, score_thresh, nms_thresh, max_per_img, nms_pre) -> None:
    """ValueError naming the argument and what was expected."""
    if not is_finite_number(score_thresh) or not 0.0 <= score_thresh < 1.0:
        raise ValueError(f"score_thresh must be a number in [0, 1), got {score_thresh!r}")
    if not is_finite_number(nms_thresh) or not 0.0 <= nms_thresh <= 1.0:
        raise ValueError(f"nms_thresh must be an IoU in [0, 1], got {nms_thresh!r}")
    for name, value in (("max_per_img", max_per_img), ("nms_pre", nms_pre)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not hasattr(model, "cfg") or not hasattr(model.cfg, "strides"):
        raise ValueError(f"model must be a NanoDet-style model with cfg.strides and cfg.reg_max, got "
                         f"{type(model).__name__}")
    largest = max(model.cfg.strides)
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        got = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float Tensor[B, 3, H, W], got {got}")
    if images.shape[-2] % largest or images.shape[-1] % largest:
        raise ValueError(f"images must have H and W multiples of the largest stride {largest}, got "
                         f"{list(images.shape[-2:])} (pad or resize the input)")


@torch.no_grad()
def gfl_predict(model: nn.Module, images: Tensor, *, score_thresh: float = 0.05, nms_thresh: float = 0.6,
                max_per_img: int = 100, nms_pre: int = NMS_PRE) -> list[dict[str, Tensor]]:
    """Detections of a NanoDet/GFL model (NanoDet's ``get_bboxes`` + ``multiclass_nms``).

    The model is run as it is: call ``model.eval()`` first so BatchNorm uses its running
    statistics.

    Args:
        model: a :class:`detviz.gfl.model.NanoDet` (``forward`` gives per-level
            [B, C, H, W] logits and [B, 4R, H, W] distance logits; ``cfg`` gives strides, reg_max).
        images: Tensor[B, 3, H, W], the network input (already normalised,
            :func:`normalize_images`), H and W multiples of the largest stride.
        score_thresh: smallest class score kept.
        nms_thresh: IoU above which a lower-scoring box of the same class is suppressed.
        max_per_img: most detections per image.
        nms_pre: priors kept per level before NMS.

    Returns:
        One ``dict(boxes=Tensor[K, 4] float xyxy pixels of the input, labels=Tensor[K] int64
        in [0, C), scores=Tensor[K] float in (score_thresh, 1])`` per image, by decreasing
        score, K <= max_per_img (K = 0 gives [0, 4], [0], [0] tensors).
    """
    _check_predict_args(model, images, score_thresh, nms_thresh, max_per_img, nms_pre)
    cls_scores, bbox_preds = model(images)
    strides: Sequence[int] = model.cfg.strides
    if len(cls_scores) != len(strides) or len(bbox_preds) != len(strides):
        raise ValueError(f"the model returned {len(cls_scores)} levels of scores and {len(bbox_preds)} of boxes, "
                         f"but its cfg.strides {tuple(strides)} has {len(strides)}")
    for cls, reg in zip(cls_scores, bbox_preds):
        _check_level(cls, reg, model.cfg.reg_max, batch="B, ")
    image_size = (int(images.shape[-2]), int(images.shape[-1]))
    candidates = _candidates(cls_scores, bbox_preds, strides, score_thresh, nms_pre)
    boxes = _decode_boxes(candidates.reg, candidates.points, candidates.strides, model.cfg.reg_max,
                          image_size)[candidates.row]  # [P, 4]: each prior decoded once, shared by its classes
    num_classes = cls_scores[0].shape[1]
    keep = _nms_per_group(boxes, candidates.score, candidates.image * num_classes + candidates.label, nms_thresh)
    return _per_image(candidates, boxes, keep, images.shape[0], max_per_img)
