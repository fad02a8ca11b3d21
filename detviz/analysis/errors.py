"""Every error analysis of one set of detections, in one place: COCO metrics, TIDE, a confusion
matrix, LRP, per-object records and why each missed gt was missed.

:func:`analyze_results` takes a COCO ground truth and a COCO results list from any detector,
and, when the model is at hand, the :class:`~detviz.analysis.missed.PriorEvidence` of each gt
(its positive priors in training). :func:`summary` gives the numbers as one JSON-ready dict and
:func:`object_rows` one flat row per detection and per gt, with its TIDE type and, for a missed
gt, its reason.

Two operating points, on purpose. COCO's metrics, TIDE and LRP rank every detection (they
sweep the score). The confusion matrix and the missed-gt reasons need a decision, so they use
detections with score >= ``score_thresh`` (0.3 by default, mmdetection's confusion-matrix
default): with no threshold a detector's hundred low-scoring boxes per image "find" almost
every gt, and the question "why was this one missed?" would have no subject.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import dataclass

from detviz._io import write_atomic
from detviz.analysis.missed import MissedGT, PriorEvidence, count_reasons, why_missed
from detviz.evaluation.accumulate import coco_metrics
from detviz.evaluation.coco import STAT_NAMES, precision_recall_curves
from detviz.evaluation.confusion import DetectionConfusion, confusion_matrix, load_ground_truth
from detviz.evaluation.lrp import LRPResult, lrp_from_records
from detviz.evaluation.matching import ObjectRecords, match_detections
from detviz.evaluation.tide import TideResult, tide_errors

__all__ = ["DEFAULT_SCORE_THRESH", "ErrorAnalysis", "analyze_results", "summary", "object_rows", "write_object_rows"]

DEFAULT_SCORE_THRESH = 0.3


@dataclass
class ErrorAnalysis:
    """What :func:`analyze_results` found.

    Attributes:
        metrics: :func:`~detviz.evaluation.accumulate.coco_metrics`' dict (mAP, AP50, ..., per_class),
            equal to pycocotools' COCOeval.
        pr_curves: class name -> (recall [101], precision [101]) at IoU 0.5.
        tide: TIDE's dAP per error type, and each detection's and gt's type.
        lrp: oLRP per class with its components and the LRP-optimal score threshold.
        records: every detection and gt under COCO's matching, all detections.
        confusion: the one-to-one confusion matrix at ``score_thresh``.
        missed: a reason for every gt missed at ``score_thresh``.
        class_names: category id -> name.
    """

    metrics: dict
    pr_curves: dict
    tide: TideResult
    lrp: LRPResult
    records: ObjectRecords
    confusion: DetectionConfusion
    missed: list[MissedGT]
    score_thresh: float
    class_names: dict[int, str]
    with_model: bool


def analyze_results(coco_gt, results: list[dict], *, evidence: dict[int, PriorEvidence] | None = None,
                    score_thresh: float = DEFAULT_SCORE_THRESH) -> ErrorAnalysis:
    """Run every analysis on ``results`` against ``coco_gt``.

    Args:
        coco_gt: ``pycocotools.coco.COCO`` or the path of a COCO annotation json.
        results: COCO results (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] pixels, ``score``).
        evidence: annotation id -> prior evidence from the model
            (:func:`detviz.analysis.missed.prior_evidence`); None for results alone.
        score_thresh: the operating point of the confusion matrix and the missed-gt reasons, in [0, 1).

    Returns:
        :class:`ErrorAnalysis`.
    """
    if isinstance(score_thresh, bool) or not isinstance(score_thresh, (int, float)) or not 0 <= score_thresh < 1:
        raise ValueError(f"score_thresh must be a number in [0, 1), got {score_thresh!r}")
    coco = load_ground_truth(coco_gt)
    tide = tide_errors(coco, results)  # validates every entry, naming the bad one
    metrics = coco_metrics(coco, results)  # pycocotools' numbers, without its per-image dicts
    pr_curves = precision_recall_curves(metrics) if results else {}
    kept = [r for r in results if r["score"] >= score_thresh]
    records = match_detections(coco, results)
    return ErrorAnalysis(
        metrics=metrics, pr_curves=pr_curves,
        tide=tide, lrp=lrp_from_records(coco, results, records), records=records,
        confusion=_confusion_at(coco, kept, score_thresh),
        missed=why_missed(match_detections(coco, kept), evidence), score_thresh=float(score_thresh),
        class_names={cid: cat["name"] for cid, cat in sorted(coco.cats.items())}, with_model=evidence is not None)


def _confusion_at(coco, kept: list[dict], score_thresh: float) -> DetectionConfusion:
    """The one-to-one matrix of the detections with score >= ``score_thresh`` (Ultralytics keeps
    score > threshold; here one threshold means the same for the matrix and the missed gts)."""
    matrix = confusion_matrix(coco, kept, score_threshold=-1.0)  # ``kept`` is already cut
    return dataclasses.replace(matrix, score_threshold=float(score_thresh))


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def summary(analysis: ErrorAnalysis) -> dict:
    """The headline numbers as plain JSON values (NaN written as None).

    ``mAP``, ``AP50``, ... in 0..1 as ``evaluate`` prints them; ``errors`` in AP points 0..100 as
    TIDE reports them (Cls, Loc, Both, Dupe, Bkg, Miss, FalsePos, FalseNeg); ``oLRP`` (moLRP) in
    0..1; ``missed``: ``{"total": n, reason: count}`` at ``score_thresh``; ``per_class``: AP,
    AP50 by TIDE, oLRP, its threshold, and missed gts per class name.
    """
    tide, lrp = analysis.tide, analysis.lrp
    per_class = {}
    for category_id, name in analysis.class_names.items():
        scores = tide.per_class.get(category_id)
        olrp = lrp.per_class.get(name)
        per_class[name] = {
            "AP": _finite(analysis.metrics["per_class"].get(name, math.nan)),
            "AP50_tide": None if scores is None else round(scores.ap50, 4),
            "oLRP": None if olrp is None else _finite(olrp.olrp),
            "oLRP_threshold": None if olrp is None else _finite(olrp.threshold),
            "missed": sum(1 for m in analysis.missed if m.category_id == category_id),
        }
    return {
        **{name: _finite(analysis.metrics[name]) for name in STAT_NAMES},
        "errors": {k: round(v, 4) for k, v in {**tide.errors, **tide.special}.items()},
        "oLRP": _finite(lrp.molrp),
        "oLRP_components": {"Loc": _finite(lrp.molrp_loc), "FP": _finite(lrp.molrp_fp), "FN": _finite(lrp.molrp_fn)},
        "score_thresh": analysis.score_thresh,
        "missed": count_reasons(analysis.missed),
        "missed_uses_model": analysis.with_model,
        "counts": {**analysis.records.tp_fp_fn(0.5), "detections": len(analysis.records.detections),
                   "gts": sum(1 for g in analysis.records.gts if not g.ignored)},
        "per_class": per_class,
    }


def object_rows(analysis: ErrorAnalysis) -> list[dict]:
    """:meth:`ObjectRecords.to_rows` with each object's class name, TIDE type and missed reason."""
    gt_types = analysis.tide.gt_types
    reasons = {m.ann_id: m.reason for m in analysis.missed}
    rows = analysis.records.to_rows()  # fresh dicts: filled in place, one copy of half a million rows is enough
    for row in rows:
        row["class_name"] = analysis.class_names.get(row["category_id"], "")
        if row["kind"] == "detection":
            row["tide_type"] = analysis.tide.detection_types[row["index"]]
            row["missed_reason"] = ""
        else:
            row["tide_type"] = gt_types.get(row["ann_id"], "")
            row["missed_reason"] = reasons.get(row["ann_id"], "")
    return rows


def write_object_rows(path, rows: list[dict]) -> None:
    """:func:`object_rows` as CSV (``objects.csv``), written atomically: every key of any row is a
    column, in order of first appearance; a row without it leaves the cell empty."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())
