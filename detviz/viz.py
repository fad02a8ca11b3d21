"""Matplotlib visualizers: boxes, grid cells, ATSS candidates and GFL regression targets.

This is the only detviz module that imports matplotlib. Every drawing function takes the
``Axes`` first and plain torch tensors or numpy arrays (copied to numpy, never modified),
draws, and returns the same ``Axes``. Nothing here calls ``plt.show()`` or touches pyplot.

Image frame used throughout: x to the right, y down, units are pixels of the (padded)
network input, and pixel ``(row i, col j)`` covers ``[j, j+1] x [i, i+1]``. A level with
stride ``s`` therefore has cell ``(x, y)`` spanning ``[x*s, (x+1)*s]`` with its centre at
``((x + 0.5) * s, (y + 0.5) * s)``, which is where the ATSS grid cells are centred.

Call ``show_image`` or ``blank_canvas`` first: they fix the view to the image, so later
calls only add artists and never rescale the axes.
"""
from __future__ import annotations

import math
import numbers
import operator

import matplotlib
import numpy as np
import torch
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import is_color_like, to_rgba
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

__all__ = [
    "class_color", "show_image", "blank_canvas", "draw_boxes", "draw_points", "draw_grid_cells",
    "draw_level_grid", "draw_atss_candidates", "draw_assignment_map", "draw_iou_histogram",
    "draw_ltrb", "draw_distribution",
]

BACKGROUND_COLOR = (0.75, 0.75, 0.75, 1.0)  # class_color(num_classes, num_classes)
DEFAULT_COLOR = "tab:blue"
LEVEL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")
# tab20 lists a dark and a light shade of each hue in turn; taking the ten dark shades first
# keeps neighbouring class ids visibly different.
_PALETTE = tuple(matplotlib.colormaps["tab20"](i) for i in (*range(0, 20, 2), *range(1, 20, 2)))


