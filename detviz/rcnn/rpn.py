"""The Region Proposal Network of Faster R-CNN (Ren et al., NeurIPS 2015), torchvision's way.

Same constructor arguments, ``state_dict`` keys and numbers as
``torchvision.models.detection.rpn``; written so each step can be called and
inspected on its own:

1. ``RPNHead``: a 3x3 conv + ReLU, then per anchor one objectness logit and 4 box deltas.
2. ``concat_box_prediction_layers``: [B, A*C, H, W] per level -> [B * sum(H*W*A), C],
   rows ordered (image, level, y, x, anchor) like the anchors.
3. decode the deltas on the anchors (BoxCoder weights 1, 1, 1, 1) -> proposals.
4. ``filter_proposals``: per image and level the top ``pre_nms_top_n`` by objectness,
   sigmoid, clip to the image, drop boxes under 1e-3 px, drop scores < ``score_thresh``,
   NMS (``nms_thresh``) within each level, keep the best ``post_nms_top_n``.
5. training only: match anchors to gts (IoU >= 0.7 positive, < 0.3 negative, in between
   ignored, plus each gt's best anchors), sample 256 anchors per image with at most half
   positive, BCE on the sampled objectness and smooth-L1 (beta 1/9) on the positives'
   deltas, both divided by the number of sampled anchors.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detviz._validate import check_detection_targets
from detviz.anchors import AnchorGenerator
from detviz.assigners import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from detviz.boxes import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes
from detviz.coders import BoxCoder
from detviz.samplers import BalancedPositiveNegativeSampler
from detviz.trace import record

__all__ = ["RPNHead", "RegionProposalNetwork", "ProposalSteps", "permute_and_flatten",
           "concat_box_prediction_layers", "filter_proposals_single"]


class RPNHead(nn.Module):
    """Objectness logits and box deltas for A anchors per location, shared by all levels.

    Args:
        in_channels: channels of every feature map.
        num_anchors: A, anchors per location.
        conv_depth: 3x3 conv + ReLU blocks before the two 1x1 predictors.
    """

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1):
        super().__init__()
        self.conv = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True))
            for _ in range(conv_depth)])
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """L x [B, C, H, W] -> (L x [B, A, H, W] objectness, L x [B, A*4, H, W] deltas)."""
        objectness, deltas = [], []
        for feature in features:
            t = self.conv(feature)
            objectness.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return objectness, deltas


def permute_and_flatten(layer: Tensor, N: int, A: int, C: int, H: int, W: int) -> Tensor:
    """[N, A*C, H, W] -> [N, H*W*A, C], rows in (y, x, anchor) order like the anchors."""
    layer = layer.view(N, A, C, H, W)  # [N, A, C, H, W]
    layer = layer.permute(0, 3, 4, 1, 2)  # [N, H, W, A, C]
    return layer.reshape(N, -1, C)  # [N, H*W*A, C]


def concat_box_prediction_layers(box_cls: list[Tensor], box_regression: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Flatten and concatenate every level: -> ([B * sum(H*W*A), C], [B * sum(H*W*A), 4])."""
    cls_flat, reg_flat = [], []
    for cls, reg in zip(box_cls, box_regression):
        N, AxC, H, W = cls.shape
        A = reg.shape[1] // 4
        cls_flat.append(permute_and_flatten(cls, N, A, AxC // A, H, W))
        reg_flat.append(permute_and_flatten(reg, N, A, 4, H, W))
    # levels side by side per image, then images one after the other
    box_cls = torch.cat(cls_flat, dim=1).flatten(0, -2)  # [B, sum, C] -> [B*sum, C]
    box_regression = torch.cat(reg_flat, dim=1).reshape(-1, 4)  # [B*sum, 4]
    return box_cls, box_regression


class ProposalSteps(NamedTuple):
    """One image's proposals through :func:`filter_proposals_single`, with counts per stage."""

    boxes: Tensor  # [P, 4] kept proposals, xyxy pixels of the resized (unpadded) image
    scores: Tensor  # [P] objectness probabilities, descending
    levels: Tensor  # [P] level of each kept proposal
    counts: dict  # boxes left after each stage: top_n, min_size, score_thresh, nms, post_nms_top_n


def filter_proposals_single(boxes: Tensor, scores: Tensor, levels: Tensor, image_size: tuple[int, int], *,
                            min_size: float, score_thresh: float, nms_thresh: float,
                            post_nms_top_n: int) -> ProposalSteps:
    """Stages 4b-4f of the RPN for one image, after the per-level top-n.

    Args:
        boxes: [K, 4] decoded proposals; scores: [K] probabilities; levels: [K] level ids.
        image_size: (h, w) of the resized image before padding.
    """
    counts = {"top_n": boxes.shape[0]}
    boxes = clip_boxes_to_image(boxes, image_size)
    keep = remove_small_boxes(boxes, min_size)
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    counts["min_size"] = boxes.shape[0]
    keep = torch.where(scores >= score_thresh)[0]  # >=, as torchvision
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    counts["score_thresh"] = boxes.shape[0]
    keep = batched_nms(boxes, scores, levels, nms_thresh)  # NMS within each level
    counts["nms"] = keep.shape[0]
    keep = keep[:post_nms_top_n]
    counts["post_nms_top_n"] = keep.shape[0]
    record("rpn.filter.counts", counts)
    record("rpn.filter.boxes", boxes[keep])
    return ProposalSteps(boxes[keep], scores[keep], levels[keep], counts)


class RegionProposalNetwork(nn.Module):
    """torchvision's ``RegionProposalNetwork``, same arguments.

    Args:
        anchor_generator: the :class:`~detviz.anchors.AnchorGenerator`.
        head: the :class:`RPNHead`.
        fg_iou_thresh, bg_iou_thresh: matcher thresholds (0.7 / 0.3).
        batch_size_per_image, positive_fraction: sampler settings (256 / 0.5).
        pre_nms_top_n, post_nms_top_n: ``dict(training=..., testing=...)``, per image; the
            pre-NMS top-n applies per level.
        nms_thresh: NMS IoU threshold (0.7); score_thresh: minimum objectness probability.
    """

    def __init__(self, anchor_generator: AnchorGenerator, head: nn.Module, fg_iou_thresh: float,
                 bg_iou_thresh: float, batch_size_per_image: int, positive_fraction: float,
                 pre_nms_top_n: dict[str, int], post_nms_top_n: dict[str, int], nms_thresh: float,
                 score_thresh: float = 0.0):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self._pre_nms_top_n = pre_nms_top_n
        self._post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = 1e-3

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def assign_targets_to_anchors(self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
                                  ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: labels [N] float (1 positive, 0 negative, -1 ignored) and the matched gt
        box of every anchor [N, 4] (gt 0's box where unmatched; only positives use it)."""
        labels, matched_gt_boxes = [], []
        for anchors_per_image, targets_per_image in zip(anchors, targets):
            gt_boxes = targets_per_image["boxes"]
            if gt_boxes.numel() == 0:  # an image without objects: every anchor is background
                labels.append(torch.zeros(anchors_per_image.shape[0], device=anchors_per_image.device))
                matched_gt_boxes.append(torch.zeros_like(anchors_per_image, dtype=torch.float32))
                continue
            match_quality_matrix = box_iou(gt_boxes, anchors_per_image)  # [M, N]
            matched_idxs = self.proposal_matcher(match_quality_matrix)  # [N] gt index, -1 or -2
            record("rpn.matched_idxs", matched_idxs)
            matched_gt_boxes.append(gt_boxes[matched_idxs.clamp(min=0)])
            labels_per_image = (matched_idxs >= 0).to(torch.float32)
            labels_per_image[matched_idxs == BELOW_LOW_THRESHOLD] = 0.0
            labels_per_image[matched_idxs == BETWEEN_THRESHOLDS] = -1.0
            labels.append(labels_per_image)
        return labels, matched_gt_boxes

    def _get_top_n_idx(self, objectness: Tensor, num_anchors_per_level: list[int]) -> Tensor:
        """[B, sum] -> [B, sum_l min(top_n, N_l)] indices of each level's best anchors."""
        per_level, offset = [], 0
        for ob in objectness.split(num_anchors_per_level, dim=1):
            k = min(self.pre_nms_top_n(), ob.shape[1])
            per_level.append(ob.topk(k, dim=1).indices + offset)
            offset += ob.shape[1]
        return torch.cat(per_level, dim=1)

    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]) -> tuple[list[Tensor], list[Tensor]]:
        """[B, sum, 4] proposals and [B*sum, 1] logits -> per image kept boxes and scores."""
        steps = self.filter_proposals_with_steps(proposals, objectness, image_shapes, num_anchors_per_level)
        return [s.boxes for s in steps], [s.scores for s in steps]

    def filter_proposals_with_steps(self, proposals: Tensor, objectness: Tensor,
                                    image_shapes: list[tuple[int, int]],
                                    num_anchors_per_level: list[int]) -> list[ProposalSteps]:
        num_images = proposals.shape[0]
        objectness = objectness.detach().reshape(num_images, -1)  # no gradient through the proposals
        levels = torch.cat([torch.full((n,), i, dtype=torch.int64, device=proposals.device)
                            for i, n in enumerate(num_anchors_per_level)])
        top_n_idx = self._get_top_n_idx(objectness, num_anchors_per_level)  # [B, K]
        record("rpn.top_n_idx", top_n_idx)
        batch_idx = torch.arange(num_images, device=proposals.device)[:, None]
        objectness = objectness[batch_idx, top_n_idx]  # [B, K]
        levels = levels[top_n_idx]  # [B, K]
        proposals = proposals[batch_idx, top_n_idx]  # [B, K, 4]
        return [filter_proposals_single(boxes, scores, lvl, image_shape, min_size=self.min_size,
                                        score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                                        post_nms_top_n=self.post_nms_top_n())
                for boxes, scores, lvl, image_shape in zip(proposals, objectness.sigmoid(), levels, image_shapes)]

    def compute_loss(self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor],
                     regression_targets: list[Tensor]) -> tuple[Tensor, Tensor]:
        """BCE over the sampled anchors, smooth-L1 over the sampled positives, both / #sampled."""
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        sampled_pos_inds = torch.where(torch.cat(sampled_pos, dim=0))[0]
        sampled_neg_inds = torch.where(torch.cat(sampled_neg, dim=0))[0]
        sampled_inds = torch.cat([sampled_pos_inds, sampled_neg_inds], dim=0)
        record("rpn.sampled_pos_inds", sampled_pos_inds)
        record("rpn.sampled_neg_inds", sampled_neg_inds)
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)
        box_loss = F.smooth_l1_loss(pred_bbox_deltas[sampled_pos_inds], regression_targets[sampled_pos_inds],
                                    beta=1 / 9, reduction="sum") / sampled_inds.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled_inds],
                                                             labels[sampled_inds])
        return objectness_loss, box_loss

    def forward(self, images, features: dict[str, Tensor], targets: list[dict[str, Tensor]] | None = None
                ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals per image ([P, 4] xyxy pixels of the resized image) and, in training, the losses."""
        features = list(features.values())
        objectness, pred_bbox_deltas = self.head(features)
        anchors = self.anchor_generator(images, features)  # B x [sum(H*W*A), 4]
        record("rpn.anchors", anchors)
        record("rpn.objectness", objectness)
        num_images = len(anchors)
        num_anchors_per_level = [o.shape[1] * o.shape[2] * o.shape[3] for o in objectness]  # A*H*W per level
        objectness, pred_bbox_deltas = concat_box_prediction_layers(objectness, pred_bbox_deltas)
        proposals = self.box_coder.decode(pred_bbox_deltas.detach(), anchors)  # [B*sum, 1, 4]
        proposals = proposals.view(num_images, -1, 4)  # [B, sum, 4]
        boxes, scores = self.filter_proposals(proposals, objectness, images.image_sizes, num_anchors_per_level)

        losses = {}
        if self.training:
            check_detection_targets(targets, num_images, require_labels=False)
            labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
            regression_targets = self.box_coder.encode(matched_gt_boxes, anchors)
            loss_objectness, loss_rpn_box_reg = self.compute_loss(objectness, pred_bbox_deltas, labels,
                                                                  regression_targets)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return boxes, losses
