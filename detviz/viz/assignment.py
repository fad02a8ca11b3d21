"""Drawing priors and their assignment: grid cells, a level's grid, ATSS candidates, label maps,
IoU histograms, and the figures of an assignment report (:mod:`detviz.analysis.assignment`)."""
from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from detviz.analysis.assignment import ASPECT_BUCKETS, SIZE_BUCKETS, AssignmentReport
from detviz.viz.common import (LEVEL_COLORS, _array, _boxes, _corners, _index_array, _int_array, _positive, _size,
                               class_color, plain_log_axis)

__all__ = ["draw_grid_cells", "draw_level_grid", "draw_atss_candidates", "draw_assignment_map",
           "draw_iou_histogram", "plot_report", "plot_buckets"]


def draw_grid_cells(ax, cells, highlight=None, color="0.6", alpha=0.5, highlight_color="tab:red", linewidth=0.5):
    """Outline prior boxes ``cells`` (``[N, 4]`` xyxy); ``highlight`` (indices or bool mask) drawn emphasised."""
    c = _boxes(cells, "cells")
    ax.add_collection(PolyCollection(_corners(c), facecolors="none", edgecolors=to_rgba(color, alpha),
                                     linewidths=linewidth), autolim=False)
    if highlight is not None:
        chosen = c[_index_array(highlight, len(c), "highlight")]
        ax.add_collection(PolyCollection(_corners(chosen), facecolors=to_rgba(highlight_color, 0.15),
                                         edgecolors=highlight_color, linewidths=1.5), autolim=False)
        centres = (chosen[:, :2] + chosen[:, 2:]) / 2  # [K, 2]
        ax.scatter(centres[:, 0], centres[:, 1], s=8, color=highlight_color, zorder=3)
    return ax


def draw_level_grid(ax, featmap_size, stride, image_size=None, color="0.5", linewidth=0.5, show_centers=True,
                    center_size=4.0):
    """Draw the cell borders and centres of one level (``featmap_size = (h, w)`` cells of ``stride`` px).

    Args:
        image_size: optional ``(h, w)`` in pixels; lines and centres are cut at the image edge
            (cells that hang over it when the size is not a multiple of the stride).
    """
    fh, fw = _size(featmap_size, "featmap_size")
    s = _positive(stride, "stride")
    h, w = (fh * s, fw * s) if image_size is None else _size(image_size, "image_size")
    right, bottom = min(fw * s, w), min(fh * s, h)
    xs = [x for x in np.arange(fw + 1) * s if x <= w]
    ys = [y for y in np.arange(fh + 1) * s if y <= h]
    lines = [[(x, 0), (x, bottom)] for x in xs] + [[(0, y), (right, y)] for y in ys]
    ax.add_collection(LineCollection(lines, colors=color, linewidths=linewidth), autolim=False)
    if show_centers:
        cx, cy = np.meshgrid((np.arange(fw) + 0.5) * s, (np.arange(fh) + 0.5) * s)  # [h, w] each
        inside = (cx < w) & (cy < h)
        ax.scatter(cx[inside], cy[inside], s=center_size, color=color, zorder=3)
    return ax


# ----------------------------------------------------------------------------- ATSS assignment
def _levels_of(idx: np.ndarray, cells: np.ndarray, num_level_bboxes) -> np.ndarray:
    """Level of each grid-cell index: from the per-level counts, else from the prior's size."""
    if num_level_bboxes is not None:
        counts = _int_array(num_level_bboxes, "num_level_bboxes", "[L] cell counts per level")
        if counts.sum() != len(cells):
            raise ValueError(f"num_level_bboxes must sum to the number of grid cells ({len(cells)}), "
                             f"got {counts.tolist()}")
        return np.searchsorted(np.cumsum(counts), idx, side="right")
    widths = np.round(cells[:, 2] - cells[:, 0], 3)  # one prior size per level (octave scale * stride)
    return np.searchsorted(np.unique(widths), widths[idx])


