"""A sparse RepPoints head: dense objectness, then points, features and a box at the top-n locations only.

Per level (stride s, feature map H x W, weights shared by all levels); P points per location, K = top-n:

1. ``objectness = sigmoid(conv1x1(relu(conv3x3(feat))))``, [B, 1, H, W].
2. ``topn_idx``: the K locations of highest objectness, as row-major indices ``y * W + x`` in
   ``[0, H*W - 1]``, [B, K]. K = ``topn``, or H*W on a level with fewer locations.
3. P = 9 points around each selected location centre ``c = ((x + 0.5) s, (y + 0.5) s)``:
   ``p_j = c + (g_j + d_j) * s``, with ``g_j`` the 3 x 3 grid {-1, 0, 1}^2 and ``d_j`` offsets from a
   conv branch (x first; mmdetection's RepPoints stores y first). Its last layer starts at zero,
   so the initial points are the taps of a 3 x 3 convolution dilated by s, as the base grid of a
   deformable convolution.
4. The features at the points (bilinear, ``grid_sample``), [B, K, P, in_channels], flattened into
   a two-layer MLP.
5. Box: the points' bounding box (RepPoints' "minmax" conversion) moved and scaled by the MLP's
   R-CNN deltas (dx, dy, dw, dh) (``BoxCoder`` with weights 1); the delta layer starts at zero, so
   the initial box is the points' box, 2s x 2s. Class logits come from the same MLP.

Training (:meth:`SparseRepPointsHead.loss`): BCE between the objectness and FCOS centerness
targets, averaged over all locations of all levels; the top-n predictions of each image are
matched one-to-one to its gts (``sparse_targets``: Hungarian matching, class + L1 + GIoU costs);
focal loss over the classes of all top-n predictions and GIoU loss over the matched boxes, both
divided by the number of matched predictions in the batch. The box loss adds the matching cost's
normalised L1 term (weight 2.5, ``bbox_l1_weight=0`` removes it). With GIoU alone, a gt that its
matched prediction does not overlap teaches every box to grow: growing until it encloses the gt
is the only way a non-overlapping box improves its GIoU. That is the usual case for a gt smaller
than a stride, which has little or no objectness target and so no top-n location on it (after 60
Adam steps on notebook 10's batch the median box width is thousands of pixels with GIoU alone and
tens with the L1 term).

Why one-to-one matching rather than max-IoU (0.5 / 0.4): (a) at initialisation the top-n boxes
are 2s squares at near-random places, so hardly any reaches IoU 0.5 with a gt: max-IoU leaves the
box and class losses without positives until the objectness alone has found the objects, while
matching gives every gt a prediction from the first step; (b) the same object is often in the
top-n of several neighbouring locations and levels, and one-to-one matching teaches the head to
score only one of them, as the set losses of DETR and Sparse R-CNN do; (c) K = L * topn is small
(50 for topn = 10), so an exact assignment costs nothing.

No iterative refinement stage (re-sampling features inside the predicted box and predicting
again): the note's interface has one ``topn_bbox`` / ``topn_cls`` per level and one box and one
class loss, so later stages would have nowhere to report and no loss of their own; step 5 already
refines the point box once.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detviz.anchors import center_points
from detviz.coders import BoxCoder
from detviz.losses import weight_reduce
from detviz.sparse.targets import (HungarianMatcher, SparseImageTargets, SparseTargets, box_loss, img_shape_of,
                                   objectness_targets, objectness_targets_single, sigmoid_focal_loss, sparse_targets,
                                   sparse_targets_single)

__all__ = ["SparseRepPointsHead", "SparseHeadOutput", "SparseForwardSteps", "base_point_grid", "sample_features",
           "points_to_boxes"]


class SparseHeadOutput(NamedTuple):
    """What ``forward`` returns, one tensor per level (the note's names)."""

    objectness: list[Tensor]  # L x [B, 1, H, W], probabilities
    topn_bbox: list[Tensor]  # L x [B, K, 4] xyxy pixels of the padded input
    topn_cls: list[Tensor]  # L x [B, K, C] logits
    topn_idx: list[Tensor]  # L x [B, K] int64 in [0, H*W - 1], row-major


class SparseForwardSteps(NamedTuple):
    """Every intermediate of the forward pass, one tensor per level."""

    objectness: list[Tensor]  # L x [B, 1, H, W]
    topn_idx: list[Tensor]  # L x [B, K]
    topn_centers: list[Tensor]  # L x [B, K, 2] xy pixels of the selected locations
    topn_points: list[Tensor]  # L x [B, K, P, 2] xy pixels of the sampled points
    point_boxes: list[Tensor]  # L x [B, K, 4] xyxy bounding box of the points
    topn_bbox: list[Tensor]  # L x [B, K, 4] xyxy, the point box after the MLP's deltas
    topn_cls: list[Tensor]  # L x [B, K, C] logits

    def output(self) -> SparseHeadOutput:
        return SparseHeadOutput(self.objectness, self.topn_bbox, self.topn_cls, self.topn_idx)


def base_point_grid(num_points: int) -> Tensor:
    """The square grid of ``num_points = n * n`` offsets in stride units, centred on 0, row-major.

    Returns: Tensor[P, 2] (dx, dy); for 9 points ``(-1, -1), (0, -1), (1, -1), (-1, 0), ..., (1, 1)``.
    """
    side = math.isqrt(num_points) if isinstance(num_points, int) and num_points > 0 else 0
    if side * side != num_points:
        raise ValueError(f"num_points must be a square number (4, 9, 16, ...), got {num_points!r}")
    steps = torch.arange(side, dtype=torch.float32) - (side - 1) / 2  # 3 -> [-1, 0, 1]
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=-1)  # [P, 2]


