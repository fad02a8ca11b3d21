"""The box branch of Faster R-CNN's RoI heads, torchvision's way.

Same constructor arguments, ``state_dict`` keys and numbers as
``torchvision.models.detection.roi_heads.RoIHeads`` (boxes only):

training  1. append the gt boxes to each image's proposals;
          2. match proposals to gts at IoU 0.5 (no ignore band: 0.5 counts as positive),
             label = gt class (user classes start at 1), 0 = background;
          3. sample 512 proposals per image, at most 25% positive;
          4. encode the matched gt boxes with weights (10, 10, 5, 5);
both      5. RoIAlign 7x7 features per proposal, TwoMLPHead (two fc + ReLU), FastRCNNPredictor
             (class logits and class-specific deltas);
training  6. ``fastrcnn_loss``: cross-entropy over all sampled rows + smooth-L1 (beta 1/9) on the
             positives' deltas of their gt class, divided by the number of sampled rows;
inference 6. ``postprocess_detections``: softmax, decode per class, clip, drop class 0, keep
             scores > 0.05, drop boxes under 0.01 px, NMS 0.5 per class, best 100.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detviz._validate import check_detection_targets
from detviz.assigners import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from detviz.boxes import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes
from detviz.coders import BoxCoder
from detviz.samplers import BalancedPositiveNegativeSampler
from detviz.trace import record

__all__ = ["TwoMLPHead", "FastRCNNPredictor", "RoIHeads", "TrainingSamples", "fastrcnn_loss"]


class TwoMLPHead(nn.Module):
    """Flatten each RoI's pooled features and apply two fully connected layers with ReLU.

    Args:
        in_channels: C * 7 * 7 for 7x7 pooled features of C channels.
        representation_size: width of both layers (1024 in Faster R-CNN).
    """

    def __init__(self, in_channels: int, representation_size: int):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(start_dim=1)  # [R, C, 7, 7] -> [R, C*49]
        return F.relu(self.fc7(F.relu(self.fc6(x))))


class FastRCNNPredictor(nn.Module):
    """Class logits [R, K] and class-specific box deltas [R, K*4]; K counts the background."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


