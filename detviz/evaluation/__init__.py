"""Scoring detections against ground truth: pure functions of predictions and gts, no model code.

* ``coco.py``: COCO results, pycocotools' COCOeval summary, per-class AP, precision-recall curves.
"""
from detviz.evaluation.coco import (STAT_NAMES, evaluate_coco, precision_recall_curves, prediction_from_coco_results,
                                    to_coco_results)

__all__ = ["STAT_NAMES", "evaluate_coco", "precision_recall_curves", "prediction_from_coco_results", "to_coco_results"]
