"""Assignment reports: which ground-truth boxes of a dataset an assigner trains on, and how well.

For every gt of a COCO dataset, scaled to the model's input size, the report lists how many
priors become positive for it (per level), the IoU of its best prior, and its size and aspect
bucket. A gt with no positive prior never teaches the detector anything: the report collects
those gts and counts them per bucket.

Two assigners are wrapped with one interface (``assign(gt_boxes) -> Tensor[N] gt index``,
negative for background/ignored priors; ``assign_with_ious`` also returns the [N, M] prior-gt IoU
the assignment computed, which the report reads instead of computing it again), each built from
the model's own settings so that the report shows what that model trains on:

* :class:`ATSSPriorAssigner`: ATSS on NanoDet's grid cells at a fixed input size, from a
  :class:`~detviz.gfl.model.NanoDetConfig` (:meth:`~ATSSPriorAssigner.from_config`: strides,
  cell side ``octave_base_scale`` strides, ``atss_topk``) or a built model
  (:meth:`~ATSSPriorAssigner.from_model`);
* :class:`MaxIoUPriorAssigner`: torchvision's max-IoU :class:`~detviz.assigners.Matcher` on
  fixed anchors, from a Faster R-CNN's RPN (:meth:`~MaxIoUPriorAssigner.from_rpn`: its anchor
  generator, its matcher's thresholds and its backbone's strides).

The plain constructors (and :meth:`MaxIoUPriorAssigner.from_anchor_generator`) take every
setting explicitly, for an assigner no model has yet.

Resizing: every image is plainly resized (no letterbox, no aspect kept) to the assigner's
``input_size``, and its boxes scaled by ``(W_in / w, H_in / h)``; sizes and buckets are measured
in that network-input frame, since that is what the assigner sees. The COCO buckets use the
same thresholds as COCO (sqrt(area) < 32 small, < 96 medium, else large), but on the resized
boxes, not on the original annotation areas. An image whose json entry lacks ``width``/``height``
is measured from its file's header (PIL reads only the header until the pixels are asked for).

The report's figures are :func:`detviz.viz.plot_report` and :func:`detviz.viz.plot_buckets`.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn

from detviz.anchors import level_slices, multilevel_grid_cells
from detviz.assigners import ATSSAssigner, Matcher
from detviz.boxes import box_iou
from detviz.gfl.model import NanoDetConfig

__all__ = ["SIZE_BUCKETS", "ASPECT_BUCKETS", "size_bucket", "aspect_bucket", "ATSSPriorAssigner",
           "MaxIoUPriorAssigner", "AssignmentReport", "assignment_report", "compare_reports"]

SIZE_BUCKETS = (("small", 0.0, 32.0), ("medium", 32.0, 96.0), ("large", 96.0, math.inf))  # sqrt(area), px
ASPECT_BUCKETS = (("wide", 0.0, 0.5), ("square", 0.5, 2.0), ("tall", 2.0, math.inf))  # height / width


def size_bucket(width: float, height: float) -> str:
    """COCO size bucket of a box from sqrt(w * h): small < 32 <= medium < 96 <= large."""
    side = math.sqrt(max(width, 0.0) * max(height, 0.0))
    return next(name for name, low, high in SIZE_BUCKETS if low <= side < high)


def aspect_bucket(width: float, height: float) -> str:
    """Aspect bucket from height / width: wide < 1/2 <= square < 2 <= tall."""
    ratio = height / width if width > 0 else math.inf
    return next(name for name, low, high in ASPECT_BUCKETS if low <= ratio < high)


def _is_positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _check_input_size(input_size) -> tuple[int, int]:
    """(H, W) as two positive ints, or a ValueError naming ``input_size``."""
    if not isinstance(input_size, Sequence) or len(input_size) != 2 or not all(map(_is_positive_int, input_size)):
        raise ValueError(f"input_size must be (H, W), two positive ints, got {input_size!r}")
    return int(input_size[0]), int(input_size[1])


class ATSSPriorAssigner:
    """ATSS on NanoDet's grid cells at a fixed input size.

    Build it from the model's settings with :meth:`from_config` or :meth:`from_model`; the
    constructor takes them explicitly (NanoDet-m: ``strides=(8, 16, 32), octave_base_scale=5.0,
    topk=9``).

    Args:
        input_size: (H, W) of the network input, multiples of the largest stride.
        strides: pixels per cell per level; octave_base_scale: grid-cell side in strides.
        topk: ATSS candidates per level.
    """

    def __init__(self, input_size, *, strides: Sequence[int], octave_base_scale: float, topk: int,
                 name: str | None = None):
        h, w = _check_input_size(input_size)
        if not isinstance(strides, Sequence) or not strides or not all(map(_is_positive_int, strides)):
            raise ValueError(f"strides must be a non-empty sequence of positive ints, got {strides!r}")
        if isinstance(octave_base_scale, bool) or not isinstance(octave_base_scale, numbers.Real) \
                or not octave_base_scale > 0:
            raise ValueError(f"octave_base_scale must be a positive number (cell side in strides), "
                             f"got {octave_base_scale!r}")
        if not _is_positive_int(topk):
            raise ValueError(f"topk must be a positive int (ATSS candidates per level), got {topk!r}")
        if any(h % s or w % s for s in strides):
            raise ValueError(f"input_size must be (H, W) multiples of every stride {list(strides)}, got {input_size}")
        self.input_size = (h, w)
        self.level_names = [f"stride {s}" for s in strides]
        cells = multilevel_grid_cells([(h // s, w // s) for s in strides], strides, octave_base_scale)
        self.num_level_priors = [c.shape[0] for c in cells]
        self.priors = torch.cat(cells)  # [N, 4]
        self.assigner = ATSSAssigner(topk=topk)
        self.name = name or f"ATSS top{topk}, grid cells {octave_base_scale:g}x stride"

    @classmethod
    def from_config(cls, cfg: NanoDetConfig, input_size=None, name: str | None = None) -> ATSSPriorAssigner:
        """The assigner NanoDet trains with under ``cfg``: its ``strides``, ``octave_base_scale``
        and ``atss_topk``, at ``input_size`` (H, W), by default ``(cfg.input_size, cfg.input_size)``."""
        if not isinstance(cfg, NanoDetConfig):
            hint = " (for a model, use from_model)" if isinstance(cfg, nn.Module) else ""
            raise TypeError(f"cfg must be a detviz.gfl.model.NanoDetConfig, got {type(cfg).__name__}{hint}")
        size = (cfg.input_size, cfg.input_size) if input_size is None else input_size
        return cls(size, strides=tuple(cfg.strides), octave_base_scale=cfg.octave_base_scale, topk=cfg.atss_topk,
                   name=name)

    @classmethod
    def from_model(cls, model: nn.Module, input_size=None, name: str | None = None) -> ATSSPriorAssigner:
        """:meth:`from_config` on ``model.cfg`` (a :class:`~detviz.gfl.model.NanoDet` from ``build_nanodet``)."""
        cfg = getattr(model, "cfg", None)
        if not isinstance(model, nn.Module) or not isinstance(cfg, NanoDetConfig):
            has = f".cfg {type(cfg).__name__}" if hasattr(model, "cfg") else "no .cfg"
            raise TypeError("model must be an nn.Module whose .cfg is a detviz.gfl.model.NanoDetConfig "
                            f"(e.g. build_nanodet()), got {type(model).__name__} with {has}")
        return cls.from_config(cfg, input_size, name)

    def assign(self, gt_boxes: Tensor) -> Tensor:
        """[M, 4] xyxy pixels of the input -> [N] int64 gt index per prior (< 0: not positive)."""
        return self.assign_with_ious(gt_boxes)[0]

    def assign_with_ious(self, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`assign` and the IoU ATSS computed on the way: ([N] gt index, [N, M] prior-gt IoU)."""
        steps = self.assigner.assign_with_steps(self.priors, self.num_level_priors, gt_boxes)
        return steps.result.gt_inds, steps.overlaps


