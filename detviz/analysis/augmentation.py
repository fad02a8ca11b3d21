"""Augmentation audit: what the training warps do to each gt before the assigner ever sees it.

Over ``draws`` random draws of a training warp (:class:`~detviz.datasets.augment.NanoDetWarp`,
the one the training loop applies), every gt of a COCO dataset ends each draw in exactly one
of these outcomes, checked in this order:

1. ``clipped_away``: the warped box, clipped to the network input, is thinner or shorter than
   ``MIN_BOX_SIDE`` px, so the training loop drops it;
2. ``too_small``: it survives, but shrinks below the finest stride (sqrt(area) < stride) and
   the assigner gives it no positive prior;
3. ``unassigned``: it survives at a size the priors cover, yet gets no positive prior (e.g.
   its centre falls between cell centres, or a neighbour took its priors);
4. ``assigned``: it gets at least one positive prior: training teaches the model to find it.

The assigner runs on all surviving gts of the image together, as in training. Only the image
sizes are needed (from the json, else the file header), never the pixels: a warp of the boxes
is a warp of the corners. Draws are seeded per (seed, draw, image index), so an audit repeats.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from detviz.analysis.assignment import SIZE_BUCKETS, size_bucket
from detviz.datasets.augment import MIN_BOX_SIDE, NanoDetWarp, warp_boxes

__all__ = ["OUTCOMES", "AugmentationAudit", "augmentation_audit"]

OUTCOMES = ("clipped_away", "too_small", "unassigned", "assigned")


@dataclass
class AugmentationAudit:
    """Per gt, the fraction of draws that ended in each outcome.

    Attributes:
        draws: draws per image. min_stride: the finest stride (``too_small``'s border).
        rows: one dict per gt: ann_id, image_id, class_name, size (COCO bucket of the box in
            its image), and one fraction in [0, 1] per outcome (they add up to 1).
    """

    draws: int
    min_stride: float
    rows: list[dict] = field(default_factory=list)

    def summary(self, key: str = "size") -> dict[str, dict[str, float]]:
        """Mean outcome fractions per ``key`` ("size" bucket or "class_name"), with the gt count ``gts``."""
        if key not in ("size", "class_name"):
            raise ValueError(f"key must be 'size' or 'class_name', got {key!r}")
        names = [n for n, _, _ in SIZE_BUCKETS] if key == "size" else sorted({r[key] for r in self.rows})
        out = {}
        for name in names:
            group = [r for r in self.rows if r[key] == name]
            if group:
                out[name] = {"gts": len(group), **{o: sum(r[o] for r in group) / len(group) for o in OUTCOMES}}
        return out

    def table(self, key: str = "size") -> str:
        lines = [f"{key:<12} {'gts':>4} " + " ".join(f"{o:>12}" for o in OUTCOMES)]
        for name, s in self.summary(key).items():
            lines.append(f"{name:<12} {s['gts']:>4} " + " ".join(f"{s[o]:>12.3f}" for o in OUTCOMES))
        return "\n".join(lines)


def _image_size(dataset, image_id: int) -> tuple[int, int]:
    """(H, W) from the json, else from the image file's header."""
    info = dataset.coco.imgs[image_id]
    if "height" in info and "width" in info:
        return int(info["height"]), int(info["width"])
    from PIL import Image

    with Image.open(dataset.image_dir / info["file_name"]) as image:  # reads the header only
        width, height = image.size
    return height, width


def augmentation_audit(dataset, warp: NanoDetWarp, assigner, *, draws: int = 20, seed: int = 0,
                       indices: Sequence[int] | None = None) -> AugmentationAudit:
    """Run ``draws`` warps of every image of ``dataset`` and classify each gt's fate in each.

    Args:
        dataset: :class:`~detviz.datasets.CocoDetection` (images are not read when the json has sizes).
        warp: the training warp, e.g. ``NanoDetWarp((S, S))`` as ``detviz.engine.train`` uses it.
        assigner: a prior assigner at the warp's output size, e.g.
            :meth:`~detviz.analysis.assignment.ATSSPriorAssigner.from_model`; its ``level_names``
            say ``stride s`` and give the finest stride.
        draws: warps per image, >= 1.
        indices: dataset indices; default all.

    Returns:
        :class:`AugmentationAudit`.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    out_w, out_h = warp.input_size
    if tuple(assigner.input_size) != (out_h, out_w):
        raise ValueError(f"assigner.input_size {tuple(assigner.input_size)} must be the warp's output "
                         f"(height, width) {(out_h, out_w)}")
    strides = [float(name.split()[-1].split("x")[0]) for name in assigner.level_names if name.startswith("stride")]
    audit = AugmentationAudit(draws, min(strides) if strides else math.nan)
    for index in (range(len(dataset)) if indices is None else indices):
        audit.rows.extend(_audit_image(dataset, index, warp, assigner, draws, seed, audit.min_stride))
    return audit


def _audit_image(dataset, index: int, warp: NanoDetWarp, assigner, draws: int, seed: int,
                 min_stride: float) -> list[dict]:
    image_id = dataset.image_ids[index]
    anns = [a for a in dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=[image_id]))
            if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
    if not anns:
        return []
    h, w = _image_size(dataset, image_id)
    out_w, out_h = warp.input_size
    boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)],
                         dtype=torch.float64)  # [M, 4] xywh -> xyxy, image pixels
    counts = torch.zeros(len(anns), len(OUTCOMES))  # [M, 4]
    for draw in range(draws):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + draw * 10_007 + index)
        moved = warp_boxes(boxes, warp.draw_matrix(h, w, generator), width=out_w, height=out_h)  # [M, 4]
        sides = moved[:, 2:] - moved[:, :2]  # [M, 2]
        kept = (sides >= MIN_BOX_SIDE).all(dim=1)  # [M]
        assigned = torch.zeros(len(anns), dtype=torch.bool)
        if kept.any():
            gt_inds = assigner.assign(moved[kept].float())  # [N] index into the kept gts
            hit = torch.zeros(int(kept.sum()), dtype=torch.bool)
            hit[gt_inds[gt_inds >= 0].unique()] = True
            assigned[kept] = hit
        small = sides.prod(dim=1).clamp(min=0).sqrt() < min_stride  # [M]
        outcome = torch.where(~kept, 0, torch.where(assigned, 3, torch.where(small, 1, 2)))  # [M]
        counts[torch.arange(len(anns)), outcome] += 1
    names = dataset.class_names
    rows = []
    for g, ann in enumerate(anns):
        bw, bh = ann["bbox"][2], ann["bbox"][3]
        label = dataset.category_id_to_label[ann["category_id"]]
        rows.append({"ann_id": ann["id"], "image_id": image_id, "class_name": names.get(label, str(label)),
                     "size": size_bucket(bw, bh),
                     **{o: float(counts[g, k]) / draws for k, o in enumerate(OUTCOMES)}})
    return rows
