"""YOLOv3 training targets (``y_true``): one anchor and one cell per gt.

For every gt box (keras-yolo3's ``preprocess_true_boxes``, steps spelled out):

1. Shape-only IoU of the gt's (w, h) with all 9 anchors.
2. The best anchor decides the level (``ANCHOR_MASKS``) and the anchor slot ``k`` in it;
   with ``every_scale=True`` each level instead takes the best of its own 3 anchors, so the
   gt is written on all three levels (the note's "9 choose 3" variant).
3. The cell is ``floor(centre / stride)`` (a centre on a cell border goes to the cell on its
   right / below; a centre on the image's right or bottom edge is kept in the last cell).
4. ``y_true[l][b, row, col, k] = [cx/W_in, cy/H_in, w/W_in, h/H_in, 1, one-hot class]``.

Differences from keras-yolo3, on purpose: the centre is not floored to whole pixels
(keras uses ``(x1 + x2) // 2``), and a second gt on the same cell and anchor replaces the
first one entirely (keras would leave two class bits set). Gts of zero width or height are
skipped, as in keras-yolo3.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from detviz._validate import check_boxes, check_labels
from detviz.boxes import box_xyxy_to_cxcywh
from detviz.yolo.anchors import ANCHOR_MASKS, COCO_ANCHORS, LEVEL_STRIDES, _anchor_tensor, wh_iou
from detviz.yolo.coder import check_input_size

__all__ = ["AnchorMatches", "YoloTargets", "featmap_sizes", "build_targets"]


class AnchorMatches(NamedTuple):
    """One row per (gt, level) written into ``y_true``; all ``Tensor[K]`` int64 except ``iou``."""

    image: Tensor  # image index b
    gt: Tensor  # index of the gt in its image's list
    level: Tensor  # 0 = stride 32, 1 = stride 16, 2 = stride 8
    anchor: Tensor  # index into all anchors (0..8)
    slot: Tensor  # k: position of the anchor in its level's mask (0..2)
    row: Tensor
    col: Tensor
    iou: Tensor  # float: shape-only IoU of gt and anchor


class YoloTargets(NamedTuple):
    y_true: list[Tensor]  # per level [B, H, W, A, 4 + 1 + C]
    matches: AnchorMatches


def featmap_sizes(input_size: Sequence[int], strides: Sequence[int] = LEVEL_STRIDES) -> list[tuple[int, int]]:
    """(H, W) of every level; the input must be divisible by every stride."""
    h, w = check_input_size(input_size)
    for s in strides:
        if h % s or w % s:
            raise ValueError(f"input_size must be divisible by every stride {tuple(strides)}, got {(h, w)}")
    return [(h // s, w // s) for s in strides]


def _check_targets(gt_boxes, gt_labels, num_classes: int) -> None:
    if not isinstance(gt_boxes, (list, tuple)) or not isinstance(gt_labels, (list, tuple)):
        raise TypeError("gt_boxes and gt_labels must be lists with one Tensor per image, got "
                        f"{type(gt_boxes).__name__} and {type(gt_labels).__name__}")
    if len(gt_boxes) != len(gt_labels):
        raise ValueError(f"gt_labels must have one entry per image ({len(gt_boxes)}), got {len(gt_labels)}")
    for b, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
        check_boxes(boxes, f"gt_boxes[{b}]")
        check_labels(labels, f"gt_labels[{b}]", boxes.shape[0], num_classes)


def _matches_per_image(boxes_cxcywh: Tensor, anchors: Tensor, anchor_masks, every_scale: bool) -> list[tuple]:
    """(gt, level, anchor, slot, iou) for every gt of one image with w, h > 0."""
    ious = wh_iou(boxes_cxcywh[:, 2:], anchors)  # [M, 9]
    matches = []
    for m in range(boxes_cxcywh.shape[0]):
        if not bool((boxes_cxcywh[m, 2:] > 0).all()):
            continue  # zero-area gt: nothing to learn
        if every_scale:
            for level, mask in enumerate(anchor_masks):
                slot = int(ious[m, list(mask)].argmax())
                matches.append((m, level, mask[slot], slot, float(ious[m, mask[slot]])))
        else:
            anchor = int(ious[m].argmax())
            level = next(l for l, mask in enumerate(anchor_masks) if anchor in mask)
            matches.append((m, level, anchor, list(anchor_masks[level]).index(anchor), float(ious[m, anchor])))
    return matches


def build_targets(gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor], *, input_size: Sequence[int],
                  num_classes: int, anchors=COCO_ANCHORS, anchor_masks=ANCHOR_MASKS,
                  strides: Sequence[int] = LEVEL_STRIDES, every_scale: bool = False) -> YoloTargets:
    """``y_true`` for a batch.

    Args:
        gt_boxes: per image ``Tensor[M, 4]`` xyxy pixels of the network input.
        gt_labels: per image ``Tensor[M]`` int64 in ``[0, C)``.
        input_size: (height, width) of the network input, divisible by every stride.
        anchors: ``[9, 2]`` (w, h) pixels; anchor_masks: anchor indices per level; strides per level.
        every_scale: write every gt on every level (best anchor of each level).
    Returns:
        YoloTargets: ``y_true`` per level ``[B, H, W, A, 4 + 1 + C]`` (dtype and device of the
        boxes) and the matches, in image, gt, level order.
    """
    _check_targets(gt_boxes, gt_labels, num_classes)
    if len(anchor_masks) != len(strides):
        raise ValueError(f"anchor_masks must have one entry per stride ({len(strides)}), got {len(anchor_masks)}")
    input_h, input_w = check_input_size(input_size)
    sizes = featmap_sizes(input_size, strides)
    dtype = gt_boxes[0].dtype if gt_boxes else torch.float32
    device = gt_boxes[0].device if gt_boxes else None
    anchors = _anchor_tensor(anchors, dtype, device)
    num_slots = len(anchor_masks[0])
    y_true = [torch.zeros(len(gt_boxes), h, w, num_slots, 5 + num_classes, dtype=dtype, device=device)
              for h, w in sizes]
    norm = torch.tensor([input_w, input_h, input_w, input_h], dtype=dtype, device=device)
    rows = []
    for b, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
        boxes_cxcywh = box_xyxy_to_cxcywh(boxes)  # [M, 4] pixels
        for m, level, anchor, slot, iou in _matches_per_image(boxes_cxcywh, anchors, anchor_masks, every_scale):
            h, w = sizes[level]
            cx, cy = float(boxes_cxcywh[m, 0]), float(boxes_cxcywh[m, 1])
            col = min(max(int(cx // strides[level]), 0), w - 1)
            row = min(max(int(cy // strides[level]), 0), h - 1)
            target = torch.zeros(5 + num_classes, dtype=dtype, device=device)
            target[:4] = boxes_cxcywh[m] / norm
            target[4] = 1
            target[5 + int(labels[m])] = 1
            y_true[level][b, row, col, slot] = target
            rows.append((b, m, level, anchor, slot, row, col, iou))
    columns = list(zip(*rows)) if rows else [()] * 8
    as_long = [torch.tensor(c, dtype=torch.int64, device=device) for c in columns[:7]]
    matches = AnchorMatches(*as_long, torch.tensor(columns[7], dtype=dtype, device=device))
    return YoloTargets(y_true, matches)
