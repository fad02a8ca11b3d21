"""detviz: readable object-detection components, checked against traced tensors.

Conventions used in every module:

* Boxes are absolute-pixel ``xyxy`` float tensors unless a name says otherwise
  (``boxes_cxcywh``, ``ltrb``).
* Shape letters: B batch, N priors (anchors, grid cells, points), M ground-truth
  boxes, C classes, A anchors per location, L levels, K top-k, R = reg_max + 1
  distribution bins, H/W feature-map height/width.
* Feature maps are flattened row-major: index ``y * W + x``; levels are
  concatenated from the finest stride to the coarsest.
* Class labels are ``0 .. C-1``; the background label of dense heads is ``C``.

Layout (dependencies run downwards only: a family imports primitives, the engine imports
families; evaluation imports no model code; viz imports nothing that trains or evaluates):

* primitives, flat at the top: boxes, anchors, assigners, coders, samplers, losses, roi_ops,
  keypoints, trace (tensor traces), fixtures (the notes' traced values);
* one folder per detector family, each with its head, targets, model and inference:
  gfl (NanoDet-m), rcnn (Faster R-CNN), yolo (YOLOv3), sparse (the sparse RepPoints head);
  ``detviz.models`` gathers the four detectors;
* role folders: datasets (COCO loading, synthetic data, augmentation), engine (training loop,
  batches, optimiser, checkpoints, inference over a dataset), evaluation (COCO metrics),
  analysis (assignment reports), viz (matplotlib; the only code that draws).

boxes, anchors, assigners, losses and fixtures are imported with the package; the folders
load on first use, e.g. ``detviz.viz.draw_boxes(ax, boxes)``.
"""
import importlib

from detviz import anchors, assigners, boxes, fixtures, losses

__version__ = "0.1.0"

_LAZY = ("coders", "samplers", "roi_ops", "keypoints", "trace", "gfl", "rcnn", "yolo", "sparse", "models",
         "datasets", "engine", "evaluation", "analysis", "viz")

__all__ = ["anchors", "assigners", "boxes", "fixtures", "losses", *_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"detviz.{name}")
    raise AttributeError(f"module 'detviz' has no attribute {name!r}")
