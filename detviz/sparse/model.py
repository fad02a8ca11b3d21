"""A trainable sparse detector: ShuffleNetV2 stages + NanoDet's PAN + the sparse RepPoints head.

The backbone and neck are NanoDet-m's (:mod:`detviz.gfl.model`): at 320 x 320 the PAN gives
[B, 96, 40, 40], [B, 96, 20, 20], [B, 96, 10, 10] (strides 8, 16, 32). The head
(:class:`detviz.sparse.head.SparseRepPointsHead`) keeps the ``topn`` locations of highest
objectness per level and predicts one box and C class logits at each, K = sum over levels of
``min(topn, H_l * W_l)`` predictions per image (90 at 320 x 320 with topn = 30). Training matches
them one-to-one to the gts (Hungarian matching), so :func:`detviz.sparse.predict.sparse_predict` needs no NMS.
Everything trains from scratch.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detviz.gfl.model import PAN, ShuffleNetV2Stages
from detviz.sparse.head import SparseHeadOutput, SparseRepPointsHead

__all__ = ["SparseDetectorConfig", "SparseDetector", "build_sparse_detector"]

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
            images (Tensor[B, 3, H, W]): float, normalised (``detviz.gfl.model.normalize_images``);
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
