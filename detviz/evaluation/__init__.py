"""Scoring detections against ground truth: pure functions of COCO gts and COCO results, no model code.

* ``coco.py``: COCO results, pycocotools' COCOeval summary, per-class AP, precision-recall curves;
* ``cocotable.py``: a ground truth and results list read once into validated arrays;
* ``matching.py``: COCO's greedy matching written out, one record per detection and per gt;
* ``accumulate.py``: COCOeval's twelve metrics and precision array on that matching, equal to pycocotools';
* ``tide.py``: TIDE's error decomposition (Cls, Loc, Both, Dupe, Bkg, Miss as dAP50), as ``tidecv``;
* ``confusion.py``: the confusion matrix with a background class (one-to-one or many-to-one);
* ``lrp.py``: Localisation-Recall-Precision: oLRP per class, its components, the optimal threshold.
"""
from detviz.evaluation.accumulate import coco_metrics
from detviz.evaluation.coco import (STAT_NAMES, evaluate_coco, precision_recall_curves, prediction_from_coco_results,
                                    to_coco_results)
from detviz.evaluation.confusion import DetectionConfusion, confusion_matrix
from detviz.evaluation.lrp import LRPResult, optimal_lrp
from detviz.evaluation.matching import ObjectRecords, match_detections
from detviz.evaluation.tide import TideResult, tide_errors

__all__ = ["STAT_NAMES", "coco_metrics", "evaluate_coco", "precision_recall_curves", "prediction_from_coco_results",
           "to_coco_results", "DetectionConfusion", "confusion_matrix", "LRPResult", "optimal_lrp", "ObjectRecords",
           "match_detections", "TideResult", "tide_errors"]
