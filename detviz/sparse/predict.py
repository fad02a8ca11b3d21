"""Inference of the sparse detector: top-n predictions -> boxes, labels, scores, without NMS by default."""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from detviz.boxes import batched_nms, clip_boxes_to_image
from detviz.sparse.model import SparseDetector, _is_int

__all__ = ["sparse_predict"]


def _predict_per_image(boxes: Tensor, cls_logits: Tensor, image_size: tuple[int, int], score_thresh: float,
                       max_per_img: int, nms_thresh: float | None) -> dict[str, Tensor]:
    """One image: boxes [K, 4], logits [K, C] -> at most max_per_img (prediction, class) detections."""
    scores = cls_logits.sigmoid()  # [K, C]
    boxes = clip_boxes_to_image(boxes, image_size)  # [K, 4]
    pred_idx, labels = torch.nonzero(scores > score_thresh, as_tuple=True)  # [P] each
    cand_boxes, cand_scores = boxes[pred_idx], scores[pred_idx, labels]  # [P, 4], [P]
    if nms_thresh is None:
        keep = torch.argsort(cand_scores, descending=True, stable=True)
    else:
        keep = batched_nms(cand_boxes, cand_scores, labels, nms_thresh)  # sorted by score
    keep = keep[:max_per_img]
    return {"boxes": cand_boxes[keep], "labels": labels[keep], "scores": cand_scores[keep]}


@torch.no_grad()
def sparse_predict(model: SparseDetector, images: Tensor, *, score_thresh: float = 0.05, max_per_img: int = 100,
                   nms_thresh: float | None = None) -> list[dict[str, Tensor]]:
    """Detections of a :class:`SparseDetector`.

    1. Run the model; per image, concatenate the levels' top-n predictions: boxes [K, 4], logits [K, C].
    2. The score of (prediction k, class c) is ``sigmoid(logit[k, c])``, the class probability alone.
       The objectness is not multiplied in: it is trained (BCE on FCOS centerness over all
       locations) only to choose which locations enter the top-n, while the focal loss is over the
       top-n predictions with one-to-one matching, the matched one of each gt its positive and every
       other one a negative. So the class probability is already the detection score the head was
       trained to give; the objectness is lower for a matched location off an object's centre and
       about zero for the one matched to a gt smaller than a stride, and multiplying by it would
       demote exactly those detections.
    3. Boxes are clamped to the input image.
    4. Every (prediction, class) pair with a score above ``score_thresh`` is a candidate; the best
       ``max_per_img`` are kept. One-to-one matching teaches one prediction per object, so there is
       no NMS by default (as DETR and Sparse R-CNN); a float ``nms_thresh`` applies per-class NMS
       (:func:`detviz.boxes.batched_nms`) before the cut.

    The model is run as it is: call ``model.eval()`` first so BatchNorm uses its running statistics.

    Args:
        model: a :class:`SparseDetector`, or any module whose ``forward`` gives a :class:`SparseHeadOutput`.
        images: Tensor[B, 3, H, W], the network input (already normalised,
            :func:`detviz.gfl.model.normalize_images`), H and W multiples of the largest stride.
        score_thresh: smallest class score kept, in [0, 1).
        max_per_img: most detections per image, >= 1.
        nms_thresh: None (no NMS) or the IoU in [0, 1] above which a lower-scoring box of the same
            class is suppressed.

    Returns:
        One ``dict(boxes=Tensor[D, 4] float xyxy pixels of the input, clamped to it,
        labels=Tensor[D] int64 in [0, C), scores=Tensor[D] float in (score_thresh, 1])`` per image, by
        decreasing score, D <= max_per_img (D = 0 gives [0, 4], [0], [0] tensors). One prediction
        may appear with several classes.
    """
    if isinstance(score_thresh, bool) or not isinstance(score_thresh, numbers.Real) or not 0.0 <= score_thresh < 1.0:
        raise ValueError(f"score_thresh must be in [0, 1), got {score_thresh!r}")
    if not _is_int(max_per_img) or max_per_img < 1:
        raise ValueError(f"max_per_img must be an int >= 1, got {max_per_img!r}")
    if nms_thresh is not None and (isinstance(nms_thresh, bool) or not isinstance(nms_thresh, numbers.Real)
                                   or not 0.0 <= nms_thresh <= 1.0):
        raise ValueError(f"nms_thresh must be None (no NMS) or an IoU in [0, 1], got {nms_thresh!r}")
    output = model(images)
    image_size = (int(images.shape[-2]), int(images.shape[-1]))
    boxes_all = torch.cat(list(output.topn_bbox), dim=1)  # L x [B, K_l, 4] -> [B, K, 4]
    logits_all = torch.cat(list(output.topn_cls), dim=1)  # L x [B, K_l, C] -> [B, K, C]
    return [_predict_per_image(boxes, logits, image_size, score_thresh, max_per_img, nms_thresh)
            for boxes, logits in zip(boxes_all, logits_all)]