def _gt_candidates(cells: np.ndarray, candidate_idxs, is_pos, gt_bboxes, gt_index):
    """Check the candidate table; return gt ``gt_index``'s box, candidate indices [K*L] and is_pos [K*L]."""
    gts = _boxes(gt_bboxes, "gt_bboxes")
    idxs = _array(candidate_idxs, "candidate_idxs", "[K*L, M] int64", ndim=2)
    pos = _array(is_pos, "is_pos", "[K*L, M] bool", ndim=2)
    if idxs.shape != pos.shape or idxs.shape[1] != len(gts):
        raise ValueError(f"candidate_idxs and is_pos must both be [K*L, M] with M = {len(gts)} gts, "
                         f"got {list(idxs.shape)} and {list(pos.shape)}")
    if not np.issubdtype(idxs.dtype, np.integer) or pos.dtype != np.bool_:
        raise ValueError(f"candidate_idxs must be integer and is_pos bool, got {idxs.dtype} and {pos.dtype}")
    if idxs.size and (idxs.min() < 0 or idxs.max() >= len(cells)):
        raise ValueError(f"candidate_idxs must index grid_cells, i.e. lie in [0, {len(cells)}), "
                         f"got range [{idxs.min()}, {idxs.max()}]")
    try:
        g = operator.index(gt_index)  # int, numpy integer or 0-d integer tensor
    except TypeError:
        g = -1
    if not 0 <= g < len(gts):
        raise ValueError(f"gt_index must be an int in [0, {len(gts)}), got {gt_index!r}")
    return gts[g], idxs[:, g], pos[:, g]


def draw_atss_candidates(ax, grid_cells, candidate_idxs, is_pos, gt_bboxes, gt_index, num_level_bboxes=None,
                         level_colors=LEVEL_COLORS, gt_color="black", legend=True, strides=None, show_boxes=False):
    """Draw one gt's ATSS candidates (Zhang et al., CVPR 2020): their centres around the gt, a colour
    per level, positives filled and rejected ones hollow; their prior boxes too with ``show_boxes``.

    Args:
        grid_cells: ``[N, 4]`` xyxy priors of all levels, concatenated.
        candidate_idxs: ``[K*L, M]`` int indices into ``grid_cells`` (K closest centres per level).
        is_pos: ``[K*L, M]`` bool, ``IoU >= mean + std`` and centre inside the gt.
        gt_bboxes: ``[M, 4]`` xyxy; gt_index: which column (gt) to draw.
        num_level_bboxes: optional ``[L]`` cells per level; without it a candidate's level is
            read from its prior's size (one size per level, as ATSS priors have).
        strides: optional ``[L]`` strides: the legend then names levels by stride ("stride 8").
        show_boxes: also draw each candidate's prior box (solid: positive, dashed: rejected).
    """
    cells = _boxes(grid_cells, "grid_cells")
    (gx1, gy1, gx2, gy2), idx, chosen = _gt_candidates(cells, candidate_idxs, is_pos, gt_bboxes, gt_index)
    levels = _levels_of(idx, cells, num_level_bboxes)
    edge = [level_colors[lvl % len(level_colors)] for lvl in levels]
    if show_boxes:
        for (x1, y1, x2, y2), c, positive in zip(cells[idx], edge, chosen):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=c,
                                   linestyle="-" if positive else "--", linewidth=1.5 if positive else 0.8))
    centres = (cells[idx, :2] + cells[idx, 2:]) / 2  # [K*L, 2]
    face = [c if positive else "white" for c, positive in zip(edge, chosen)]
    ax.scatter(centres[:, 0], centres[:, 1], s=22, c=face, edgecolors=edge, linewidths=1.2, zorder=3)
    ax.add_patch(Rectangle((gx1, gy1), gx2 - gx1, gy2 - gy1, fill=False, edgecolor=gt_color, linewidth=2))
    ax.plot([(gx1 + gx2) / 2], [(gy1 + gy2) / 2], marker="+", markersize=8, color=gt_color)
    if legend:
        def level_name(lvl):
            return f"stride {strides[lvl]}" if strides is not None else f"level {lvl}"
        handles = [Line2D([], [], color=level_colors[lvl % len(level_colors)], marker="o", linestyle="",
                          label=level_name(lvl)) for lvl in np.unique(levels)]
        handles += [Line2D([], [], color="0.3", marker="o", linestyle="", label="positive"),
                    Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="", label="rejected"),
                    Line2D([], [], color=gt_color, linewidth=2, label=f"gt {operator.index(gt_index)}")]
        ax.legend(handles=handles, fontsize=7, loc="upper right")
    return ax


