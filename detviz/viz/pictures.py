"""The pictures the commands write: detections drawn on an image at its own size, a grid of gts
next to predictions, the confusion matrix and the precision-recall curves of an evaluation.

Every function returns a matplotlib ``Figure`` on the Agg canvas (no pyplot state);
:func:`save_figure` writes one atomically as PNG or JPEG, chosen by the file's suffix.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detviz._io import write_atomic
from detviz.viz.browse import show_predictions
from detviz.viz.common import _image_hwc
from detviz.viz.draw import draw_boxes, show_image
from detviz.viz.errors import draw_confusion_matrix, draw_pr_curves

__all__ = ["new_figure", "save_figure", "figure_bytes", "detections_figure", "predictions_grid", "confusion_figure",
           "pr_curve_figure"]

DPI = 100
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
MAX_MATRIX_INCHES = 14.0  # per panel: 80 classes stay legible without a 9000-pixel figure
MIN_CAPTION_PIXELS = 240  # images smaller than this are drawn enlarged, so that captions stay readable
TITLE_PIXELS = 20


def new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1) -> tuple[Figure, list]:
    """A ``Figure`` of ``width`` x ``height`` inches on the Agg canvas and its ``nrows * ncols`` axes."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (.png, .jpg or .jpeg) atomically: the old file or the whole new one."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"{path}: a figure is written as {', '.join(FORMATS)}, got suffix {path.suffix!r}")
    write_atomic(path, figure_bytes(fig, FORMATS[path.suffix.lower()]))
    return path


def figure_bytes(fig: Figure, image_format: str = "png") -> bytes:
    """``fig`` encoded as a PNG (or JPEG) file, at ``DPI``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=image_format, dpi=DPI)
    return buffer.getvalue()


def _kept(prediction: Mapping, score_thresh: float) -> tuple:
    scores = np.asarray(prediction["scores"], dtype=np.float64)
    keep = scores >= score_thresh
    return (np.asarray(prediction["boxes"], dtype=np.float64).reshape(-1, 4)[keep],
            np.asarray(prediction["labels"]).astype(np.int64)[keep], scores[keep])


def detections_figure(image, prediction: Mapping, class_names: Mapping[int, str], score_thresh: float,
                      title: str | None = None) -> Figure:
    """``image`` with the detections scoring at least ``score_thresh``, captioned "name score".

    The image keeps its own pixel size (enlarged to ``MIN_CAPTION_PIXELS`` on its shorter side when
    smaller), under a ``TITLE_PIXELS`` strip holding the title (default: the count).

    Args:
        image: ``Tensor[3, H, W]`` in [0, 1] or ``ndarray[H, W, 3]``.
        prediction: ``dict(boxes=[P, 4] xyxy pixels of image, labels=[P], scores=[P])``.
        class_names: label -> name, for every label that occurs.
    """
    h, w = _image_hwc(image).shape[:2]
    zoom = max(1.0, MIN_CAPTION_PIXELS / min(h, w))
    width, height = w * zoom, h * zoom + TITLE_PIXELS  # the title in a strip above the image
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, h * zoom / height))
    show_image(ax, image)
    boxes, labels, scores = _kept(prediction, score_thresh)
    draw_boxes(ax, boxes, labels=labels, scores=scores, class_names=class_names)
    ax.set_axis_off()
    fig.text(3 / width, 1 - 3 / height, title or f"{len(boxes)} detections with score >= {score_thresh:g}",
             fontsize=9, va="top", ha="left")
    return fig


def predictions_grid(samples: Sequence[tuple], class_names: Mapping[int, str], score_thresh: float,
                     pairs_per_row: int = 2) -> Figure:
    """Gts next to predictions for each sample, ``pairs_per_row`` pairs per row.

    Args:
        samples: ``(image, target, prediction, caption)``: image ``Tensor[3, H, W]`` in [0, 1], target
            ``dict(boxes, labels)``, prediction ``dict(boxes, labels, scores)`` in the image's pixels.
    """
    if not samples:
        raise ValueError("predictions_grid needs at least one (image, target, prediction, caption) sample")
    rows = -(-len(samples) // pairs_per_row)
    fig, axes = new_figure(7.0 * pairs_per_row, 3.7 * rows, ncols=2 * pairs_per_row, nrows=rows)
    for ax in axes:
        ax.set_axis_off()
    for k, (image, target, prediction, caption) in enumerate(samples):
        ax_gt, ax_pred = axes[2 * k], axes[2 * k + 1]
        show_predictions(ax_gt, ax_pred, image, target, prediction, class_names=class_names,
                         score_thresh=score_thresh)
        ax_gt.set_title(f"{caption}: {ax_gt.get_title()}", fontsize=8)
        ax_pred.set_title(ax_pred.get_title(), fontsize=8)
        ax_gt.set_axis_off()
        ax_pred.set_axis_off()
    fig.tight_layout()
    return fig


def confusion_figure(matrix, labels: Sequence[str], score_thresh: float) -> Figure:
    """Counts and row-normalised fractions side by side (rows: gt class, columns: prediction)."""
    size = min(max(5.0, 0.55 * len(labels) + 2), MAX_MATRIX_INCHES)
    fig, axes = new_figure(2 * size, size, ncols=2)
    draw_confusion_matrix(axes[0], matrix, labels, title=f"confusion matrix, score >= {score_thresh:g} (counts)")
    draw_confusion_matrix(axes[1], matrix, labels, normalize=True, title="rows normalised: where each gt class went")
    fig.tight_layout()
    return fig


def pr_curve_figure(curves: Mapping, ap50: float | None = None) -> Figure:
    """Precision-recall at IoU 0.5 per class and their mean (``precision_recall_curves``' dict)."""
    fig, (ax,) = new_figure(5.5, 4.5)
    title = "precision-recall at IoU 0.5" + ("" if ap50 is None else f" (AP50 {ap50:.3f})")
    draw_pr_curves(ax, curves, title=title)
    fig.tight_layout()
    return fig