# ----------------------------------------------------------------------------- input helpers
def _array(x, name: str, layout: str, *, ndim: int | None = None, last_dim: int | None = None) -> np.ndarray:
    """A numpy copy of ``x`` (tensor, array or list); ValueError naming ``layout`` on a wrong shape."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        arr = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy().copy()
    else:
        arr = np.array(x, copy=True)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be a numeric {layout} tensor or array, got dtype {arr.dtype}")
    wrong_last = last_dim is not None and (arr.ndim == 0 or arr.shape[-1] != last_dim)
    if (ndim is not None and arr.ndim != ndim) or wrong_last:
        raise ValueError(f"{name} must be {layout}, got shape {list(arr.shape)}")
    return arr


def _boxes(boxes, name: str = "boxes") -> np.ndarray:
    b = _array(boxes, name, "[N, 4] xyxy", ndim=2, last_dim=4).astype(np.float64)
    if not np.isfinite(b).all():
        raise ValueError(f"{name} must be finite [N, 4] xyxy boxes, got NaN/Inf")
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        raise ValueError(f"{name} must be xyxy with x2 >= x1 and y2 >= y1 (convert xywh/cxcywh first)")
    return b


def _int_array(x, name: str, layout: str, length: int | None = None) -> np.ndarray:
    a = _array(x, name, layout, ndim=1)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be {layout} of an integer dtype, got {a.dtype}")
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name} must be {layout} with one entry per box ({length}), got shape {list(a.shape)}")
    return a


def _size(size, name: str) -> tuple[int, int]:
    ok = isinstance(size, (tuple, list)) and len(size) == 2
    ok = ok and all(isinstance(s, numbers.Integral) and s > 0 for s in size)
    if not ok:
        raise ValueError(f"{name} must be (h, w) with two positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def _positive(value, name: str) -> float:
    if not (isinstance(value, numbers.Real) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _colors(colors, labels, n: int) -> list:
    """One RGBA per item: explicit ``colors`` (one or n), else by class label, else the default."""
    if colors is None:
        return [class_color(lab) for lab in labels] if labels is not None else [to_rgba(DEFAULT_COLOR)] * n
    if is_color_like(colors):
        return [to_rgba(colors)] * n
    if len(colors) != n:
        raise ValueError(f"colors must be one colour or a list of {n} colours, got {len(colors)}")
    return [to_rgba(c) for c in colors]


def _corners(boxes: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = boxes.T
    return np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1),
                     np.stack([x2, y2], -1), np.stack([x1, y2], -1)], axis=1)  # [N, 4] -> [N, 4 corners, 2]


def _set_frame(ax, h: int, w: int) -> None:
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)  # y grows downwards, as in image rows
    ax.set_aspect("equal")


# ----------------------------------------------------------------------------- colours and images
def class_color(label, num_classes: int | None = None) -> tuple[float, float, float, float]:
    """RGBA colour of a class id, identical in every figure (tab20, dark shades first, cycled).

    With ``num_classes`` given, ``label == num_classes`` is the dense heads' background and
    comes back light grey.
    """
    label = int(label)
    if num_classes is not None and label == num_classes:
        return BACKGROUND_COLOR
    if label < 0 or (num_classes is not None and label > num_classes):
        top = "" if num_classes is None else f", {num_classes} = background"
        raise ValueError(f"label must be a class id >= 0{top}, got {label}")
    return _PALETTE[label % len(_PALETTE)]


def _image_hwc(image) -> np.ndarray:
    """``Tensor[C, H, W]`` or ``ndarray[H, W, C]`` (C = 1 or 3, uint8 or float in [0, 1]) -> HWC copy."""
    accepted = "a torch Tensor[3 or 1, H, W] (CHW) or a numpy ndarray[H, W, 3 or 1] (HWC)"
    is_tensor = isinstance(image, torch.Tensor)
    if not (is_tensor or isinstance(image, np.ndarray)):
        raise ValueError(f"image must be {accepted}, got {type(image).__name__}")
    img = _array(image, "image", accepted)
    if is_tensor and img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.transpose(1, 2, 0)  # [C, H, W] -> [H, W, C]
    elif is_tensor or img.ndim != 3 or img.shape[2] not in (1, 3):
        swapped = img.ndim == 3 and (img.shape[0] in (1, 3)) != (img.shape[2] in (1, 3))
        hint = " (it looks like the other layout)" if swapped else ""
        raise ValueError(f"image must be {accepted}, got {type(image).__name__} of shape {list(img.shape)}{hint}")
    if np.issubdtype(img.dtype, np.floating):
        if img.size and (img.min() < 0 or img.max() > 1):
            raise ValueError(f"a float image must lie in [0, 1], got range [{img.min():.3g}, {img.max():.3g}] "
                             "(undo the mean/std normalisation first)")
    elif img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {img.dtype}")
    return img


def show_image(ax, image):
    """Draw an image in the pixel frame (x right, y down, pixel edges on integers).

    Args:
        image: torch ``Tensor[3 or 1, H, W]`` (CHW) or numpy ``ndarray[H, W, 3 or 1]`` (HWC),
            uint8 in [0, 255] or float in [0, 1], RGB.
    Returns:
        ax, with its limits fixed to ``[0, W] x [H, 0]``.
    """
    img = _image_hwc(image)
    h, w = img.shape[:2]
    vmax = 255 if img.dtype == np.uint8 else 1.0
    if img.shape[2] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=vmax, extent=(0, w, h, 0), interpolation="nearest")
    else:
        ax.imshow(img, extent=(0, w, h, 0), interpolation="nearest")
    _set_frame(ax, h, w)
    return ax


def blank_canvas(ax, size, pad_shape=None, color="white", pad_color="0.6"):
    """Set up an empty image frame of ``size = (h, w)`` pixels, for drawing without a photo.

    Args:
        pad_shape: optional ``(h_pad, w_pad) >= size``, the padded input; the padding is
            added on the right and bottom (as batch collation does) and drawn hatched.
    """
    h, w = _size(size, "size")
    ph, pw = (h, w) if pad_shape is None else _size(pad_shape, "pad_shape")
    if ph < h or pw < w:
        raise ValueError(f"pad_shape must be (h, w) >= size {(h, w)}, got {(ph, pw)}")
    ax.set_facecolor(color)
    for xy, pad_w, pad_h in (((w, 0), pw - w, ph), ((0, h), w, ph - h)):
        if pad_w > 0 and pad_h > 0:
            ax.add_patch(Rectangle(xy, pad_w, pad_h, facecolor="none", edgecolor=pad_color, hatch="//", linewidth=0))
    if (ph, pw) != (h, w):
        ax.add_patch(Rectangle((0, 0), w, h, fill=False, edgecolor="black", linewidth=1))
    _set_frame(ax, ph, pw)
    return ax


# ----------------------------------------------------------------------------- boxes, points, cells
def _caption(label, score, class_names) -> str:
    name = "" if label is None else (class_names[label] if class_names is not None else str(label))
    return " ".join(p for p in (name, None if score is None else f"{score:.2f}") if p)


def draw_boxes(ax, boxes, labels=None, scores=None, class_names=None, colors=None, linestyle="-",
               linewidth=1.5, alpha=1.0, fill=False, show_text=True):
    """Draw ``boxes`` (``[N, 4]`` xyxy pixels) with "name score" captions above their top-left corner.

    Args:
        labels: optional ``[N]`` class ids (pick the colour and the name); scores: optional ``[N]``.
        class_names: optional sequence mapping class id -> name (needs ``labels``).
        colors: one colour or ``N`` colours; default: by class, or one colour without labels.
        fill: also fill each box with its colour at ``0.25 * alpha``.
    """
    b = _boxes(boxes)
    n = len(b)
    labs = None if labels is None else _int_array(labels, "labels", "[N] class ids", n)
    scs = None if scores is None else _array(scores, "scores", "[N] scores", ndim=1)
    if scs is not None and len(scs) != n:
        raise ValueError(f"scores must be [N] scores with one entry per box ({n}), got shape {list(scs.shape)}")
    if class_names is not None:
        known = set(class_names) if isinstance(class_names, dict) else set(range(len(class_names)))
        if labs is None or (n and not set(labs.tolist()) <= known):
            raise ValueError(f"class_names (a list, or a dict label -> name) needs a name for every label in "
                             f"{sorted(known)}, got {None if labs is None else labs.tolist()}")
    for i, ((x1, y1, x2, y2), c) in enumerate(zip(b, _colors(colors, labs, n))):
        face = to_rgba(c, 0.25 * alpha) if fill else "none"
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, facecolor=face, edgecolor=to_rgba(c, alpha),
                               linestyle=linestyle, linewidth=linewidth))
        text = _caption(None if labs is None else int(labs[i]), None if scs is None else float(scs[i]), class_names)
        if show_text and text:
            ax.text(x1, y1, text, fontsize=7, color="white", va="bottom", ha="left", clip_on=True,
                    bbox=dict(facecolor=to_rgba(c, 0.8 * alpha), edgecolor="none", pad=1))
    return ax


def draw_points(ax, points, colors=None, size=20.0, marker="o", labels=None):
    """Scatter ``points`` (``[N, 2]`` xy pixels); ``labels`` (``[N]`` class ids) colour them by class."""
    p = _array(points, "points", "[N, 2] xy", ndim=2, last_dim=2)
    labs = None if labels is None else _int_array(labels, "labels", "[N] class ids", len(p))
    if len(p):
        ax.scatter(p[:, 0], p[:, 1], s=size, c=_colors(colors, labs, len(p)), marker=marker, zorder=3)
    return ax


def _index_array(index, n: int, name: str) -> np.ndarray:
    a = _array(index, name, f"[K] indices in [0, {n}) or a bool mask [{n}]", ndim=1)
    if a.dtype == np.bool_ and len(a) == n:
        return np.nonzero(a)[0]
    if not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < 0 or a.max() >= n)):
        raise ValueError(f"{name} must be [K] indices in [0, {n}) or a bool mask [{n}], got {a.tolist()}")
    return a


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
                         level_colors=LEVEL_COLORS, gt_color="black", legend=True):
    """Draw one gt's ATSS candidates (Zhang et al., CVPR 2020): a colour per level, positives solid, rejected dashed.

    Args:
        grid_cells: ``[N, 4]`` xyxy priors of all levels, concatenated.
        candidate_idxs: ``[K*L, M]`` int indices into ``grid_cells`` (K closest centres per level).
        is_pos: ``[K*L, M]`` bool, ``IoU >= mean + std`` and centre inside the gt.
        gt_bboxes: ``[M, 4]`` xyxy; gt_index: which column (gt) to draw.
        num_level_bboxes: optional ``[L]`` cells per level; without it a candidate's level is
            read from its prior's size (one size per level, as ATSS priors have).
    """
    cells = _boxes(grid_cells, "grid_cells")
    (gx1, gy1, gx2, gy2), idx, chosen = _gt_candidates(cells, candidate_idxs, is_pos, gt_bboxes, gt_index)
    levels = _levels_of(idx, cells, num_level_bboxes)
    edge = [level_colors[lvl % len(level_colors)] for lvl in levels]
    for (x1, y1, x2, y2), c, positive in zip(cells[idx], edge, chosen):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=c,
                               linestyle="-" if positive else "--", linewidth=1.5 if positive else 0.8))
    centres = (cells[idx, :2] + cells[idx, 2:]) / 2  # [K*L, 2]
    face = [c if positive else "white" for c, positive in zip(edge, chosen)]
    ax.scatter(centres[:, 0], centres[:, 1], s=14, c=face, edgecolors=edge, zorder=3)
    ax.add_patch(Rectangle((gx1, gy1), gx2 - gx1, gy2 - gy1, fill=False, edgecolor=gt_color, linewidth=3))
    ax.plot([(gx1 + gx2) / 2], [(gy1 + gy2) / 2], marker="+", markersize=8, color=gt_color)
    if legend:
        handles = [Line2D([], [], color=level_colors[lvl % len(level_colors)], label=f"level {lvl}")
                   for lvl in np.unique(levels)]
        handles += [Line2D([], [], color="0.3", label="positive"),
                    Line2D([], [], color="0.3", linestyle="--", linewidth=0.8, label="rejected"),
                    Line2D([], [], color=gt_color, linewidth=3, label=f"gt {operator.index(gt_index)}")]
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


# ----------------------------------------------------------------------------- GFL regression targets
def draw_ltrb(ax, point, ltrb, stride=1.0, color="tab:red", show_box=True, show_text=True):
    """Arrows from ``point`` (xy pixels) to the box sides at distances ``ltrb`` (``[4]``, stride units).

    The box the distances describe, ``(x - l*s, y - t*s, x + r*s, y + b*s)``, is drawn dashed.
    """
    x, y = _array(point, "point", "[2] xy", ndim=1, last_dim=2).astype(np.float64)
    d = _array(ltrb, "ltrb", "[4] left, top, right, bottom distances", ndim=1, last_dim=4).astype(np.float64)
    if (d < 0).any():
        raise ValueError(f"ltrb must be [4] distances >= 0 (the point lies inside its box), got {d.tolist()}")
    left, top, right, bottom = d * _positive(stride, "stride")
    ends = ((x - left, y), (x, y - top), (x + right, y), (x, y + bottom))
    for (ex, ey), side, value in zip(ends, "ltrb", d):
        ax.annotate("", xy=(ex, ey), xytext=(x, y),
                    arrowprops=dict(arrowstyle="->", color=color, lw=1.5, shrinkA=0, shrinkB=0))
        if show_text:
            horizontal = side in "lr"
            ax.text((x + ex) / 2, (y + ey) / 2, f"{side}={value:.2f}", fontsize=7, color=color, clip_on=True,
                    ha="center" if horizontal else "left", va="bottom" if horizontal else "center")
    if show_box:
        ax.add_patch(Rectangle((x - left, y - top), left + right, top + bottom, fill=False, edgecolor=color,
                               linestyle="--"))
    ax.plot([x], [y], marker="o", markersize=4, color=color)
    return ax


def draw_distribution(ax, probs, target=None, color="tab:blue", target_color="tab:red", show_expectation=True):
    """Bar chart of one side's ``[R]`` bin probabilities, with the regression target marked.

    DFL (GFL, Li et al., NeurIPS 2020) pulls probability onto the two bins around the target ``t`` with weights
    ``(right - t)`` and ``(t - left)``; those bins are outlined. The dotted line is the
    decoded distance ``sum_i i * P(i)`` (GFL's integral).
    """
    p = _array(probs, "probs", "[R] probabilities over reg_max + 1 bins", ndim=1).astype(np.float64)
    if len(p) < 2 or (p < 0).any() or p.sum() <= 0:
        raise ValueError("probs must be [R] non-negative probabilities with R >= 2 (softmax the logits first), "
                         f"got {p.tolist()}")
    r = len(p)
    bins = np.arange(r)
    bars = ax.bar(bins, p, width=0.8, color=color, label="P(bin)")
    if target is not None:
        t = float(target)
        if not 0 <= t <= r - 1:
            raise ValueError(f"target must lie in [0, R - 1] = [0, {r - 1}] (stride units), got {t}")
        lo = min(math.floor(t), r - 2)
        for b in (lo, lo + 1):
            bars[b].set_edgecolor(target_color)
            bars[b].set_linewidth(2)
        ax.axvline(t, color=target_color, linestyle="--",
                   label=f"target = {t:.2f}\nDFL: {lo + 1 - t:.2f} on {lo}, {t - lo:.2f} on {lo + 1}")
    if show_expectation:
        expected = float((p * bins).sum() / p.sum())
        ax.axvline(expected, color="black", linestyle=":", label=f"expected = {expected:.2f}")
    ax.set_xticks(bins)
    ax.set_ylim(0, 1.6 * p.max())  # headroom for the legend
    ax.set_xlabel("distance bin (stride units)")
    ax.set_ylabel("probability")
    ax.legend(fontsize=7)
    return ax
