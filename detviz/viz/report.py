"""The error-analysis report: its figures as PNG files and one self-contained ``report.html``.

:func:`write_report` draws every figure of an :class:`~detviz.analysis.errors.ErrorAnalysis`
with a non-interactive matplotlib ``Figure`` (no pyplot state), writes each as a PNG, and embeds
the same PNGs as base64 in the HTML, so the page opens in any browser with nothing loaded from
the network. With the dataset's images it adds example crops of each missed-gt reason and the
images with the most errors.
"""
from __future__ import annotations

import base64
import html
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from detviz._io import write_atomic
from detviz.analysis.errors import ErrorAnalysis, summary
from detviz.analysis.missed import REASONS
from detviz.viz.draw import draw_boxes, show_image
from detviz.viz.errors import draw_error_bars, draw_missed_reasons
from detviz.viz.pictures import confusion_figure, figure_bytes, new_figure, pr_curve_figure

__all__ = ["report_figures", "write_report", "REPORT_NAME"]

REPORT_NAME = "report.html"
CROPS_PER_REASON = 4
WORST_IMAGES = 6


def report_figures(analysis: ErrorAnalysis, dataset=None) -> dict[str, Figure]:
    """The report's figures by file stem. ``dataset``: a :class:`~detviz.datasets.CocoDetection`
    over the same gt with readable images, for the crops and worst images (None: left out)."""
    figures = {}
    tide = analysis.tide
    fig, (ax,) = new_figure(6, 3.2)
    draw_error_bars(ax, {**tide.errors, **tide.special},
                    title=f"TIDE: AP50 {tide.ap50:.1f} points; dAP50 gained by fixing each error type")
    fig.tight_layout()
    figures["tide_errors"] = fig
    figures["confusion_matrix"] = confusion_figure(analysis.confusion.matrix, list(analysis.confusion.labels),
                                                   analysis.score_thresh)
    if analysis.pr_curves:
        figures["pr_curves"] = pr_curve_figure(analysis.pr_curves)
    counts = summary(analysis)["missed"]
    if counts["total"]:
        fig, (ax,) = new_figure(6.5, 3.2)
        draw_missed_reasons(ax, {k: v for k, v in counts.items() if k == "total" or v or k in REASONS[:5]},
                            title=f"missed gts at score >= {analysis.score_thresh:g}, by reason")
        fig.tight_layout()
        figures["missed_reasons"] = fig
    if dataset is not None and analysis.missed:
        figures["missed_examples"] = _missed_examples(analysis, dataset)
    if dataset is not None:
        figures["worst_images"] = _worst_images(analysis, dataset)
    return figures


def _kept_detections(analysis: ErrorAnalysis, image_id: int):
    dets = [d for d in analysis.records.detections if d.image_id == image_id and d.score >= analysis.score_thresh]
    boxes = np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4)
    return dets, boxes


def _label_of(analysis: ErrorAnalysis):
    ids = sorted(analysis.class_names)
    return {cid: i for i, cid in enumerate(ids)}, [analysis.class_names[c] for c in ids]


def _missed_examples(analysis: ErrorAnalysis, dataset) -> Figure:
    """Up to CROPS_PER_REASON crops per reason: the missed gt (white, dashed) and the detections near it."""
    by_reason = {r: [m for m in analysis.missed if m.reason == r][:CROPS_PER_REASON] for r in REASONS}
    rows = [r for r in REASONS if by_reason[r]]
    fig, _ = new_figure(2.6 * CROPS_PER_REASON, 2.8 * len(rows), nrows=0)
    label_of, names = _label_of(analysis)
    for row, reason in enumerate(rows):
        for col in range(CROPS_PER_REASON):
            ax = fig.add_subplot(len(rows), CROPS_PER_REASON, row * CROPS_PER_REASON + col + 1)
            ax.set_axis_off()
            if col >= len(by_reason[reason]):
                continue
            missed = by_reason[reason][col]
            image, _ = dataset[dataset.image_ids.index(missed.image_id)]
            show_image(ax, image)
            dets, boxes = _kept_detections(analysis, missed.image_id)
            if len(dets):
                draw_boxes(ax, boxes, labels=[label_of[d.category_id] for d in dets],
                           scores=[d.score for d in dets], class_names=names)
            draw_boxes(ax, [missed.box], colors="white", linestyle="--", show_text=False)
            x1, y1, x2, y2 = missed.box
            margin = max(x2 - x1, y2 - y1, 16.0)
            ax.set_xlim(max(x1 - margin, 0), min(x2 + margin, image.shape[-1]))
            ax.set_ylim(min(y2 + margin, image.shape[-2]), max(y1 - margin, 0))
            ax.set_title(f"{reason.replace('_', ' ')}: {analysis.class_names[missed.category_id]} "
                         f"(image {missed.image_id})", fontsize=7)
    fig.tight_layout()
    return fig


