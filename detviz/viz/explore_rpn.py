"""The RPN's proposal filter on one image, stage by stage, to explore by hand.

Three parts, so that the interactive view holds no logic of its own:

* :func:`rpn_filter_state` runs the RPN's own ``filter_proposals_with_steps`` (of a
  :class:`detviz.rcnn.RegionProposalNetwork`, passed in: the drawing code imports no model code)
  on one image with the settings asked for, and returns the proposals left after each stage and
  the kept boxes and scores, as an :class:`RPNFilterState`;
* :func:`draw_rpn_filter_state` draws a state: the counts per stage as bars, and the best kept
  boxes on the image;
* :func:`rpn_explorer` puts ipywidgets sliders (pre_nms_top_n, post_nms_top_n, nms_thresh,
  score_thresh) in front of those two. ipywidgets is imported inside it, so ``import detviz``
  never needs it.

The stages are torchvision's ``filter_proposals``: the best ``pre_nms_top_n`` anchors of each level
by objectness, clip to the image (moves boxes, never drops one), drop boxes narrower or lower than
``min_size`` px, drop probabilities below ``score_thresh``, NMS at ``nms_thresh`` within each
level, keep the best ``post_nms_top_n``. Every count is monotone along the stages, and in
``pre_nms_top_n``, ``post_nms_top_n`` and ``score_thresh`` (these only add or remove the lowest
scores, and greedy NMS treats a score-ordered prefix the same way). The NMS count is not monotone
in ``nms_thresh`` or ``min_size``: a box that is suppressed (or removed) no longer suppresses the
boxes it overlapped, so a stricter setting can keep more boxes.
"""
from __future__ import annotations

import copy
import html
import numbers
from typing import NamedTuple

import torch
from torch import Tensor

from detviz._validate import is_finite_number
from detviz.viz.common import _size
from detviz.viz.draw import blank_canvas, draw_boxes, show_image
from detviz.viz.pictures import figure_bytes, new_figure

__all__ = ["RPNFilterState", "STAGES", "rpn_filter_state", "draw_rpn_filter_state", "rpn_explorer"]

# the proposals of one image, counted after each stage ("anchors": before any)
STAGES = ("anchors", "top_n", "clip", "min_size", "score_thresh", "nms", "post_nms_top_n")
SETTINGS = ("pre_nms_top_n", "post_nms_top_n", "nms_thresh", "score_thresh", "min_size")


class RPNFilterState(NamedTuple):
    """One image's proposals through the RPN filter, for one choice of settings.

    Attributes:
        counts: dict stage -> proposals left after it, for every name in :data:`STAGES`.
        boxes: Tensor[P, 4] kept proposals, xyxy pixels of the resized (unpadded) image.
        scores: Tensor[P] their objectness probabilities, descending.
        settings: dict of the five values used (pre_nms_top_n, post_nms_top_n, nms_thresh,
            score_thresh, min_size).
        image_size: (h, w) of the resized image before padding.
    """

    counts: dict
    boxes: Tensor
    scores: Tensor
    settings: dict
    image_size: tuple[int, int]

    def summary(self) -> str:
        """Two lines of plain text: the settings, then the count after each stage."""
        s = self.settings
        return "\n".join([
            f"pre_nms_top_n {s['pre_nms_top_n']}, post_nms_top_n {s['post_nms_top_n']}, "
            f"nms_thresh {s['nms_thresh']:.2f}, score_thresh {s['score_thresh']:.2f}, min_size {s['min_size']:g}",
            " -> ".join(f"{stage} {count}" for stage, count in self.counts.items()),
        ])