def sample_features(feat: Tensor, points: Tensor, stride: float) -> Tensor:
    """Bilinear features at pixel positions; zeros outside the map.

    Cell (row i, col j) covers pixels ``[j s, (j + 1) s] x [i s, (i + 1) s]`` and its value sits at the
    cell centre, which is ``grid_sample``'s ``align_corners=False`` convention once pixels are scaled
    to [-1, 1] over the map's extent ``W s x H s``.

    Args:
        feat (Tensor[B, in_channels, H, W]). points (Tensor[B, K, P, 2]): xy pixels. stride: s.
    Returns:
        Tensor[B, K, P, in_channels].
    """
    h, w = feat.shape[-2:]
    extent = points.new_tensor([w * stride, h * stride])
    grid = points / extent * 2 - 1  # [B, K, P, 2] in [-1, 1] inside the map
    sampled = F.grid_sample(feat, grid.to(feat.dtype), mode="bilinear", padding_mode="zeros",
                            align_corners=False)  # [B, in_channels, K, P]
    return sampled.permute(0, 2, 3, 1)  # [B, in_channels, K, P] -> [B, K, P, in_channels]


def points_to_boxes(points: Tensor) -> Tensor:
    """Bounding box of each point set (RepPoints' "minmax"): Tensor[*, P, 2] xy -> Tensor[*, 4] xyxy."""
    return torch.cat([points.min(dim=-2).values, points.max(dim=-2).values], dim=-1)


def _conv_branch(in_channels: int, feat_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, feat_channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(feat_channels, out_channels, 1))


