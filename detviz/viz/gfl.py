"""Drawing GFL's regression: a point's ltrb distances and a side's discrete distribution."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.patches import Rectangle

from detviz.viz.common import _array, _positive

__all__ = ["draw_ltrb", "draw_distribution"]


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
