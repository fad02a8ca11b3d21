"""Why did the detector miss it? One reason per missed gt, joined to what training did with it.

A gt is *missed* when no detection of its class is matched to it at IoU 0.5 under COCO's rules
(:func:`detviz.evaluation.matching.match_detections`: greedy by score, one detection per gt,
crowd regions ignored, 100 detections per image). Each missed gt gets exactly one reason, the
first that applies in this order:

1. ``never_assigned``: the model's own training assigner gives it no positive prior at the
   model's input size (ATSS for NanoDet-m's GFL head, the RPN's max-IoU Matcher for Faster
   R-CNN, the best anchor for YOLOv3, where a later gt written into the same cell and anchor
   takes its place; for the sparse head, whose one-to-one matching follows its predictions of
   the moment, the objectness target: no location of any level lies inside the gt, so nothing
   learns to bring it into the top-n), so no loss ever asked any prior to find it. Known only
   with the model (:func:`prior_evidence`).
2. ``crowded_out``: a detection of its class overlaps it at IoU >= 0.5 but was matched to
   another gt (a higher-scoring detection took that gt first, or this detection fits the other
   gt better).
3. ``confused``: a detection of another class overlaps it at IoU >= 0.5.
4. ``mislocalised``: a detection of its class overlaps it, but only at 0.1 <= IoU < 0.5.
5. ``low_score``: it had positive priors in training, yet nothing of its class came near it
   (IoU >= 0.1) out of score threshold, top-k and NMS; :attr:`MissedGT.best_prior_score` is
   the best score of its class at its positive priors. Known only with the model.
6. ``no_detection``: nothing of its class near it, and no model to ask why (results only).

The order puts the training-time cause first: a gt no loss ever pointed at is explained by
that, whatever the detections near it look like. Then the detections that almost found it,
from the closest miss (right class, right place, taken) to the farthest.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detviz.analysis.assignment import ATSSPriorAssigner, MaxIoUPriorAssigner
from detviz.datasets.augment import NanoDetWarp, warp_boxes
from detviz.gfl.model import normalize_images

__all__ = ["NEVER_ASSIGNED", "CROWDED_OUT", "CONFUSED", "MISLOCALISED", "LOW_SCORE", "NO_DETECTION", "REASONS",
           "MATCH_IOU", "NEAR_IOU", "PriorEvidence", "MissedGT", "miss_reason", "why_missed", "prior_evidence",
           "EVIDENCE_FAMILIES", "count_reasons"]

NEVER_ASSIGNED, CROWDED_OUT, CONFUSED = "never_assigned", "crowded_out", "confused"
MISLOCALISED, LOW_SCORE, NO_DETECTION = "mislocalised", "low_score", "no_detection"
REASONS = (NEVER_ASSIGNED, CROWDED_OUT, CONFUSED, MISLOCALISED, LOW_SCORE, NO_DETECTION)  # precedence order
MATCH_IOU = 0.5  # a detection at this IoU or more would have found the gt
NEAR_IOU = 0.1  # TIDE's background threshold: below it a detection is not "near" the gt
EVIDENCE_FAMILIES = ("gfl", "faster_rcnn", "yolov3", "sparse")


@dataclass(frozen=True)
class PriorEvidence:
    """What the model's training assigner and its outputs say about one gt.

    Attributes:
        num_pos: priors the training assigner makes positive for the gt, at the model's input size.
        best_score: best score of the gt's class at those priors (Faster R-CNN: the RPN's
            objectness), in [0, 1]; NaN when it has none.
    """

    num_pos: int
    best_score: float


@dataclass(frozen=True)
class MissedGT:
    """One missed gt and its reason (see the module docstring for the order)."""

    ann_id: int
    image_id: int
    category_id: int
    box: tuple[float, float, float, float]  # xyxy pixels of the image
    reason: str
    best_same_iou: float  # best IoU of a detection of its class
    best_other_iou: float  # best IoU of a detection of another class
    other_category_id: int | None  # that detection's class
    num_pos: int | None  # positive priors in training (None: no model given)
    best_prior_score: float | None


def miss_reason(best_same_iou: float, best_other_iou: float, evidence: PriorEvidence | None) -> str:
    """The reason of one missed gt, by the module's precedence.

    Args:
        best_same_iou: best IoU in [0, 1] of a detection of the gt's class (0 without one).
        best_other_iou: best IoU of a detection of another class.
        evidence: the training assigner's view of the gt, or None when no model is given.
    """
    if evidence is not None and evidence.num_pos == 0:
        return NEVER_ASSIGNED
    if best_same_iou >= MATCH_IOU:
        return CROWDED_OUT
    if best_other_iou >= MATCH_IOU:
        return CONFUSED
    if best_same_iou >= NEAR_IOU:
        return MISLOCALISED
    return NO_DETECTION if evidence is None else LOW_SCORE


def why_missed(records, evidence: dict[int, PriorEvidence] | None = None) -> list[MissedGT]:
    """A reason for every gt that no detection of its class matches at IoU 0.5.

    Args:
        records: :class:`detviz.evaluation.matching.ObjectRecords` of the gts and detections.
        evidence: annotation id -> :class:`PriorEvidence` (:func:`prior_evidence`); None for
            results alone, where ``never_assigned`` and ``low_score`` cannot be told apart from
            ``no_detection``.

    Returns:
        One :class:`MissedGT` per missed gt, in the records' gt order. Crowd and ignored gts are
        never missed.
    """
    at = records.threshold_index(MATCH_IOU)
    missed = []
    for gt in records.gts:
        if gt.ignored or gt.matched[at] is not None:
            continue
        found = None if evidence is None else evidence.get(gt.ann_id)
        if evidence is not None and found is None:
            raise ValueError(f"evidence has no entry for annotation id {gt.ann_id} (image {gt.image_id}); "
                             "compute it on the same annotations as the records")
        reason = miss_reason(gt.best_same_iou, gt.best_other_iou, found)
        missed.append(MissedGT(gt.ann_id, gt.image_id, gt.category_id, tuple(gt.box), reason, gt.best_same_iou,
                               gt.best_other_iou, gt.best_other_category_id,
                               None if found is None else found.num_pos,
                               None if found is None else found.best_score))
    return missed


def count_reasons(missed: Sequence[MissedGT]) -> dict[str, int]:
    """``{"total": n, reason: count, ...}`` for every reason in precedence order; counts add up to n."""
    counts = Counter(m.reason for m in missed)
    return {"total": len(missed), **{reason: counts.get(reason, 0) for reason in REASONS}}


# ---------------------------------------------------------------------------- prior evidence
@torch.no_grad()
def prior_evidence(family_name: str, model: nn.Module, dataset, input_size: int,
                   batch_size: int = 8) -> dict[int, PriorEvidence]:
    """For every non-crowd gt of ``dataset``: its positive priors under the model's training
    assigner and the model's best score at them, at the model's input size.

    Each image is resized as inference resizes it (aspect kept, padded to ``input_size``
    square, :class:`~detviz.datasets.augment.NanoDetWarp` without random draws), and its gt
    boxes move with the same matrix.

    Args:
        family_name: ``"gfl"`` (ATSS from the model's ``NanoDetConfig``; score = the class's
            sigmoid), ``"faster_rcnn"`` (the RPN's anchors and Matcher; score = the RPN
            objectness, which is class-agnostic), ``"yolov3"`` (the best of the config's 9
            anchors by shape, in the cell of the box centre; score = objectness x class) or
            ``"sparse"`` (locations inside the gt, where its objectness target is positive;
            score = the predicted objectness, which decides the top-n).
        model: the trained model, in eval mode (it is run as it is).
        dataset: :class:`~detviz.datasets.CocoDetection` with images.
        input_size: the side the model was trained and evaluated at.

    Returns:
        annotation id -> :class:`PriorEvidence`.
    """
    if family_name not in EVIDENCE_FAMILIES:
        raise ValueError(f"family_name must be one of {EVIDENCE_FAMILIES} (the families whose training "
                         f"assigner detviz can replay), got {family_name!r}")
    if model.training:
        raise ValueError("model must be in eval mode (call model.eval()): train mode changes BatchNorm statistics")
    if family_name == "gfl":
        assigner = ATSSPriorAssigner.from_model(model, (input_size, input_size))
        scorer = _gfl_scores
    elif family_name == "faster_rcnn":
        assigner = MaxIoUPriorAssigner.from_rpn(model, (input_size, input_size))
        scorer = _rpn_scores
    elif family_name == "yolov3":
        assigner = _YoloBestAnchor(model.cfg.anchors, (input_size, input_size))
        scorer = _yolo_scores
    else:
        assigner = _SparseObjectness(model.cfg.strides, (input_size, input_size))
        scorer = _sparse_scores
    resize = NanoDetWarp((input_size, input_size), scale=(1.0, 1.0), translate=0.0, flip=0.0)
    fixed = torch.Generator().manual_seed(0)  # a plain resize: the draws do not matter
    device = next(model.parameters()).device
    evidence = _degenerate_gts(dataset)
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        items = [_image_and_gts(dataset, i, resize, fixed) for i in indices]
        scores = scorer(model, torch.stack([image for image, _, _, _ in items]).to(device))  # [B, N, C or 1]
        for (_, boxes, labels, ann_ids), image_scores in zip(items, scores.cpu()):
            gt_inds = assigner.assign(boxes) if len(ann_ids) else torch.zeros(0, dtype=torch.long)  # [N] or [N, M]
            for g, ann_id in enumerate(ann_ids):
                pos = gt_inds[:, g] if gt_inds.dim() == 2 else gt_inds == g  # [N] bool
                column = labels[g] if image_scores.shape[1] > 1 else 0
                best = float(image_scores[pos, column].max()) if pos.any() else math.nan
                evidence[ann_id] = PriorEvidence(int(pos.sum()), best)
    return evidence


def _image_and_gts(dataset, index: int, resize: NanoDetWarp, generator) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """The resized image, its non-crowd gt boxes in input pixels, their labels and annotation ids.
    Boxes without width or height are left out: training drops them, so they are never assigned."""
    image_id = dataset.image_ids[index]
    anns = [a for a in dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=[image_id])) if not a.get("iscrowd", 0)
            and a["bbox"][2] > 0 and a["bbox"][3] > 0]
    image = dataset._load_image(dataset.coco.imgs[image_id]["file_name"])
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    warped, _, meta = resize(image, empty, generator)
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                         dtype=torch.float32).reshape(-1, 4)  # xywh -> xyxy, image pixels
    boxes = warp_boxes(boxes, meta["warp_matrix"].to(torch.float32))  # [M, 4] input pixels, not clipped
    labels = torch.tensor([dataset.category_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
    return warped, boxes, labels, [a["id"] for a in anns]


def _degenerate_gts(dataset) -> dict[int, PriorEvidence]:
    """Non-crowd gts without width or height: the training data drops them, so no prior learns them."""
    return {a["id"]: PriorEvidence(0, math.nan) for a in dataset.coco.anns.values()
            if not a.get("iscrowd", 0) and (a["bbox"][2] <= 0 or a["bbox"][3] <= 0)}


def _gfl_scores(model: nn.Module, images: Tensor) -> Tensor:
    """[B, 3, S, S] in [0, 1] -> [B, N, C] class scores per grid cell, levels concatenated."""
    cls_scores, _ = model(normalize_images(images))
    per_level = [s.permute(0, 2, 3, 1).flatten(1, 2) for s in cls_scores]  # [B, C, H, W] -> [B, H*W, C]
    return torch.cat(per_level, dim=1).sigmoid()


def _rpn_scores(model: nn.Module, images: Tensor) -> Tensor:
    """[B, 3, S, S] in [0, 1] -> [B, N, 1] RPN objectness per anchor, in the anchor generator's order."""
    image_list, _ = model.transform(list(images))
    features = model.features(image_list.tensors)
    objectness, _ = model.rpn.head(list(features.values()))
    # per level [B, A, H, W] -> [B, H, W, A] -> [B, H*W*A]: the order of the anchors (y, x, anchor)
    per_level = [o.permute(0, 2, 3, 1).flatten(1) for o in objectness]
    return torch.cat(per_level, dim=1).sigmoid().unsqueeze(-1)


