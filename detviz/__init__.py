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

Submodules: boxes, anchors, assigners, losses, transforms, fixtures (imported with
the package); heads, models and viz (matplotlib) load on first use, e.g.
``detviz.viz.draw_boxes(ax, boxes)``.
"""
import importlib

from detviz import anchors, assigners, boxes, fixtures, losses, transforms

__version__ = "0.1.0"

_LAZY = ("heads", "models", "viz")

__all__ = ["anchors", "assigners", "boxes", "fixtures", "losses", "transforms", *_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"detviz.{name}")
    raise AttributeError(f"module 'detviz' has no attribute {name!r}")
