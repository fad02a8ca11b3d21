"""Drawing error analyses: TIDE's dAP bars, a confusion matrix, precision-recall curves, missed-gt reasons.

Every function takes plain numbers (dicts, numpy arrays) as the evaluation and analysis
modules return them, draws on the ``Axes`` it is given and returns it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from detviz.viz.common import _array, class_color

__all__ = ["draw_error_bars", "draw_confusion_matrix", "draw_pr_curves", "draw_missed_reasons"]

MAX_LEGEND = 20  # more classes than this: the legend names the mean only
MAX_ANNOTATED = 30  # a matrix of more classes shows colours only: its numbers would not fit
ERROR_COLORS = {"Cls": "tab:red", "Loc": "tab:orange", "Both": "tab:olive", "Dupe": "tab:purple",
                "Bkg": "tab:gray", "Miss": "tab:blue", "FalsePos": "0.35", "FalseNeg": "0.6"}


def _check_mapping(values, name: str) -> dict[str, float]:
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"{name} must be a non-empty dict of name -> number, got {values!r}")
    out = {}
    for key, value in values.items():
        if not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
            raise ValueError(f"{name}[{key!r}] must be a finite number, got {value!r}")
        out[str(key)] = float(value)
    return out


def draw_error_bars(ax, errors, title: str = "TIDE: AP50 gained by fixing each error type"):
    """Horizontal bars, one per error type, of the dAP (AP points, 0..100) TIDE attributes to it.

    Args:
        errors: ``{"Cls": 3.1, "Loc": 1.2, ...}``, e.g. the main and special errors of a TIDE result.
    """
    values = _check_mapping(errors, "errors")
    names = list(values)
    y = np.arange(len(names))[::-1]
    ax.barh(y, [values[n] for n in names], color=[ERROR_COLORS.get(n, "tab:blue") for n in names])
    for yi, name in zip(y, names):
        ax.text(values[name], yi, f" {values[name]:.2f}", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.set_xlabel("dAP50 (AP points)")
    ax.set_xlim(0, max(max(values.values()) * 1.25, 1.0))
    ax.set_title(title, fontsize=9)
    return ax


def draw_confusion_matrix(ax, matrix, labels: Sequence[str], normalize: bool = False,
                          title: str | None = None):
    """A confusion matrix, rows = ground truth, columns = prediction, with each cell's count.

    Args:
        matrix: [K, K] counts (K classes + background, background last).
        labels: K names, in the matrix's order.
        normalize: divide each row by its sum (the fraction of a gt class predicted as each
            class); rows without gts stay empty.

    Each non-zero cell shows its value, up to ``MAX_ANNOTATED`` classes.
    """
    counts = _array(matrix, "matrix", "[K, K] counts", ndim=2).astype(np.float64)
    if counts.shape[0] != counts.shape[1] or len(labels) != counts.shape[0]:
        raise ValueError(f"matrix must be [K, K] with one label per row, got shape {list(counts.shape)} and "
                         f"{len(labels)} labels")
    shown = counts
    if normalize:
        sums = counts.sum(axis=1, keepdims=True)
        shown = np.divide(counts, sums, out=np.full_like(counts, np.nan), where=sums > 0)
    ax.imshow(np.nan_to_num(shown), cmap="Blues", vmin=0)
    top = np.nanmax(shown) if np.isfinite(shown).any() else 0.0
    for (i, j), value in np.ndenumerate(shown if len(labels) <= MAX_ANNOTATED else np.zeros((0, 0))):
        if np.isnan(value) or value == 0:
            continue
        text = f"{value:.2f}" if normalize else f"{int(value)}"
        ax.text(j, i, text, ha="center", va="center", fontsize=7,
                color="white" if value > 0.6 * top else "black")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title or ("confusion matrix, rows normalised" if normalize else "confusion matrix (counts)"),
                 fontsize=9)
    return ax


def draw_pr_curves(ax, curves, title: str = "precision-recall at IoU 0.5"):
    """One precision-recall curve per class and their mean (over the classes with gts).

    Args:
        curves: class name -> (recall [R], precision [R]) arrays, e.g.
            :func:`detviz.evaluation.precision_recall_curves`; a class whose precision is -1 or NaN
            throughout (no gt) is skipped. Beyond ``MAX_LEGEND`` classes the legend names the mean only.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves must be a non-empty dict of class name -> (recall, precision), got {curves!r}")
    stacked = []
    for k, (name, (recall, precision)) in enumerate(curves.items()):
        recall = _array(recall, f"curves[{name!r}] recall", "[R]", ndim=1)
        precision = _array(precision, f"curves[{name!r}] precision", "[R]", ndim=1)
        if not (precision >= 0).any():  # -1 or NaN throughout: a class without gts has no curve
            continue
        ax.plot(recall, np.clip(precision, 0, 1), color=class_color(k), linewidth=1.2,
                label=str(name) if len(curves) <= MAX_LEGEND else None)
        stacked.append(np.clip(precision, 0, 1))
    if stacked:
        ax.plot(recall, np.mean(stacked, axis=0), color="black", linewidth=2.0, linestyle="--", label="mean")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    return ax


def draw_missed_reasons(ax, counts, title: str = "why the missed gts were missed"):
    """Bars of missed gts per reason (``{"total": n, reason: count, ...}``, the total left out)."""
    values = _check_mapping({k: v for k, v in dict(counts).items() if k != "total"}, "counts")
    names = list(values)
    x = np.arange(len(names))
    ax.bar(x, [values[n] for n in names], color="tab:red")
    for xi, name in zip(x, names):
        ax.text(xi, values[name], f"{int(values[name])}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels([n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylabel("missed gts")
    ax.set_ylim(0, max(max(values.values()) * 1.15, 1.0))  # room for the counts above the bars
    total = int(sum(values.values()))
    ax.set_title(f"{title} ({total} in all)", fontsize=9)
    return ax
