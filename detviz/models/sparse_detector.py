"""A trainable sparse detector: ShuffleNetV2 stages + NanoDet's PAN + the sparse RepPoints head.

The backbone and neck are NanoDet-m's (:mod:`detviz.models.nanodet`): at 320 x 320 the PAN gives
[B, 96, 40, 40], [B, 96, 20, 20], [B, 96, 10, 10] (strides 8, 16, 32). The head
(:class:`detviz.heads.sparse.SparseRepPointsHead`) keeps the ``topn`` locations of highest
objectness per level and predicts one box and C class logits at each, K = sum over levels of
``min(topn, H_l * W_l)`` predictions per image (90 at 320 x 320 with topn = 30). Training matches
them one-to-one to the gts (Hungarian matching), so :func:`sparse_predict` needs no NMS.
Everything trains from scratch.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detviz.boxes import batched_nms, clip_boxes_to_image
from detviz.heads.sparse import SparseHeadOutput, SparseRepPointsHead
from detviz.models.nanodet import PAN, ShuffleNetV2Stages

__all__ = ["SparseDetectorConfig", "SparseDetector", "build_sparse_detector", "sparse_predict"]

BACKBONE_STRIDES = (8, 16, 32)  # ShuffleNetV2 stages 2-4


@dataclass
class SparseDetectorConfig:
    """Settings of the sparse detector; backbone and neck as NanoDet-m."""

    num_classes: int = 80
    input_size: int = 320  # training resolution (square), a multiple of the largest stride
    strides: tuple[int, ...] = BACKBONE_STRIDES  # fixed by the backbone
    fpn_channels: int = 96
    topn: int = 30  # locations kept per level and image
    hidden_dim: int = 256  # width of the head's MLP


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class SparseDetector(nn.Module):
    """Backbone -> PAN -> sparse RepPoints head, with the head's three losses.

    Args:
        cfg: the config (read for ``strides``). backbone: images -> L feature maps.
        neck: L feature maps -> L maps of ``head.in_channels``. head: the sparse head.
    """

    def __init__(self, cfg: SparseDetectorConfig, backbone: nn.Module, neck: nn.Module, head: SparseRepPointsHead):
        super().__init__()
        self.cfg = cfg
        self.backbone, self.neck, self.head = backbone, neck, head

    def forward(self, images: Tensor) -> SparseHeadOutput:
        """Args:
            images (Tensor[B, 3, H, W]): float, normalised (``detviz.predict.normalize_images``);
                H and W multiples of the largest stride (no padding happens here).
        Returns:
            :class:`SparseHeadOutput`: per level ``objectness`` [B, 1, H_l, W_l] probabilities,
            ``topn_bbox`` [B, K_l, 4] xyxy input pixels, ``topn_cls`` [B, K_l, C] logits,
            ``topn_idx`` [B, K_l] int64 row-major locations; K_l = min(topn, H_l * W_l).
        """
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be Tensor[B, 3, H, W], got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"images must be a float Tensor[B, 3, H, W] (normalised), got {images.dtype}")
        largest = max(self.cfg.strides)
        h, w = images.shape[-2:]
        if h == 0 or w == 0 or h % largest or w % largest or images.shape[0] == 0:
            raise ValueError(f"images must be Tensor[B >= 1, 3, H, W] with H and W positive multiples of {largest}, "
                             f"got {list(images.shape)}")
        return self.head(self.neck(self.backbone(images)))

    def loss(self, output: SparseHeadOutput, gt_bboxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
             input_size: tuple[int, int]) -> dict[str, Tensor]:
        """The head's losses for a batch of unpadded images.

        Args:
            output: what ``forward`` returned for the batch.
            gt_bboxes: B x Tensor[M_b, 4] float xyxy pixels of the network input (M_b may be 0).
            gt_labels: B x Tensor[M_b] int64 in [0, C).
            input_size: (height, width) of the images given to ``forward``; every image fills it
                (``img_shape = batch_input_shape = input_size``), so no location counts as padding.
        Returns:
            ``{"objectness_loss", "bbox_loss", "cls_loss"}``, scalars; the training loop sums them.
        """
        if not isinstance(output, SparseHeadOutput):
            raise ValueError(f"output must be the SparseHeadOutput that forward returned, got {type(output).__name__}")
        height, width = self._check_input_size(output, input_size)
        num_images = output.objectness[0].shape[0]
        img_metas = [{"img_shape": (height, width), "batch_input_shape": (height, width)}
                     for _ in range(num_images)]
        bbox_pred = [b.transpose(1, 2) for b in output.topn_bbox]  # L x [B, K_l, 4] -> L x [B, 4, K_l]
        cls_pred = [c.transpose(1, 2) for c in output.topn_cls]  # L x [B, K_l, C] -> L x [B, C, K_l]
        return self.head.loss(output.objectness, bbox_pred, cls_pred, output.topn_idx, gt_bboxes, gt_labels,
                              img_metas)

    def _check_input_size(self, output: SparseHeadOutput, input_size) -> tuple[int, int]:
        if (not isinstance(input_size, (tuple, list, torch.Size)) or len(input_size) != 2
                or not all(_is_int(v) and v > 0 for v in input_size)):
            raise ValueError(f"input_size must be (height, width), two positive ints, got {input_size!r}")
        # forward takes multiples of the largest stride, so level l is exactly (H / s_l, W / s_l)
        sizes = [tuple(o.shape[-2:]) for o in output.objectness]
        expected = [(int(input_size[0]) // s, int(input_size[1]) // s) for s in self.cfg.strides]
        first_h, first_w = sizes[0] if sizes else (0, 0)
        actual = (first_h * self.cfg.strides[0], first_w * self.cfg.strides[0])
        if sizes != expected or tuple(input_size) != actual:
            raise ValueError(f"input_size must be the (height, width) of the images given to forward, "
                             f"{actual} for objectness maps {sizes}; got {tuple(input_size)}")
        return int(input_size[0]), int(input_size[1])


def build_sparse_detector(cfg: SparseDetectorConfig | None = None) -> SparseDetector:
    """The sparse detector from its config (randomly initialised; seed torch first for repeatability)."""
    cfg = cfg if cfg is not None else SparseDetectorConfig()
    if tuple(cfg.strides) != BACKBONE_STRIDES:
        raise ValueError(f"strides must be {BACKBONE_STRIDES}, the strides of the ShuffleNetV2 stages, "
                         f"got {cfg.strides!r}")
    largest = max(BACKBONE_STRIDES)
    if not _is_int(cfg.input_size) or cfg.input_size <= 0 or cfg.input_size % largest:
        raise ValueError(f"input_size must be a positive multiple of {largest}, got {cfg.input_size!r}")
    backbone = ShuffleNetV2Stages()
    neck = PAN(backbone.out_channels, cfg.fpn_channels)
    head = SparseRepPointsHead(cfg.num_classes, cfg.fpn_channels, topn=cfg.topn, strides=tuple(cfg.strides),
                               hidden_dim=cfg.hidden_dim)
    return SparseDetector(cfg, backbone, neck, head)


# ---------------------------------------------------------------------------- inference
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
            :func:`detviz.predict.normalize_images`), H and W multiples of the largest stride.
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