class _YoloBestAnchor:
    """YOLOv3's training assignment (:func:`detviz.yolo.targets.build_targets`, best anchor) as a
    prior assigner: priors are every level's ``[H, W, A]`` flattened, levels in the model's order."""

    def __init__(self, anchors, input_size: tuple[int, int]):
        from detviz.yolo.targets import featmap_sizes

        self.anchors, self.input_size = anchors, input_size
        self.sizes = featmap_sizes(input_size)  # [(H, W)] per level, stride 32 first

    def assign(self, gt_boxes: Tensor) -> Tensor:
        from detviz.yolo.targets import build_targets

        labels = torch.zeros(gt_boxes.shape[0], dtype=torch.int64)
        matches = build_targets([gt_boxes], [labels], input_size=self.input_size, num_classes=1,
                                anchors=self.anchors).matches
        per_level = [torch.full((h, w, 3), -1, dtype=torch.long) for h, w in self.sizes]  # [H, W, A]
        for gt, level, slot, row, col in zip(matches.gt, matches.level, matches.slot, matches.row, matches.col):
            per_level[int(level)][row, col, slot] = gt  # in gt order: a later gt overwrites, as in y_true
        return torch.cat([p.flatten() for p in per_level])  # [N]


def _yolo_scores(model: nn.Module, images: Tensor) -> Tensor:
    """[B, 3, S, S] in [0, 1] -> [B, N, C] objectness x class probability per (cell, anchor)."""
    outputs = model(images)  # per level [B, H, W, A, 5 + C]
    per_level = [(o[..., 4:5].sigmoid() * o[..., 5:].sigmoid()).flatten(1, 3) for o in outputs]  # [B, H*W*A, C]
    return torch.cat(per_level, dim=1)


