"""Draw the README's opening figure: lines of note 002 next to notebook 03's recomputation.

    .venv/bin/python tools/make_readme_figure.py [OUT]   (default: docs/figures/note_vs_notebook.png)

The left panel quotes the note as printed (the tensor the engineer copied from the debugger);
the right panel is what notebook 03 recomputes from the gt boxes and draws: the same candidate
indices, checked against the fixture, as cell centres around the gt.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")

from detviz import viz  # noqa: E402
from detviz.anchors import multilevel_grid_cells  # noqa: E402
from detviz.assigners import ATSSAssigner  # noqa: E402
from detviz.datasets.coco import coco80_class_names  # noqa: E402
from detviz.fixtures import check_entry, load_trace  # noqa: E402
from detviz.viz.pictures import new_figure, save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "figures" / "note_vs_notebook.png"
GT = 0  # the horse


def note_excerpt(trace, first: int, last: int) -> str:
    """Lines ``first..last`` of the note with their numbers; lines of prose (not ASCII) are elided."""
    lines = trace.note_lines()
    shown = []
    for number in range(first, last + 1):
        text = lines[number - 1].rstrip()
        shown.append(f"{number:4d}  {text if text.isascii() else '(a line of Chinese prose)'}")
    return "\n".join(shown)


def main(out: Path) -> None:
    trace = load_trace("seed002_nanodet_gfl")
    strides = [8, 16, 32]
    mlvl_cells = multilevel_grid_cells([(40, 40), (20, 20), (10, 10)], strides, octave_base_scale=5)
    grid_cells = torch.cat(mlvl_cells)
    gt_bboxes = trace.tensor("sample1.gt_bboxes")
    gt_labels = trace.tensor("ann.labels")
    steps = ATSSAssigner(topk=9).assign_with_steps(grid_cells, [len(c) for c in mlvl_cells], gt_bboxes,
                                                   gt_labels=gt_labels, num_classes=80)
    check_entry(trace, "sample1.candidate_idxs", steps.candidate_idxs)  # the figure shows checked numbers only

    fig, (text_ax, ax) = new_figure(11, 5.6, ncols=2)
    text_ax.axis("off")
    text_ax.set_title("note 002, as the engineer printed it", fontsize=11, loc="left")
    text_ax.text(0, 1, note_excerpt(trace, 272, 292), family="monospace", fontsize=9.5, va="top",
                 transform=text_ax.transAxes)
    viz.blank_canvas(ax, (320, 320))
    viz.draw_atss_candidates(ax, grid_cells, steps.candidate_idxs, steps.is_pos, gt_bboxes, GT,
                             num_level_bboxes=[len(c) for c in mlvl_cells], strides=strides)
    first = int(steps.candidate_idxs[0, GT])  # line 279's first number: the closest stride-8 centre
    x, y = ((grid_cells[first, :2] + grid_cells[first, 2:]) / 2).tolist()
    ax.annotate(f"cell {first} = row {first // 40} x 40 + column {first % 40}\n(line 279, first number)", (x, y),
                xytext=(100, 262), fontsize=9, ha="center", arrowprops={"arrowstyle": "->", "color": "0.2"})
    ax.set_xlim(40, 160)
    ax.set_ylim(290, 120)
    label = int(gt_labels[GT])
    ax.set_title(f"notebook 03 recomputes it: gt {GT} ({coco80_class_names()[label]}),\n"
                 "its 9 closest cell centres per stride; filled = positive", fontsize=11)
    fig.tight_layout()
    save_figure(fig, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
