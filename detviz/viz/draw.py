"""Drawing on an image: the image itself or a blank canvas, boxes with class names, points.

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

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle

from detviz.viz.common import _array, _boxes, _colors, _image_hwc, _int_array, _set_frame, _size

__all__ = ["show_image", "blank_canvas", "draw_boxes", "draw_points"]


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


def _caption_size(ax) -> tuple[float, float]:
    """Data units per typographic point along x and y in ``ax`` as it is laid out now."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    box = ax.get_window_extent()  # display pixels
    points = ax.figure.dpi / 72  # pixels per point
    return abs(x1 - x0) / max(box.width, 1.0) * points, abs(y1 - y0) / max(box.height, 1.0) * points


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_captions(ax, anchors: list, texts: list, colors: list, order, fontsize: float) -> int:
    """Put each caption above its box's top-left corner, or just inside it when there is no room above
    (the top of the view, or another caption); a caption that fits neither place is left out, one
    that would pass the right edge of the view moves left.
    Captions are placed in ``order`` (the best scores first). Returns how many were left out."""
    per_x, per_y = _caption_size(ax)
    top, right = min(ax.get_ylim()), max(ax.get_xlim())
    height = (fontsize + 2.5) * per_y  # the text and its padded background
    placed, dropped = [], 0
    for i in order:
        width = (0.6 * fontsize * len(texts[i]) + 2.5) * per_x
        x, y = min(anchors[i][0], right - width), anchors[i][1]  # moved left rather than cut at the right edge
        above, inside = (x, y - height, x + width, y), (x, y, x + width, y + height)
        spots = ([] if above[1] < top else [(above, "bottom")]) + [(inside, "top")]
        spot = next(((rect, va) for rect, va in spots if not any(_overlaps(rect, p) for p in placed)), None)
        if spot is None:
            dropped += 1
            continue
        placed.append(spot[0])
        ax.text(x, y, texts[i], fontsize=fontsize, color="white", va=spot[1], ha="left", clip_on=True,
                bbox=dict(facecolor=colors[i], edgecolor="none", pad=1))
    return dropped


def draw_boxes(ax, boxes, labels=None, scores=None, class_names=None, colors=None, linestyle="-",
               linewidth=1.5, alpha=1.0, fill=False, show_text=True, fontsize=None):
    """Draw ``boxes`` (``[N, 4]`` xyxy pixels) with "name score" captions above their top-left corner.

    A caption goes just inside its box when there is no room above it (the top of the view or
    another caption there); one that fits in neither place is left out (the best scores are
    captioned first), so crowded images stay readable.

    Args:
        labels: optional ``[N]`` class ids (pick the colour and the name); scores: optional ``[N]``.
        class_names: optional sequence mapping class id -> name (needs ``labels``).
        colors: one colour or ``N`` colours; default: by class, or one colour without labels.
        fill: also fill each box with its colour at ``0.25 * alpha``.
        fontsize: caption size in points; None: 7, up to 9 on axes more than 500 px high.
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
    anchors, texts, backgrounds = [], [], []
    for i, ((x1, y1, x2, y2), c) in enumerate(zip(b, _colors(colors, labs, n))):
        face = to_rgba(c, 0.25 * alpha) if fill else "none"
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, facecolor=face, edgecolor=to_rgba(c, alpha),
                               linestyle=linestyle, linewidth=linewidth))
        anchors.append((x1, y1))
        texts.append(_caption(None if labs is None else int(labs[i]), None if scs is None else float(scs[i]),
                              class_names))
        backgrounds.append(to_rgba(c, 0.8 * alpha))
    if show_text and any(texts):
        if fontsize is None:
            fontsize = float(np.clip(ax.get_window_extent().height / 500 * 9, 7, 9))
        order = [i for i in (np.argsort(-scs, kind="stable") if scs is not None else range(n)) if texts[i]]
        _place_captions(ax, anchors, texts, backgrounds, order, fontsize)
    return ax


def draw_points(ax, points, colors=None, size=20.0, marker="o", labels=None):
    """Scatter ``points`` (``[N, 2]`` xy pixels); ``labels`` (``[N]`` class ids) colour them by class."""
    p = _array(points, "points", "[N, 2] xy", ndim=2, last_dim=2)
    labs = None if labels is None else _int_array(labels, "labels", "[N] class ids", len(p))
    if len(p):
        ax.scatter(p[:, 0], p[:, 1], s=size, c=_colors(colors, labs, len(p)), marker=marker, zorder=3)
    return ax