def _check_inputs(rpn, proposals, objectness, num_anchors_per_level, image_size) -> tuple[int, int]:
    if not callable(getattr(rpn, "filter_proposals_with_steps", None)):
        raise ValueError("rpn must be a detviz.rcnn.RegionProposalNetwork (it has filter_proposals_with_steps), "
                         f"got {type(rpn).__name__}")
    if not (isinstance(proposals, Tensor) and proposals.is_floating_point() and proposals.dim() == 2
            and proposals.shape[1] == 4):
        got = f"shape {list(proposals.shape)}" if isinstance(proposals, Tensor) else type(proposals).__name__
        raise ValueError(f"proposals must be a float Tensor[N, 4] (one image's decoded boxes, xyxy), got {got}")
    n = proposals.shape[0]
    ok = isinstance(objectness, Tensor) and objectness.is_floating_point()
    if not (ok and objectness.numel() == n and objectness.dim() in (1, 2) and objectness.shape[0] == n):
        got = f"shape {list(objectness.shape)}" if isinstance(objectness, Tensor) else type(objectness).__name__
        raise ValueError(f"objectness must be a float Tensor[N] or [N, 1] of logits with N = {n}, got {got}")
    counts = list(num_anchors_per_level) if isinstance(num_anchors_per_level, (list, tuple)) else None
    if not counts or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and c > 0 for c in counts) \
            or sum(counts) != n:
        raise ValueError(f"num_anchors_per_level must be a list of positive ints summing to N = {n}, "
                         f"got {num_anchors_per_level!r}")
    try:
        return _size(image_size, "image_size")
    except ValueError:
        raise ValueError(f"image_size must be (h, w) of the resized image, two positive ints, got {image_size!r}") \
            from None


def _settings(rpn, pre_nms_top_n, post_nms_top_n, nms_thresh, score_thresh, min_size) -> dict:
    """The values asked for, the RPN's own where None; ValueError naming a bad one."""
    given = dict(pre_nms_top_n=pre_nms_top_n, post_nms_top_n=post_nms_top_n, nms_thresh=nms_thresh,
                 score_thresh=score_thresh, min_size=min_size)
    own = dict(pre_nms_top_n=rpn.pre_nms_top_n(), post_nms_top_n=rpn.post_nms_top_n(), nms_thresh=rpn.nms_thresh,
               score_thresh=rpn.score_thresh, min_size=rpn.min_size)
    settings = {name: own[name] if value is None else value for name, value in given.items()}
    for name in ("pre_nms_top_n", "post_nms_top_n"):
        value = settings[name]
        if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        settings[name] = int(value)
    for name, low, high in (("nms_thresh", 0.0, 1.0), ("score_thresh", 0.0, 1.0), ("min_size", 0.0, None)):
        value = settings[name]
        if not (is_finite_number(value) and value >= low and (high is None or value <= high)):
            bounds = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
            raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
        settings[name] = float(value)
    return settings