class SparseRepPointsHead(nn.Module):
    """Objectness per location, then RepPoints-style points, sampled features and a box at the top-n.

    Args:
        num_classes: C. in_channels: channels of every input level.
        topn: K, locations kept per image and level.
        strides: pixels per cell of each level; L = len(strides) feature maps are expected.
        feat_channels: channels inside the objectness and point branches (default in_channels).
        hidden_dim: width of the MLP. num_points: P, a square number (9: a 3 x 3 grid).
        matcher: the set matcher (default ``HungarianMatcher()``).
        focal_alpha, focal_gamma: focal loss parameters (RetinaNet's 0.25, 2).
        bbox_l1_weight: weight of the normalised L1 term of the box loss (``box_loss``; 0: GIoU only).
        prior_prob: initial objectness and class probability (bias -4.595 for 0.01).
    """

    def __init__(self, num_classes: int, in_channels: int, topn: int = 10,
                 strides: Sequence[int] = (8, 16, 32, 64, 128), *, feat_channels: int | None = None,
                 hidden_dim: int = 256, num_points: int = 9,
                 matcher: HungarianMatcher | None = None, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 bbox_l1_weight: float = 2.5, prior_prob: float = 0.01):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("topn", topn),
                            ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(strides, (list, tuple)) or not strides or any(
                not isinstance(s, int) or s <= 0 for s in strides):
            raise ValueError(f"strides must be a non-empty sequence of positive ints (pixels per cell), "
                             f"got {strides!r}")
        self.num_classes, self.in_channels, self.topn, self.strides = num_classes, in_channels, topn, tuple(strides)
        self.matcher = HungarianMatcher() if matcher is None else matcher
        self.focal_alpha, self.focal_gamma, self.bbox_l1_weight = focal_alpha, focal_gamma, bbox_l1_weight
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        feat_channels = in_channels if feat_channels is None else feat_channels
        self.register_buffer("base_points", base_point_grid(num_points), persistent=False)  # [P, 2] strides
        self.objectness_branch = _conv_branch(in_channels, feat_channels, 1)
        self.points_branch = _conv_branch(in_channels, feat_channels, 2 * num_points)
        self.mlp = nn.Sequential(nn.Linear(num_points * in_channels, hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True))
        self.reg_out = nn.Linear(hidden_dim, 4)
        self.cls_out = nn.Linear(hidden_dim, num_classes)
        self._init_weights(prior_prob)

    def _init_weights(self, prior_prob: float) -> None:
        for module in (*self.objectness_branch, *self.points_branch):
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        bias = -math.log((1 - prior_prob) / prior_prob)  # -4.595 for 0.01
        nn.init.constant_(self.objectness_branch[-1].bias, bias)
        nn.init.constant_(self.cls_out.bias, bias)
        for last in (self.points_branch[-1], self.reg_out):  # start from the 3x3 grid and the points' box
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    # ------------------------------------------------------------------------ forward
    def forward(self, feats: Sequence[Tensor]) -> SparseHeadOutput:
        """L x [B, in_channels, H_l, W_l] -> SparseHeadOutput ``(objectness, topn_bbox, topn_cls, topn_idx)``."""
        return self.forward_with_steps(feats).output()

    def forward_with_steps(self, feats: Sequence[Tensor]) -> SparseForwardSteps:
        """The forward pass with every intermediate (:class:`SparseForwardSteps`)."""
        self._check_feats(feats)
        levels = [self._forward_level(feat, stride) for feat, stride in zip(feats, self.strides)]
        return SparseForwardSteps(*(list(field) for field in zip(*levels)))  # L x 7 -> 7 x L

    def _forward_level(self, feat: Tensor, stride: int) -> tuple[Tensor, ...]:
        b, _, h, w = feat.shape
        k = min(self.topn, h * w)
        objectness = self.objectness_branch(feat).sigmoid()  # [B, 1, H, W]
        topn_idx = objectness.flatten(1).topk(k, dim=1).indices  # [B, 1, H, W] -> [B, H*W] -> [B, K]
        offsets = self.points_branch(feat).flatten(2)  # [B, 2P, H, W] -> [B, 2P, H*W]
        offsets = offsets.gather(2, topn_idx[:, None, :].expand(-1, offsets.shape[1], -1))  # [B, 2P, K]
        offsets = offsets.permute(0, 2, 1).reshape(b, k, -1, 2)  # [B, 2P, K] -> [B, K, 2P] -> [B, K, P, 2]
        centers = center_points((h, w), stride, dtype=feat.dtype, device=feat.device)[topn_idx]  # [B, K, 2]
        points = centers[:, :, None, :] + (self.base_points.to(feat.dtype) + offsets) * stride  # [B, K, P, 2]
        sampled = sample_features(feat, points, stride)  # [B, K, P, in_channels]
        hidden = self.mlp(sampled.flatten(2))  # [B, K, P, in_channels] -> [B, K, P*in_channels] -> [B, K, D]
        point_boxes = points_to_boxes(points)  # [B, K, 4]
        deltas = self.reg_out(hidden)  # [B, K, 4] (dx, dy, dw, dh)
        boxes = self.box_coder.decode_single(deltas.reshape(-1, 4), point_boxes.reshape(-1, 4))  # [B*K, 4]
        return objectness, topn_idx, centers, points, point_boxes, boxes.reshape(b, k, 4), self.cls_out(hidden)

    def _check_feats(self, feats) -> None:
        if not isinstance(feats, (list, tuple)) or not all(isinstance(f, Tensor) for f in feats):
            raise TypeError(f"feats must be a list of Tensor[B, {self.in_channels}, H, W], one per level, "
                            f"got {type(feats).__name__}")
        if len(feats) != len(self.strides):
            raise ValueError(f"feats must hold one feature map per stride {list(self.strides)} ({len(self.strides)}), "
                             f"got {len(feats)}")
        for i, feat in enumerate(feats):
            if feat.dim() != 4 or feat.shape[1] != self.in_channels or feat.shape[0] != feats[0].shape[0]:
                raise ValueError(f"feats[{i}] must be Tensor[B, {self.in_channels}, H, W] with the B of feats[0] "
                                 f"({feats[0].shape[0]}), got shape {list(feat.shape)}")

    # ------------------------------------------------------------------------ targets
    def _get_objectness_single(self, gt_bboxes: Tensor, img_meta: Mapping, output_strides: Sequence[int],
                               objectness_shape: Sequence[Sequence[int]]) -> list[Tensor]:
        """One image's objectness targets: L x [1, 1, h_l, w_l] (``objectness_targets_single``)."""
        return objectness_targets_single(gt_bboxes, img_meta, output_strides, objectness_shape)

    def _get_objectness(self, gt_bboxes_list: Sequence[Tensor], img_metas: Sequence[Mapping],
                        output_strides: Sequence[int],
                        featmap_sizes: Sequence[Sequence[int]] | None = None) -> list[Tensor]:
        """A batch's objectness targets: L x [B, 1, h_l, w_l]; sizes by ceil division unless given."""
        return objectness_targets(gt_bboxes_list, img_metas, output_strides, featmap_sizes)

    def _get_targets_single(self, cls_pred: Tensor, bbox_pred: Tensor, gt_bboxes: Tensor, gt_labels: Tensor,
                            img_meta: Mapping) -> SparseImageTargets:
        """Match one image's K predictions ([K, C] logits, [K, 4] xyxy) to its gts; see ``sparse_targets_single``."""
        return sparse_targets_single(cls_pred, bbox_pred, gt_bboxes, gt_labels, img_meta, self.matcher,
                                     self.num_classes)

    def get_targets(self, cls_pred: Sequence[Tensor], bbox_pred: Sequence[Tensor], gt_bboxes: Sequence[Tensor],
                    gt_labels: Sequence[Tensor], img_metas: Sequence[Mapping]) -> SparseTargets:
        """Class and box targets of a batch from L x [B, K_l, C] logits and L x [B, K_l, 4] boxes (forward layout)."""
        return sparse_targets(cls_pred, bbox_pred, gt_bboxes, gt_labels, img_metas, self.matcher, self.num_classes)

    # ------------------------------------------------------------------------ loss
    def loss(self, objectness_pred: Sequence[Tensor], bbox_pred: Sequence[Tensor], cls_pred: Sequence[Tensor],
             topn_idx: Sequence[Tensor], gt_bboxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
             img_metas: Sequence[Mapping], gt_bboxes_ignore: None = None) -> dict[str, Tensor]:
        """The three losses of a batch.

        Args:
            objectness_pred: L x [B, 1, H, W] probabilities (forward's ``objectness``).
            bbox_pred: L x [B, 4, K] xyxy pixels: forward's ``topn_bbox`` transposed, ``b.transpose(1, 2)``.
            cls_pred: L x [B, C, K] logits: forward's ``topn_cls`` transposed.
            topn_idx: L x [B, K]; fixes K per level and is checked against ``objectness_pred``
                (the boxes are already in pixels, so the loss needs no location).
            gt_bboxes: B x [M_b, 4] xyxy pixels of the padded input. gt_labels: B x [M_b] in [0, C).
            img_metas: B dicts with ``img_shape`` and ``batch_input_shape`` (or ``pad_shape``).
            gt_bboxes_ignore: must be None (ignore regions are not supported).
        Returns:
            ``{"objectness_loss", "bbox_loss", "cls_loss"}`` scalars.
        """
        if gt_bboxes_ignore is not None:
            raise ValueError(f"gt_bboxes_ignore must be None (this head has no ignore regions), "
                             f"got {type(gt_bboxes_ignore).__name__}")
        self._check_loss_inputs(objectness_pred, bbox_pred, cls_pred, topn_idx, gt_bboxes, gt_labels, img_metas)
        bbox_pred = [b.permute(0, 2, 1) for b in bbox_pred]  # [B, 4, K] -> [B, K, 4]
        cls_pred = [c.permute(0, 2, 1) for c in cls_pred]  # [B, C, K] -> [B, K, C]

        featmap_sizes = [tuple(o.shape[-2:]) for o in objectness_pred]
        obj_targets = self._get_objectness(gt_bboxes, img_metas, self.strides, featmap_sizes)
        obj_pred = torch.cat([o.flatten(1) for o in objectness_pred], dim=1)  # L x [B, 1, H, W] -> [B, sum H*W]
        obj_target = torch.cat([t.flatten(1) for t in obj_targets], dim=1)
        # BCE on probabilities (not logits) needs at least float32, and autocast refuses it.
        dtype = torch.promote_types(obj_pred.dtype, torch.float32)
        with torch.autocast(obj_pred.device.type, enabled=False):
            bce = F.binary_cross_entropy(obj_pred.to(dtype), obj_target.to(dtype), reduction="none")
        objectness_loss = weight_reduce(bce)

        targets = self.get_targets(cls_pred, bbox_pred, gt_bboxes, gt_labels, img_metas)
        num_pos = max(targets.num_pos, 1)
        cls_all = torch.cat(cls_pred, dim=1)  # L x [B, K_l, C] -> [B, K, C]
        one_hot = F.one_hot(targets.labels, self.num_classes + 1)[..., : self.num_classes]  # background column dropped
        one_hot = one_hot.to(cls_all)  # [B, K, C]
        cls_loss = weight_reduce(sigmoid_focal_loss(cls_all, one_hot, self.focal_alpha, self.focal_gamma),
                                 avg_factor=num_pos)
        matched = targets.matched_gt_inds >= 0  # [B, K]
        boxes_all = torch.cat(bbox_pred, dim=1)  # L x [B, K_l, 4] -> [B, K, 4]
        img_wh = boxes_all.new_tensor([[w, h, w, h] for h, w in map(img_shape_of, img_metas)])  # [B, 4]
        img_wh = img_wh[:, None, :].expand_as(boxes_all)[matched]  # [B, 4] -> [B, K, 4] -> [P, 4]
        bbox_loss = weight_reduce(box_loss(boxes_all[matched], targets.bbox_targets[matched], img_wh,
                                           self.bbox_l1_weight), avg_factor=num_pos)
        return {"objectness_loss": objectness_loss, "bbox_loss": bbox_loss, "cls_loss": cls_loss}

    def _check_loss_inputs(self, objectness_pred, bbox_pred, cls_pred, topn_idx, gt_bboxes, gt_labels,
                           img_metas) -> None:
        lists = dict(objectness_pred=objectness_pred, bbox_pred=bbox_pred, cls_pred=cls_pred, topn_idx=topn_idx)
        for name, value in lists.items():
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, Tensor) for v in value):
                raise TypeError(f"{name} must be a list of tensors, one per level, got {type(value).__name__}")
            if len(value) != len(self.strides):
                raise ValueError(f"{name} must have one entry per level ({len(self.strides)}), got {len(value)}")
        for name, value in dict(gt_bboxes=gt_bboxes, gt_labels=gt_labels, img_metas=img_metas).items():
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{name} must be a list with one entry per image, got {type(value).__name__}")
        b = objectness_pred[0].shape[0]
        if not len(gt_bboxes) == len(gt_labels) == len(img_metas) == b:
            raise ValueError(f"gt_bboxes, gt_labels and img_metas must have one entry per image ({b}), got "
                             f"{len(gt_bboxes)}, {len(gt_labels)} and {len(img_metas)}")
        c = self.num_classes
        for level, (obj, boxes, cls, idx) in enumerate(zip(objectness_pred, bbox_pred, cls_pred, topn_idx)):
            if obj.dim() != 4 or obj.shape[:2] != (b, 1):
                raise ValueError(f"objectness_pred[{level}] must be Tensor[B, 1, H, W] = [{b}, 1, H, W], "
                                 f"got shape {list(obj.shape)}")
            num_locations = obj.shape[2] * obj.shape[3]
            if idx.dim() != 2 or idx.shape[0] != b or idx.shape[1] > num_locations or idx.is_floating_point():
                raise ValueError(f"topn_idx[{level}] must be an integer Tensor[B, K] = [{b}, K <= {num_locations}], "
                                 f"got shape {list(idx.shape)} ({idx.dtype})")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_locations):
                raise ValueError(f"topn_idx[{level}] must lie in [0, H*W - 1] = [0, {num_locations - 1}], "
                                 f"got range [{int(idx.min())}, {int(idx.max())}]")
            k = idx.shape[1]
            if tuple(boxes.shape) != (b, 4, k):
                raise ValueError(f"bbox_pred[{level}] must be Tensor[B, 4, K] = [{b}, 4, {k}] (forward's topn_bbox "
                                 f"transposed with .transpose(1, 2)), got shape {list(boxes.shape)}")
            if tuple(cls.shape) != (b, c, k):
                raise ValueError(f"cls_pred[{level}] must be Tensor[B, C, K] = [{b}, {c}, {k}] (forward's topn_cls "
                                 f"transposed with .transpose(1, 2)), got shape {list(cls.shape)}")