def _worst_images(analysis: ErrorAnalysis, dataset) -> Figure:
    """The images with the most errors at the operating point (missed gts + unmatched detections)."""
    errors = Counter(m.image_id for m in analysis.missed)
    for d in analysis.records.detections:
        if d.score >= analysis.score_thresh and d.evaluated and d.matched[0] is None and not d.ignored[0]:
            errors[d.image_id] += 1
    worst = [image_id for image_id, n in errors.most_common(WORST_IMAGES) if n > 0]
    cols = 3
    nrows = max(1, -(-len(worst) // cols))
    fig, _ = new_figure(4 * cols, 4 * nrows, nrows=0)
    label_of, names = _label_of(analysis)
    if not worst:
        ax = fig.add_subplot(1, 1, 1)
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no errors at this operating point", ha="center", va="center")
        return fig
    missed_ids = {m.ann_id for m in analysis.missed}
    for k, image_id in enumerate(worst):
        ax = fig.add_subplot(nrows, cols, k + 1)
        image, target = dataset[dataset.image_ids.index(image_id)]
        show_image(ax, image)
        gts = [g for g in analysis.records.gts if g.image_id == image_id and not g.ignored]
        draw_boxes(ax, [g.box for g in gts] or np.zeros((0, 4)), colors=[
            "white" if g.ann_id in missed_ids else "0.75" for g in gts], linestyle="--", show_text=False)
        dets, boxes = _kept_detections(analysis, image_id)
        if len(dets):
            draw_boxes(ax, boxes, labels=[label_of[d.category_id] for d in dets], scores=[d.score for d in dets],
                       class_names=names)
        ax.set_axis_off()
        ax.set_title(f"image {image_id}: {errors[image_id]} errors (missed gts dashed white)", fontsize=8)
    fig.tight_layout()
    return fig


def write_report(analysis: ErrorAnalysis, out: str | Path, *, dataset=None, title: str = "detviz error analysis",
                 source: str = "") -> Path:
    """Write ``out/<figure>.png`` for every figure and ``out/report.html`` embedding them.

    Args:
        out: an existing folder.
        dataset: the gt's :class:`~detviz.datasets.CocoDetection` with images, for crops; None: none.
        source: a line saying what was analysed (the results file or the checkpoint).

    Returns:
        the path of ``report.html``.
    """
    out = Path(out)
    pngs = {}
    for name, fig in report_figures(analysis, dataset).items():
        pngs[name] = figure_bytes(fig)
        write_atomic(out / f"{name}.png", pngs[name])
    page = _html(analysis, pngs, title, source)
    write_atomic(out / REPORT_NAME, page.encode("utf-8"))
    return out / REPORT_NAME


def _img(pngs: dict, name: str, alt: str) -> str:
    if name not in pngs:
        return ""
    data = base64.b64encode(pngs[name]).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else html.escape(str(v)))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(analysis: ErrorAnalysis, pngs: dict, title: str, source: str) -> str:
    s = summary(analysis)
    headline = _table(["mAP", "AP50", "AP75", "moLRP", "TP @0.5", "FP @0.5", "FN @0.5", "gts"],
                      [[s["mAP"], s["AP50"], s["AP75"], s["oLRP"], s["counts"]["tp"], s["counts"]["fp"],
                        s["counts"]["fn"], s["counts"]["gts"]]])
    per_class = _table(["class", "AP", "AP50 (TIDE, points)", "oLRP", "LRP-optimal score", "missed"],
                       [[name, c["AP"], c["AP50_tide"], c["oLRP"], c["oLRP_threshold"], c["missed"]]
                        for name, c in s["per_class"].items()])
    missed = _table(["reason", "gts"], [[k, v] for k, v in s["missed"].items()])
    note = ("" if s["missed_uses_model"] else "<p>Results alone: without the model, a gt with nothing near it is "
            "<em>no_detection</em>; <code>--checkpoint</code> tells <em>never_assigned</em> from <em>low_score</em>.</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f3f3f3}img{max-width:100%;display:block;margin:.5em 0}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{style}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(source)}</p>
<h2>Headline</h2>{headline}
<p>COCO metrics, TIDE, LRP and the TP / FP / FN counts above take every detection (COCO's matching at
IoU 0.5); the confusion matrix and the missed gts use detections with score &gt;= {analysis.score_thresh:g}.</p>
<h2>TIDE error types</h2>{_img(pngs, "tide_errors", "TIDE dAP per error type")}
<h2>Confusion matrix</h2>
<p>One-to-one matching at IoU &gt;= 0.5 (each gt and each detection counted once); rows are the ground truth,
the last row and column the background.</p>{_img(pngs, "confusion_matrix", "confusion matrix")}
<h2>Precision-recall per class</h2>{_img(pngs, "pr_curves", "precision-recall curves")}
<h2>Per class: AP, optimal LRP and its score threshold</h2>{per_class}
<h2>Why were the missed gts missed?</h2>{note}{missed}{_img(pngs, "missed_reasons", "missed gts by reason")}
{_img(pngs, "missed_examples", "example crops of each reason")}
<h2>Images with the most errors</h2>{_img(pngs, "worst_images", "images with the most errors")}
</body></html>
"""