class MaxIoUPriorAssigner:
    """torchvision's max-IoU :class:`Matcher` on fixed anchors.

    Args:
        anchors: Tensor[N, 4] xyxy pixels of the input, levels concatenated.
        num_level_priors: anchors per level, summing to N.
        input_size: (H, W) the anchors were made for.
        high_threshold, low_threshold, allow_low_quality_matches: the matcher's (RPN: 0.7, 0.3, True).
    """

    def __init__(self, anchors: Tensor, num_level_priors: Sequence[int], input_size, *,
                 high_threshold: float = 0.7, low_threshold: float = 0.3,
                 allow_low_quality_matches: bool = True, level_names: Sequence[str] | None = None,
                 name: str | None = None):
        if not isinstance(anchors, Tensor) or anchors.dim() != 2 or anchors.shape[-1] != 4:
            raise ValueError(f"anchors must be Tensor[N, 4] xyxy, got {getattr(anchors, 'shape', type(anchors))}")
        if sum(num_level_priors) != anchors.shape[0]:
            raise ValueError(f"num_level_priors must sum to the {anchors.shape[0]} anchors, got {list(num_level_priors)}")
        self.priors = anchors
        self.num_level_priors = list(num_level_priors)
        self.input_size = _check_input_size(input_size)
        self.level_names = list(level_names) if level_names else [f"level {i}" for i in range(len(num_level_priors))]
        self.matcher = Matcher(high_threshold, low_threshold, allow_low_quality_matches)
        self.name = name or f"max-IoU {high_threshold:g}/{low_threshold:g}" + (" + low-quality" if allow_low_quality_matches else "")

    @classmethod
    def from_anchor_generator(cls, generator, input_size, strides: Sequence[int], **kwargs) -> MaxIoUPriorAssigner:
        """Anchors of ``generator`` (an :class:`~detviz.anchors.AnchorGenerator`) for one padded input
        of ``input_size`` (H, W) with one feature map per stride; ``kwargs`` go to the constructor."""
        h, w = _check_input_size(input_size)
        anchors, counts = _anchors_on_grids(generator, (h, w), [(math.ceil(h / s), math.ceil(w / s)) for s in strides])
        kwargs.setdefault("level_names", [f"stride {s}" for s in strides])
        return cls(anchors, counts, (h, w), **kwargs)

    @classmethod
    def from_rpn(cls, model: nn.Module, input_size, name: str | None = None) -> MaxIoUPriorAssigner:
        """The assignment the RPN of ``model`` trains with, for one padded input of ``input_size``.

        Reads ``model.rpn.anchor_generator`` and ``model.rpn.proposal_matcher`` (``high_threshold``,
        ``low_threshold``, ``allow_low_quality_matches``): the same attribute names in
        :class:`detviz.rcnn.model.FasterRCNN` and torchvision's ``FasterRCNN``. The feature-map sizes
        come from running ``model.backbone`` once on ``zeros(1, 3, H, W)``, in eval mode and without
        gradients (so no BatchNorm statistic moves); every module's training flag is restored after.
        Level l's stride is ``(H // H_l, W // W_l)``, as the anchor generator computes it.

        Args:
            model: a Faster R-CNN with ``.backbone`` and ``.rpn``.
            input_size: (H, W) of the padded batch the RPN sees (after the model's transform, which
                resizes to ``min_size``/``max_size`` and pads to a multiple of 32).
            name: the report's name for the assigner; default from the matcher's thresholds.

        Returns:
            :class:`MaxIoUPriorAssigner` whose priors are the RPN's anchors, Tensor[N, 4] xyxy input pixels.
        """
        rpn = getattr(model, "rpn", None)
        generator, matcher = getattr(rpn, "anchor_generator", None), getattr(rpn, "proposal_matcher", None)
        thresholds = ("high_threshold", "low_threshold", "allow_low_quality_matches")
        if (not isinstance(getattr(model, "backbone", None), nn.Module) or not callable(generator)
                or not all(hasattr(matcher, t) for t in thresholds)):
            raise TypeError("model must be a Faster R-CNN (detviz.rcnn.model.FasterRCNN or torchvision's) with "
                            ".backbone, .rpn.anchor_generator and .rpn.proposal_matcher, got "
                            f"{type(model).__name__}")
        h, w = _check_input_size(input_size)
        grids = _backbone_grid_sizes(model.backbone, (h, w))
        anchors, counts = _anchors_on_grids(generator, (h, w), grids)
        strides = [(h // gh, w // gw) for gh, gw in grids]
        names = [f"stride {sh}" if sh == sw else f"stride {sh}x{sw}" for sh, sw in strides]
        return cls(anchors, counts, (h, w), **{t: getattr(matcher, t) for t in thresholds}, level_names=names,
                   name=name)

    def assign(self, gt_boxes: Tensor) -> Tensor:
        """[M, 4] xyxy pixels of the input -> [N] int64 gt index per prior (< 0: not positive)."""
        return self.assign_with_ious(gt_boxes)[0]

    def assign_with_ious(self, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`assign` and the IoU the matcher ranked: ([N] gt index, [N, M] prior-gt IoU)."""
        if gt_boxes.shape[0] == 0:
            return torch.full((self.priors.shape[0],), -1, dtype=torch.long), torch.zeros(self.priors.shape[0], 0)
        quality = box_iou(gt_boxes, self.priors)  # [M, N]
        return self.matcher(quality), quality.t()  # the same numbers as box_iou(priors, gt_boxes)


def _anchors_on_grids(generator, input_size: tuple[int, int],
                      grid_sizes: Sequence[tuple[int, int]]) -> tuple[Tensor, list[int]]:
    """Anchors of ``generator`` for one padded input of ``input_size`` (H, W) and feature maps of
    ``grid_sizes`` [(H_l, W_l)], as the RPN makes them: (Tensor[N, 4] xyxy, anchors per level)."""
    from torchvision.models.detection.image_list import ImageList

    h, w = input_size
    image_list = ImageList(torch.zeros(1, 3, h, w), [(h, w)])
    feature_maps = [torch.zeros(1, 1, gh, gw) for gh, gw in grid_sizes]  # only their sizes are read
    anchors = generator(image_list, feature_maps)[0]  # [N, 4]
    counts = [gh * gw * a for (gh, gw), a in zip(grid_sizes, generator.num_anchors_per_location())]
    return anchors, counts


def _backbone_grid_sizes(backbone: nn.Module, input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """(H_l, W_l) of every feature map ``backbone`` returns for one zero image of ``input_size``."""
    flags = [(module, module.training) for module in backbone.modules()]
    param = next(backbone.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    image = torch.zeros(1, 3, *input_size, dtype=dtype, device=param.device if param is not None else None)
    try:
        backbone.eval()  # eval: BatchNorm reads its running statistics instead of updating them
        with torch.no_grad():
            features = backbone(image)
    finally:
        for module, flag in flags:  # per module: a backbone may mix train and eval parts
            module.training = flag
    if isinstance(features, Tensor):
        features = [features]
    elif isinstance(features, dict):  # torchvision's FPN backbones: OrderedDict of named maps
        features = list(features.values())
    return [(int(f.shape[-2]), int(f.shape[-1])) for f in features]


@dataclass
class AssignmentReport:
    """Per-gt assignment statistics of one assigner over a dataset.

    Attributes:
        assigner: the assigner's name; input_size: (H, W); level_names: one per level.
        rows: one dict per gt: image_id, gt (index in its image), label, class_name,
            box (xyxy, input pixels), width, height, sqrt_area, size, aspect,
            num_pos, pos_per_level (list), best_iou (IoU of the best prior), best_level.
    """

    assigner: str
    input_size: tuple[int, int]
    level_names: list[str]
    rows: list[dict] = field(default_factory=list)

    def unassigned(self) -> list[dict]:
        """The rows of gts with no positive prior."""
        return [r for r in self.rows if r["num_pos"] == 0]

    def summary(self) -> dict:
        """Plain-dict totals: gts, no_positive, per size and aspect bucket ``{"gts", "no_positive"}``,
        positives per level, mean positives per gt."""
        def buckets(key, names):
            return {n: {"gts": sum(r[key] == n for r in self.rows),
                        "no_positive": sum(r[key] == n and r["num_pos"] == 0 for r in self.rows)} for n in names}
        per_level = [sum(r["pos_per_level"][i] for r in self.rows) for i in range(len(self.level_names))]
        return {
            "assigner": self.assigner,
            "gts": len(self.rows),
            "no_positive": len(self.unassigned()),
            "size": buckets("size", [n for n, _, _ in SIZE_BUCKETS]),
            "aspect": buckets("aspect", [n for n, _, _ in ASPECT_BUCKETS]),
            "positives_per_level": dict(zip(self.level_names, per_level)),
            "mean_positives_per_gt": sum(per_level) / len(self.rows) if self.rows else 0.0,
        }

    def to_dict(self) -> dict:
        """Everything as plain Python values (no tensors)."""
        return {"assigner": self.assigner, "input_size": list(self.input_size), "level_names": self.level_names,
                "rows": [dict(r) for r in self.rows], "summary": self.summary()}

    def table(self) -> str:
        """One line per gt, then the bucket totals."""
        header = f"{'image':>5} {'gt':>2} {'class':<11} {'w x h':>9} {'size':<6} {'aspect':<6} {'pos':>3} " \
                 f"{'per level':<12} {'best IoU':>8}"
        lines = [f"{self.assigner} at {self.input_size[0]} x {self.input_size[1]}", header]
        for r in self.rows:
            wh = f"{r['width']:.0f}x{r['height']:.0f}"
            lines.append(f"{r['image_id']:>5} {r['gt']:>2} {r['class_name'][:11]:<11} {wh:>9} {r['size']:<6} "
                         f"{r['aspect']:<6} {r['num_pos']:>3} {str(r['pos_per_level']):<12} {r['best_iou']:>8.3f}"
                         + ("  <- no positive" if r["num_pos"] == 0 else ""))
        s = self.summary()
        lines.append(f"gts without a positive: {s['no_positive']} of {s['gts']}")
        for key in ("size", "aspect"):
            lines.append(f"  by {key}: " + ", ".join(f"{n} {v['no_positive']}/{v['gts']}" for n, v in s[key].items()))
        lines.append("  positives per level: " + ", ".join(f"{n} {c}" for n, c in s["positives_per_level"].items()))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _targets(dataset, index: int) -> tuple[dict, int, int]:
    """(target, image height, image width) of a COCO dataset from its json, or from the image file's
    header when the json has no size; any other dataset's image is loaded to be measured."""
    coco = getattr(dataset, "coco", None)
    if coco is not None and hasattr(dataset, "image_ids"):
        image_id = dataset.image_ids[index]
        info = coco.imgs[image_id]
        if "height" in info and "width" in info:
            return dataset._target(image_id), int(info["height"]), int(info["width"])
        if hasattr(dataset, "image_dir"):
            width, height = _header_size(Path(dataset.image_dir) / info["file_name"])
            return dataset._target(image_id), height, width
    image, target = dataset[index]
    return target, int(image.shape[-2]), int(image.shape[-1])


def _header_size(path) -> tuple[int, int]:
    """(width, height) of an image file from its header; the pixels are not decoded."""
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as err:  # missing file, unknown format (PIL's UnidentifiedImageError is an OSError)
        raise OSError(f"cannot read image {path}: {err}") from err


def assignment_report(dataset, assigner, indices: Sequence[int] | None = None) -> AssignmentReport:
    """Run ``assigner`` on the gts of ``dataset`` resized to ``assigner.input_size``.

    Args:
        dataset: :class:`~detviz.datasets.CocoDetection` (or any dataset of ``(image, target)``
            with ``target["boxes"]`` xyxy pixels of the image).
        assigner: :class:`ATSSPriorAssigner`, :class:`MaxIoUPriorAssigner`, or any object with
            ``assign``, ``priors``, ``num_level_priors``, ``input_size``, ``level_names``, ``name``;
            its ``assign_with_ious`` (gt index and [N, M] IoU), when it has one, spares a second IoU.
        indices: dataset indices; default all.

    Returns:
        :class:`AssignmentReport`.
    """
    in_h, in_w = assigner.input_size
    names = getattr(dataset, "class_names", {})
    slices = level_slices(assigner.num_level_priors)
    report = AssignmentReport(assigner.name, (in_h, in_w), list(assigner.level_names))
    for index in (range(len(dataset)) if indices is None else indices):
        target, h, w = _targets(dataset, index)
        scale = torch.tensor([in_w / w, in_h / h, in_w / w, in_h / h])
        boxes = target["boxes"] * scale  # [M, 4] image pixels -> input pixels (plain resize)
        if hasattr(assigner, "assign_with_ious"):
            gt_inds, ious = assigner.assign_with_ious(boxes)  # [N], [N, M]
        else:
            gt_inds = assigner.assign(boxes)  # [N]
            ious = box_iou(assigner.priors, boxes) if boxes.shape[0] else torch.zeros(len(gt_inds), 0)  # [N, M]
        for g, box in enumerate(boxes):
            width, height = float(box[2] - box[0]), float(box[3] - box[1])
            is_pos = gt_inds == g
            best_iou, best_prior = ious[:, g].max(dim=0)
            best_level = next(i for i, s in enumerate(slices) if s.start <= int(best_prior) < s.stop)
            label = int(target["labels"][g])
            report.rows.append({
                "image_id": int(target.get("image_id", index)), "gt": g, "label": label,
                "class_name": str(names.get(label, label)) if isinstance(names, dict) else str(label),
                "box": [round(float(v), 2) for v in box], "width": width, "height": height,
                "sqrt_area": math.sqrt(width * height), "size": size_bucket(width, height),
                "aspect": aspect_bucket(width, height), "num_pos": int(is_pos.sum()),
                "pos_per_level": [int(is_pos[s].sum()) for s in slices],
                "best_iou": float(best_iou), "best_level": assigner.level_names[best_level],
            })
    return report


def compare_reports(reports: Sequence[AssignmentReport]) -> str:
    """Side-by-side text: per gt the positives of each assigner, then the no-positive counts per bucket."""
    first = reports[0]
    for other in reports[1:]:
        if [(r["image_id"], r["gt"]) for r in other.rows] != [(r["image_id"], r["gt"]) for r in first.rows]:
            raise ValueError("reports must cover the same gts (same dataset and indices) to be compared")
    lines = ["assigners: " + " | ".join(f"[{i}] {r.assigner}" for i, r in enumerate(reports))]
    lines.append(f"{'image':>5} {'gt':>2} {'class':<11} {'size':<6} " +
                 " ".join(f"{f'pos[{i}]':>6} {f'IoU[{i}]':>6}" for i in range(len(reports))))
    for k, row in enumerate(first.rows):
        cells = " ".join(f"{r.rows[k]['num_pos']:>6} {r.rows[k]['best_iou']:>6.3f}" for r in reports)
        lines.append(f"{row['image_id']:>5} {row['gt']:>2} {row['class_name'][:11]:<11} {row['size']:<6} {cells}")
    for key, buckets in (("size", SIZE_BUCKETS), ("aspect", ASPECT_BUCKETS)):
        for name, _, _ in buckets:
            counts = [r.summary()[key][name] for r in reports]
            if counts[0]["gts"]:
                lines.append(f"no positive, {key} {name}: " +
                             " | ".join(f"[{i}] {c['no_positive']}/{c['gts']}" for i, c in enumerate(counts)))
    return "\n".join(lines)
