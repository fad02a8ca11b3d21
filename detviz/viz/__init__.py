"""Matplotlib figures: the only part of detviz that draws.

Every function takes the ``Axes`` first and plain torch tensors or numpy arrays (copied to
numpy, never modified), draws, and returns the same ``Axes``; nothing calls ``plt.show()``.

* ``draw.py``: ``show_image``, ``blank_canvas``, ``draw_boxes``, ``draw_points``;
* ``assignment.py``: grid cells, a level's grid, ATSS candidates, label maps, IoU histograms,
  ``plot_report`` / ``plot_buckets`` for :mod:`detviz.analysis.assignment`;
* ``gfl.py``: ``draw_ltrb``, ``draw_distribution``;
* ``browse.py``: ``browse_dataset``, ``show_predictions`` (gts next to predictions);
* ``errors.py``: TIDE's dAP bars, confusion matrices, precision-recall curves, missed-gt reasons;
* ``common.py``: input checks and ``class_color``, shared by the others.
"""
from detviz.viz.assignment import (draw_assignment_map, draw_atss_candidates, draw_grid_cells, draw_iou_histogram,
                                   draw_level_grid, plot_buckets, plot_report)
from detviz.viz.browse import browse_dataset, show_predictions
from detviz.viz.common import BACKGROUND_COLOR, DEFAULT_COLOR, LEVEL_COLORS, class_color
from detviz.viz.draw import blank_canvas, draw_boxes, draw_points, show_image
from detviz.viz.errors import draw_confusion_matrix, draw_error_bars, draw_missed_reasons, draw_pr_curves
from detviz.viz.gfl import draw_distribution, draw_ltrb

__all__ = ["BACKGROUND_COLOR", "DEFAULT_COLOR", "LEVEL_COLORS", "class_color", "show_image", "blank_canvas", "draw_boxes", "draw_points", "draw_grid_cells",
           "draw_level_grid", "draw_atss_candidates", "draw_assignment_map", "draw_iou_histogram", "draw_ltrb",
           "draw_distribution", "plot_report", "plot_buckets", "browse_dataset", "show_predictions", "draw_error_bars",
           "draw_confusion_matrix", "draw_pr_curves", "draw_missed_reasons"]
