"""Inference for YOLOv3: raw per-level outputs -> boxes, labels, scores.

:func:`yolo_predict` follows keras-yolo3's ``yolo_eval``, with mmdetection's candidate
selection in place of keras-yolo3's per-class ``max_boxes``:

1. per level, :func:`detviz.yolo.coder.decode_level` with the level's anchors
   (``anchors[anchor_masks[l]]``) gives xyxy boxes, the objectness and the class
   probabilities; the score of a (prior, class) pair is ``objectness * class probability``
   (keras-yolo3's ``box_scores``);
2. boxes are clipped to the input image, and the levels' priors are concatenated
   (level 0 first, ``[H0*W0*A + H1*W1*A + ...]``, row-major cells, anchors innermost);
3. the ``nms_pre`` priors of highest best-class score are kept, ranked over *all levels
   together* (GFL's :func:`detviz.gfl.predict.gfl_predict` ranks per level instead; YOLOv3's
   objectness already makes the levels' scores comparable);
4. every (prior, class) pair scoring above ``score_thresh`` is a candidate, candidates go
   through per-class NMS (:func:`detviz.boxes.batched_nms`), and the best ``max_per_img``
   survive (mmdetection's ``multiclass_nms``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detviz._validate import check_tensor
from detviz.boxes import batched_nms, clip_boxes_to_image
from detviz.yolo.anchors import ANCHOR_MASKS, COCO_ANCHORS, _anchor_tensor
from detviz.yolo.coder import check_input_size, decode_level

__all__ = ["YOLO_NMS_PRE", "yolo_predict", "decode_yolo_outputs"]

YOLO_NMS_PRE = 1000  # priors kept per image (over all levels) before NMS


def _check_outputs(outputs, anchor_masks) -> None:
    if not isinstance(outputs, (list, tuple)) or len(outputs) != len(anchor_masks):
        got = f"{len(outputs)} levels" if isinstance(outputs, (list, tuple)) else type(outputs).__name__
        raise ValueError(f"outputs must be a list with one Tensor[B, H, W, A, 4 + 1 + C] per level "
                         f"({len(anchor_masks)}, one per anchor mask), got {got}")
    for level, raw in enumerate(outputs):
        name = f"outputs[{level}]"
        check_tensor(raw, name, ndim=5, floating=True, layout="[B, H, W, A, 4 + 1 + C]")
        if raw.shape[-1] < 6:
            raise ValueError(f"{name} must be Tensor[B, H, W, A, 4 + 1 + C] with C >= 1 (last dim >= 6), "
                             f"got shape {list(raw.shape)}")
        if raw.shape[-1] != outputs[0].shape[-1]:
            raise ValueError(f"{name} must have the last dim of outputs[0] ({outputs[0].shape[-1]} = 4 + 1 + C), "
                             f"got shape {list(raw.shape)}")
        if raw.shape[0] != outputs[0].shape[0]:
            raise ValueError(f"every level must have the batch size of outputs[0] ({outputs[0].shape[0]}), "
                             f"got {raw.shape[0]} in {name}")


def decode_yolo_outputs(outputs: Sequence[Tensor], *, input_size: Sequence[int], anchors=COCO_ANCHORS,
                        anchor_masks=ANCHOR_MASKS) -> tuple[Tensor, Tensor]:
    """Clipped boxes and (prior, class) scores of every prior of every level (steps 1-2).

    Args:
        outputs: per level raw ``Tensor[B, H, W, A, 4 + 1 + C]`` (level 0 = stride 32).
        input_size: (height, width) of the network input in pixels; boxes are clipped to it.
        anchors: ``[N_anchors, 2]`` (w, h) pixels; ``anchor_masks[l]`` picks level l's.
    Returns:
        boxes: Tensor[B, N, 4] xyxy pixels of the input, inside the image;
        scores: Tensor[B, N, C] in [0, 1], ``objectness * class probability``;
        N = sum over levels of H * W * A, level 0 first.
    """
    _check_outputs(outputs, anchor_masks)
    input_size = check_input_size(input_size)
    anchors = _anchor_tensor(anchors, outputs[0].dtype, outputs[0].device)
    boxes_per_level, scores_per_level = [], []
    for raw, mask in zip(outputs, anchor_masks):
        decoded = decode_level(raw, anchors[list(mask)], input_size)
        batch, num_classes = raw.shape[0], raw.shape[-1] - 5
        scores = decoded.objectness[..., None] * decoded.class_probs  # [B, H, W, A, C]
        boxes_per_level.append(decoded.boxes.reshape(batch, -1, 4))  # [B, H, W, A, 4] -> [B, H*W*A, 4]
        scores_per_level.append(scores.reshape(batch, -1, num_classes))  # [B, H, W, A, C] -> [B, H*W*A, C]
    boxes = torch.cat(boxes_per_level, dim=1)  # [B, N, 4]
    return clip_boxes_to_image(boxes, input_size), torch.cat(scores_per_level, dim=1)


def _predict_per_image(scores: Tensor, boxes: Tensor, score_thresh: float, nms_thresh: float,
                       max_per_img: int, nms_pre: int) -> dict[str, Tensor]:
    """Steps 3-4 on one image: scores [N, C], boxes [N, 4] -> at most max_per_img detections."""
    if scores.shape[0] > nms_pre:
        top = scores.max(dim=1).values.topk(nms_pre).indices  # [nms_pre]
        scores, boxes = scores[top], boxes[top]
    prior_idx, labels = torch.nonzero(scores > score_thresh, as_tuple=True)  # [P] each
    cand_boxes, cand_scores = boxes[prior_idx], scores[prior_idx, labels]  # [P, 4], [P]
    keep = batched_nms(cand_boxes, cand_scores, labels, nms_thresh)[:max_per_img]  # sorted by score
    return {"boxes": cand_boxes[keep], "labels": labels[keep], "scores": cand_scores[keep]}


@torch.no_grad()
def yolo_predict(outputs: Sequence[Tensor], *, input_size: Sequence[int], anchors=COCO_ANCHORS,
                 anchor_masks=ANCHOR_MASKS, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 max_per_img: int = 100, nms_pre: int = YOLO_NMS_PRE) -> list[dict[str, Tensor]]:
    """Detections from YOLOv3's raw outputs (keras-yolo3's ``yolo_eval`` + ``multiclass_nms``).

    Run the model in ``eval()`` mode first so BatchNorm uses its running statistics.

    Args:
        outputs: per level raw ``Tensor[B, H, W, A, 4 + 1 + C]`` (tx, ty, tw, th, objectness
            logit, class logits), level 0 = stride 32, as :class:`detviz.yolo.model.YOLOv3` gives.
        input_size: (height, width) of the network input in pixels.
        anchors: ``[N_anchors, 2]`` (w, h) pixels of the input; ``anchor_masks[l]`` picks level l's.
        score_thresh: in [0, 1); a (prior, class) pair is kept when its score is above it.
        nms_thresh: IoU above which a lower-scoring box of the same class is suppressed.
        max_per_img: most detections per image (>= 1).
        nms_pre: priors kept per image before NMS, ranked by best class score over all levels (>= 1).

    Returns:
        One ``dict(boxes=Tensor[K, 4] float xyxy pixels of the input (clipped to it),
        labels=Tensor[K] int64 in [0, C), scores=Tensor[K] float in (score_thresh, 1])`` per
        image, by decreasing score, K <= max_per_img (K = 0 gives [0, 4], [0], [0] tensors).
    """
    if not 0.0 <= score_thresh < 1.0:
        raise ValueError(f"score_thresh must be in [0, 1), got {score_thresh!r}")
    if max_per_img < 1:
        raise ValueError(f"max_per_img must be >= 1, got {max_per_img!r}")
    if nms_pre < 1:
        raise ValueError(f"nms_pre must be >= 1, got {nms_pre!r}")
    boxes, scores = decode_yolo_outputs(outputs, input_size=input_size, anchors=anchors, anchor_masks=anchor_masks)
    return [_predict_per_image(scores_per_image, boxes_per_image, score_thresh, nms_thresh, max_per_img, nms_pre)
            for scores_per_image, boxes_per_image in zip(scores, boxes)]
