"""YOLOv3's loss (keras-yolo3's ``yolo_loss``) and the CIoU box loss.

Per level, with ``obj`` = 1 where ``y_true`` holds a gt and ``scale = 2 - w * h`` (normalised
gt size: small boxes weigh up to 2, a box covering the image 1)::

    loss_xy   = obj * scale * BCE_logits(t_xy, raw_xy_target)          # target in [0, 1]
    loss_wh   = obj * scale * 0.5 * (t_wh - log(gt_wh / anchor))^2     # L2 in log space
    loss_conf = obj * BCE_logits(t_obj, 1) + (1 - obj) * BCE_logits(t_obj, 0) * ignore_mask
    loss_cls  = obj * BCE_logits(t_cls, one_hot)
    ignore_mask = best IoU of the decoded prediction with any gt of the image < ignore_thresh

The ignore mask follows the note (any gt of the image, ``ignore_from="image"``, the default);
keras-yolo3 itself compares only with the gts assigned to the same level
(``ignore_from="level"``), which ignores fewer predictions (notebook 09 compares the two).

Every term is summed over cells, anchors, coordinates and classes, summed over the levels
and divided by the batch size. The 0.5 in ``loss_wh`` is keras-yolo3's. Hence the sizes in a
training log: an untrained head costs every prior about BCE(sigmoid(0), 0) = 0.69 of confidence
loss, and there are 3 x (10^2 + 20^2 + 40^2) = 6,300 priors per 320 px image, so ``loss_conf``
starts near 4,900 (families that average over positives start at 2-4); what matters is how fast
it falls (trained on one batch of four images: from 4,905 to 18 in 100 steps).

CIoU (Zheng et al. 2020, "Distance-IoU Loss"), the note's IoU loss::

    CIoU = IoU - rho^2 / c^2 - alpha * v,   v = 4 / pi^2 * (atan(w_gt / h_gt) - atan(w / h))^2,
    alpha = v / ((1 - IoU) + v)   (a weight: no gradient flows through it)

with rho the distance of the two centres and c the diagonal of the smallest enclosing box.
``box_loss="ciou"`` replaces ``loss_xy + loss_wh`` by ``obj * scale * (1 - CIoU)`` on decoded boxes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from detviz._validate import check_boxes
from detviz.boxes import _aligned_args, _enclosing_wh, _inter_union, box_cxcywh_to_xyxy, box_iou
from detviz.yolo.anchors import ANCHOR_MASKS, COCO_ANCHORS, _anchor_tensor
from detviz.yolo.coder import YoloDecoded, _check_raw, check_input_size, decode_level, raw_box_targets

__all__ = ["IGNORE_THRESH", "aligned_complete_box_iou", "ciou_loss", "gt_boxes_from_y_true", "ignore_mask",
           "YoloLevelTerms", "yolo_loss_per_level", "yolo_loss"]

IGNORE_THRESH = 0.5


def aligned_complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """CIoU of ``boxes1[i]`` with ``boxes2[i]``; the diagonal of ``complete_box_iou`` (same eps).

    Args:
        boxes1 (Tensor[N, 4]): xyxy predictions. boxes2 (Tensor[N, 4]): xyxy targets. Both need h > 0.
    Returns:
        Tensor[N]: CIoU in [-1.5, 1] (IoU - rho^2/c^2 >= -1, alpha * v <= 0.5).
    """
    boxes1, boxes2 = _aligned_args(boxes1, boxes2)  # float16 / bfloat16 upcast to float32, as torchvision
    inter, union = _inter_union(boxes1, boxes2)  # [N] each
    iou = inter / union
    enclosing_wh = _enclosing_wh(boxes1, boxes2)  # [N, 2]
    diagonal_sq = enclosing_wh[:, 0] ** 2 + enclosing_wh[:, 1] ** 2 + eps  # c^2
    centre_dist_sq = (((boxes1[:, :2] + boxes1[:, 2:]) - (boxes2[:, :2] + boxes2[:, 2:])) ** 2).sum(dim=1) / 4
    atan1 = torch.atan((boxes1[:, 2] - boxes1[:, 0]) / (boxes1[:, 3] - boxes1[:, 1]))
    atan2 = torch.atan((boxes2[:, 2] - boxes2[:, 0]) / (boxes2[:, 3] - boxes2[:, 1]))
    v = 4 / math.pi**2 * (atan2 - atan1) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - centre_dist_sq / diagonal_sq - alpha * v


def ciou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """``1 - CIoU`` per matched pair (Tensor[N]); equals ``torchvision.ops.complete_box_iou_loss``."""
    return 1 - aligned_complete_box_iou(pred, target, eps)


def gt_boxes_from_y_true(y_true: Sequence[Tensor], input_size: Sequence[int]) -> list[Tensor]:
    """Per image, the xyxy pixel boxes stored in ``y_true`` on any level (a gt written on several
    levels appears several times, which does not change a best IoU)."""
    input_h, input_w = check_input_size(input_size)
    per_image = []
    for b in range(y_true[0].shape[0]):
        boxes = [level[b][level[b][..., 4] > 0][:, :4] for level in y_true]  # [M_l, 4] normalised cxcywh
        scale = torch.tensor([input_w, input_h, input_w, input_h], dtype=y_true[0].dtype, device=y_true[0].device)
        per_image.append(box_cxcywh_to_xyxy(torch.cat(boxes) * scale))
    return per_image


def ignore_mask(pred_boxes: Tensor, gt_boxes: Sequence[Tensor], ignore_thresh: float = IGNORE_THRESH) -> Tensor:
    """1 where a prediction may be trained as background, 0 where it is ignored.

    Args:
        pred_boxes (Tensor[B, H, W, A, 4]): decoded xyxy pixels.
        gt_boxes: per image ``Tensor[M, 4]`` xyxy pixels.
    Returns:
        Tensor[B, H, W, A] float: ``best IoU with the image's gts < ignore_thresh``; all 1 without gts.
    """
    if len(gt_boxes) != pred_boxes.shape[0]:
        raise ValueError(f"gt_boxes must have one entry per image ({pred_boxes.shape[0]}), got {len(gt_boxes)}")
    masks = []
    for pred_per_image, gt_per_image in zip(pred_boxes, gt_boxes):
        check_boxes(gt_per_image, "gt_boxes[b]")
        flat = pred_per_image.reshape(-1, 4)  # [H, W, A, 4] -> [H*W*A, 4]
        if gt_per_image.shape[0] == 0:
            best = flat.new_zeros(flat.shape[0])
        else:
            best = box_iou(flat, gt_per_image).max(dim=1).values  # [H*W*A]
        masks.append((best < ignore_thresh).to(flat.dtype).view(pred_per_image.shape[:-1]))
    return torch.stack(masks)


class YoloLevelTerms(NamedTuple):
    """Unnormalised per-element loss terms and the masks of one level (``[B, H, W, A, ...]``)."""

    loss_xy: Tensor  # [..., 2]
    loss_wh: Tensor  # [..., 2]
    loss_ciou: Tensor  # [...] obj * scale * (1 - CIoU), 0 off the positives
    loss_conf: Tensor  # [...]
    loss_cls: Tensor  # [..., C]
    object_mask: Tensor  # [...] 1 at positives
    ignore_mask: Tensor  # [...] 1 = may be a negative
    box_loss_scale: Tensor  # [...] 2 - w * h at positives
    decoded: YoloDecoded  # the decoded predictions


def yolo_loss_per_level(raw: Tensor, y_true: Tensor, anchors: Tensor, input_size: Sequence[int],
                        gt_boxes: Sequence[Tensor], ignore_thresh: float = IGNORE_THRESH) -> YoloLevelTerms:
    """Every term of one level, before any sum (see the module docstring for the formulas).

    Args:
        raw (Tensor[B, H, W, A, 4 + 1 + C]): network output. y_true: same shape, from ``build_targets``.
        anchors (Tensor[A, 2]): the level's (w, h) anchors, pixels.
        gt_boxes: per image ``Tensor[M, 4]`` xyxy pixels, for the ignore mask.
    """
    _check_raw(raw)
    if raw.shape != y_true.shape:
        raise ValueError(f"y_true must have the shape of raw {list(raw.shape)}, got {list(y_true.shape)}")
    decoded = decode_level(raw, anchors, input_size)
    obj = y_true[..., 4]  # [B, H, W, A]
    scale = (2 - y_true[..., 2] * y_true[..., 3]) * obj
    raw_xy, raw_wh = raw_box_targets(y_true, anchors, input_size)
    loss_xy = (obj * scale)[..., None] * F.binary_cross_entropy_with_logits(raw[..., 0:2], raw_xy, reduction="none")
    loss_wh = (obj * scale)[..., None] * 0.5 * (raw_wh - raw[..., 2:4]) ** 2
    with torch.no_grad():
        keep_negative = ignore_mask(decoded.boxes.detach(), gt_boxes, ignore_thresh)
    bce_obj = F.binary_cross_entropy_with_logits(raw[..., 4], obj, reduction="none")
    loss_conf = obj * bce_obj + (1 - obj) * bce_obj * keep_negative
    loss_cls = obj[..., None] * F.binary_cross_entropy_with_logits(raw[..., 5:], y_true[..., 5:], reduction="none")

    loss_ciou = torch.zeros_like(obj)
    positive = obj > 0
    if bool(positive.any()):
        input_h, input_w = check_input_size(input_size)
        norm = torch.tensor([input_w, input_h, input_w, input_h], dtype=raw.dtype, device=raw.device)
        gt_xyxy = box_cxcywh_to_xyxy(y_true[..., :4][positive] * norm)  # [P, 4]
        pair_loss = ciou_loss(decoded.boxes[positive], gt_xyxy)  # [P]
        loss_ciou = loss_ciou.masked_scatter(positive, scale[positive] * pair_loss)
    return YoloLevelTerms(loss_xy, loss_wh, loss_ciou, loss_conf, loss_cls, obj, keep_negative, scale, decoded)


def yolo_loss(outputs: Sequence[Tensor], y_true: Sequence[Tensor], *, input_size: Sequence[int],
              anchors=COCO_ANCHORS, anchor_masks=ANCHOR_MASKS, ignore_thresh: float = IGNORE_THRESH,
              box_loss: str = "xywh", ignore_from: str = "image") -> dict[str, Tensor]:
    """The YOLOv3 loss of a batch, summed over levels and divided by the batch size.

    Args:
        outputs: per level ``[B, H, W, A, 4 + 1 + C]`` raw network outputs (level 0 = stride 32).
        y_true: per level targets of the same shapes (``build_targets``).
        box_loss: "xywh" (keras-yolo3: BCE on xy + L2 on log wh) or "ciou" (``1 - CIoU``).
        ignore_from: "image": a prediction is ignored when it overlaps any gt of its image (the
            note); "level": only the gts assigned to its own level (keras-yolo3).
    Returns:
        ``{"loss_xy", "loss_wh", "loss_conf", "loss_cls"}``, or ``loss_ciou`` in place of the
        first two with ``box_loss="ciou"``; each a scalar tensor.
    """
    if box_loss not in ("xywh", "ciou"):
        raise ValueError(f"box_loss must be 'xywh' or 'ciou', got {box_loss!r}")
    if ignore_from not in ("image", "level"):
        raise ValueError(f"ignore_from must be 'image' or 'level', got {ignore_from!r}")
    if len(outputs) != len(y_true) or len(outputs) != len(anchor_masks):
        raise ValueError(f"outputs and y_true must hold one tensor per level ({len(anchor_masks)}), "
                         f"got {len(outputs)} and {len(y_true)}")
    batch = outputs[0].shape[0]
    anchors = _anchor_tensor(anchors, outputs[0].dtype, outputs[0].device)
    image_gts = gt_boxes_from_y_true(y_true, input_size) if ignore_from == "image" else None
    names = ("loss_xy", "loss_wh", "loss_conf", "loss_cls") if box_loss == "xywh" else ("loss_ciou", "loss_conf",
                                                                                         "loss_cls")
    totals = {name: outputs[0].new_zeros(()) for name in names}
    for raw, target, mask in zip(outputs, y_true, anchor_masks):
        gts = image_gts if image_gts is not None else gt_boxes_from_y_true([target], input_size)
        terms = yolo_loss_per_level(raw, target, anchors[list(mask)], input_size, gts, ignore_thresh)
        for name in names:
            totals[name] = totals[name] + getattr(terms, name).sum()
    return {name: value / batch for name, value in totals.items()}