def fastrcnn_loss(class_logits: Tensor, box_regression: Tensor, labels: list[Tensor],
                  regression_targets: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Classification and box losses of the sampled RoIs of a batch (R rows, K classes).

    The box loss only looks at the deltas predicted for each positive's own gt class and is
    divided by all R sampled rows, not by the number of positives.
    """
    labels = torch.cat(labels, dim=0)  # [R]
    regression_targets = torch.cat(regression_targets, dim=0)  # [R, 4]
    classification_loss = F.cross_entropy(class_logits, labels)
    pos = torch.where(labels > 0)[0]
    box_regression = box_regression.reshape(class_logits.shape[0], -1, 4)  # [R, K*4] -> [R, K, 4]
    box_loss = F.smooth_l1_loss(box_regression[pos, labels[pos]], regression_targets[pos], beta=1 / 9,
                                reduction="sum") / labels.numel()
    return classification_loss, box_loss


class TrainingSamples(NamedTuple):
    """Per image: the sampled RoIs and their targets (step 1-4 of the module docstring)."""

    proposals: list[Tensor]  # [S, 4] sampled boxes (proposals and gts), xyxy pixels
    matched_idxs: list[Tensor]  # [S] gt index (0 for background rows)
    labels: list[Tensor]  # [S] int64 class, 0 = background
    regression_targets: list[Tensor]  # [S, 4] encoded matched gt boxes


class RoIHeads(nn.Module):
    """torchvision's ``RoIHeads`` for boxes, same arguments (mask/keypoint branches are not built)."""

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, box_predictor: nn.Module,
                 fg_iou_thresh: float, bg_iou_thresh: float, batch_size_per_image: int, positive_fraction: float,
                 bbox_reg_weights: tuple[float, float, float, float] | None, score_thresh: float,
                 nms_thresh: float, detections_per_img: int):
        super().__init__()
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coder = BoxCoder(bbox_reg_weights if bbox_reg_weights is not None else (10.0, 10.0, 5.0, 5.0))
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    def assign_targets_to_proposals(self, proposals: list[Tensor], gt_boxes: list[Tensor],
                                    gt_labels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        matched_idxs, labels = [], []
        for proposals_in_image, boxes, classes in zip(proposals, gt_boxes, gt_labels):
            if boxes.numel() == 0:  # background image: every proposal is a negative
                zeros = torch.zeros(proposals_in_image.shape[0], dtype=torch.int64, device=proposals_in_image.device)
                matched_idxs.append(zeros)
                labels.append(zeros.clone())
                continue
            matched = self.proposal_matcher(box_iou(boxes, proposals_in_image))  # [P] gt index, -1 or -2
            labels_in_image = classes[matched.clamp(min=0)].to(torch.int64)
            labels_in_image[matched == BELOW_LOW_THRESHOLD] = 0
            labels_in_image[matched == BETWEEN_THRESHOLDS] = -1  # the sampler skips -1
            matched_idxs.append(matched.clamp(min=0))
            labels.append(labels_in_image)
        return matched_idxs, labels

    def select_training_samples(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> TrainingSamples:
        dtype, device = proposals[0].dtype, proposals[0].device
        gt_boxes = [t["boxes"].to(dtype) for t in targets]
        gt_labels = [t["labels"] for t in targets]
        proposals = [torch.cat([p, gt]) for p, gt in zip(proposals, gt_boxes)]  # gts are proposals too
        matched_idxs, labels = self.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        sampled = [torch.where(pos | neg)[0] for pos, neg in zip(sampled_pos, sampled_neg)]
        proposals = [p[s] for p, s in zip(proposals, sampled)]
        labels = [lab[s] for lab, s in zip(labels, sampled)]
        matched_idxs = [m[s] for m, s in zip(matched_idxs, sampled)]
        matched_gt_boxes = []
        for boxes, matched in zip(gt_boxes, matched_idxs):
            if boxes.numel() == 0:  # a dummy gt so that every row has a (never used) target
                boxes = torch.zeros((1, 4), dtype=dtype, device=device)
            matched_gt_boxes.append(boxes[matched])
        regression_targets = list(self.box_coder.encode(matched_gt_boxes, proposals))
        record("roi_heads.sampled_proposals", proposals)
        record("roi_heads.sampled_labels", labels)
        record("roi_heads.sampled_matched_idxs", matched_idxs)
        return TrainingSamples(proposals, matched_idxs, labels, regression_targets)

    def postprocess_detections(self, class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor],
                               image_shapes: list[tuple[int, int]]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        num_classes = class_logits.shape[-1]
        boxes_per_image = [p.shape[0] for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)  # [R, K, 4], one box per class
        pred_scores = F.softmax(class_logits, dim=-1)  # [R, K]
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, scores, image_shape in zip(pred_boxes.split(boxes_per_image), pred_scores.split(boxes_per_image),
                                              image_shapes):
            boxes = clip_boxes_to_image(boxes, image_shape)
            labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
            # drop the background column, then treat every (RoI, class) pair as one detection
            boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]  # strict >, as torchvision
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_labels.append(labels[keep])
        return all_boxes, all_scores, all_labels

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None = None) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            check_detection_targets(targets, len(proposals))
        if targets is not None:
            for t in targets:
                if not t["boxes"].is_floating_point():
                    raise TypeError(f"target boxes must be a floating Tensor[M, 4], got {t['boxes'].dtype}")
                if t["labels"].dtype != torch.int64:
                    raise TypeError(f"target labels must be an int64 Tensor[M], got {t['labels'].dtype}")
        if self.training:
            samples = self.select_training_samples(proposals, targets)
            proposals = samples.proposals
        box_features = self.box_roi_pool(features, proposals, image_shapes)  # [R, C, 7, 7]
        box_features = self.box_head(box_features)  # [R, 1024]
        class_logits, box_regression = self.box_predictor(box_features)  # [R, K], [R, K*4]

        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, samples.labels,
                                                          samples.regression_targets)
            return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        return [{"boxes": b, "labels": lab, "scores": s} for b, s, lab in zip(boxes, scores, labels)], {}
