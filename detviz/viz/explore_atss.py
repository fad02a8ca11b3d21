"""ATSS on note 002's traced samples, one gt and one ``topk`` at a time, to explore by hand.

Three parts, so that the interactive view holds no logic of its own:

* :func:`atss_state` runs :class:`detviz.assigners.ATSSAssigner` on a traced sample (its gt
  boxes from ``data/traces/seed002_nanodet_gfl.json``, NanoDet-m's 2100 grid cells) and returns
  one gt's candidates per level, their IoUs, ``mean + std`` and the positives, as an
  :class:`ATSSState`;
* :func:`draw_atss_state` draws a state: the candidates around the gt (``draw_atss_candidates``)
  and each candidate's IoU, level by level, against the mean and the threshold;
* :func:`atss_explorer` puts ipywidgets controls (sample, gt, topk) in front of those two.
  ipywidgets is imported inside it, so ``import detviz`` never needs it.

With the defaults (``topk=9``) the state is the assignment the note traces: notebook 03 checks
the same numbers against the note.
"""
from __future__ import annotations

import html
import numbers
from collections.abc import Mapping
from typing import NamedTuple

import torch
from matplotlib.lines import Line2D
from torch import Tensor

from detviz.anchors import grid_cells_to_centers, level_slices, multilevel_grid_cells
from detviz.assigners import ATSSAssigner, ATSSSteps
from detviz.fixtures import NoteTrace, load_trace
from detviz.viz.assignment import draw_atss_candidates
from detviz.viz.common import LEVEL_COLORS
from detviz.viz.draw import blank_canvas
from detviz.viz.pictures import figure_bytes, new_figure

__all__ = ["ATSSState", "atss_state", "draw_atss_state", "atss_explorer", "TRACE_NAME", "SAMPLES", "MAX_TOPK"]

TRACE_NAME = "seed002_nanodet_gfl"
SAMPLES = (1, 2)  # the note's two training samples of image 302364.jpg
# NanoDet-m's priors as note 002 traces them: a 320x320 input, strides 8/16/32, square cells of
# 5 strides (octave_base_scale), 80 COCO classes.
INPUT_SIZE = 320
STRIDES = (8, 16, 32)
OCTAVE_BASE_SCALE = 5.0
NUM_CLASSES = 80
MAX_TOPK = 15  # the explorer's slider range; atss_state itself takes any topk >= 1


class ATSSState(NamedTuple):
    """One gt's ATSS assignment in a traced sample, for one ``topk``.

    With K = topk candidates on each of the L = 3 levels and N = 2100 grid cells.

    Attributes:
        sample: 1 or 2; gt_index: the gt (0-based, column of the note's tables); label: its class.
        topk: K.
        candidate_idxs: Tensor[K*L] int64, the gt's candidates level by level (stride 8 first),
            indices into the N concatenated grid cells; candidate_overlaps: Tensor[K*L] their IoUs.
        level_candidates, level_overlaps: the same split per level, L tensors of [K].
        mean, std, threshold: the candidate IoUs' mean, unbiased std and ``mean + std``.
        is_pos_iou: Tensor[K*L] bool, IoU >= threshold; is_in_gt: centre inside the gt;
        is_pos: both (step 3 of ATSS).
        positives: Tensor[P] int64, the candidates with ``is_pos``, in candidate order.
        assigned: Tensor[Q] int64, ascending cells whose final gt (after step 4, where a cell
            positive for several gts keeps the one it overlaps most) is this gt; Q <= P.
        steps: the assigner's :class:`~detviz.assigners.ATSSSteps` for all gts of the sample.
        grid_cells: Tensor[N, 4] xyxy pixels of the 320x320 input; num_level_cells: [1600, 400, 100].
        gt_bboxes: Tensor[M, 4] the sample's gts; gt_labels: Tensor[M].
    """

    sample: int
    gt_index: int
    label: int
    topk: int
    candidate_idxs: Tensor
    candidate_overlaps: Tensor
    level_candidates: tuple[Tensor, ...]
    level_overlaps: tuple[Tensor, ...]
    mean: float
    std: float
    threshold: float
    is_pos_iou: Tensor
    is_in_gt: Tensor
    is_pos: Tensor
    positives: Tensor
    assigned: Tensor
    steps: ATSSSteps
    grid_cells: Tensor
    num_level_cells: tuple[int, ...]
    gt_bboxes: Tensor
    gt_labels: Tensor

    def gt_name(self, class_names: Mapping[int, str] | None = None) -> str:
        """``"gt 0: horse (label 17)"`` with ``class_names``, else ``"gt 0 (label 17)"``."""
        return _gt_name(self.gt_index, self.label, class_names)

    def summary(self, class_names: Mapping[int, str] | None = None) -> str:
        """A few lines of plain text: candidates per level, the threshold, the positives."""
        per_level = ", ".join(f"stride {s}: {idx.tolist()}" for s, idx in zip(STRIDES, self.level_candidates))
        return "\n".join([
            f"sample {self.sample}, {self.gt_name(class_names)}, topk {self.topk}: "
            f"{len(self.candidate_idxs)} candidates",
            f"candidates per level: {per_level}",
            f"threshold = mean + std = {self.mean:.4f} + {self.std:.4f} = {self.threshold:.4f}",
            f"IoU >= threshold: {int(self.is_pos_iou.sum())}; also centre inside the gt: "
            f"{len(self.positives)} -> positives {self.positives.tolist()}",
            f"kept after one gt per cell: {self.assigned.tolist()}",
        ])