def rpn_filter_state(rpn, proposals: Tensor, objectness: Tensor, num_anchors_per_level, image_size, *,
                     pre_nms_top_n: int | None = None, post_nms_top_n: int | None = None,
                     nms_thresh: float | None = None, score_thresh: float | None = None,
                     min_size: float | None = None) -> RPNFilterState:
    """Filter one image's proposals with ``rpn.filter_proposals_with_steps`` and the settings given.

    Args:
        rpn: a :class:`detviz.rcnn.RegionProposalNetwork`; its settings are the defaults, and it is
            not changed (a shallow copy gets the values asked for).
        proposals: Tensor[N, 4] the decoded proposals of one image (one per anchor, levels in order),
            xyxy pixels of the resized image.
        objectness: Tensor[N] or [N, 1], the RPN head's logits for the same anchors.
        num_anchors_per_level: [N_l] anchors per level (A * H * W), summing to N.
        image_size: (h, w) of the resized image before padding; boxes are clipped to it.
        pre_nms_top_n: anchors kept per level by objectness (torchvision: 2000 training, 1000 testing).
        post_nms_top_n: proposals kept per image after NMS (torchvision: 2000 / 1000).
        nms_thresh: IoU above which NMS suppresses a box, in [0, 1] (0.7).
        score_thresh: lowest objectness probability kept, in [0, 1] (0.0).
        min_size: boxes narrower or lower than this many pixels are dropped (1e-3).
        Each setting left at None takes the RPN's own value (in its current train / eval mode).

    Returns:
        :class:`RPNFilterState`: counts per stage (:data:`STAGES`), kept boxes and scores, settings.

    Raises:
        ValueError naming the argument that is out of range or of the wrong form.
    """
    size = _check_inputs(rpn, proposals, objectness, num_anchors_per_level, image_size)
    settings = _settings(rpn, pre_nms_top_n, post_nms_top_n, nms_thresh, score_thresh, min_size)
    filtering = copy.copy(rpn)  # shallow: the caller's RPN keeps its settings, the copy shares its modules
    filtering._pre_nms_top_n = {"training": settings["pre_nms_top_n"], "testing": settings["pre_nms_top_n"]}
    filtering._post_nms_top_n = {"training": settings["post_nms_top_n"], "testing": settings["post_nms_top_n"]}
    filtering.nms_thresh, filtering.score_thresh = settings["nms_thresh"], settings["score_thresh"]
    filtering.min_size = settings["min_size"]
    with torch.no_grad():
        steps = filtering.filter_proposals_with_steps(
            proposals.detach()[None], objectness.detach().reshape(-1, 1),  # [1, N, 4], [N, 1]: a batch of one
            [size], list(num_anchors_per_level))[0]
    counts = {"anchors": proposals.shape[0], "top_n": steps.counts["top_n"],
              "clip": steps.counts["top_n"]}  # clipping moves boxes onto the image and drops none
    counts.update((stage, steps.counts[stage]) for stage in STAGES[3:])
    return RPNFilterState(counts, steps.boxes, steps.scores, settings, size)


def draw_rpn_filter_state(ax, state: RPNFilterState, *, counts_ax=None, image=None, gt_boxes=None,
                          max_boxes: int = 50):
    """Draw ``state``: the best ``max_boxes`` kept proposals on the image (or a blank canvas of the
    image's size) and, on ``counts_ax``, the proposals left after each stage as bars.

    Args:
        ax: matplotlib ``Axes`` for the boxes, or None: a new two-panel ``Figure`` (Agg canvas, no
            pyplot) is made, the counts on the left.
        counts_ax: optional ``Axes`` for the counts when ``ax`` is given.
        image: optional Tensor[3, H, W] in [0, 1] (or uint8) at ``state.image_size``, the resized photo.
        gt_boxes: optional Tensor[M, 4] xyxy gts in the same frame, drawn in red.
        max_boxes: how many of the kept proposals to draw, best scores first.

    Returns:
        the boxes' ``Axes`` (``ax.figure`` is the figure).
    """
    if not (isinstance(max_boxes, numbers.Integral) and not isinstance(max_boxes, bool) and max_boxes >= 0):
        raise ValueError(f"max_boxes must be an integer >= 0, got {max_boxes!r}")
    if image is not None and tuple(image.shape[-2:]) != tuple(state.image_size):
        raise ValueError(f"image must be the resized image of size {tuple(state.image_size)} (h, w), "
                         f"got shape {list(image.shape)}")
    if ax is None:
        _, (counts_ax, ax) = new_figure(12, 4.4, ncols=2)
    if image is None:
        blank_canvas(ax, state.image_size)
    else:
        show_image(ax, image)
    shown = state.boxes[:max_boxes]
    draw_boxes(ax, shown, colors="tab:cyan", linewidth=1.0, show_text=False)
    if gt_boxes is not None:
        draw_boxes(ax, gt_boxes, colors="tab:red", linewidth=2.0, show_text=False)
    red = "" if gt_boxes is None else "; gts red"
    ax.set_title(f"best {len(shown)} of {len(state.boxes)} kept proposals (cyan{red})", fontsize=10)
    if counts_ax is not None:
        _draw_counts(counts_ax, state)
    ax.figure.tight_layout()
    return ax


