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

The images given to the model are normalised first
(:func:`detviz.gfl.model.normalize_images`).
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detviz._validate import is_finite_number
from detviz.anchors import center_points
from detviz.boxes import batched_nms, distance2bbox
from detviz.losses import distribution_project

__all__ = ["NMS_PRE", "gfl_predict", "decode_gfl_level"]

NMS_PRE = 1000  # priors kept per level before NMS, as NanoDet's test_cfg


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
    if cls_score.dim() != 3 or bbox_pred.dim() != 3 or bbox_pred.shape[0] != 4 * (reg_max + 1) \
            or bbox_pred.shape[1:] != cls_score.shape[1:]:
        raise ValueError(f"cls_score must be [C, H, W] and bbox_pred [4 * (reg_max + 1) = {4 * (reg_max + 1)}, H, W] "
                         f"on the same grid, got {list(cls_score.shape)} and {list(bbox_pred.shape)}")
    if isinstance(nms_pre, bool) or not isinstance(nms_pre, numbers.Integral) or nms_pre < 1:
        raise ValueError(f"nms_pre must be an int >= 1, got {nms_pre!r}")
    num_classes, h, w = cls_score.shape
    scores = cls_score.permute(1, 2, 0).reshape(h * w, num_classes).sigmoid()  # [C, H, W] -> [H*W, C]
    reg = bbox_pred.permute(1, 2, 0).reshape(h * w, -1)  # [4R, H, W] -> [H*W, 4R]
    distances = distribution_project(reg, reg_max) * stride  # [H*W, 4] ltrb pixels
    points = center_points((h, w), stride, dtype=distances.dtype, device=distances.device)  # [H*W, 2]
    if h * w > nms_pre:
        top = scores.max(dim=1).values.topk(nms_pre).indices  # [K]
        scores, distances, points = scores[top], distances[top], points[top]
    return scores, distance2bbox(points, distances, max_shape=image_size)


def _predict_per_image(scores: Tensor, boxes: Tensor, score_thresh: float, nms_thresh: float,
                       max_per_img: int) -> dict[str, Tensor]:
    """multiclass_nms on one image: scores [N, C], boxes [N, 4] -> at most max_per_img detections."""
    prior_idx, labels = torch.nonzero(scores > score_thresh, as_tuple=True)  # [P] each
    cand_boxes, cand_scores = boxes[prior_idx], scores[prior_idx, labels]  # [P, 4], [P]
    keep = batched_nms(cand_boxes, cand_scores, labels, nms_thresh)[:max_per_img]  # sorted by score
    return {"boxes": cand_boxes[keep], "labels": labels[keep], "scores": cand_scores[keep]}


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
    image_size = (int(images.shape[-2]), int(images.shape[-1]))
    predictions = []
    for b in range(images.shape[0]):
        per_level = [decode_gfl_level(cls[b], reg[b], stride, model.cfg.reg_max, image_size, nms_pre)
                     for cls, reg, stride in zip(cls_scores, bbox_preds, strides)]
        scores = torch.cat([s for s, _ in per_level])  # [N, C], N = sum of K over levels
        boxes = torch.cat([bx for _, bx in per_level])  # [N, 4]
        predictions.append(_predict_per_image(scores, boxes, score_thresh, nms_thresh, max_per_img))
    return predictions