def _gt_name(gt_index: int, label: int, class_names: Mapping[int, str] | None) -> str:
    name = "" if class_names is None else f": {class_names[label]}"
    return f"gt {gt_index}{name} (label {label})"


def _check_choice(sample, gt_index, topk, num_gts: int | None = None) -> None:
    def is_int(value):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if not is_int(sample) or sample not in SAMPLES:
        raise ValueError(f"sample must be 1 or 2 (the note's two traced samples), got {sample!r}")
    if not is_int(topk) or topk < 1:
        raise ValueError(f"topk must be an integer >= 1 (candidates per level), got {topk!r}")
    if num_gts is not None and (not is_int(gt_index) or not 0 <= gt_index < num_gts):
        raise ValueError(f"gt_index must be an integer in [0, {num_gts}) (sample {sample} has {num_gts} gts), "
                         f"got {gt_index!r}")


def atss_state(sample: int = 1, gt_index: int = 0, topk: int = 9, *, trace: NoteTrace | None = None) -> ATSSState:
    """Run ATSS on traced sample ``sample`` with ``topk`` candidates per level; keep gt ``gt_index``.

    Args:
        sample: 1 or 2, the note's two augmented copies of image 302364.jpg.
        gt_index: 0, 1 or 2 (labels 17, 0, 24: horse, person, backpack).
        topk: candidates per level, >= 1 (the note and NanoDet use 9).
        trace: the note's trace; default ``load_trace("seed002_nanodet_gfl")``.

    Returns:
        :class:`ATSSState`; all steps come from :meth:`ATSSAssigner.assign_with_steps`.

    Raises:
        ValueError naming ``sample``, ``gt_index`` or ``topk`` when it is out of range.
    """
    _check_choice(sample, gt_index, topk)
    trace = load_trace(TRACE_NAME) if trace is None else trace
    gt_bboxes = trace.tensor(f"sample{sample}.gt_bboxes", torch.float32)  # [M, 4]
    gt_labels = trace.tensor("ann.labels")  # [M], the same objects in both samples
    _check_choice(sample, gt_index, topk, num_gts=len(gt_bboxes))
    featmap_sizes = [(INPUT_SIZE // s, INPUT_SIZE // s) for s in STRIDES]
    per_level = multilevel_grid_cells(featmap_sizes, STRIDES, OCTAVE_BASE_SCALE)
    num_level_cells = tuple(len(c) for c in per_level)
    grid_cells = torch.cat(per_level)  # [N, 4]
    steps = ATSSAssigner(topk=topk).assign_with_steps(grid_cells, num_level_cells, gt_bboxes,
                                                      gt_labels=gt_labels, num_classes=NUM_CLASSES)
    g = int(gt_index)
    candidate_idxs = steps.candidate_idxs[:, g]  # [K*L]
    candidate_overlaps = steps.candidate_overlaps[:, g]  # [K*L]
    rows = level_slices([min(topk, n) for n in num_level_cells])  # candidate rows of each level
    is_pos = steps.is_pos[:, g]
    return ATSSState(
        sample=int(sample), gt_index=g, label=int(gt_labels[g]), topk=int(topk),
        candidate_idxs=candidate_idxs, candidate_overlaps=candidate_overlaps,
        level_candidates=tuple(candidate_idxs[r] for r in rows),
        level_overlaps=tuple(candidate_overlaps[r] for r in rows),
        mean=float(steps.overlaps_mean[g]), std=float(steps.overlaps_std[g]), threshold=float(steps.overlaps_thr[g]),
        is_pos_iou=steps.is_pos_iou[:, g], is_in_gt=steps.is_in_gts[:, g], is_pos=is_pos,
        positives=candidate_idxs[is_pos], assigned=torch.nonzero(steps.result.gt_inds == g).squeeze(1),
        steps=steps, grid_cells=grid_cells, num_level_cells=num_level_cells, gt_bboxes=gt_bboxes,
        gt_labels=gt_labels)


def draw_atss_state(ax, state: ATSSState, *, iou_ax=None, class_names: Mapping[int, str] | None = None,
                    margin: float = 16.0):
    """Draw ``state``: the gt's candidates on the 320x320 input, zoomed on them, and (on ``iou_ax``)
    each candidate's IoU, level by level, with the mean and the threshold ``mean + std``.

    Args:
        ax: matplotlib ``Axes`` for the candidates, or None: a new two-panel ``Figure`` (Agg canvas,
            no pyplot) is made and its second panel gets the IoUs.
        iou_ax: optional ``Axes`` for the IoUs when ``ax`` is given.
        class_names: optional label -> name (e.g. ``coco80_class_names()``), for the titles.
        margin: pixels shown around the gt and its candidate centres.

    Returns:
        the candidates' ``Axes`` (``ax.figure`` is the figure).
    """
    if ax is None:
        _, (ax, iou_ax) = new_figure(10.5, 4.6, ncols=2)
    blank_canvas(ax, (INPUT_SIZE, INPUT_SIZE))
    draw_atss_candidates(ax, state.grid_cells, state.steps.candidate_idxs, state.steps.is_pos, state.gt_bboxes,
                         state.gt_index, num_level_bboxes=state.num_level_cells, strides=STRIDES)
    centres = grid_cells_to_centers(state.grid_cells[state.candidate_idxs])  # [K*L, 2]
    gt = state.gt_bboxes[state.gt_index]
    lo = torch.minimum(centres.min(0).values, gt[:2]) - margin
    hi = torch.maximum(centres.max(0).values, gt[2:]) + margin
    ax.set_xlim(float(lo[0]), float(hi[0]))
    ax.set_ylim(float(hi[1]), float(lo[1]))  # image rows grow downwards
    ax.set_title(f"sample {state.sample}, {state.gt_name(class_names)}, topk {state.topk}:\n"
                 f"{len(state.positives)} of {len(state.candidate_idxs)} candidates positive", fontsize=10)
    if iou_ax is not None:
        _draw_candidate_ious(iou_ax, state)
    ax.figure.tight_layout()
    return ax


def _draw_candidate_ious(ax, state: ATSSState):
    """Each candidate's IoU, level by level in candidate order (nearest first): filled when positive,
    hollow when it fails the IoU test or its centre lies outside the gt; the mean and the threshold."""
    k = max(len(level) for level in state.level_candidates)
    rows = level_slices([len(level) for level in state.level_candidates])
    for level, r in enumerate(rows):
        x = level * (k + 1) + torch.arange(r.stop - r.start)  # a gap of one slot between levels
        color = LEVEL_COLORS[level % len(LEVEL_COLORS)]
        face = [color if p else "white" for p in state.is_pos[r].tolist()]
        ax.scatter(x, state.candidate_overlaps[r], s=30, c=face, edgecolors=color, linewidths=1.2, zorder=3)
        centre_outside = x[state.is_pos_iou[r] & ~state.is_in_gt[r]]
        ax.scatter(centre_outside, state.candidate_overlaps[r][state.is_pos_iou[r] & ~state.is_in_gt[r]],
                   s=60, marker="x", color="0.3", zorder=4)
    ax.axhline(state.mean, color="tab:blue", linestyle="--", linewidth=1)
    ax.axhline(state.threshold, color="tab:red", linewidth=1.2)
    handles = [Line2D([], [], color="0.3", marker="o", linestyle="", label="positive"),
               Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="", label="rejected"),
               Line2D([], [], color="0.3", marker="x", markersize=8, linestyle="", label="IoU passes, centre outside"),
               Line2D([], [], color="tab:blue", linestyle="--", label=f"mean {state.mean:.4f}"),
               Line2D([], [], color="tab:red", label=f"threshold = mean + std = {state.threshold:.4f}")]
    ax.set_xticks([level * (k + 1) + (k - 1) / 2 for level in range(len(rows))],
                  [f"stride {s}" for s in STRIDES[:len(rows)]])
    ax.set_xlim(-1, len(rows) * (k + 1) - 1)
    top = float(max(state.candidate_overlaps.max(), state.threshold))
    ax.set_ylim(0, 1.45 * top + 0.01)  # headroom for the legend
    ax.set_ylabel("IoU with the gt")
    ax.legend(handles=handles, fontsize=7, loc="upper left", ncol=2)
    ax.set_title(f"candidate IoUs, nearest first on each level: {int(state.is_pos_iou.sum())} reach the\n"
                 f"threshold, {int((state.is_pos_iou & ~state.is_in_gt).sum())} of them with the centre "
                 "outside the gt", fontsize=10)
    return ax


def atss_explorer(sample: int = 1, gt_index: int = 0, topk: int = 9, *, class_names: Mapping[int, str] | None = None,
                  trace: NoteTrace | None = None):
    """An ipywidgets box: pick the sample, the gt and topk (1..``MAX_TOPK``); it shows
    :meth:`ATSSState.summary` and :func:`draw_atss_state`'s figure for the choice.

    Args:
        sample, gt_index, topk: the starting choice (see :func:`atss_state`).
        class_names: optional label -> name (e.g. ``coco80_class_names()``), for the gt menu and the titles.
        trace: the note's trace; default ``load_trace("seed002_nanodet_gfl")``.

    Returns:
        ``VBox([HBox([sample, gt, topk controls]), HTML summary, Image])``.
    """
    import ipywidgets as widgets

    first = atss_state(sample, gt_index, topk, trace=trace)  # checks the starting choice
    if topk > MAX_TOPK:
        raise ValueError(f"topk must be in [1, {MAX_TOPK}] for the explorer's slider, got {topk!r}")
    trace = load_trace(TRACE_NAME) if trace is None else trace
    gt_options = [(_gt_name(g, label, class_names), g) for g, label in enumerate(first.gt_labels.tolist())]
    sample_control = widgets.ToggleButtons(options=[(f"sample {s}", s) for s in SAMPLES], value=sample,
                                           description="sample")
    gt_control = widgets.Dropdown(options=gt_options, value=first.gt_index, description="gt")
    topk_control = widgets.IntSlider(value=topk, min=1, max=MAX_TOPK, description="topk")
    summary = widgets.HTML()
    picture = widgets.Image(format="png")

    def _update(_change=None):
        state = atss_state(sample_control.value, gt_control.value, topk_control.value, trace=trace)
        ax = draw_atss_state(None, state, class_names=class_names)
        picture.value = figure_bytes(ax.figure)
        summary.value = f"<pre>{html.escape(state.summary(class_names))}</pre>"

    for control in (sample_control, gt_control, topk_control):
        control.observe(_update, names="value")
    _update()
    return widgets.VBox([widgets.HBox([sample_control, gt_control, topk_control]), summary, picture])
