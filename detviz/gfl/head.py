"""The GFL head of NanoDet-m and its loss (Li et al., "Generalized Focal Loss", NeurIPS 2020).

Per level the head predicts C class scores, trained with Quality Focal Loss against
the IoU of the decoded box (so the score doubles as a localisation quality), and
4 x R = 4 x (reg_max + 1) logits: a discrete distribution over the distance, in
strides, from the cell centre to each box side (left, top, right, bottom). The
distance is the distribution's expectation; Distribution Focal Loss sharpens it
around the target, GIoU loss trains the decoded box.

NanoDet-m's variant: per level its own tower of depthwise-separable convolutions
(3x3 depthwise + BN + LeakyReLU, 1x1 + BN + LeakyReLU) and one 1x1 output conv
whose C + 4R channels are split into scores and distributions (``share_cls_reg``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from detviz.anchors import grid_cells_to_centers
from detviz.boxes import aligned_box_iou, bbox2distance, distance2bbox
from detviz.gfl.targets import GFLTargets
from detviz.losses import distribution_focal_loss, distribution_project, giou_loss, quality_focal_loss, weight_reduce

__all__ = ["GFLHead", "LossSingleSteps", "loss_single", "gfl_loss"]


def _dw_separable(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1, inplace=True),
    )


class GFLHead(nn.Module):
    """NanoDet-m's GFL head: one tower and one output conv per level.

    Args:
        num_classes: C.
        in_channels: channels of each input level (96 for NanoDet-m's PAN).
        feat_channels: channels inside the towers.
        stacked_convs: depthwise-separable blocks per tower.
        num_levels: L, one tower per level.
        reg_max: distances are distributions over 0..reg_max strides (R = reg_max + 1 bins).
        prior_prob: initial foreground probability of the class scores (bias = -4.595 for 0.01).
    """

    def __init__(self, num_classes: int, in_channels: int = 96, *, feat_channels: int = 96,
                 stacked_convs: int = 2, num_levels: int = 3, reg_max: int = 7, prior_prob: float = 0.01):
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.towers = nn.ModuleList(
            nn.Sequential(*[_dw_separable(in_channels if i == 0 else feat_channels, feat_channels)
                            for i in range(stacked_convs)])
            for _ in range(num_levels))
        self.outputs = nn.ModuleList(
            nn.Conv2d(feat_channels, num_classes + 4 * (reg_max + 1), 1) for _ in range(num_levels))
        self._init_weights(prior_prob)

    def _init_weights(self, prior_prob: float) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        cls_bias = -math.log((1 - prior_prob) / prior_prob)  # -4.595 for 0.01
        for out in self.outputs:
            nn.init.constant_(out.bias[: self.num_classes], cls_bias)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """L x [B, in_channels, H_l, W_l] -> (L x [B, C, H_l, W_l] scores (logits),
        L x [B, 4R, H_l, W_l] side distributions (logits))."""
        if len(feats) != len(self.towers):
            raise ValueError(f"feats must hold one feature map per level ({len(self.towers)}), got {len(feats)}")
        cls_scores, bbox_preds = [], []
        for feat, tower, output in zip(feats, self.towers, self.outputs):
            out = output(tower(feat))  # [B, C + 4R, H, W]
            cls_score, bbox_pred = out.split([self.num_classes, 4 * (self.reg_max + 1)], dim=1)
            cls_scores.append(cls_score)
            bbox_preds.append(bbox_pred)
        return cls_scores, bbox_preds


class LossSingleSteps(NamedTuple):
    """Intermediates and results of :func:`loss_single` for one level (P positives)."""

    pos_inds: Tensor  # [P]
    pos_grid_cell_centers: Tensor  # [P, 2] stride units
    weight_targets: Tensor  # [P] max predicted class probability at each positive
    pos_bbox_pred_corners: Tensor  # [P, 4] expected ltrb distances, strides
    pos_decode_bbox_pred: Tensor  # [P, 4] xyxy, stride units
    pos_decode_bbox_targets: Tensor  # [P, 4] xyxy, stride units
    score: Tensor  # [N] QFL target: IoU(pred, gt) at positives, 0 elsewhere
    pred_corners: Tensor  # [4P, R]
    target_corners: Tensor  # [4P] target distances, strides, clamped to [0, reg_max - 0.1]
    loss_qfl: Tensor
    loss_bbox: Tensor  # normalised by the caller (divided by the batch's weight sum)
    loss_dfl: Tensor  # idem
    weight_sum: Tensor  # weight_targets.sum()


def loss_single(grid_cells: Tensor, cls_score: Tensor, bbox_pred: Tensor, labels: Tensor,
                label_weights: Tensor, bbox_targets: Tensor, stride: int, num_total_samples: float,
                *, reg_max: int = 7, loss_weights: tuple[float, float, float] = (1.0, 2.0, 0.25)) -> LossSingleSteps:
    """GFL loss of one level, NanoDet's ``loss_single`` step by step.

    Args:
        grid_cells: [B, N_l, 4] (or [N_l, 4]) xyxy pixels.
        cls_score: [B, C, H, W] logits; bbox_pred: [B, 4R, H, W] logits.
        labels, label_weights: [B, N_l]; bbox_targets: [B, N_l, 4] xyxy pixels.
        stride: pixels per cell of this level.
        num_total_samples: QFL normaliser, max(number of positives in the batch, 1).
        loss_weights: (QFL, GIoU, DFL) weights, NanoDet-m's (1.0, 2.0, 0.25).

    Returns:
        :class:`LossSingleSteps`; ``loss_bbox`` and ``loss_dfl`` still have to be divided
        by the sum of ``weight_sum`` over levels (:func:`gfl_loss` does it).
    """
    num_classes = cls_score.shape[1]
    if bbox_pred.dim() != 4 or bbox_pred.shape[1] != 4 * (reg_max + 1):
        raise ValueError(f"bbox_pred must be Tensor[B, 4 * (reg_max + 1), H, W] = [B, {4 * (reg_max + 1)}, H, W] "
                         f"for reg_max={reg_max}, got shape {list(bbox_pred.shape)}")
    grid_cells = grid_cells.reshape(-1, 4)  # [B, N_l, 4] -> [B*N_l, 4]
    cls_score = cls_score.permute(0, 2, 3, 1).reshape(-1, num_classes)  # [B, C, H, W] -> [B*H*W, C]
    bbox_pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, 4 * (reg_max + 1))  # [B, 4R, H, W] -> [B*H*W, 4R]
    bbox_targets = bbox_targets.reshape(-1, 4)  # [B, N_l, 4] -> [B*N_l, 4]
    labels = labels.reshape(-1)  # [B, N_l] -> [B*N_l]
    label_weights = label_weights.reshape(-1)  # [B, N_l] -> [B*N_l]
    if not grid_cells.shape[0] == cls_score.shape[0] == bbox_pred.shape[0] == labels.shape[0]:
        raise ValueError(f"the level's outputs and targets must cover the same cells: grid_cells "
                         f"{grid_cells.shape[0]}, cls_score {cls_score.shape[0]}, bbox_pred {bbox_pred.shape[0]}, "
                         f"labels {labels.shape[0]}")

    pos_inds = torch.nonzero((labels >= 0) & (labels < num_classes)).squeeze(1)
    score = label_weights.new_zeros(labels.shape)
    pos_centers = grid_cells_to_centers(grid_cells[pos_inds]) / stride  # [P, 2]
    pos_targets = bbox_targets[pos_inds] / stride  # [P, 4]
    pos_bbox_pred = bbox_pred[pos_inds]  # [P, 4R]
    weight_targets = cls_score.detach().sigmoid().max(dim=1).values[pos_inds]  # [P]
    pos_corners = distribution_project(pos_bbox_pred, reg_max)  # [P, 4]
    pos_decoded = distance2bbox(pos_centers, pos_corners)  # [P, 4]
    if pos_inds.numel() > 0:
        score[pos_inds] = aligned_box_iou(pos_decoded.detach(), pos_targets)
    pred_corners = pos_bbox_pred.reshape(-1, reg_max + 1)  # [P, 4R] -> [4P, R]
    target_corners = bbox2distance(pos_centers, pos_targets, max_dis=reg_max).reshape(-1)  # [4P]

    w_qfl, w_bbox, w_dfl = loss_weights
    if pos_inds.numel() > 0:
        loss_bbox = w_bbox * weight_reduce(giou_loss(pos_decoded, pos_targets), weight_targets, avg_factor=1.0)
        dfl_weight = weight_targets[:, None].expand(-1, 4).reshape(-1)  # one weight per side
        loss_dfl = w_dfl * weight_reduce(distribution_focal_loss(pred_corners, target_corners), dfl_weight,
                                         avg_factor=4.0)
    else:  # keep the graph connected so the backward pass still reaches bbox_pred
        loss_bbox = bbox_pred.sum() * 0
        loss_dfl = bbox_pred.sum() * 0
    loss_qfl = w_qfl * weight_reduce(quality_focal_loss(cls_score, labels, score), label_weights,
                                     avg_factor=num_total_samples)
    return LossSingleSteps(pos_inds, pos_centers, weight_targets, pos_corners, pos_decoded, pos_targets, score,
                           pred_corners, target_corners, loss_qfl, loss_bbox, loss_dfl, weight_targets.sum())


def gfl_loss(cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], targets: GFLTargets,
             strides: Sequence[int], *, reg_max: int = 7,
             loss_weights: tuple[float, float, float] = (1.0, 2.0, 0.25)) -> dict[str, Tensor]:
    """GFL losses of a batch, summed over levels.

    QFL is divided by the number of positives (at least 1 per image); GIoU and DFL
    are weighted by each positive's predicted score and divided by the sum of those
    weights. When that sum is 0 (no positive in the whole batch) NanoDet returns 0
    for all three losses, QFL included, and so does this function; mmdetection v2
    instead clamps the divisor to 1 and keeps a non-zero QFL.

    Returns:
        ``{"loss_qfl": ..., "loss_bbox": ..., "loss_dfl": ...}`` scalars.
    """
    if not len(cls_scores) == len(bbox_preds) == len(strides) == len(targets.labels):
        raise ValueError(f"cls_scores, bbox_preds, strides and the targets must have one entry per level, got "
                         f"{len(cls_scores)}, {len(bbox_preds)}, {len(strides)} and {len(targets.labels)}")
    num_total_samples = max(float(targets.num_total_pos), 1.0)
    per_level = [
        loss_single(cells, cls, reg, labels, label_weights, bbox_targets, stride, num_total_samples,
                    reg_max=reg_max, loss_weights=loss_weights)
        for cells, cls, reg, labels, label_weights, bbox_targets, stride in zip(
            targets.grid_cells, cls_scores, bbox_preds, targets.labels, targets.label_weights,
            targets.bbox_targets, strides)
    ]
    avg_factor = sum(float(s.weight_sum) for s in per_level)
    if avg_factor <= 0:
        zero = sum(s.loss_qfl + s.loss_bbox + s.loss_dfl for s in per_level) * 0  # reaches every output
        return {"loss_qfl": zero, "loss_bbox": zero.clone(), "loss_dfl": zero.clone()}
    return {
        "loss_qfl": sum(s.loss_qfl for s in per_level),
        "loss_bbox": sum(s.loss_bbox for s in per_level) / avg_factor,
        "loss_dfl": sum(s.loss_dfl for s in per_level) / avg_factor,
    }