class _SparseObjectness:
    """The sparse head's objectness targets as a prior assigner: every level's locations, and
    per (location, gt) whether the location lies inside the gt (positive FCOS centerness)."""

    def __init__(self, strides, input_size: tuple[int, int]):
        from detviz.anchors import center_points

        h, w = input_size
        self.points = torch.cat([center_points((h // s, w // s), s) for s in strides])  # [N, 2]

    def assign(self, gt_boxes: Tensor) -> Tensor:
        """[M, 4] xyxy input pixels -> [N, M] bool: the location is inside the gt."""
        x, y = self.points[:, 0:1], self.points[:, 1:2]  # [N, 1] each
        inside = torch.stack([x - gt_boxes[:, 0], y - gt_boxes[:, 1], gt_boxes[:, 2] - x, gt_boxes[:, 3] - y])
        return inside.amin(dim=0) > 0  # [4, N, M] -> [N, M]


def _sparse_scores(model: nn.Module, images: Tensor) -> Tensor:
    """[B, 3, S, S] in [0, 1] -> [B, N, 1] predicted objectness per location, levels concatenated."""
    objectness = model(normalize_images(images)).objectness  # L x [B, 1, H, W], probabilities
    return torch.cat([o.flatten(1) for o in objectness], dim=1).unsqueeze(-1)  # [B, H*W] per level -> [B, N, 1]