def _draw_counts(ax, state: RPNFilterState):
    """One horizontal bar per stage, first stage on top; a stage that removed boxes is orange and
    says how many."""
    stages, counts = list(state.counts), list(state.counts.values())
    y = range(len(stages))
    removed = [0] + [before - after for before, after in zip(counts, counts[1:])]
    ax.barh(y, counts, color=["tab:orange" if r > 0 else "tab:blue" for r in removed], height=0.6)
    for i, (count, r) in enumerate(zip(counts, removed)):
        ax.text(count, i, f" {count}" + (f"  (-{r})" if r > 0 else ""), va="center", fontsize=8)
    ax.set_yticks(list(y), stages)
    ax.invert_yaxis()  # the first stage on top
    ax.set_xlim(0, 1.3 * max(counts))  # room for the numbers
    ax.set_xlabel("proposals left (one image)")
    s = state.settings
    ax.set_title(f"pre_nms_top_n {s['pre_nms_top_n']}, post_nms_top_n {s['post_nms_top_n']},\n"
                 f"nms_thresh {s['nms_thresh']:.2f}, score_thresh {s['score_thresh']:.2f}, "
                 f"min_size {s['min_size']:g}", fontsize=10)
    return ax


def rpn_explorer(rpn, proposals: Tensor, objectness: Tensor, num_anchors_per_level, image_size, *,
                 image=None, gt_boxes=None, max_boxes: int = 50, **settings):
    """An ipywidgets box: sliders for pre_nms_top_n, post_nms_top_n, nms_thresh and score_thresh; it
    shows :meth:`RPNFilterState.summary` and :func:`draw_rpn_filter_state`'s figure for the values.

    Args:
        rpn, proposals, objectness, num_anchors_per_level, image_size: as :func:`rpn_filter_state`.
        image, gt_boxes, max_boxes: as :func:`draw_rpn_filter_state`.
        settings: starting values (pre_nms_top_n=..., ..., min_size=...); the RPN's own by default.
            min_size has no slider: it stays at its starting value. The top-n sliders reach the
            largest level's anchors (pre) and all anchors (post), or the starting value if larger.

    Returns:
        ``VBox([HBox([the four sliders]), HTML summary, Image])``.
    """
    import ipywidgets as widgets

    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"settings must be among {list(SETTINGS)}, got {unknown}")
    first = rpn_filter_state(rpn, proposals, objectness, num_anchors_per_level, image_size, **settings)
    start = first.settings
    # beyond the largest level (pre) or all anchors (post) a larger value changes nothing
    most_pre = max(max(num_anchors_per_level), start["pre_nms_top_n"])
    most_post = max(len(proposals), start["post_nms_top_n"])
    layout = dict(continuous_update=False, style={"description_width": "initial"})
    controls = {
        "pre_nms_top_n": widgets.IntSlider(value=start["pre_nms_top_n"], min=1, max=most_pre,
                                           description="pre_nms_top_n", **layout),
        "post_nms_top_n": widgets.IntSlider(value=start["post_nms_top_n"], min=1, max=most_post,
                                            description="post_nms_top_n", **layout),
        "nms_thresh": widgets.FloatSlider(value=start["nms_thresh"], min=0.0, max=1.0, step=0.05,
                                          description="nms_thresh", **layout),
        "score_thresh": widgets.FloatSlider(value=start["score_thresh"], min=0.0, max=1.0, step=0.01,
                                            description="score_thresh", **layout),
    }
    summary = widgets.HTML()
    picture = widgets.Image(format="png")

    def _update(_change=None):
        state = rpn_filter_state(rpn, proposals, objectness, num_anchors_per_level, image_size,
                                 min_size=start["min_size"], **{name: c.value for name, c in controls.items()})
        ax = draw_rpn_filter_state(None, state, image=image, gt_boxes=gt_boxes, max_boxes=max_boxes)
        picture.value = figure_bytes(ax.figure)
        summary.value = f"<pre>{html.escape(state.summary())}</pre>"

    for control in controls.values():
        control.observe(_update, names="value")
    _update()
    row = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
    return widgets.VBox([row, summary, picture])