def draw_assignment_map(ax, labels, featmap_size, stride, num_classes, image_size=None, alpha=0.5):
    """Fill one level's cells by their assigned class; background cells (``num_classes``) stay clear.

    Args:
        labels: ``[h*w]`` int class ids of one level, row-major (slice it out of the
            concatenated ``[N]`` labels first).
        image_size: optional ``(h, w)`` pixels; cells are cut at the image edge.
    """
    fh, fw = _size(featmap_size, "featmap_size")
    s = _positive(stride, "stride")
    layout = f"[h*w] = [{fh * fw}] class ids of one level (featmap_size {(fh, fw)})"
    lab = _int_array(labels, "labels", layout)
    if len(lab) != fh * fw:
        raise ValueError(f"labels must be {layout}, got shape {list(lab.shape)}; "
                         "slice one level out of the concatenated labels")
    if lab.size and (lab.min() < 0 or lab.max() > num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}] ({num_classes} = background), "
                         f"got range [{lab.min()}, {lab.max()}]")
    h, w = (fh * s, fw * s) if image_size is None else _size(image_size, "image_size")
    fg = np.nonzero(lab != num_classes)[0]
    x, y = (fg % fw) * s, (fg // fw) * s  # flat row-major index -> cell column, row -> pixels
    cells = np.stack([x, y, np.minimum(x + s, w), np.minimum(y + s, h)], axis=1)  # [P, 4] xyxy
    on_image = (x < w) & (y < h)
    colors = [to_rgba(class_color(c), alpha) for c in lab[fg][on_image]]
    ax.add_collection(PolyCollection(_corners(cells[on_image]), facecolors=colors, edgecolors="none", zorder=0.5),
                      autolim=False)
    return ax


def draw_iou_histogram(ax, overlaps, mean=None, std=None, threshold=None, bins=10):
    """Histogram of one gt's candidate IoUs with the ATSS threshold ``mean + std`` marked.

    ``std`` is the unbiased (n - 1) standard deviation, matching NanoDet's ``torch.std``; the
    values not given are computed from ``overlaps`` (``[K*L]`` IoUs in [0, 1]).
    """
    iou = _array(overlaps, "overlaps", "[K*L] IoUs of one gt's candidates", ndim=1).astype(np.float64)
    if std is None and len(iou) < 2:
        raise ValueError(f"overlaps must hold at least 2 IoUs to compute an unbiased std, got {len(iou)}; pass std")
    mean = float(iou.mean()) if mean is None else float(mean)
    std = float(iou.std(ddof=1)) if std is None else float(std)
    counts, _, _ = ax.hist(iou, bins=bins, range=(0.0, 1.0), color="0.7", edgecolor="white")
    ax.axvline(mean, color="tab:blue", linestyle="--", label=f"mean = {mean:.3f}")
    if threshold is None:
        ax.axvline(mean + std, color="tab:red",
                   label=f"threshold = mean + std = {mean + std:.3f}\n(unbiased std = {std:.3f})")
    else:
        ax.axvline(float(threshold), color="tab:red", label=f"threshold = {float(threshold):.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.6 * max(counts.max(), 1))  # headroom for the legend
    ax.set_xlabel("IoU with the gt box")
    ax.set_ylabel("candidates")
    ax.legend(fontsize=7)
    return ax


def plot_report(ax, report: AssignmentReport):
    """Positives per gt against its sqrt(area) (input pixels), gts without a positive in red,
    COCO's 32 / 96 bucket borders dashed. Returns ``ax``."""
    sides = [r["sqrt_area"] for r in report.rows]
    pos = [r["num_pos"] for r in report.rows]
    colors = ["tab:red" if p == 0 else "tab:blue" for p in pos]
    ax.scatter(sides, pos, c=colors, s=25)
    for border in (32, 96):
        ax.axvline(border, color="0.5", linestyle="--", linewidth=0.8)
    plain_log_axis(ax, "x")
    ax.set_xlabel("sqrt(area) of the gt, input pixels")
    ax.set_ylabel("positive priors")
    ax.set_title(f"{report.assigner}: {len(report.unassigned())} of {len(report.rows)} gts without a positive",
                 fontsize=9)
    return ax


def plot_buckets(ax, reports: Sequence[AssignmentReport], key: str = "size"):
    """Grouped bars: fraction of gts without a positive per ``key`` bucket ("size" or "aspect"),
    one bar per report. Returns ``ax``."""
    if key not in ("size", "aspect"):
        raise ValueError(f"key must be 'size' or 'aspect', got {key!r}")
    names = [n for n, _, _ in (SIZE_BUCKETS if key == "size" else ASPECT_BUCKETS)]
    width = 0.8 / len(reports)
    for i, report in enumerate(reports):
        s = report.summary()[key]
        fractions = [s[n]["no_positive"] / s[n]["gts"] if s[n]["gts"] else 0.0 for n in names]
        ax.bar([j + i * width for j in range(len(names))], fractions, width=width, label=report.assigner)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax.set_xticklabels([f"{n}\n({report.summary()[key][n]['gts']} gts)" for n in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction without a positive")
    ax.legend(fontsize=8)
    return ax
